"""The HTTP JSON form of requests and documents, both directions.

Accepts what clip-client (docarray ``to_dict``), the seed's curl examples and JavaScript
send: camelCase or snake_case keys, ``blob`` as base64 text (line breaks allowed, as
``$(base64 file)`` produces), ``tensor`` as nested lists, null for unused fields.
Produces the jina response shape clip-client parses: header/parameters/routes/data.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf import json_format

from clipserve.errors import InvalidInputError
from clipserve.wire.clipserve_wire_pb2 import DataRequestProto, DocumentProto, NdArrayProto
from clipserve.wire.ndarray import read_ndarray, write_ndarray

MAX_NESTING = 4  # matches of matches of ... deeper than this is refused
_CAMEL = re.compile(r"([a-z])([A-Z])")
_DOC_FIELDS = (
    "id", "parent_id", "granularity", "adjacency", "blob", "tensor", "mime_type", "text",
    "weight", "uri", "tags", "offset", "location", "embedding", "modality", "evaluations",
    "scores", "chunks", "matches",
)  # fmt: skip
_KNOWN_TOP = {"data", "header", "parameters", "exec_endpoint", "target_executor", "routes"}
_KNOWN_TOP |= {"request_id", "target", "execendpoint"}


def snake(key: str) -> str:
    return _CAMEL.sub(r"\1_\2", key).lower()


def loads(body: bytes | str) -> Any:
    """Parse JSON, allowing raw line breaks inside strings (curl with ``$(base64 f)``)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"request body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} col {exc.colno}"
        raise InvalidInputError(f"malformed JSON: {exc.msg} at {where}") from exc
    except RecursionError as exc:
        raise InvalidInputError("malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise InvalidInputError(f"malformed JSON: {exc}") from exc


def request_from_json(obj: Any, default_endpoint: str = "/") -> DataRequestProto:
    """A decoded JSON request body -> ``DataRequestProto``."""
    if not isinstance(obj, Mapping):
        raise InvalidInputError(f"request body must be a JSON object, got {type(obj).__name__}")
    top = {snake(k): v for k, v in obj.items()}
    unknown = sorted(set(top) - _KNOWN_TOP)
    if unknown:
        raise InvalidInputError(f"unknown request field(s): {', '.join(unknown)}")
    request = DataRequestProto()
    header = top.get("header") or {}
    if not isinstance(header, Mapping):
        raise InvalidInputError("'header' must be an object")
    header = {snake(k): v for k, v in header.items()}
    endpoint = top.get("exec_endpoint") or header.get("exec_endpoint") or default_endpoint
    request.header.exec_endpoint = _string(endpoint, "'execEndpoint'")
    request_id = header.get("request_id") or top.get("request_id")
    if request_id is not None:
        request.header.request_id = _string(request_id, "header.requestId")
    timeout = header.get("timeout")
    if timeout is not None:  # the request's deadline, ms from its arrival (jina's field)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 <= timeout < 2**32:
            raise InvalidInputError(
                f"header.timeout must be whole milliseconds (0 to 4294967295), got {timeout!r}"
            )
        request.header.timeout = timeout
    parameters = top.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, Mapping):
            raise InvalidInputError("'parameters' must be an object")
        try:
            request.parameters.update(dict(parameters))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(f"'parameters' cannot be represented: {exc}") from exc
    data = top.get("data")
    if isinstance(data, Mapping) and "docs" in data:
        data = data["docs"]
    if data is None:
        data = []
    if not isinstance(data, list):
        raise InvalidInputError("'data' must be a list of documents")
    docs = request.data.docs.docs
    for index, item in enumerate(data):
        doc_from_json(item, docs.add(), where=f"data[{index}]")
    return request


def doc_from_json(item: Any, out: DocumentProto, where: str = "document", depth: int = 0) -> None:
    """One document in docarray's dict shape; every field clipserve's proto holds but
    ``_metadata`` is read, so a document the server leaves alone comes back as sent."""
    if depth > MAX_NESTING:
        raise InvalidInputError(f"{where}: documents nested deeper than {MAX_NESTING} levels")
    if isinstance(item, str):  # a bare string in "data" is taken as a sentence
        out.text = _string(item, where)
        return
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"{where} must be an object, got {type(item).__name__}")
    fields = {snake(k): v for k, v in item.items() if v is not None}
    if "id" in fields:
        out.id = _string(fields["id"], f"{where}.id")
    where = f"document {out.id!r}" if out.id else where
    for name in ("text", "uri", "mime_type", "modality", "parent_id"):
        if name in fields:
            setattr(out, name, _string(fields[name], f"{where}.{name}"))
    if "blob" in fields:
        out.blob = _b64(fields["blob"], where)
    if "tensor" in fields:
        _array_from_json(fields["tensor"], out.tensor, f"{where}.tensor")
    if "embedding" in fields:
        _array_from_json(fields["embedding"], out.embedding, f"{where}.embedding")
    _numbers_from_json(fields, out, where)
    if "tags" in fields:
        if not isinstance(fields["tags"], Mapping):
            raise InvalidInputError(f"{where}.tags must be an object")
        try:
            out.tags.update(dict(fields["tags"]))
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidInputError(f"{where}.tags cannot be represented: {exc}") from exc
    for name in ("scores", "evaluations"):
        if name in fields:
            _scores_from_json(fields[name], getattr(out, name), f"{where}.{name}")
    for name in ("matches", "chunks"):
        children = fields.get(name)
        if children is None:
            continue
        if not isinstance(children, list):
            raise InvalidInputError(f"{where}.{name} must be a list")
        for index, child in enumerate(children):
            doc_from_json(child, getattr(out, name).add(), f"{where}.{name}[{index}]", depth + 1)


