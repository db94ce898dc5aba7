"""Property-based fuzzing of the decoding paths a client can reach.

Whatever bytes arrive, decoding either succeeds or raises ``InvalidInputError`` (which the
front-ends turn into a clear 400 / INVALID_ARGUMENT); any other exception would be a 500 or
a dropped stream. Example counts are bounded so the module runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from clipserve.errors import InvalidInputError
from clipserve.wire import DataRequestProto
from clipserve.wire.json_codec import loads, request_from_json, request_to_json
from clipserve.wire.messages import doc_kind, endpoint_of, new_request, parameters_of
from clipserve.wire.ndarray import read_ndarray

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# lone surrogates ("\ud800") are valid JSON escapes but cannot be encoded as UTF-8
_any_text = st.text(st.characters(exclude_categories=()), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)  # beyond float range
    | st.floats(allow_nan=True, allow_infinity=True)
    | _any_text
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_any_text, children, max_size=4)
    ),
    max_leaves=20,
)
_doc_keys = st.sampled_from(
    ["id", "text", "blob", "tensor", "uri", "mimeType", "mime_type", "modality", "tags",
     "matches", "chunks", "embedding", "parentId", "weight", "scores", "_metadata", "bogus"]
)  # fmt: skip
_base64_text = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
_nested_numbers = st.recursive(
    st.integers(-300, 300) | st.floats(allow_nan=True),
    lambda children: st.lists(children, min_size=1, max_size=3),
    max_leaves=24,
)
_doc_values = json_values | _base64_text | _nested_numbers
documents = st.dictionaries(_doc_keys, _doc_values, max_size=6) | _any_text
requests = st.fixed_dictionaries(
    {},
    optional={
        "data": st.lists(documents, max_size=4) | json_values,
        "parameters": json_values,
        "execEndpoint": json_values,
        "exec_endpoint": st.sampled_from(["/", "/encode", "/rank", "/nope", "encode/x"]),
        "header": st.dictionaries(st.sampled_from(["requestId", "execEndpoint", "x"]), json_values),
        "unknown": json_values,
    },
)


def _use(request: DataRequestProto) -> None:
    """What the server does next with a parsed request: only InvalidInputError may come out."""
    endpoint_of(request)
    parameters_of(request)
    for doc in request.data.docs.docs:
        doc_kind(doc)
        for array, what in ((doc.tensor, "tensor"), (doc.embedding, "embedding")):
            with contextlib.suppress(InvalidInputError):
                read_ndarray(array, what)
    with contextlib.suppress(InvalidInputError):
        request_to_json(request)


#: how each front-end parses a body, and the one error that parse may raise (the
#: front-ends map exactly it to an ERROR reply / INVALID_ARGUMENT / 400)
_PARSERS: dict[str, tuple[Callable[[bytes], DataRequestProto], type[Exception]]] = {
    "json": (lambda body: request_from_json(loads(body)), InvalidInputError),
    "protobuf": (DataRequestProto.FromString, DecodeError),
}


def _decode(body: bytes, form: str) -> None:
    parse, refusal = _PARSERS[form]
    try:
        request = parse(body)
    except refusal:
        return
    _use(request)


def _decode_json(body: bytes) -> None:
    _decode(body, "json")


def _decode_proto(body: bytes) -> None:
    _decode(body, "protobuf")


@pytest.mark.parametrize("form", sorted(_PARSERS))
@FUZZ
@given(body=st.binary(max_size=512))
def test_either_path_on_arbitrary_bytes(form: str, body: bytes) -> None:
    _decode(body, form)


@FUZZ
@given(json_values)
def test_json_path_on_arbitrary_json(value: Any) -> None:
    _decode_json(json.dumps(value).encode())


def test_json_integer_too_long_to_convert() -> None:
    """Python refuses int literals above 4300 digits with ValueError, not a JSON error."""
    _decode_json(b'{"parameters": {"n": 1' + b"0" * 5000 + b"}}")


@FUZZ
@given(requests)
def test_json_path_on_request_shaped_bodies(body: dict[str, Any]) -> None:
    _decode_json(json.dumps(body).encode())


@FUZZ
@given(requests, st.data())
def test_json_path_on_mutated_bodies(body: dict[str, Any], data: st.DataObject) -> None:
    """Valid-looking text with bytes flipped, cut or inserted: broken UTF-8, broken JSON."""
    raw = bytearray(json.dumps(body).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    _decode_json(bytes(raw))


@FUZZ
@given(requests, st.data())
def test_protobuf_path_on_mutated_messages(body: dict[str, Any], data: st.DataObject) -> None:
    """Serialized valid requests with bytes changed: wrong lengths, wrong wire types, ..."""
    try:
        request = request_from_json(body)
    except InvalidInputError:
        request = new_request([])
    raw = bytearray(request.SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    _decode_proto(bytes(raw))


_dtypes = st.sampled_from(["<f4", "<f8", "<f2", "|u1", "<i8", ">f16", "|b1", "O", "<U4", "<M8"])


@FUZZ
@given(
    st.lists(st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 3, 2**31]), max_size=4),
    _dtypes | _any_text,
    st.binary(max_size=64),
)
def test_tensor_arrays_with_any_shape_dtype_and_buffer(
    shape: list[int], dtype: str, buffer: bytes
) -> None:
    """Shapes whose product overflows 64 bits, unknown dtypes, short buffers: all refused."""
    request = new_request([])
    doc = request.data.docs.docs.add(id="d")
    doc.tensor.dense.shape.extend(shape)
    try:
        doc.tensor.dense.dtype = dtype
    except ValueError:
        return  # protobuf itself refuses a string that is not valid UTF-8
    doc.tensor.dense.buffer = buffer
    _decode_proto(request.SerializeToString())


# --- the service's validation path (real engine, hash model) --------------------------------


@pytest.fixture(scope="module")
def service_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    from clipserve.engine import Engine
    from clipserve.engine.metrics import Metrics
    from clipserve.models.hashing import HashModel
    from clipserve.server.service import EmbeddingService

    loop = asyncio.new_event_loop()
    metrics = Metrics(CollectorRegistry())
    engine = Engine(HashModel(), max_wait_ms=0.0, metrics=metrics)
    loop.run_until_complete(engine.start())
    service = EmbeddingService(engine, model_name="hash")
    yield loop, service
    loop.run_until_complete(engine.stop(drain_timeout=2.0))
    loop.close()


@settings(FUZZ, max_examples=150)
@given(requests, st.data())
def test_service_handles_any_decodable_request(
    service_loop: tuple[asyncio.AbstractEventLoop, Any], body: dict[str, Any], data: st.DataObject
) -> None:
    """Whatever parses is either answered (one reply document per request document) or
    refused with ``InvalidInputError``; per-document problems never escape as exceptions."""
    loop, service = service_loop
    try:
        request = request_from_json(body)
    except InvalidInputError:
        return
    if data.draw(st.booleans()):  # also through the binary form, bytes mutated
        raw = bytearray(request.SerializeToString())
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        try:
            request = DataRequestProto.FromString(bytes(raw))
        except DecodeError:
            return
    count = len(request.data.docs.docs)
    try:
        reply = loop.run_until_complete(service.handle(request)).reply
    except InvalidInputError:
        return
    assert len(reply.data.docs.docs) == count


@pytest.mark.parametrize("shape", [[2**28, 0], [0, 2**31], [2**31, 0, 3], [70000, 0]])
def test_zero_sized_tensors_with_huge_dimensions_are_refused(shape: list[int]) -> None:
    """Found by the fuzzer: no bytes at all, yet echoing [2**28, 0] as JSON built 2**28
    lists (gigabytes) in the server."""
    request = new_request([])
    doc = request.data.docs.docs.add(id="z")
    doc.tensor.dense.shape.extend(shape)
    doc.tensor.dense.dtype = "<f4"
    with pytest.raises(InvalidInputError, match="too large"):
        read_ndarray(doc.tensor)
    assert request_to_json(request)["data"][0]["tensor"] is None
