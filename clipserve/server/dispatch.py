"""What every front-end does with one request, written once: parse bytes, hand the request
to ``EmbeddingService.handle`` (or an OpenAI body to ``openai_embeddings``) under the
caller's deadline, count it in the metrics, write its access-log line (``logs.access``,
when switched on), and turn request-level errors into an ERROR reply where the protocol
answers them in band. What an error means on each protocol is the table in ``errors_map``.

Deadlines: a ``Caller`` carries the deadline its front-end knows (a gRPC call's deadline, an
HTTP ``X-Request-Timeout`` header); a request's own ``header.timeout`` (milliseconds, from
its arrival) may shorten it. Work still unanswered at the deadline is cancelled (its queued
items are dropped before any forward pass) and the request fails with
``DeadlineExceededError``, counted with status ``expired``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from google.protobuf.message import DecodeError

from clipserve.engine.deadline import deadline_scope, earliest, expired
from clipserve.engine.metrics import METRICS, Metrics
from clipserve.errors import ClipServeError, DeadlineExceededError, InvalidInputError
from clipserve.server import logs, openai_embeddings
from clipserve.server.errors_map import (
    error_name,
    in_band,
    metric_label,
    public_message,
    retry_after,
)
from clipserve.server.service import Answer, EmbeddingService, count_documents
from clipserve.server.tenants import Tenant
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, HeaderProto
from clipserve.wire.messages import (
    ENDPOINTS,
    OPENAI_ENDPOINT,
    endpoint_of,
    set_error,
    set_retry_after,
)

log = logging.getLogger("clipserve.server")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who sent a request, as its front-end knows it: the tenant its token names (None:
    not checked here), the deadline after which it cannot use the answer
    (``time.monotonic()``; None: none), when the request arrived, and the peer's address
    (only for the access log)."""

    tenant: Tenant | None = None
    deadline: float | None = None
    arrival: float = field(default_factory=time.monotonic)
    client: str = ""

    @property
    def tenant_name(self) -> str | None:
        return self.tenant.name if self.tenant is not None else None


def request_deadline(request: DataRequestProto, caller: Caller) -> float | None:
    """The caller's deadline, shortened by the request's ``header.timeout`` (ms)."""
    own = None
    if request.header.HasField("timeout") and request.header.timeout > 0:
        own = caller.arrival + request.header.timeout / 1000.0
    return earliest(caller.deadline, own)


class _Labels(NamedTuple):
    protocol: str
    endpoint: str
    caller: Caller


class Dispatcher:
    """Runs every request through the service and counts it, whatever its front-end:
    ``clipserve_requests`` (``ok``, ``partial``, ``cancelled`` or the error's label from
    ``errors_map``), ``clipserve_documents`` and the latency histogram, labelled by protocol
    and endpoint (``/encode``, ``/rank``, ``/``, ``/v1/embeddings``, else ``other``), and
    per tenant ``clipserve_tenant_requests`` / ``clipserve_tenant_documents``. A tenant's
    rate limit is applied here, before any work (``Tenant.admit``)."""

    def __init__(self, service: EmbeddingService, metrics: Metrics = METRICS) -> None:
        self.service = service
        self.metrics = metrics

    async def answer(
        self, request: DataRequestProto, protocol: str, caller: Caller | None = None
    ) -> DataRequestProto:
        """The reply for ``request``; request-level errors propagate to the front-end."""
        caller = caller or Caller()
        if not request.header.request_id:
            request.header.request_id = uuid.uuid4().hex
        labels = _Labels(protocol, _endpoint_label(request), caller)
        answer = await self._counted(
            labels,
            count_documents(request),
            lambda: self.service.handle(request),
            _documents_of,
            request_deadline(request, caller),
        )
        return answer.reply

    async def answer_openai(
        self, body: Any, protocol: str = "http", caller: Caller | None = None
    ) -> dict[str, Any]:
        """The reply to an OpenAI-style ``/v1/embeddings`` body (see ``openai_embeddings``)."""
        caller = caller or Caller()
        labels = _Labels(protocol, OPENAI_ENDPOINT, caller)
        inputs = body.get("input") if isinstance(body, dict) else None
        documents = len(inputs) if isinstance(inputs, list) else 1
        return await self._counted(
            labels,
            documents,
            lambda: openai_embeddings.embed(self.service, body),
            _embeddings_in,
            caller.deadline,
        )

    async def reply_for(
        self, data: bytes, protocol: str, caller: Caller | None = None
    ) -> DataRequestProto:
        """Parse and answer one serialized request. Errors ``protocol`` answers in band
        become an ERROR reply; the others raise, for the front-end to end the call or close
        the connection; so does a malformed message without a request id to answer."""
        try:
            request = parse_request(data)
        except InvalidInputError as exc:
            self.rejected(protocol, exc, caller=caller)
            request_id = getattr(exc, "request_id", None)
            if request_id is None:  # nothing the client could match a reply to
                raise
            return error_reply(request_id, exc)
        try:
            return await self.answer(request, protocol, caller)
        except Exception as exc:
            if in_band(exc, protocol):
                return error_reply(request, exc)
            raise

    def rejected(
        self,
        protocol: str,
        exc: BaseException,
        endpoint: str = "other",
        caller: Caller | None = None,
    ) -> None:
        """Count (and access-log) a request refused before the service saw it."""
        labels = _Labels(protocol, endpoint, caller or Caller())
        self._record(labels, metric_label(exc), 0, None)

    async def _counted(
        self,
        labels: _Labels,
        asked: int,
        work: Callable[[], Awaitable[T]],
        documents: Callable[[T], tuple[int, int]],
        deadline: float | None,
    ) -> T:
        """Admit ``asked`` documents under the caller's rate limit, await ``work()`` until
        ``deadline`` and count it: one request with its status, its documents
        (``documents(result)`` gives how many were answered and how many of them failed)
        and its latency."""
        protocol, endpoint, caller = labels
        started = time.perf_counter()
        try:
            if caller.tenant is not None:
                caller.tenant.admit(asked)
            result = await _before(deadline, work())
        except BaseException as exc:
            elapsed = time.perf_counter() - started
            if isinstance(exc, Exception) and not isinstance(exc, ClipServeError):
                log.exception("%s request to %s failed", protocol, endpoint)
            if not isinstance(exc, Exception) and expired(deadline):
                exc = DeadlineExceededError("cancelled at its deadline")  # counted expired
            self._record(labels, metric_label(exc), 0, elapsed)
            raise
        elapsed = time.perf_counter() - started
        total, failed = documents(result)
        status = "partial" if failed else "ok"
        self._record(labels, status, total, elapsed)
        self.metrics.documents.labels(protocol, endpoint, "ok").inc(total - failed)
        if failed:
            self.metrics.documents.labels(protocol, endpoint, "error").inc(failed)
        if caller.tenant is not None:
            self.metrics.tenant_documents.labels(caller.tenant.name).inc(total)
        return result

    def _record(self, labels: _Labels, status: str, documents: int, elapsed: float | None) -> None:
        """Count one request (per protocol and endpoint, and per tenant) and access-log it."""
        protocol, endpoint, caller = labels
        self.metrics.requests.labels(protocol, endpoint, status).inc()
        if elapsed is not None:
            self.metrics.request_latency.labels(protocol, endpoint).observe(elapsed)
        tenant = caller.tenant_name
        if tenant is not None:
            self.metrics.tenant_requests.labels(tenant, status).inc()
        if logs.ACCESS.isEnabledFor(logging.INFO):
            logs.access(protocol, endpoint, status, documents, elapsed, caller.client, tenant)


