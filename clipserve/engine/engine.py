"""The engine: callers hand it items, it batches, preprocesses and runs the model.

Pipeline per modality (texts and images have separate bounded queues)::

    encode() -> admission -> BatchQueue -> batch loop -> prepare (thread pool)
             -> forward (replica thread)

``admission`` bounds what waits, ``ledger`` gives every item its one outcome, ``pipeline``
runs the batches (``replicas + 1`` in flight, so preparing batch N+1 overlaps the forward
pass of batch N), ``replicas`` owns the inference threads and the watchdog. Every item
gets exactly one outcome: an embedding, or the ``ClipServeError`` that explains why not
(a bad image fails only itself; a failed forward fails its whole batch with
``ModelError``). Outcomes are returned, never raised, so the caller can answer per document.

Work whose caller can no longer use the answer costs no forward pass: a caller that left
(its task cancelled) or whose deadline (``engine.deadline``) passed has its queued items
dropped, counted in ``clipserve_dropped_items_total``; the caller gets
``DeadlineExceededError`` at its deadline. A forward pass that runs past
``forward_timeout_s`` or an inference thread that dies makes the engine unhealthy
(``health``): waiting calls fail at once with ``EngineUnhealthyError`` and so do new ones,
until the stuck pass returns (``replicas``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from clipserve.engine.admission import Admission
from clipserve.engine.batcher import BatchQueue
from clipserve.engine.deadline import check_deadline, current_deadline
from clipserve.engine.health import EngineHealth
from clipserve.engine.items import ImageItem, Item, Modality, TextItem
from clipserve.engine.ledger import Ledger, Outcome
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.engine.pipeline import BatchRunner, ModalityStats
from clipserve.engine.replicas import ReplicaPool
from clipserve.errors import EngineUnhealthyError, InvalidInputError, ServerUnavailableError
from clipserve.models.base import EmbeddingModel
from clipserve.models.pixel_budget import PixelBudget
from clipserve.models.runtime import available_cpus

#: what ``Engine`` accepts as its model: one model, one per replica, or a factory
ModelSource = EmbeddingModel | Sequence[EmbeddingModel] | Callable[[], EmbeddingModel]
MODALITIES: tuple[Modality, ...] = ("text", "image")
MiB = 1024 * 1024


class Engine:
    """Dynamic batching in front of one or more model replicas.

    ``model`` is a model (shared by ``replicas`` inference threads), a list of models (one
    thread each) or a zero-argument factory called ``replicas`` times at ``start()``.
    ``preprocess_workers`` threads decode images and tokenise texts (default: one per CPU;
    Pillow and numpy release the GIL while they work, see docs/benchmarks.md).
    ``max_batch_size=1`` disables batching. ``max_queue_items`` bounds the items admitted
    but not yet answered, per modality, and ``max_queue_image_mb`` the bytes those images
    hold; a call that would exceed either waits for room up to ``max_queue_wait_s`` seconds
    (0: it is refused at once), see ``admission``. ``max_decoding_megapixels`` bounds the
    decoded pixels the preprocessing threads hold at once (``pixel_budget``).
    ``forward_timeout_s`` (None: no watchdog) is how long a forward pass may run before the
    engine reports itself stuck.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_items: int = 4096,
        max_queue_image_mb: float = 512.0,
        max_queue_wait_s: float = 0.0,
        replicas: int = 1,
        preprocess_workers: int | None = None,
        max_decoding_megapixels: float = 48.0,
        forward_timeout_s: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0 or max_queue_wait_s < 0:
            raise ValueError("max_wait_ms and max_queue_wait_s must be >= 0")
        if preprocess_workers is None:
            preprocess_workers = available_cpus()
        if max_queue_items < 1 or replicas < 1 or preprocess_workers < 1:
            raise ValueError("max_queue_items, replicas and preprocess_workers must be >= 1")
        if max_queue_image_mb <= 0 or max_decoding_megapixels <= 0:
            raise ValueError("max_queue_image_mb and max_decoding_megapixels must be > 0")
        if forward_timeout_s is not None and forward_timeout_s <= 0:
            raise ValueError("forward_timeout_s must be > 0 (or None: no watchdog)")
        self._models: list[EmbeddingModel] = []
        self._factory: Callable[[], EmbeddingModel] | None = None
        if isinstance(model, EmbeddingModel):
            self._models = [model] * replicas
        elif isinstance(model, Sequence):
            if not model or replicas not in (1, len(model)):
                raise ValueError("give one model per replica (or a single model / a factory)")
            self._models = list(model)
        elif callable(model):
            self._factory = model
        else:
            raise TypeError(f"model must be an EmbeddingModel, a list or a factory, got {model!r}")
        self.replicas = len(self._models) or replicas
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue_items = max_queue_items
        self.max_queue_image_bytes = int(max_queue_image_mb * MiB)
        self.preprocess_workers = preprocess_workers
        self.forward_timeout_s = forward_timeout_s
        self.metrics = metrics or METRICS
        self.pixel_budget = PixelBudget(
            int(max_decoding_megapixels * 1_000_000), self.metrics.decoding_pixels.set
        )
        self.stats: dict[Modality, ModalityStats] = {m: ModalityStats() for m in MODALITIES}
        self.health = EngineHealth()
        self.metrics.healthy.set(1)
        self.health.subscribe(lambda health: self.metrics.healthy.set(1 if health.ok else 0))
        self._state = "new"  # new -> running -> stopping -> stopped
        waiting_gauge = self.metrics.queue_waiting

        def on_waiting(key: str, amount: int) -> None:
            if key in MODALITIES:
                waiting_gauge.labels(key).set(amount)

        limits = dict.fromkeys(MODALITIES, max_queue_items)
        limits["image_bytes"] = self.max_queue_image_bytes
        self._admission = Admission(limits, max_queue_wait_s, on_waiting=on_waiting)
        self._ledger = Ledger(self._admission, self.metrics)
        self._queues: dict[Modality, BatchQueue] = self._ledger.queues
        self._stopped = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._replica_pool: ReplicaPool | None = None
        self._runner: BatchRunner | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def model(self) -> EmbeddingModel:
        """The first replica's model (name, dim, backend; preprocessing)."""
        if not self._models:
            raise RuntimeError("the model factory runs at start(); start the engine first")
        return self._models[0]

    @property
    def running(self) -> bool:
        return self._state == "running"

    def describe(self) -> dict[str, Any]:
        """Capacity and health for /health: inference threads alive, the watchdog's view."""
        alive = self._replica_pool.running if self._replica_pool and self.running else 0
        return {
            "replicas": {"wanted": self.replicas, "running": alive},
            "health": self.health.describe(),
            "forward_timeout_s": self.forward_timeout_s,
        }

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"engine cannot start: it is {self._state}")
        if self._factory is not None:
            factory = self._factory
            self._models = [await asyncio.to_thread(factory) for _ in range(self.replicas)]
        self._pool = ThreadPoolExecutor(self.preprocess_workers, "clipserve-prepare")
        self._replica_pool = ReplicaPool(
            self._models,
            self.health,
            forward_timeout_s=self.forward_timeout_s,
            on_unhealthy=self._fail_waiting,
        )
        self._replica_pool.start()
        self._runner = BatchRunner(
            self._ledger,
            self.model,
            self._replica_pool,
            self._pool,
            self.metrics,
            self.stats,
            self.pixel_budget,
        )
        for modality in MODALITIES:
            queue = BatchQueue(
                self.max_batch_size,
                self.max_wait_ms / 1000.0,
                self.metrics.queue_depth.labels(modality).set,
                on_dropped=functools.partial(self._ledger.dropped, modality),
            )
            self._queues[modality] = queue
            loop = self._runner.loop(modality, queue, self.replicas + 1)
            self._loops.append(asyncio.create_task(loop))
        self._state = "running"

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting work, finish what is queued (up to ``drain_timeout`` seconds),
        answer anything left with ``ServerUnavailableError``, then stop the threads."""
        if self._state == "stopping":  # a stop is already draining: wait for it
            await self._stopped.wait()
            return
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopping"
        stopping = ServerUnavailableError("the engine is stopping; it takes no new work")
        self._admission.close(stopping)  # calls waiting for room
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ledger.idle.wait(), drain_timeout)
        for task in self._loops:
            task.cancel()
        gone = ServerUnavailableError("the engine stopped before this item was processed")
        for modality, queue in self._queues.items():
            for span in queue.drain():
                self._ledger.fail_unanswered(modality, span, gone)
        batches = list(self._runner.batches) if self._runner is not None else []
        for task in batches:
            task.cancel()
        await asyncio.gather(*self._loops, *batches, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._replica_pool is not None:
            self._replica_pool.stop()
        self._state = "stopped"
        self._stopped.set()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- the one call callers make ----------------------------------------------------

    async def encode(self, items: Iterable[Item]) -> list[Outcome]:
        """Embed every item; each outcome is a float32 [dim] array or the error for it.

        Raises ``OverloadedError`` (nothing queued) when the queue cannot take the call in
        time, ``ServerUnavailableError`` when the engine is not running (its
        ``EngineUnhealthyError`` when it is stuck), and ``DeadlineExceededError`` when the
        deadline of the call (``engine.deadline.current_deadline``) passes first.
        """
        self._check_accepting()
        deadline = current_deadline()
        check_deadline(deadline)
        items = list(items)
        texts: list[str] = []
        images: list[bytes | np.ndarray] = []
        for item in items:
            if isinstance(item, TextItem):
                texts.append(item.text)
            elif isinstance(item, ImageItem):
                images.append(item.source)
            else:
                raise InvalidInputError(
                    f"cannot encode {type(item).__name__}; use TextItem/ImageItem"
                )
        held = sum(_size_of(image) for image in images)
        counts = {"text": len(texts), "image": len(images), "image_bytes": held}
        await self._admission.reserve(counts, deadline)
        if not images:
            return await self._ledger.submit({"text": texts}, deadline) if texts else []
        if not texts:
            return await self._ledger.submit({"image": images}, deadline, held)
        inputs: dict[Modality, list[Any]] = {"text": texts, "image": images}
        text_outcomes, image_outcomes = await self._ledger.submit(inputs, deadline, held)
        text_iter, image_iter = iter(text_outcomes), iter(image_outcomes)
        return [next(text_iter if isinstance(i, TextItem) else image_iter) for i in items]

    async def encode_texts(self, texts: Sequence[str]) -> list[Outcome]:
        """``encode`` for plain sentences, without an item object per sentence."""
        self._check_accepting()
        deadline = current_deadline()
        check_deadline(deadline)
        texts = list(texts)
        await self._admission.reserve({"text": len(texts)}, deadline)
        return await self._ledger.submit({"text": texts}, deadline) if texts else []

    def cache_info(self) -> dict[str, Any]:
        """What /health shows about the embedding cache: none here (see ``CachedEngine``)."""
        return {"enabled": False}

    def _check_accepting(self) -> None:
        if self._state != "running":
            state = "not started" if self._state == "new" else self._state
            raise ServerUnavailableError(f"the engine is {state}; it takes no new work")
        if not self.health.ok:
            raise self._unhealthy_error(self.health.reason or "unknown")

    @staticmethod
    def _unhealthy_error(reason: str) -> EngineUnhealthyError:
        return EngineUnhealthyError(f"the server is not healthy: {reason}; retry later")

    def _fail_waiting(self, reason: str) -> None:
        """The engine turned unhealthy: every call waiting in it fails now."""
        self._ledger.fail_waiting(self._unhealthy_error(reason))


def _size_of(image: bytes | np.ndarray) -> int:
    return image.nbytes if isinstance(image, np.ndarray) else len(image)
