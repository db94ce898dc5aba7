"""Building and reading ``DataRequestProto`` messages: the parts every front-end and the
client share (what a document holds, errors, routes with timings)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from google.protobuf import json_format

from clipserve.wire.clipserve_wire_pb2 import (
    DataRequestProto,
    DocumentProto,
    RouteProto,
    StatusProto,
)

DocKind = Literal["text", "image", "empty"]

#: the endpoints a clipserve server answers (``exec_endpoint`` without a ``/<model>`` suffix;
#: ``/`` is what clip-client's ``profile()`` calls)
ENDPOINTS = ("/encode", "/rank", "/")
#: the OpenAI-compatible HTTP route; the request metrics label it like an endpoint
OPENAI_ENDPOINT = "/v1/embeddings"


def doc_kind(doc: DocumentProto) -> DocKind:
    """What a document asks to encode: text, image (blob, tensor or uri), or nothing."""
    content = doc.WhichOneof("content")
    if content == "text":
        return "text" if doc.text else ("image" if doc.uri else "empty")
    if content in ("blob", "tensor"):
        return "image"
    return "image" if doc.uri else "empty"


def new_request(
    docs: Iterable[DocumentProto],
    endpoint: str = "/encode",
    parameters: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> DataRequestProto:
    request = DataRequestProto()
    request.header.request_id = request_id or uuid.uuid4().hex
    request.header.exec_endpoint = endpoint
    if parameters:
        request.parameters.update(dict(parameters))
    request.data.docs.docs.extend(docs)
    return request


def parameters_of(request: DataRequestProto) -> dict[str, Any]:
    return json_format.MessageToDict(request.parameters) if request.HasField("parameters") else {}


def parameters_named(request: DataRequestProto, names: Iterable[str]) -> dict[str, Any]:
    """``parameters_of`` restricted to ``names`` (in the request's order), converting only
    those values: the cheap way to read the few parameters a server acts on."""
    if not request.HasField("parameters"):
        return {}
    fields = request.parameters.fields
    wanted = set(names)
    return {key: json_format.MessageToDict(fields[key]) for key in fields if key in wanted}


def endpoint_of(request: DataRequestProto) -> str:
    """The endpoint without a ``/<model_name>`` suffix (``/encode/ViT-B-32`` -> ``/encode``)."""
    endpoint = request.header.exec_endpoint if request.header.HasField("exec_endpoint") else "/"
    endpoint = endpoint or "/"
    if not endpoint.startswith("/"):
        endpoint = "/" + endpoint
    head = "/" + endpoint.strip("/").split("/", 1)[0] if endpoint != "/" else "/"
    return head


def set_error(request: DataRequestProto, description: str, name: str = "ClipServeError") -> None:
    status = request.header.status
    status.code = StatusProto.ERROR
    status.description = description
    status.exception.name = name
    del status.exception.args[:]
    status.exception.args.append(description)
    status.exception.executor = "clipserve"


#: an ``exception.args`` entry of an ERROR reply: seconds to wait before sending it again
RETRY_AFTER_ARG = "retry_after_s="


def set_retry_after(reply: DataRequestProto, seconds: float) -> None:
    reply.header.status.exception.args.append(f"{RETRY_AFTER_ARG}{seconds:.3f}")


def retry_after_of(reply: DataRequestProto) -> float | None:
    """The retry-after hint of an ERROR reply (``set_retry_after``), if it has one."""
    for arg in reply.header.status.exception.args:
        if arg.startswith(RETRY_AFTER_ARG):
            try:
                return max(0.0, float(arg[len(RETRY_AFTER_ARG) :]))
            except ValueError:
                return None
    return None


def is_error(request: DataRequestProto) -> bool:
    return request.header.status.code == StatusProto.ERROR


def add_route(request: DataRequestProto, executor: str, start_ns: int, end_ns: int) -> RouteProto:
    """Append a route. Routes are at least 1 ms wide: clip-client divides by their width."""
    end_ns = max(end_ns, start_ns + 1_000_000)
    route = request.routes.add(executor=executor)
    route.start_time.FromNanoseconds(start_ns)
    route.end_time.FromNanoseconds(end_ns)
    return route


def now_ns() -> int:
    return time.time_ns()