async def _before(deadline: float | None, work: Awaitable[T]) -> T:
    """``work``'s result, unless ``deadline`` passes first: then ``work`` is cancelled
    (its queued engine items are dropped) and ``DeadlineExceededError`` raised. The
    engine reads the deadline too (``deadline_scope``), so work it has not started is
    dropped there as soon as the deadline passes."""
    with deadline_scope(deadline):
        if deadline is None:
            return await work
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if asyncio.iscoroutine(work):
                work.close()
            raise DeadlineExceededError(
                "the caller's deadline had passed when the request arrived; it was dropped"
            )
        try:
            return await asyncio.wait_for(work, remaining)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if not expired(deadline):
                raise
            raise DeadlineExceededError(
                "the caller's deadline passed before the request was answered; its work was dropped"
            ) from exc


def error_reply(source: DataRequestProto | str | None, exc: BaseException) -> DataRequestProto:
    """An ERROR reply for a request (or a bare request id) that could not be answered."""
    reply = DataRequestProto()
    if isinstance(source, DataRequestProto):
        reply.header.request_id = source.header.request_id
        if source.header.HasField("exec_endpoint"):
            reply.header.exec_endpoint = source.header.exec_endpoint
    elif source:
        reply.header.request_id = source
    set_error(reply, public_message(exc), error_name(exc))
    seconds = retry_after(exc)
    if seconds is not None:
        set_retry_after(reply, seconds)
    return reply


def parse_request(data: bytes) -> DataRequestProto:
    """Bytes -> request. A malformed message raises ``InvalidInputError`` whose ``doc_id``
    is None and whose ``request_id`` attribute holds the id if one could be recovered."""
    request = DataRequestProto()
    try:
        request.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        error = InvalidInputError(f"malformed DataRequestProto ({len(data)} bytes): {exc}")
        error.request_id = recover_request_id(data)  # type: ignore[attr-defined]
        raise error from exc
    return request


def recover_request_id(data: bytes) -> str | None:
    """Best effort: find field 1 (the header) of a damaged DataRequestProto and read its
    request id, so the error reply can still be matched by the client."""
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                if number == 1:
                    header = HeaderProto()
                    header.ParseFromString(data[pos : pos + length])
                    return header.request_id or None
                pos += length
            else:
                return None
    except (DecodeError, ValueError, IndexError):
        return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _endpoint_label(request: DataRequestProto) -> str:
    endpoint = endpoint_of(request)
    return endpoint if endpoint in ENDPOINTS else "other"


def _documents_of(answer: Answer) -> tuple[int, int]:
    return answer.documents, answer.failed


def _embeddings_in(reply: dict[str, Any]) -> tuple[int, int]:
    return len(reply["data"]), 0
