"""jina's HTTP JSON form on the client side (no I/O): the body clip-client posts, and the
reply read back (header status, routes with RFC 3339 times, documents with scores)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from clipserve.errors import RemoteError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, DocumentProto, StatusProto
from clipserve.wire.json_codec import doc_from_json, doc_to_json, snake


def request_to_json_body(request: DataRequestProto) -> dict[str, Any]:
    """The body clip-client sends: header, parameters, data (every docarray field) and
    ``exec_endpoint`` repeated at the top level."""
    endpoint = request.header.exec_endpoint
    return {
        "header": {"request_id": request.header.request_id, "exec_endpoint": endpoint},
        "parameters": json_format.MessageToDict(request.parameters),
        "data": [doc_to_json(doc) for doc in request.data.docs.docs],
        "exec_endpoint": endpoint,
    }


def reply_from_json(body: Mapping[str, Any]) -> DataRequestProto:
    """A jina JSON reply -> ``DataRequestProto``; unknown keys are ignored (be lenient)."""
    reply = DataRequestProto()
    header = _snake_keys(body.get("header") or {})
    reply.header.request_id = str(header.get("request_id") or "")
    if header.get("exec_endpoint"):
        reply.header.exec_endpoint = str(header["exec_endpoint"])
    _read_status(header.get("status"), reply.header.status)
    parameters = body.get("parameters")
    if isinstance(parameters, Mapping):
        reply.parameters.update(dict(parameters))
    for route in body.get("routes") or ():
        route = _snake_keys(route)
        out = reply.routes.add(executor=str(route.get("executor") or ""))
        for name in ("start_time", "end_time"):
            if route.get(name):
                with contextlib.suppress(ValueError):  # unparsable: leave the time unset
                    getattr(out, name).FromJsonString(str(route[name]))
        _read_status(route.get("status"), out.status)
    data = body.get("data")
    if isinstance(data, Mapping):
        data = data.get("docs")
    for index, item in enumerate(data or ()):
        doc = reply.data.docs.docs.add()
        try:
            _read_doc(item, doc, f"data[{index}]")
        except ValueError as exc:
            raise RemoteError(f"unreadable document in HTTP reply: {exc}") from exc
    return reply


def _read_doc(item: Any, out: DocumentProto, where: str) -> None:
    doc_from_json(item, out, where)
    _copy_scores(item, out)


def _copy_scores(item: Any, out: DocumentProto) -> None:
    """``doc_from_json`` skips scores; copy them here, for matches too (rank replies)."""
    fields = _snake_keys(item)
    for name, score in (fields.get("scores") or {}).items():
        if isinstance(score, Mapping):
            score = _snake_keys(score)
            target = out.scores[name]
            target.value = float(score.get("value") or 0.0)
            for key in ("op_name", "description", "ref_id"):
                if score.get(key):
                    setattr(target, key, str(score[key]))
    for index, child in enumerate(fields.get("matches") or ()):
        if index < len(out.matches):
            _copy_scores(child, out.matches[index])


def _read_status(status: Any, out: StatusProto) -> None:
    if not isinstance(status, Mapping):
        return
    status = _snake_keys(status)
    code = status.get("code", 0)
    out.code = StatusProto.ERROR if code in (1, "ERROR", "1") else StatusProto.SUCCESS
    out.description = str(status.get("description") or "")
    exception = status.get("exception")
    if isinstance(exception, Mapping):
        exception = _snake_keys(exception)
        out.exception.name = str(exception.get("name") or "")
        out.exception.args.extend(str(a) for a in exception.get("args") or ())
        out.exception.executor = str(exception.get("executor") or "")


def _snake_keys(value: Any) -> dict[str, Any]:
    return {snake(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}
