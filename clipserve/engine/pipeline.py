"""The batch pipeline of one modality: take a batch, prepare it on the thread pool, run one
forward pass on a free replica, answer every span of it.

A batch loop may have ``replicas + 1`` batches in flight, so preparing batch N+1 overlaps
the forward pass of batch N. Spans whose group ended (caller gone, deadline passed, failed
fast) are dropped at each step before compute: when taken from the queue, after images are
decoded, and once a replica is free (a deadline may pass while a batch waits for one).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipserve.engine.batcher import BatchQueue, Span
from clipserve.engine.items import Modality
from clipserve.engine.ledger import Ledger
from clipserve.engine.metrics import Metrics
from clipserve.engine.replicas import ReplicaPool
from clipserve.errors import ClipServeError, InvalidInputError, ModelError, ServerUnavailableError
from clipserve.models.base import EmbeddingModel, PartialBatchError
from clipserve.models.pixel_budget import PixelBudget


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


class BatchRunner:
    """Runs the batches of every modality through preparation and the replicas."""

    def __init__(
        self,
        ledger: Ledger,
        model: EmbeddingModel,
        replicas: ReplicaPool,
        prepare_pool: ThreadPoolExecutor,
        metrics: Metrics,
        stats: dict[Modality, ModalityStats],
        pixel_budget: PixelBudget | None = None,
    ) -> None:
        self.ledger = ledger
        self.pixel_budget = pixel_budget
        self.model = model  # preprocessing (replicas share it; forward uses each replica's)
        self.replicas = replicas
        self.prepare_pool = prepare_pool
        self.metrics = metrics
        self.stats = stats
        self.batches: set[asyncio.Task[None]] = set()
        self._prepare_cpu = {m: metrics.prepare_cpu.labels(m) for m in ("text", "image")}

    async def loop(self, modality: Modality, queue: BatchQueue, in_flight_limit: int) -> None:
        in_flight = asyncio.Semaphore(in_flight_limit)
        while True:
            await in_flight.acquire()
            try:
                batch = await queue.next_batch()
            except BaseException:
                in_flight.release()
                raise
            task = asyncio.create_task(self.run_batch(modality, batch))
            self.batches.add(task)

            def finished(task: asyncio.Task[None]) -> None:
                self.batches.discard(task)
                in_flight.release()

            task.add_done_callback(finished)

    async def run_batch(self, modality: Modality, batch: list[Span]) -> None:
        ledger = self.ledger
        live = batch
        try:
            if modality == "text":
                inputs = await self._prepare_texts(batch)
            else:
                live, inputs = await self._prepare_images(batch)
            if not live:
                return
            live, embeddings, failures = await self._forward(modality, live, inputs)
            offset = 0
            for span in live:
                rows = embeddings[offset : offset + len(span)]
                if any(offset + index in failures for index in range(len(span))):
                    for index, row in enumerate(rows):  # one outcome each, in place
                        single = Span(span.group, span.start + index, span.start + index + 1)
                        ledger.deliver(modality, single, [failures.get(offset + index, row)])
                else:
                    ledger.deliver(modality, span, list(rows))
                offset += len(span)
        except ClipServeError as exc:
            for span in live:
                ledger.fail_unanswered(modality, span, exc)
        except Exception as exc:  # the model raised: this batch fails, the engine goes on
            count = sum(len(span) for span in live)
            error = ModelError(f"{modality} batch of {count} failed: {describe(exc)}")
            for span in live:
                ledger.fail_unanswered(modality, span, error)
        finally:  # exactly one outcome, even when cancelled at stop()
            stopped = ServerUnavailableError("the engine stopped mid-batch")
            for span in batch:
                ledger.fail_unanswered(modality, span, stopped)

    async def _prepare_texts(self, batch: list[Span]) -> Any:
        texts = batch[0].inputs() if len(batch) == 1 else [t for s in batch for t in s.inputs()]
        loop = asyncio.get_running_loop()
        prepare = _timed(self.model.prepare_texts, self._prepare_cpu["text"])
        try:
            return await loop.run_in_executor(self.prepare_pool, prepare, texts)
        except ClipServeError:
            raise
        except Exception as exc:
            raise ModelError(f"text preprocessing failed: {describe(exc)}") from exc

    async def _prepare_images(self, batch: list[Span]) -> tuple[list[Span], Any]:
        loop = asyncio.get_running_loop()
        prepare = self.model.prepare_image
        if self.pixel_budget is not None:
            prepare = functools.partial(_within_budget, self.pixel_budget, prepare)
        prepare = _timed(prepare, self._prepare_cpu["image"])
        singles = [Span(s.group, i, i + 1) for s in batch for i in range(s.start, s.stop)]
        jobs = [
            loop.run_in_executor(self.prepare_pool, prepare, single.group.inputs[single.start])
            for single in singles
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        live: list[Span] = []
        arrays: list[np.ndarray] = []
        for single, result in zip(singles, results, strict=True):
            if single.group.future.done():  # ended while we decoded: no forward for it
                self.ledger.dropped("image", single.group, 1)
            elif isinstance(result, ClipServeError):
                self.ledger.deliver("image", single, [result])
            elif isinstance(result, BaseException):
                error = InvalidInputError(f"image could not be read: {describe(result)}")
                self.ledger.deliver("image", single, [error])
            else:
                live.append(single)
                arrays.append(result)
        if not live:
            return live, None
        return live, self.model.collate_images(arrays)  # stacked, or the model's own batch

    async def _forward(
        self, modality: Modality, spans: list[Span], inputs: Any
    ) -> tuple[list[Span], np.ndarray, dict[int, ClipServeError]]:
        """One forward pass for the spans still wanted once a replica is free: their
        embeddings, and the inputs that failed alone inside the model (by row)."""
        replica = await self.replicas.acquire()
        try:
            kept = [span for span in spans if not span.group.future.done()]
            for span in spans:
                if span.group.future.done():
                    self.ledger.dropped(modality, span.group, len(span))
            if not kept:
                return kept, np.zeros((0, 0), np.float32), {}
            model = replica.model
            if modality == "image":
                if len(kept) < len(spans):
                    rows = [i for i, span in enumerate(spans) if span in kept]
                    inputs = _rows_of(inputs, rows)
                job = functools.partial(model.forward_images, inputs)
            elif len(kept) == len(spans):
                job = functools.partial(model.forward_texts, inputs)
            else:  # tokenised as a whole: tokenise the kept texts again, on the replica
                texts = [text for span in kept for text in span.inputs()]
                job = functools.partial(_forward_texts_of, model, texts)
            count = sum(len(span) for span in kept)
            started = time.perf_counter()
            failures: dict[int, ClipServeError] = {}
            try:
                output = await self.replicas.run(replica, job)
            except PartialBatchError as partial:  # e.g. a JPEG only the device found bad
                output, failures = partial.embeddings, dict(partial.failures)
        finally:
            self.replicas.release(replica)
        self.metrics.forward_latency.labels(modality).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(modality).observe(count)
        self.stats[modality].record(count)
        # a private copy: the rows handed out are views of it, never of the model's buffer
        embeddings = np.array(output, dtype=np.float32, copy=True)
        if embeddings.ndim != 2 or embeddings.shape[0] != count:
            raise ModelError(
                f"the model returned shape {list(embeddings.shape)} for {count} {modality} inputs"
            )
        return kept, embeddings, failures


def _rows_of(inputs: Any, rows: list[int]) -> Any:
    """The given rows of a collated image batch: an array, or a model's list of inputs."""
    if isinstance(inputs, np.ndarray):
        return inputs[rows]
    return [inputs[row] for row in rows]


def _timed(prepare: Callable[[Any], Any], cpu_seconds: Any) -> Callable[[Any], Any]:
    """``prepare``, adding the CPU time of the worker thread running it to a counter."""

    def timed(value: Any) -> Any:
        started = time.thread_time()
        try:
            return prepare(value)
        finally:
            cpu_seconds.inc(time.thread_time() - started)

    return timed


def _within_budget(budget: PixelBudget, prepare: Callable[[Any], Any], source: Any) -> Any:
    """``prepare(source)`` on a worker thread, its decoding charged to ``budget``."""
    with budget.held():
        return prepare(source)


def _forward_texts_of(model: EmbeddingModel, texts: list[str]) -> Any:
    return model.forward_texts(model.prepare_texts(texts))


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    text = text if len(text) <= 300 else text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
