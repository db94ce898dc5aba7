"""The engine seam: what the service and the front-ends need from an engine.

``Engine`` runs the model in this process. ``clipserve.cluster.RayEngine`` sends the same
calls to model replicas on a Ray cluster, each replica running an ``Engine`` of its own.
Everything above this seam (service, gRPC/HTTP/WebSocket, metrics) sees no difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from clipserve.engine.health import EngineHealth
from clipserve.engine.items import Item
from clipserve.models.scoring import ScoreRule

#: ``describe()["status"]`` values: what /health reports as the serving capacity
CAPACITY_OK, CAPACITY_DEGRADED, CAPACITY_UNAVAILABLE = "ok", "degraded", "unavailable"


class ModelDescription(Protocol):
    """What callers read about the served model."""

    name: str
    dim: int
    backend: str
    precision: str
    exact_preprocess: bool
    family: str
    languages: str
    #: how ``rank`` turns cosines into ``clip_score``
    score_rule: ScoreRule
    #: smaller sizes its embeddings may be cut to (OpenAI's ``dimensions``)
    matryoshka_dims: tuple[int, ...]

    def identity(self) -> str:
        """What decides its embeddings (the embedding cache's key)."""
        ...


class EncodingEngine(Protocol):
    """Items in, one outcome each out (an embedding or the ``ClipServeError`` for it).

    Deadlines are not in the signatures: an engine reads ``deadline.current_deadline()``
    when work is submitted and fails work it can no longer answer in time with
    ``DeadlineExceededError``, dropping it before it is computed.
    """

    max_batch_size: int

    @property
    def model(self) -> ModelDescription: ...

    @property
    def running(self) -> bool: ...

    @property
    def health(self) -> EngineHealth:
        """Whether the engine can answer at all (the watchdog's verdict locally, the
        cluster monitor's on Ray); /health, gRPC health and ``--exit-on-stuck`` follow it."""
        ...

    async def start(self) -> None: ...

    async def stop(self, drain_timeout: float = 10.0) -> None: ...

    async def encode(self, items: Iterable[Item]) -> list[Any]: ...

    async def encode_texts(self, texts: Sequence[str]) -> list[Any]: ...

    def cache_info(self) -> dict[str, Any]:
        """What /health shows about an embedding cache in front (``{"enabled": False}``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Capacity for /health: ``replicas`` (wanted, running) and optionally ``status``
        (``ok``, ``degraded``, ``unavailable``) and engine-specific sections."""
        ...