def request_to_json(request: DataRequestProto) -> dict[str, Any]:
    """``DataRequestProto`` -> the jina JSON shape (camelCase header, docs in ``data``)."""
    header = request.header
    out: dict[str, Any] = {
        "header": {
            "requestId": header.request_id,
            "status": {"code": int(header.status.code), "description": header.status.description},
            "execEndpoint": header.exec_endpoint,
            "targetExecutor": header.target_executor,
        },
        "parameters": json_format.MessageToDict(request.parameters),
        "routes": [
            {
                "executor": route.executor,
                "startTime": route.start_time.ToJsonString(),
                "endTime": route.end_time.ToJsonString(),
            }
            for route in request.routes
        ],
        "data": [doc_to_json(doc) for doc in request.data.docs.docs],
    }
    if header.status.code:
        exc = header.status.exception
        out["header"]["status"]["exception"] = {"name": exc.name, "args": list(exc.args)}
    return out


def doc_to_json(doc: DocumentProto) -> dict[str, Any]:
    """A document in docarray's dict shape: every field present, null where unused."""
    out: dict[str, Any] = dict.fromkeys(_DOC_FIELDS)
    out["id"] = doc.id
    content = doc.WhichOneof("content")
    if content == "text":
        out["text"] = doc.text
    elif content == "blob":
        out["blob"] = base64.b64encode(doc.blob).decode("ascii")
    elif content == "tensor":
        try:
            tensor = read_ndarray(doc.tensor)
        except InvalidInputError:  # an invalid input tensor echoed back: leave it out
            tensor = None
        out["tensor"] = None if tensor is None else tensor.tolist()
    for name in ("uri", "mime_type", "modality", "parent_id"):
        out[name] = getattr(doc, name) or None
    if doc.HasField("embedding"):
        embedding = read_ndarray(doc.embedding, "embedding")
        out["embedding"] = None if embedding is None else embedding.tolist()
    if doc.HasField("tags"):
        out["tags"] = json_format.MessageToDict(doc.tags)
    for name in ("granularity", "adjacency", "weight", "offset"):
        out[name] = getattr(doc, name) or None
    if doc.location:
        out["location"] = list(doc.location)
    for name in ("scores", "evaluations"):
        scores = getattr(doc, name)
        if scores:
            out[name] = {
                key: {"value": s.value, "op_name": s.op_name, "description": s.description,
                      "ref_id": s.ref_id}
                for key, s in scores.items()
            }  # fmt: skip
    if doc.matches:
        out["matches"] = [doc_to_json(m) for m in doc.matches]
    if doc.chunks:
        out["chunks"] = [doc_to_json(c) for c in doc.chunks]
    return out


def _numbers_from_json(fields: Mapping[str, Any], out: DocumentProto, where: str) -> None:
    """``granularity``/``adjacency`` (counts), ``weight``/``offset`` and ``location``: kept
    so that documents the server does not embed come back as they were sent."""
    for name in ("granularity", "adjacency"):
        if name in fields:
            value = fields[name]
            if not _is_int(value) or not 0 <= value < 2**32:
                raise InvalidInputError(f"{where}.{name} must be a count, got {value!r}")
            setattr(out, name, value)
    for name in ("weight", "offset"):
        if name in fields:
            setattr(out, name, _number(fields[name], f"{where}.{name}"))
    if "location" in fields:
        location = fields["location"]
        if not isinstance(location, list):
            raise InvalidInputError(f"{where}.location must be a list of numbers")
        out.location.extend(_number(v, f"{where}.location") for v in location)


def _scores_from_json(value: Any, out: Any, where: str) -> None:
    """``{"name": {"value", "op_name", "description", "ref_id"}}`` into a scores map."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{where} must be an object")
    for key, score in value.items():
        if not isinstance(score, Mapping):
            raise InvalidInputError(f"{where}[{key!r}] must be an object")
        fields = {snake(k): v for k, v in score.items() if v is not None}
        target = out[_string(key, where)]
        if "value" in fields:
            target.value = _number(fields["value"], f"{where}[{key!r}].value")
        for name in ("op_name", "description", "ref_id"):
            if name in fields:
                setattr(target, name, _string(fields[name], f"{where}[{key!r}].{name}"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, where: str) -> float:
    if _is_int(value) or isinstance(value, float):
        try:
            return float(value)
        except OverflowError:
            pass
    raise InvalidInputError(f"{where} must be a number, got {str(value)[:40]}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON allows lone surrogates ("\ud800"); UTF-8 doesn't
        raise InvalidInputError(f"{where} is not valid Unicode (position {exc.start})") from exc
    return value


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: blob must be base64 text, got {type(value).__name__}")
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{where}: blob is not valid base64 ({exc})") from exc


def _array_from_json(value: Any, out: NdArrayProto, where: str) -> None:
    if isinstance(value, Mapping):  # proto-JSON form {"dense": {"buffer", "shape", "dtype"}}
        try:
            json_format.ParseDict(dict(value), out)
        except json_format.ParseError as exc:
            raise InvalidInputError(f"{where}: invalid NdArray object ({exc})") from exc
        read_ndarray(out, where)  # validate now, with the document named
        return
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{where}: ragged or invalid nested list") from exc
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InvalidInputError(f"{where}: must be a non-empty nested list of numbers")
    if array.dtype.kind == "f":
        array = array.astype(np.float32)
    write_ndarray(array, out)
