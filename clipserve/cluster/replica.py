"""One model replica on the cluster: a Ray Serve deployment class around a clipserve Engine.

Each replica loads its own model copy and runs the same ``Engine`` as the single-process
server, so dynamic batching across calls, per-batch text padding and the bounded queue all
happen here, next to the model. A call carries one chunk of one request (see ``payload``);
the replica works on up to ``max_ongoing_requests`` calls at once and its engine batches
their items together.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from prometheus_client import CollectorRegistry

from clipserve.cluster.payload import Packed, Value, items_of, model_info, pack
from clipserve.engine import Engine
from clipserve.engine.deadline import deadline_after, deadline_scope
from clipserve.engine.metrics import Metrics
from clipserve.models.devices import DeviceOptions
from clipserve.models.runtime import THREADS_ENV

log = logging.getLogger("clipserve.cluster")


@dataclass(frozen=True)
class ReplicaSpec:
    """What a replica needs to load its model and run its engine (JSON-able: it is the
    ``args`` of the Serve application in a config file)."""

    model: str = "builtin"
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "float"
    #: the accelerator options (``clipserve.models.devices.DeviceOptions``)
    gpu_decode: str = "auto"
    cuda_graphs: bool = False
    cache_dir: str | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    preprocess_workers: int = 2
    #: bounded queue: room for every call the replica may hold (max_ongoing x chunk)
    max_queue_items: int = 4096
    #: the replica engine's watchdog (None/0: off): a pass running longer makes the replica
    #: unhealthy, so Serve's health check replaces it and the front-end resends its calls
    forward_timeout_s: float | None = 300.0
    max_queue_image_mb: float = 512.0
    max_decoding_megapixels: float = 48.0

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ReplicaSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown replica setting(s): {', '.join(unknown)}")
        return cls(**args)

    def as_args(self) -> dict[str, Any]:
        return asdict(self)


class EmbedderReplica:
    """The Serve deployment class (see ``app.embedder_deployment``)."""

    async def __init__(self, spec: dict[str, Any]) -> None:  # type: ignore[misc]
        from clipserve.models.registry import load_model

        self.spec = ReplicaSpec.from_args(spec)
        s = self.spec
        _threads_from_ray()
        model = await asyncio.to_thread(
            load_model,
            s.model,
            backend=s.backend,
            device=s.device,
            cache_dir=s.cache_dir,
            precision=s.precision,
        )
        model.use_device_options(DeviceOptions(gpu_decode=s.gpu_decode, cuda_graphs=s.cuda_graphs))
        await asyncio.to_thread(model.warmup)
        self.model = model
        self.metrics = Metrics(CollectorRegistry())  # this replica's own numbers
        self.engine = Engine(
            model,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue_items=s.max_queue_items,
            max_queue_image_mb=s.max_queue_image_mb,
            max_decoding_megapixels=s.max_decoding_megapixels,
            forward_timeout_s=s.forward_timeout_s or None,
            preprocess_workers=s.preprocess_workers,
            metrics=self.metrics,
        )
        await self.engine.start()
        self.calls_in_flight = 0
        self.identity = _identity()
        log.info("clipserve replica %s: %s ready on %s", self.identity["replica"], model.name,
                 self.identity["node_ip"])  # fmt: skip

    async def encode(self, values: list[Value], timeout_s: float | None = None) -> Packed:
        """Embed one chunk; every input gets one outcome, in order. ``timeout_s``: the
        call's callers can use no answer after that long (their deadline, as the front-end
        counted it): the engine drops the chunk unanswered then (``DeadlineExceededError``)."""
        self.calls_in_flight += 1
        try:
            with deadline_scope(deadline_after(timeout_s)):
                outcomes = await self._encode(values)
        finally:
            self.calls_in_flight -= 1
        return pack(outcomes)

    async def _encode(self, values: list[Value]) -> list[Any]:
        if all(type(value) is str for value in values):
            return await self.engine.encode_texts(values)  # type: ignore[arg-type]
        return await self.engine.encode(items_of(values))

    def info(self) -> dict[str, Any]:
        return {**model_info(self.model), "max_batch_size": self.spec.max_batch_size}

    def stats(self) -> dict[str, Any]:
        """Who this replica is, and its engine's metrics (queue depth, batch sizes...)."""
        families = [
            (family.name, family.type, family.documentation,
             [(s.name, dict(s.labels), s.value) for s in family.samples])
            for family in self.metrics.registry.collect()
        ]  # fmt: skip
        return {**self.identity, "calls_in_flight": self.calls_in_flight, "families": families}

    async def check_health(self) -> None:
        """Serve's health check: a replica whose engine stopped or is stuck (its watchdog:
        a forward pass past ``forward_timeout_s``, a dead inference thread) is replaced."""
        if not self.engine.running:
            raise RuntimeError("the replica's engine is not running")
        if not self.engine.health.ok:
            raise RuntimeError(f"the replica's engine is unhealthy: {self.engine.health.reason}")

    def __del__(self) -> None:
        """Serve calls this once the replica is drained (no call in flight): free the model
        (GPU memory) before the process goes."""
        model = self.__dict__.pop("model", None)
        if model is not None:
            model.close()


def _threads_from_ray() -> None:
    """Inference threads = the CPUs Ray gave this replica (``num_cpus``), not the node's
    cores, so replicas sharing a node do not oversubscribe it (CLIPSERVE_THREADS wins)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus and not os.environ.get(THREADS_ENV):
        os.environ[THREADS_ENV] = str(max(1, int(cpus)))


def _identity() -> dict[str, Any]:
    import ray
    from ray import serve

    context = ray.get_runtime_context()
    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (a test constructing the class directly)
        replica = f"pid{os.getpid()}"
    return {
        "replica": replica,
        "actor_id": context.get_actor_id(),
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }
