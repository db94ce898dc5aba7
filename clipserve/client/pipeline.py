"""The streaming engine of one encode/rank call (asyncio, protocol-agnostic).

A producer task cuts the input into batches just in time: it takes a window slot
(``prefetch`` batches may be built-but-unanswered at once, which bounds memory), builds the
next request in a worker thread (local files are read there), downloads http(s) images,
shrinks big images if asked (``image_max_side``, in a worker thread) and queues it. Each
stream attempt sends first every still-unanswered batch, then new ones, while a consumer
matches replies to batches by request id and frees their slots. Sending never waits for
receiving. On a transient failure with retries left, a new stream resends only what is
unanswered, after the backoff or the server's retry-after hint, whichever is longer; a late
duplicate reply is ignored, so nothing is lost or doubled.

Every request carries the client's ``timeout`` as its deadline (``header.timeout``), so
the server drops it once the client could no longer use the answer. A request refused by
a tenant's rate limit (``RateLimitedError``) is sent again alone, on the same stream,
after the server's retry-after hint: the others in flight go on. The request side of a
stream therefore stays open until every request is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipserve.client.core import Batch, Job, Results, next_batch, set_request_timeout
from clipserve.client.errors_map import from_error_name
from clipserve.client.failures import is_request_level
from clipserve.client.fetch import ImageFetcher
from clipserve.client.response import Response
from clipserve.client.retry import RetryPolicy, is_transient
from clipserve.client.shrink import shrink_request
from clipserve.client.transports import Transport
from clipserve.errors import (
    AuthenticationError,
    ClientTimeoutError,
    OverloadedError,
    PartialFailureError,
    RateLimitedError,
    RemoteError,
    ServerUnavailableError,
)
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto
from clipserve.wire.messages import retry_after_of

if TYPE_CHECKING:  # rich is imported only when a progress bar is asked for
    from clipserve.client.progress import ProgressReporter

Callback = Callable[[Response], Any]


@dataclass(frozen=True)
class _Resend:
    """A refused batch whose retry-after has passed: send it again on this stream."""

    batch: Batch


class Pipeline:
    def __init__(
        self,
        job: Job,
        transport: Transport,
        *,
        prefetch: int,
        timeout: float | None,
        retry: RetryPolicy,
        fetch_timeout: float,
        image_max_side: int | None = None,
        progress: ProgressReporter | None = None,
        on_done: Callback | None = None,
        on_error: Callback | None = None,
        on_always: Callback | None = None,
    ) -> None:
        self.job = job
        self.transport = transport
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self.retry = retry
        self.progress = progress
        self.image_max_side = image_max_side
        self.on_done, self.on_error, self.on_always = on_done, on_error, on_always
        self.results = Results(job.kind, job.endpoint, job.collect, job.selector)
        self._fetcher = ImageFetcher(fetch_timeout)
        self._ready: asyncio.Queue[Batch | _Resend | None] = asyncio.Queue()
        self._window = asyncio.Semaphore(self.prefetch)
        self._unanswered: dict[str, Batch] = {}
        #: refusals of each batch since the last reply that made progress
        self._refusals: dict[str, int] = {}
        self._resend_timers: dict[str, asyncio.TimerHandle] = {}
        self._end_seen = False
        self._replies = 0
        self._last_event = time.monotonic()

    async def run(self) -> Any:
        producer = asyncio.create_task(self._produce())
        attempt = 0
        try:
            while True:
                replies_before = self._replies
                try:
                    await self._attempt(producer)
                    break
                except Exception as exc:
                    if not is_transient(exc) or producer.done() and producer.exception():
                        raise
                    attempt = 1 if self._replies > replies_before else attempt + 1
                    if attempt > self.retry.retries:
                        raise
                    hint = exc.retry_after if isinstance(exc, OverloadedError) else None
                    await asyncio.sleep(max(self.retry.delay(attempt), hint or 0.0))
        finally:
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer
            await self._fetcher.aclose()
        return self._finish()

    def _finish(self) -> Any:
        results = self.results
        value = results.finish()
        if results.failures and self.on_error is None:
            names = ", ".join(f"{k}: {v}" for k, v in list(results.failures.items())[:5])
            more = len(results.failures) - 5
            summary = f"{len(results.failures)} document(s) failed on the server ({names}"
            summary += f", and {more} more)" if more > 0 else ")"
            if results.succeeded:
                raise PartialFailureError(summary, dict(results.failures), value)
            raise RemoteError(summary, dict(results.failures))
        return value

    async def _produce(self) -> None:
        index = start = 0
        while True:
            await self._window.acquire()
            batch = await asyncio.to_thread(next_batch, self.job, index, start)
            if batch is None:
                break
            if batch.pending:
                await self._fetcher.fill(batch.pending)
            if self.image_max_side is not None:
                await asyncio.to_thread(shrink_request, batch.request, self.image_max_side)
            index += 1
            start += len(batch.ids)
            set_request_timeout(batch.request, self.timeout)
            await self._ready.put(batch)
        await self._ready.put(None)

    async def _attempt(self, producer: asyncio.Task[None]) -> None:
        self._last_event = time.monotonic()
        consumer = asyncio.create_task(self._consume())
        watchdog = asyncio.create_task(self._watch()) if self.timeout else None
        waiting: set[asyncio.Task[Any]] = {consumer} | ({watchdog} if watchdog else set())
        if not producer.done():
            waiting.add(producer)
        try:
            while True:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if consumer in done:
                    return consumer.result()
                if producer in done:
                    producer.result()  # raises the input error, if any
                    waiting.discard(producer)
                if watchdog is not None and watchdog in done:
                    watchdog.result()
        finally:
            for timer in self._resend_timers.values():  # the next attempt resends them all
                timer.cancel()
            self._resend_timers.clear()
            for task in (consumer, watchdog):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _requests(self) -> AsyncIterator[DataRequestProto]:
        for batch in list(self._unanswered.values()):
            yield batch.request  # resend after a failed attempt
        while not (self._end_seen and not self._unanswered):
            item = await self._ready.get()
            if item is None:
                self._end_seen = True
            elif isinstance(item, _Resend):
                if item.batch.request_id in self._unanswered:
                    yield item.batch.request
            else:
                if not self._unanswered:
                    self._last_event = time.monotonic()
                self._unanswered[item.request_id] = item
                yield item.request

    async def _consume(self) -> None:
        async with contextlib.aclosing(self.transport.stream(self._requests())) as replies:
            async for reply in replies:
                batch = self._batch_of(reply)
                if batch is None:
                    continue  # a late duplicate of an answered batch, or an unknown id
                self._last_event = time.monotonic()
                if self._resend_later(batch, reply):
                    continue
                self._raise_request_error(reply)
                del self._unanswered[batch.request_id]
                self._refusals.clear()  # progress: refusals count again from zero
                self._window.release()
                self._replies += 1
                self._deliver(batch, reply)
                if self._end_seen and not self._unanswered:
                    return
        if not (self._end_seen and not self._unanswered):
            raise ServerUnavailableError(
                f"{self.transport.options.address.url} ended the stream with "
                f"{len(self._unanswered)} request(s) unanswered"
            )

    def _batch_of(self, reply: DataRequestProto) -> Batch | None:
        """By request id; failing that (a gateway that renames requests), by the id of the
        reply's first document, which is unique among the unanswered batches' first ids."""
        batch = self._unanswered.get(reply.header.request_id)
        if batch is None and reply.data.docs.docs:
            first = reply.data.docs.docs[0].id
            candidates = [b for b in self._unanswered.values() if b.ids and b.ids[0] == first]
            batch = candidates[0] if len(candidates) == 1 else None
        return batch

    def _resend_later(self, batch: Batch, reply: DataRequestProto) -> bool:
        """A rate-limit refusal of ``batch``: send it again after the server's hint (the
        retries allowing), on this stream. Raises ``RateLimitedError`` when they do not."""
        status = reply.header.status
        if status.exception.name != "RateLimitedError" or not is_request_level(reply):
            return False
        hint = retry_after_of(reply)
        refusals = self._refusals[batch.request_id] = self._refusals.get(batch.request_id, 0) + 1
        if refusals > self.retry.retries:
            url = self.transport.options.address.url
            raise RateLimitedError(f"{url}: {status.description}", retry_after=hint)
        delay = hint if hint is not None else self.retry.delay(refusals)
        loop = asyncio.get_running_loop()
        self._resend_timers[batch.request_id] = loop.call_later(
            delay, self._ready.put_nowait, _Resend(batch)
        )
        return True

    def _raise_request_error(self, reply: DataRequestProto) -> None:
        """A reply refusing the whole request: transient (retried), auth, or anything else
        request-level (bad endpoint, bad parameters...), which fails the call at once."""
        if not is_request_level(reply):
            return
        status = reply.header.status
        url = self.transport.options.address.url
        message = f"{url}: {status.description or status.exception.name or 'request refused'}"
        kind = from_error_name(status.exception.name) or RemoteError
        if is_transient(kind("")) or kind is AuthenticationError or self.on_error is None:
            error = kind(message)
            if isinstance(error, OverloadedError):
                error.retry_after = retry_after_of(reply)
            raise error

    def _deliver(self, batch: Batch, reply: DataRequestProto) -> None:
        failures = self.results.accept(batch, reply)
        if self.progress is not None:
            self.progress.advance(len(batch.ids))
        callbacks = (self.on_error if failures else self.on_done), self.on_always
        if any(callbacks):
            response = Response(reply, batch, failures)
            for callback in callbacks:
                if callback is not None:
                    callback(response)

    async def _watch(self) -> None:
        """For a server that says nothing at all: the server is told each request's
        deadline and answers DeadlineExceeded at it, so this waits a little longer
        (``timeout`` plus a tenth, at least 1 s) before giving up itself."""
        assert self.timeout is not None
        limit = self.timeout + max(1.0, self.timeout / 10)
        while True:
            await asyncio.sleep(min(1.0, self.timeout / 4))
            idle = time.monotonic() - self._last_event
            if self._unanswered and idle > limit:
                raise ClientTimeoutError(
                    f"{self.transport.options.address.url}: no reply for {self.timeout:g}s "
                    f"with {len(self._unanswered)} request(s) in flight"
                )
