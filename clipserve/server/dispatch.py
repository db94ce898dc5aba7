"""What every front-end does with one request, written once: parse bytes, hand the request
to ``EmbeddingService.handle``, count it in the metrics, and turn request-level errors into
an ERROR reply where the protocol answers them in band (see ``errors_map``)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from clipserve.errors import ClipServeError, InvalidInputError
from clipserve.server.errors_map import error_name, public_message
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, HeaderProto
from clipserve.wire.messages import ENDPOINTS, endpoint_of, set_error

log = logging.getLogger("clipserve.server")


class Service(Protocol):
    async def handle(self, request: DataRequestProto, protocol: str) -> DataRequestProto: ...


class Dispatcher:
    """Runs requests through the service. The service counts requests and documents in
    ``clipserve_requests``/``clipserve_documents``; this adds the latency histogram and
    counts the requests refused before they reach the service (malformed, unauthenticated)."""

    def __init__(self, service: Service, metrics: Any) -> None:
        self.service = service
        self.metrics = metrics

    async def answer(self, request: DataRequestProto, protocol: str) -> DataRequestProto:
        """The reply for ``request``; request-level errors propagate to the front-end."""
        if not request.header.request_id:
            request.header.request_id = uuid.uuid4().hex
        endpoint = _endpoint_label(request)
        started = time.perf_counter()
        try:
            return await self.service.handle(request, protocol)
        except Exception as exc:
            if not isinstance(exc, ClipServeError):
                log.exception("request %s failed", request.header.request_id)
            raise
        finally:
            if self.metrics is not None:
                elapsed = time.perf_counter() - started
                self.metrics.request_latency.labels(protocol, endpoint).observe(elapsed)

    def rejected(self, protocol: str, exc: BaseException, endpoint: str = "other") -> None:
        """Count a request refused before the service saw it."""
        if self.metrics is not None:
            self.metrics.requests.labels(protocol, endpoint, _status_label(exc)).inc()


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


def _status_label(exc: BaseException) -> str:
    name = error_name(exc) if isinstance(exc, Exception) else "cancelled"
    return {
        "OverloadedError": "overloaded",
        "AuthenticationError": "unauthenticated",
        "InvalidInputError": "invalid",
        "InputRefusedError": "refused",
    }.get(name, "error" if name != "cancelled" else name)
