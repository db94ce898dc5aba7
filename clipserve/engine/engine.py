"""The engine: callers hand it items, it batches, preprocesses and runs the model.

Pipeline per modality (texts and images have separate bounded queues)::

    encode() -> BatchQueue -> batch loop -> prepare (thread pool) -> forward (replica thread)

A batch loop may have ``replicas + 1`` batches in flight, so preparing batch N+1 overlaps
the forward pass of batch N. Every item gets exactly one outcome: an embedding, or the
``ClipServeError`` that explains why not (a bad image fails only itself, also when only the
model finds it bad: ``PartialBatchError``; a failed forward fails its whole batch with
``ModelError``). Outcomes are returned, never raised, so the
caller can answer per document.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipserve.engine.admission import Admission
from clipserve.engine.batcher import BatchQueue, Group, Span
from clipserve.engine.items import ImageItem, Item, Modality, TextItem
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.errors import (
    ClipServeError,
    InvalidInputError,
    ModelError,
    ServerUnavailableError,
)
from clipserve.models.base import EmbeddingModel, PartialBatchError
from clipserve.models.runtime import available_cpus

#: what ``Engine`` accepts as its model: one model, one per replica, or a factory
ModelSource = EmbeddingModel | Sequence[EmbeddingModel] | Callable[[], EmbeddingModel]
Outcome = np.ndarray | ClipServeError
MODALITIES: tuple[Modality, ...] = ("text", "image")


@dataclass
class ModalityStats:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.batch_sizes[size] += 1


@dataclass
class _Replica:
    model: EmbeddingModel
    thread: ThreadPoolExecutor


class Engine:
    """Dynamic batching in front of one or more model replicas.

    ``model`` is a model (shared by ``replicas`` inference threads), a list of models (one
    thread each) or a zero-argument factory called ``replicas`` times at ``start()``.
    ``preprocess_workers`` threads decode images and tokenise texts (default: one per CPU;
    Pillow and numpy release the GIL while they work, see docs/benchmarks.md).
    ``max_batch_size=1`` disables batching. ``max_queue_items`` bounds the items admitted
    but not yet answered, per modality; a call that would exceed it waits for room up to
    ``max_queue_wait_s`` seconds (0: it is refused at once), see ``admission``.
    """

    def __init__(
        self,
        model: ModelSource,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_items: int = 4096,
        max_queue_wait_s: float = 0.0,
        replicas: int = 1,
        preprocess_workers: int | None = None,
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
        self.preprocess_workers = preprocess_workers
        self.metrics = metrics or METRICS
        self.stats: dict[Modality, ModalityStats] = {m: ModalityStats() for m in MODALITIES}
        self._state = "new"  # new -> running -> stopping -> stopped
        waiting_gauge = self.metrics.queue_waiting
        self._admission = Admission(
            MODALITIES,
            max_queue_items,
            max_queue_wait_s,
            on_waiting=lambda modality, items: waiting_gauge.labels(modality).set(items),
        )
        self._idle: asyncio.Event | None = None
        self._stopped = asyncio.Event()
        self._queues: dict[Modality, BatchQueue] = {}
        self._item_counters: dict[tuple[Modality, str], Any] = {}
        self._prepare_cpu = {m: self.metrics.prepare_cpu.labels(m) for m in MODALITIES}
        self._loops: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._free: asyncio.Queue[_Replica] | None = None
        self._replicas: list[_Replica] = []
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

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"engine cannot start: it is {self._state}")
        if self._factory is not None:
            factory = self._factory
            self._models = [await asyncio.to_thread(factory) for _ in range(self.replicas)]
        self._idle = asyncio.Event()
        self._idle.set()
        self._pool = ThreadPoolExecutor(self.preprocess_workers, "clipserve-prepare")
        self._free = asyncio.Queue()
        for index, model in enumerate(self._models):
            replica = _Replica(model, ThreadPoolExecutor(1, f"clipserve-infer-{index}"))
            self._replicas.append(replica)
            self._free.put_nowait(replica)
        for modality in MODALITIES:
            gauge = self.metrics.queue_depth.labels(modality)
            self._queues[modality] = BatchQueue(
                self.max_batch_size, self.max_wait_ms / 1000.0, gauge.set
            )
            self._loops.append(asyncio.create_task(self._batch_loop(modality)))
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
        assert self._idle is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        for task in self._loops:
            task.cancel()
        gone = ServerUnavailableError("the engine stopped before this item was processed")
        for modality, queue in self._queues.items():
            for span in queue.drain():
                self._fail_unanswered(modality, span, gone)
        for task in list(self._batches):
            task.cancel()
        await asyncio.gather(*self._loops, *self._batches, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for replica in self._replicas:
            replica.thread.shutdown(wait=False, cancel_futures=True)
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
        time, and ``ServerUnavailableError`` when the engine is not running.
        """
        self._check_running()
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
        await self._admission.reserve({"text": len(texts), "image": len(images)})
        if not images:
            return await self._submit({"text": texts}) if texts else []
        if not texts:
            return await self._submit({"image": images})
        text_outcomes, image_outcomes = await self._submit({"text": texts, "image": images})
        text_iter, image_iter = iter(text_outcomes), iter(image_outcomes)
        return [next(text_iter if isinstance(i, TextItem) else image_iter) for i in items]

    async def encode_texts(self, texts: Sequence[str]) -> list[Outcome]:
        """``encode`` for plain sentences, without an item object per sentence."""
        self._check_running()
        texts = list(texts)
        await self._admission.reserve({"text": len(texts)})
        return await self._submit({"text": texts}) if texts else []

    def cache_info(self) -> dict[str, Any]:
        """What /health shows about the embedding cache: none here (see ``CachedEngine``)."""
        return {"enabled": False}

    def _check_running(self) -> None:
        if self._state != "running":
            state = "not started" if self._state == "new" else self._state
            raise ServerUnavailableError(f"the engine is {state}; it takes no new work")

    async def _submit(self, inputs: dict[Modality, list[Any]]) -> Any:
        """Queue one group per modality (room already reserved); their outcome lists, in
        ``inputs`` order (one list when there is one modality)."""
        loop = asyncio.get_running_loop()
        assert self._idle is not None
        self._idle.clear()
        groups: list[Group] = []
        for modality, values in inputs.items():
            group = Group(values, loop.create_future())
            group.future.add_done_callback(self._cancel_callback(modality, group))
            self._queues[modality].put(group)
            groups.append(group)
        try:
            if len(groups) == 1:
                return await groups[0].future
            return await asyncio.gather(*(group.future for group in groups))
        finally:
            for group in groups:  # the caller went away: drop what is not done
                group.future.cancel()

    def _cancel_callback(
        self, modality: Modality, group: Group
    ) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled() and group.remaining:  # its unanswered items: cancelled
                self._count(modality, "cancelled", group.remaining)
                group.remaining = 0

        return done

    def _count(self, modality: Modality, outcome: str, count: int) -> None:
        """``count`` items of ``modality`` got ``outcome``: metrics, queue room, idleness."""
        counter = self._item_counters.get((modality, outcome))
        if counter is None:
            counter = self.metrics.items.labels(modality, outcome)
            self._item_counters[(modality, outcome)] = counter
        counter.inc(count)
        self._admission.release(modality, count)
        if self._idle is not None and not self._admission.busy:
            self._idle.set()

    def _deliver(self, modality: Modality, span: Span, outcomes: list[Outcome]) -> None:
        """Answer ``span`` (whose items are all unanswered) with ``outcomes``."""
        group = span.group
        if group.future.done():  # the caller left; its items were counted as cancelled
            return
        group.outcomes[span.start : span.stop] = outcomes
        group.remaining -= len(outcomes)
        if outcomes and isinstance(outcomes[0], np.ndarray):
            self._count(modality, "ok", len(outcomes))
        else:
            for outcome in outcomes:
                self._count(modality, _outcome_label(outcome), 1)
        if not group.remaining:
            group.future.set_result(group.outcomes)

    def _fail_unanswered(self, modality: Modality, span: Span, error: ClipServeError) -> None:
        """Answer whatever in ``span`` has no outcome yet with ``error``."""
        group = span.group
        if group.future.done():
            return
        for index in range(span.start, span.stop):
            if group.outcomes[index] is None:
                self._deliver(modality, Span(group, index, index + 1), [error])

    # ---- the pipeline -----------------------------------------------------------------

    async def _batch_loop(self, modality: Modality) -> None:
        queue = self._queues[modality]
        in_flight = asyncio.Semaphore(self.replicas + 1)
        while True:
            await in_flight.acquire()
            try:
                batch = await queue.next_batch()
            except BaseException:
                in_flight.release()
                raise
            task = asyncio.create_task(self._run_batch(modality, batch))
            self._batches.add(task)

            def finished(task: asyncio.Task[None]) -> None:
                self._batches.discard(task)
                in_flight.release()

            task.add_done_callback(finished)

    async def _run_batch(self, modality: Modality, batch: list[Span]) -> None:
        live = batch
        try:
            if modality == "text":
                inputs = await self._prepare_texts(batch)
            else:
                live, inputs = await self._prepare_images(batch)
            if not live:
                return
            count = sum(len(span) for span in live)
            embeddings, failures = await self._forward(modality, inputs, count)
            offset = 0
            for span in live:
                rows = embeddings[offset : offset + len(span)]
                if any(offset + index in failures for index in range(len(span))):
                    for index, row in enumerate(rows):  # one outcome each, in place
                        single = Span(span.group, span.start + index, span.start + index + 1)
                        self._deliver(modality, single, [failures.get(offset + index, row)])
                else:
                    self._deliver(modality, span, list(rows))
                offset += len(span)
        except ClipServeError as exc:
            for span in live:
                self._fail_unanswered(modality, span, exc)
        except Exception as exc:  # the model raised: this batch fails, the engine goes on
            count = sum(len(span) for span in live)
            error = ModelError(f"{modality} batch of {count} failed: {_describe(exc)}")
            for span in live:
                self._fail_unanswered(modality, span, error)
        finally:  # exactly one outcome, even when cancelled at stop()
            stopped = ServerUnavailableError("the engine stopped mid-batch")
            for span in batch:
                self._fail_unanswered(modality, span, stopped)

    async def _prepare_texts(self, batch: list[Span]) -> Any:
        texts = batch[0].inputs() if len(batch) == 1 else [t for s in batch for t in s.inputs()]
        loop = asyncio.get_running_loop()
        prepare = self._timed(self.model.prepare_texts, self._prepare_cpu["text"])
        try:
            return await loop.run_in_executor(self._pool, prepare, texts)
        except ClipServeError:
            raise
        except Exception as exc:
            raise ModelError(f"text preprocessing failed: {_describe(exc)}") from exc

    async def _prepare_images(self, batch: list[Span]) -> tuple[list[Span], Any]:
        loop = asyncio.get_running_loop()
        prepare = self._timed(self.model.prepare_image, self._prepare_cpu["image"])
        singles = [Span(s.group, i, i + 1) for s in batch for i in range(s.start, s.stop)]
        jobs = [
            loop.run_in_executor(self._pool, prepare, single.group.inputs[single.start])
            for single in singles
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        live: list[Span] = []
        arrays: list[np.ndarray] = []
        for single, result in zip(singles, results, strict=True):
            if isinstance(result, ClipServeError):
                self._deliver("image", single, [result])
            elif isinstance(result, BaseException):
                error = InvalidInputError(f"image could not be read: {_describe(result)}")
                self._deliver("image", single, [error])
            elif not single.group.future.done():  # skip callers that left while we decoded
                live.append(single)
                arrays.append(result)
        if not live:
            return live, None
        return live, self.model.collate_images(arrays)

    @staticmethod
    def _timed(prepare: Callable[[Any], Any], cpu_seconds: Any) -> Callable[[Any], Any]:
        """``prepare``, adding the CPU time of the worker thread running it to a counter."""

        def timed(value: Any) -> Any:
            started = time.thread_time()
            try:
                return prepare(value)
            finally:
                cpu_seconds.inc(time.thread_time() - started)

        return timed

    async def _forward(
        self, modality: Modality, inputs: Any, count: int
    ) -> tuple[np.ndarray, dict[int, ClipServeError]]:
        """The batch's embeddings, and the inputs that failed alone inside the model."""
        assert self._free is not None
        replica = await self._free.get()
        forward = (
            replica.model.forward_texts if modality == "text" else replica.model.forward_images
        )
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        failures: dict[int, ClipServeError] = {}
        try:
            output = await loop.run_in_executor(replica.thread, forward, inputs)
        except PartialBatchError as partial:
            output, failures = partial.embeddings, dict(partial.failures)
        finally:
            self._free.put_nowait(replica)
        self.metrics.forward_latency.labels(modality).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(modality).observe(count)
        self.stats[modality].record(count)
        # a private copy: the rows handed out are views of it, never of the model's buffer
        embeddings = np.array(output, dtype=np.float32, copy=True)
        if embeddings.ndim != 2 or embeddings.shape[0] != count:
            raise ModelError(
                f"the model returned shape {list(embeddings.shape)} for {count} {modality} inputs"
            )
        return embeddings, failures


def _outcome_label(outcome: Outcome) -> str:
    if isinstance(outcome, np.ndarray):
        return "ok"
    if isinstance(outcome, InvalidInputError):
        return "invalid"
    if isinstance(outcome, ServerUnavailableError):
        return "stopped"
    return "model_error"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
