"""Bad input over every protocol: a clear error naming the document and the reason, the
good documents of the same request still embedded, other clients unaffected, the server
still serving with bounded memory.

Policy under test (``clipserve.server.service``): a document that cannot be encoded fails
alone (reply status ERROR listing each failing id and reason, good documents carry their
embeddings); a request that cannot be read or is not allowed as a whole (malformed bytes,
docs_bytes, unknown endpoint, wrong parameter type, too many documents) is refused as a
whole: an ERROR reply on gRPC/WebSocket, a 4xx on HTTP. The real built-in model runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from clipserve.models.base import EmbeddingModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import DataRequestProto, DocumentProto
from clipserve.wire.messages import new_request
from clipserve.wire.ndarray import write_ndarray
from tests.reliability import samples
from tests.reliability.protocols import (
    PROTOCOLS,
    Answer,
    answer_from_http,
    grpc_stream,
    post,
    rss_bytes,
    send,
)

PROTOBUF = "application/x-protobuf"

CAT = "a photo of a cat"


@pytest.fixture(scope="module")
def server(builtin_model: EmbeddingModel) -> Iterator[RunningServer]:
    with running_server(loopback_config(model="builtin"), model=builtin_model) as running:
        yield running


@pytest.fixture(scope="module")
def references(builtin_model: EmbeddingModel) -> dict[str, np.ndarray]:
    return {
        "text": builtin_model.encode_texts([CAT])[0],
        "image": builtin_model.encode_images([samples.photo_jpeg()])[0],
    }


def tensor_doc(doc_id: str, array: np.ndarray) -> DocumentProto:
    doc = DocumentProto(id=doc_id)
    write_ndarray(array, doc.tensor)
    return doc


def object_dtype_tensor(doc_id: str) -> DocumentProto:
    doc = tensor_doc(doc_id, np.zeros((8, 8, 3), np.uint8))
    doc.tensor.dense.dtype = "|O"
    return doc


def nan_tensor(doc_id: str) -> DocumentProto:
    array = np.full((32, 32, 3), 0.5, np.float32)
    array[3, 3, 1] = np.nan
    return tensor_doc(doc_id, array)


def zero_size_tensor_bomb(doc_id: str) -> DocumentProto:
    """No bytes, but a shape of 2**31 x 0 x 3: echoing it as a JSON list once cost 2**31
    empty lists (the fuzzer found it)."""
    doc = DocumentProto(id=doc_id)
    doc.tensor.dense.shape.extend([2**31, 0, 3])
    doc.tensor.dense.dtype = "<f4"
    doc.tensor.cls_name = "numpy"
    return doc


@dataclass(frozen=True)
class BadDoc:
    make: Callable[[str], DocumentProto]
    reason: str  # regex the error must contain
    over_json: bool = True  # whether JSON can express it at all


def _blob(maker: Callable[[], bytes]) -> Callable[[str], DocumentProto]:
    return lambda doc_id: DocumentProto(id=doc_id, blob=maker())


BAD_DOCS = {
    "corrupt-bytes": BadDoc(_blob(samples.corrupt_bytes), "not a readable image"),
    "truncated-png": BadDoc(_blob(samples.truncated_png), "corrupt or truncated"),
    "truncated-jpeg": BadDoc(_blob(samples.truncated_jpeg), "corrupt or truncated"),
    "zero-byte-blob": BadDoc(_blob(lambda: b""), "empty"),
    "pdf": BadDoc(_blob(samples.pdf_bytes), "not a readable image"),
    "text-file": BadDoc(_blob(samples.text_file_bytes), "not a readable image"),
    "20000x20000": BadDoc(_blob(samples.huge_png), "400000000 pixels"),
    "decompression-bomb": BadDoc(_blob(samples.bomb_8bit_png), "144000000 pixels"),
    "tensor-CHW": BadDoc(
        lambda i: tensor_doc(i, np.zeros((3, 64, 64), np.float32)), r"\[H, W, C\]"
    ),
    "tensor-1d": BadDoc(lambda i: tensor_doc(i, np.zeros(12, np.float32)), r"\[H, W, C\]"),
    "tensor-NaN": BadDoc(nan_tensor, "NaN"),
    "tensor-object-dtype": BadDoc(object_dtype_tensor, "not numeric", over_json=False),
    "tensor-zero-size-bomb": BadDoc(zero_size_tensor_bomb, "too large", over_json=False),
    "empty-text": BadDoc(lambda i: DocumentProto(id=i, text=""), "no content"),
    "uri-metadata": BadDoc(
        lambda i: DocumentProto(id=i, uri="http://169.254.169.254/latest/meta-data/"),
        "cloud metadata service address",
    ),
    "uri-private": BadDoc(
        lambda i: DocumentProto(id=i, uri="http://10.0.0.1/a.jpg"), "10.0.0.1 is a private address"
    ),
    "uri-local-file": BadDoc(
        lambda i: DocumentProto(id=i, uri="file:///etc/passwd"), "does not read local files"
    ),
}

GOOD_ODD_DOCS: dict[str, Callable[[str], DocumentProto]] = {
    **{name: _blob(maker) for name, maker in samples.VALID_ODD_IMAGES.items()},
    "tensor-float64": lambda i: tensor_doc(i, samples.photo()[::4, ::4] / 255.0),
    "tensor-uint8": lambda i: tensor_doc(i, samples.photo()[::4, ::4].copy()),
    "1MB-sentence": lambda i: DocumentProto(id=i, text="lorem ipsum " * 87_382),
}


def mixed_request(bad: DocumentProto, request_id: str = "mixed") -> DataRequestProto:
    good_text = DocumentProto(id="good-text", text=CAT)
    good_image = DocumentProto(id="good-image", blob=samples.photo_jpeg())
    return new_request([good_text, bad, good_image], request_id=request_id)


def assert_good_docs_embedded(answer: Answer, references: dict[str, np.ndarray]) -> None:
    text, image = answer.embedding("good-text"), answer.embedding("good-image")
    assert text is not None and image is not None, answer
    np.testing.assert_allclose(text, references["text"], atol=1e-4)
    np.testing.assert_allclose(image, references["image"], atol=1e-4)


def json_ready(protocol: str, case: BadDoc) -> None:
    if protocol == "http-json" and not case.over_json:
        pytest.skip("JSON cannot carry this (no dtype field in a nested list)")


# --- documents that fail alone --------------------------------------------------------------


BAD_DOC_PARAMS = [
    pytest.param(case, protocol, id=f"{case}-{protocol}")
    for case in BAD_DOCS
    for protocol in PROTOCOLS
]


@pytest.mark.parametrize(("case", "protocol"), BAD_DOC_PARAMS)
async def test_bad_document_fails_alone(server, references, case: str, protocol: str) -> None:
    bad = BAD_DOCS[case]
    json_ready(protocol, bad)
    answer = await send(server, protocol, mixed_request(bad.make("bad-doc")))
    assert answer.failed, answer
    assert "'bad-doc'" in answer.message and re.search(bad.reason, answer.message), answer.message
    assert "1 of 3 documents failed" in answer.message
    assert answer.embedding("bad-doc") is None
    assert_good_docs_embedded(answer, references)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", list(GOOD_ODD_DOCS))
async def test_odd_but_valid_document_is_embedded(
    server, references, builtin_model, protocol: str, case: str
) -> None:
    doc = GOOD_ODD_DOCS[case]("odd")
    answer = await send(server, protocol, mixed_request(doc))
    assert not answer.failed, answer.message
    embedding = answer.embedding("odd")
    assert embedding is not None and embedding.shape == (builtin_model.dim,)
    assert np.isfinite(embedding).all()
    assert_good_docs_embedded(answer, references)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_duplicate_ids_are_answered_positionally(server, builtin_model, protocol):
    texts = ["a photo of a dog", "a diagram of a rocket", CAT]
    docs = [DocumentProto(id="same", text=text) for text in texts]
    answer = await send(server, protocol, new_request(docs))
    assert not answer.failed, answer.message
    assert [doc_id for doc_id, _ in answer.docs] == ["same"] * 3
    got = np.stack([embedding for _, embedding in answer.docs])
    np.testing.assert_allclose(got, builtin_model.encode_texts(texts), atol=1e-4)


# --- requests refused as a whole ------------------------------------------------------------


def refused_whole(answer: Answer, reason: str) -> None:
    assert answer.failed, answer
    assert re.search(reason, answer.message), answer.message
    assert all(embedding is None for _, embedding in answer.docs), "nothing may be embedded"
    if answer.protocol.startswith("http"):
        assert answer.code in (400, 413), answer.code


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_docs_bytes_is_refused_and_never_unpickled(server, protocol, tmp_path: Path):
    tripwire = tmp_path / "unpickled"
    request = new_request([], request_id="pickle")
    request.data.docs_bytes = samples.tripwire_pickle(str(tripwire))
    if protocol == "http-json":
        payload = base64.b64encode(request.data.docs_bytes).decode()
        body = json.dumps({"data": {"docs_bytes": payload}}).encode()
        answer = await send(server, protocol, body)
        refused_whole(answer, "'data' must be a list")
    else:
        refused_whole(await send(server, protocol, request), "docs_bytes")
    assert not tripwire.exists(), "the server unpickled docs_bytes"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_endpoint(server, protocol):
    request = new_request([DocumentProto(id="a", text=CAT)], endpoint="/search")
    refused_whole(await send(server, protocol, request), "unknown endpoint '/search'")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_wrongly_typed_parameter(server, protocol):
    request = new_request([DocumentProto(id="a", text=CAT)], parameters={"model_name": 7})
    refused_whole(await send(server, protocol, request), "'model_name' must be a str")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_unknown_parameters_are_ignored(server, references, protocol):
    request = new_request([DocumentProto(id="good-text", text=CAT)], parameters={"colour": 1})
    answer = await send(server, protocol, request)
    assert not answer.failed, answer.message
    np.testing.assert_allclose(answer.embedding("good-text"), references["text"], atol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_100000_documents_are_refused_before_any_work(server, protocol):
    docs = [DocumentProto(id=str(i), text="x") for i in range(100_000)]
    engine = server.server.engine
    encoded = engine.stats["text"].items
    answer = await send(server, protocol, new_request(docs))
    refused_whole(answer, "100000 documents, above the limit of 2048")
    assert engine.stats["text"].items == encoded  # nothing reached the model


@pytest.mark.parametrize("protocol", ["grpc", "http-proto", "websocket"])
async def test_malformed_protobuf(server, protocol):
    answer = await send(server, protocol, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert answer.failed and "malformed DataRequestProto" in answer.message, answer
    expected = {"grpc": "StatusCode.INVALID_ARGUMENT", "http-proto": "400", "websocket": "1007"}
    assert str(answer.code) == expected[protocol]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"data": [{"text": "caf\xe9"}]}', "not valid UTF-8"),
        (b'{"data": [{"text": "a"}', "malformed JSON"),
        (b'{"data": [{"id": "b64", "blob": "%%%not base64"}]}', "'b64'.*not valid base64"),
        (b'{"data": [{"id": "s", "text": "\\ud800"}]}', "not valid Unicode"),
        (b'{"data": [{"id": 5, "text": "a"}]}', "id must be a string"),
        (b'{"data": [], "colour": 1}', "unknown request field"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "malformed JSON"),
    ],
)
async def test_http_json_body_errors(server, body: bytes, reason: str):
    response = await post(server.urls["http"], body)
    assert response.status_code == 400
    assert re.search(reason, response.json()["error"]["message"]), response.text


async def test_protobuf_in_json_out_with_a_zero_size_tensor_bomb(server, references):
    body = mixed_request(zero_size_tensor_bomb("bomb")).SerializeToString()
    response = await post(server.urls["http"], body, headers={"content-type": PROTOBUF})
    assert response.status_code == 200
    answer = answer_from_http("http-json", response)
    assert answer.failed and "'bomb'" in answer.message and "too large" in answer.message
    assert_good_docs_embedded(answer, references)


async def test_unknown_http_path_is_a_json_404(server):
    response = await post(server.urls["http"], b"{}", path="/nope")
    assert response.status_code == 404
    assert "no such path POST /nope" in response.json()["error"]["message"]


# --- size limits on the transport (a server with 1 MiB messages) --------------------------


@pytest.fixture(scope="module")
def small_server(hash_model: EmbeddingModel) -> Iterator[RunningServer]:
    config = loopback_config(model="hash", grpc_max_message_mb=1, http_max_body_mb=1)
    with running_server(config, model=hash_model) as running:
        yield running


def two_mib_request() -> DataRequestProto:
    return new_request([DocumentProto(id="big", blob=bytes(2 * 1024 * 1024))])


async def test_oversized_messages_are_refused_on_every_protocol(small_server):
    grpc_answer = await send(small_server, "grpc", two_mib_request())
    assert str(grpc_answer.code) == "StatusCode.RESOURCE_EXHAUSTED", grpc_answer
    for protocol in ("http-json", "http-proto"):
        answer = await send(small_server, protocol, two_mib_request())
        assert answer.code == 413 and "above the" in answer.message, answer
    ws_answer = await send(small_server, "websocket", two_mib_request())
    assert ws_answer.failed and ws_answer.code == 1009, ws_answer  # message too big
    healthy = await send(small_server, "grpc", new_request([DocumentProto(id="a", text="ok")]))
    assert not healthy.failed


# --- everything at once: other clients unaffected, memory bounded ---------------------------


async def test_a_concurrent_good_client_is_unaffected(server, references):
    """A good client streams over gRPC while every bad input arrives over every protocol."""
    good = [
        new_request(
            [DocumentProto(id="good-text", text=CAT),
             DocumentProto(id="good-image", blob=samples.photo_jpeg())],
            request_id=f"good-{i}",
        )
        for i in range(24)
    ]  # fmt: skip

    async def good_client() -> list[DataRequestProto]:
        return await grpc_stream(server.grpc_port, good)

    async def bad_clients() -> None:
        jobs = []
        for protocol in PROTOCOLS:
            for name, case in BAD_DOCS.items():
                if protocol != "http-json" or case.over_json:
                    jobs.append(send(server, protocol, mixed_request(case.make(name))))
            jobs.append(send(server, protocol, b"\xff\x00\x13 not a message"))
        answers = await asyncio.gather(*jobs)
        assert all(answer.failed for answer in answers)

    replies, _ = await asyncio.gather(good_client(), bad_clients())
    assert sorted(r.header.request_id for r in replies) == sorted(f"good-{i}" for i in range(24))
    for reply in replies:
        assert reply.header.status.code == 0, reply.header.status.description
        answer = Answer("grpc")
        answer.docs = [(d.id, np.frombuffer(d.embedding.dense.buffer, "<f4"))
                       for d in reply.data.docs.docs]  # fmt: skip
        assert_good_docs_embedded(answer, references)


async def test_bombs_leave_memory_bounded_and_the_server_serving(server, references):
    """The pixel limit is checked before decoding: repeated bombs cost no memory."""
    bombs = [samples.huge_png(), samples.bomb_8bit_png()]
    await send(server, "grpc", mixed_request(DocumentProto(id="warm", blob=bombs[0])))
    before = rss_bytes()
    for round_ in range(4):
        docs = [DocumentProto(id=f"bomb-{round_}-{i}", blob=b) for i, b in enumerate(bombs * 4)]
        answer = await send(server, "grpc", new_request(docs))
        assert answer.failed and "8 of 8 documents failed" in answer.message
    grown = rss_bytes() - before
    assert grown < 100 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
    after = await send(server, "http-proto", mixed_request(DocumentProto(id="x", text="still")))
    assert not after.failed
    assert_good_docs_embedded(after, references)
