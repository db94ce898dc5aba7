"""EmbeddingService end to end against real models, through the Dispatcher every
front-end uses (no sockets: front-ends are thin)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from skimage import data as skimage_data

from clipserve.engine import Engine, Metrics
from clipserve.errors import InputRefusedError, InvalidInputError, OverloadedError
from clipserve.models.base import EmbeddingModel
from clipserve.server.dispatch import Dispatcher
from clipserve.server.limits import Limits
from clipserve.server.service import EmbeddingService
from clipserve.wire import DataRequestProto, DocumentProto, StatusProto
from clipserve.wire.messages import is_error, new_request
from clipserve.wire.ndarray import read_ndarray, write_ndarray
from tests.engine.helpers import BLOCK, WrappedModel, png_bytes
from tests.waiting import FAILSAFE_S

LIMITS = Limits(max_docs_per_request=64, max_text_chars=1000, max_image_bytes=2_000_000)


@pytest.fixture(scope="module")
def cat_png() -> bytes:
    return png_bytes(skimage_data.chelsea())


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


async def running(model: EmbeddingModel, metrics: Metrics, **engine_options: int) -> Engine:
    engine = Engine(model, metrics=metrics, **engine_options)
    await engine.start()
    return engine


@pytest.fixture
async def service(hash_model: EmbeddingModel, metrics: Metrics) -> AsyncIterator[Dispatcher]:
    engine = await running(hash_model, metrics)
    yield Dispatcher(EmbeddingService(engine, model_name="hash", limits=LIMITS), metrics)
    await engine.stop()


@pytest.fixture
async def builtin_service(
    builtin_model: EmbeddingModel, metrics: Metrics
) -> AsyncIterator[Dispatcher]:
    engine = await running(builtin_model, metrics)
    yield Dispatcher(EmbeddingService(engine, model_name="builtin"), metrics)
    await engine.stop()


def text_doc(doc_id: str, text: str) -> DocumentProto:
    return DocumentProto(id=doc_id, text=text)


def image_doc(doc_id: str, blob: bytes) -> DocumentProto:
    return DocumentProto(id=doc_id, blob=blob, mime_type="image/png", uri=f"{doc_id}.png")


def tensor_doc(doc_id: str, array: np.ndarray) -> DocumentProto:
    doc = DocumentProto(id=doc_id)
    write_ndarray(array, doc.tensor)
    return doc


def embedding(doc: DocumentProto) -> np.ndarray:
    assert doc.embedding.cls_name == "numpy"
    array = read_ndarray(doc.embedding)
    assert array is not None and array.dtype == np.float32 and array.ndim == 1
    return array


def request(docs: list[DocumentProto], endpoint: str = "/encode", **parameters: object):
    return new_request(docs, endpoint, parameters or None)


# ---- /encode plumbing (hash model) -----------------------------------------------------


async def test_encode_fills_embeddings_keeps_ids_and_times_routes(
    service: Dispatcher, hash_model: EmbeddingModel, cat_png: bytes, metrics: Metrics
) -> None:
    astronaut = skimage_data.astronaut()
    docs = [text_doc("t", "a cat"), image_doc("i", cat_png), tensor_doc("a", astronaut)]
    reply = await service.answer(request(docs, drop_image_content=False), "grpc")
    assert not is_error(reply) and reply.header.status.code == StatusProto.SUCCESS
    out = reply.data.docs.docs
    assert [d.id for d in out] == ["t", "i", "a"]
    np.testing.assert_allclose(embedding(out[0]), hash_model.encode_texts(["a cat"])[0])
    np.testing.assert_allclose(embedding(out[1]), hash_model.encode_images([cat_png])[0])
    np.testing.assert_allclose(embedding(out[2]), hash_model.encode_images([astronaut])[0])
    assert out[1].blob == cat_png and out[2].HasField("tensor")  # content kept
    gateway, model = reply.routes
    assert (gateway.executor, model.executor) == ("gateway", "clip_t")
    span = [r.end_time.ToNanoseconds() - r.start_time.ToNanoseconds() for r in reply.routes]
    assert min(span) >= 1_000_000
    assert gateway.start_time.ToNanoseconds() <= model.start_time.ToNanoseconds()
    assert gateway.end_time.ToNanoseconds() >= model.end_time.ToNanoseconds()
    requests = metrics.registry.get_sample_value(
        "clipserve_requests_total", {"protocol": "grpc", "endpoint": "/encode", "status": "ok"}
    )
    assert requests == 1


async def test_drop_image_content_clears_blobs_and_tensors(
    service: Dispatcher, cat_png: bytes
) -> None:
    docs = [
        image_doc("i", cat_png),
        tensor_doc("a", skimage_data.camera()[:, :, None]),
        text_doc("t", "x"),
    ]
    reply = await service.answer(request(docs, drop_image_content=True), "http")
    out = reply.data.docs.docs
    assert out[0].WhichOneof("content") is None and out[0].uri == "i.png"
    assert out[1].WhichOneof("content") is None
    assert out[2].text == "x"
    assert all(embedding(d).size for d in out)


async def test_failing_documents_are_named_and_the_rest_still_answered(
    service: Dispatcher, metrics: Metrics
) -> None:
    docs = [
        text_doc("good", "fine"),
        DocumentProto(id="empty"),
        DocumentProto(id="remote", uri="http://10.1.1.1/cat.png"),
        image_doc("huge", b"\x89PNG" + bytes(2_100_000)),
        tensor_doc("flat", np.zeros(12, dtype=np.uint8)),
    ]
    reply = await service.answer(request(docs), "websocket")
    assert is_error(reply)
    description = reply.header.status.description
    assert description.startswith("4 of 5 documents failed: 'empty': document has no content")
    for text in ("'remote': ", "'huge': image blob is 2100004 bytes", "'flat': image tensor"):
        assert text in description
    out = reply.data.docs.docs
    assert embedding(out[0]).size and not any(d.HasField("embedding") for d in out[1:])
    counted = metrics.registry.get_sample_value(
        "clipserve_documents_total",
        {"protocol": "websocket", "endpoint": "/encode", "status": "error"},
    )
    assert counted == 4


async def test_profile_call_embeds_an_empty_document(
    service: Dispatcher, hash_model: EmbeddingModel
) -> None:
    reply = await service.answer(request([DocumentProto(id="p")], "/", __results__={}), "grpc")
    assert not is_error(reply)
    np.testing.assert_allclose(embedding(reply.data.docs.docs[0]), hash_model.encode_texts([""])[0])
    assert [r.executor for r in reply.routes] == ["gateway", "clip_t"]


async def test_duplicate_ids_are_answered_by_position(
    service: Dispatcher, hash_model: EmbeddingModel
) -> None:
    reply = await service.answer(request([text_doc("x", "one"), text_doc("x", "two")]), "grpc")
    first, second = (embedding(d) for d in reply.data.docs.docs)
    np.testing.assert_allclose(first, hash_model.encode_texts(["one"])[0])
    np.testing.assert_allclose(second, hash_model.encode_texts(["two"])[0])


async def test_a_very_long_sentence_is_cut_to_the_limit(
    service: Dispatcher, hash_model: EmbeddingModel
) -> None:
    text = "word " * 200_000  # 1 MB
    reply = await service.answer(request([text_doc("long", text)]), "grpc")
    expected = hash_model.encode_texts([text[: LIMITS.max_text_chars]])[0]
    np.testing.assert_allclose(embedding(reply.data.docs.docs[0]), expected)


async def test_model_name_and_unknown_parameters(service: Dispatcher) -> None:
    docs = [text_doc("t", "x")]
    ok = request(docs, "/encode/hash", model_name="hash", some_future_option=3, __x__=1)
    assert not is_error(await service.answer(ok, "grpc"))
    with pytest.raises(InvalidInputError, match="'ViT-L-14' is not served here"):
        await service.answer(request(docs, "/encode/ViT-L-14"), "grpc")
    with pytest.raises(InvalidInputError, match="'drop_image_content' must be a bool"):
        await service.answer(request(docs, drop_image_content="yes"), "grpc")
    with pytest.raises(InvalidInputError, match="access_paths='@x' is not a valid access path"):
        await service.answer(request(docs, access_paths="@x"), "grpc")


@pytest.mark.parametrize("endpoint", ["/index", "/search", "/delete", "/encodex"])
async def test_unknown_endpoints_are_refused(service: Dispatcher, endpoint: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown endpoint"):
        await service.answer(request([text_doc("t", "x")], endpoint), "grpc")


async def test_pickled_docs_bytes_are_refused_unread(service: Dispatcher) -> None:
    message = DataRequestProto()
    message.header.exec_endpoint = "/encode"
    message.data.docs_bytes = b"\x80\x04\x95 pickle that must never be loaded"
    with pytest.raises(InvalidInputError, match="docs_bytes"):
        await service.answer(message, "grpc")


async def test_too_many_documents_are_refused_before_any_work(
    service: Dispatcher,
) -> None:
    docs = [text_doc(str(i), "x") for i in range(100_000)]
    with pytest.raises(InputRefusedError, match="100000 documents, above the limit of 64"):
        await service.answer(request(docs), "grpc")
    assert service.service.engine.stats["text"].items == 0


async def test_a_full_engine_queue_refuses_the_request(
    hash_model: EmbeddingModel, metrics: Metrics
) -> None:
    model = WrappedModel(hash_model)
    engine = await running(model, metrics, max_queue_items=3)
    service = Dispatcher(EmbeddingService(engine, model_name="hash"), metrics)
    try:
        busy = asyncio.create_task(
            service.answer(request([text_doc("a", BLOCK), text_doc("b", "x")]), "grpc")
        )
        assert await asyncio.to_thread(model.forward_entered.wait, FAILSAFE_S)
        with pytest.raises(OverloadedError, match="queue is full"):
            await service.answer(request([text_doc("c", "y"), text_doc("d", "z")]), "grpc")
        model.release.set()
        assert not is_error(await busy)
    finally:
        model.release.set()
        await engine.stop()
    overloaded = {"protocol": "grpc", "endpoint": "/encode", "status": "overloaded"}
    assert metrics.registry.get_sample_value("clipserve_requests_total", overloaded) == 1


# ---- /rank plumbing (hash model) -------------------------------------------------------


async def test_rank_scores_sorts_and_drops_match_embeddings(
    service: Dispatcher, hash_model: EmbeddingModel, cat_png: bytes
) -> None:
    query = text_doc("q", "a cat")
    candidates = [text_doc("m1", "a dog"), image_doc("m2", cat_png), text_doc("m3", "a cat")]
    query.matches.extend(candidates)
    reply = await service.answer(request([query], "/rank", drop_image_content=True), "grpc")
    assert not is_error(reply)
    ranked = reply.data.docs.docs[0]
    q = hash_model.encode_texts(["a cat"])[0]
    assert embedding(ranked).tolist() == pytest.approx(q.tolist(), abs=1e-6)
    assert ranked.matches[0].id == "m3"  # identical text: cosine 1
    cosines = [m.scores["clip_score_cosine"].value for m in ranked.matches]
    assert cosines == sorted(cosines, reverse=True)
    assert sum(m.scores["clip_score"].value for m in ranked.matches) == pytest.approx(1.0)
    assert {m.scores["clip_score"].op_name for m in ranked.matches} == {"softmax"}
    assert {m.scores["clip_score_cosine"].op_name for m in ranked.matches} == {"cosine"}
    assert not any(m.HasField("embedding") for m in ranked.matches)
    assert all(m.WhichOneof("content") != "blob" for m in ranked.matches)


async def test_rank_names_a_failing_match(service: Dispatcher) -> None:
    good, bad = text_doc("q1", "x"), text_doc("q2", "y")
    good.matches.append(text_doc("a", "z"))
    bad.matches.extend([text_doc("b", "z"), DocumentProto(id="hollow")])
    reply = await service.answer(request([good, bad], "/rank"), "grpc")
    assert "'q2': match 'hollow': document has no content" in reply.header.status.description
    assert reply.data.docs.docs[0].matches[0].scores["clip_score"].value == pytest.approx(1.0)


# ---- OpenAI-compatible /v1/embeddings --------------------------------------------------


async def test_openai_texts_and_base64(service: Dispatcher, hash_model: EmbeddingModel) -> None:
    reply = await service.answer_openai({"input": ["a cat", "a dog"], "model": "hash"})
    assert reply["object"] == "list" and reply["model"] == "hash"
    assert [d["index"] for d in reply["data"]] == [0, 1]
    np.testing.assert_allclose(reply["data"][1]["embedding"], hash_model.encode_texts(["a dog"])[0])
    assert reply["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    packed = await service.answer_openai({"input": "a cat", "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, hash_model.encode_texts(["a cat"])[0])


async def test_openai_requests_are_counted_like_every_request(
    service: Dispatcher, metrics: Metrics
) -> None:
    await service.answer_openai({"input": ["a cat", "a dog", "a cow"]})
    with pytest.raises(InvalidInputError):
        await service.answer_openai({"input": "x", "model": "other"})
    labels = {"protocol": "http", "endpoint": "/v1/embeddings"}
    sample = metrics.registry.get_sample_value
    assert sample("clipserve_requests_total", {**labels, "status": "ok"}) == 1
    assert sample("clipserve_requests_total", {**labels, "status": "invalid"}) == 1
    assert sample("clipserve_documents_total", {**labels, "status": "ok"}) == 3
    assert sample("clipserve_request_seconds_count", labels) == 2
    assert service.service.engine.stats["text"].items == 3  # the refused one never queued


async def test_openai_images_as_data_uris(
    service: Dispatcher, hash_model: EmbeddingModel, cat_png: bytes
) -> None:
    uri = "data:image/png;base64," + base64.b64encode(cat_png).decode()
    reply = await service.answer_openai({"input": [uri], "modality": "image"})
    np.testing.assert_allclose(
        reply["data"][0]["embedding"], hash_model.encode_images([cat_png])[0]
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "non-empty list of strings"),
        ({"input": [[1, 2, 3]]}, "token arrays are not supported"),
        ({"input": "x", "encoding_format": "int8"}, "'encoding_format' must be"),
        ({"input": "x", "modality": "audio"}, "'modality' must be"),
        ({"input": "x", "model": "text-embedding-3-small"}, "not served here"),
        ({"input": "not a uri", "modality": "image"}, r"input\[0\]: image inputs must be"),
        ({"input": ["x"] * 65}, "above the limit of 64"),
        ([1, 2], "must be a JSON object"),
    ],
)
async def test_openai_bad_bodies(service: Dispatcher, body: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        await service.answer_openai(body)


async def test_openai_urls_follow_the_uri_policy(service: Dispatcher) -> None:
    body = {"input": ["http://127.0.0.1/cat.png"], "modality": "image"}
    with pytest.raises(InputRefusedError, match=r"input\[0\]"):
        await service.answer_openai(body)


# ---- the real built-in model -----------------------------------------------------------


async def test_service_embeddings_equal_the_model_in_process(
    builtin_service: Dispatcher, builtin_model: EmbeddingModel, cat_png: bytes
) -> None:
    texts = ["a photo of a cat", "a cup of coffee"]
    docs = [text_doc("t0", texts[0]), image_doc("i", cat_png), text_doc("t1", texts[1])]
    reply = await builtin_service.answer(request(docs), "grpc")
    out = reply.data.docs.docs
    want_texts = builtin_model.encode_texts(texts)
    want_image = builtin_model.encode_images([cat_png])[0]
    np.testing.assert_allclose(embedding(out[0]), want_texts[0], atol=1e-5)
    np.testing.assert_allclose(embedding(out[1]), want_image, atol=1e-5)
    np.testing.assert_allclose(embedding(out[2]), want_texts[1], atol=1e-5)
    assert embedding(out[0]).shape == (builtin_model.dim,)


async def test_a_corrupt_photo_fails_alone(builtin_service: Dispatcher, cat_png: bytes) -> None:
    docs = [image_doc("cat", cat_png), image_doc("cut", cat_png[: len(cat_png) // 2])]
    reply = await builtin_service.answer(request(docs), "grpc")
    assert reply.header.status.description.startswith("1 of 2 documents failed: 'cut': ")
    assert embedding(reply.data.docs.docs[0]).size == builtin_service.service.engine.model.dim


async def test_rank_puts_the_right_caption_first_for_a_real_photo(
    builtin_service: Dispatcher, cat_png: bytes
) -> None:
    captions = ["a photo of a car", "a photo of a cat", "a cup of coffee", "a rocket launch"]
    query = image_doc("chelsea", cat_png)
    query.matches.extend(text_doc(f"c{i}", caption) for i, caption in enumerate(captions))
    reply = await builtin_service.answer(request([query], "/rank"), "grpc")
    assert not is_error(reply), reply.header.status.description
    ranked = reply.data.docs.docs[0].matches
    assert ranked[0].text == "a photo of a cat"
    assert ranked[0].scores["clip_score"].value > ranked[1].scores["clip_score"].value


async def test_failure_labels_escape_quotes_in_ids(service: Dispatcher) -> None:
    docs = [text_doc("ok", "x"), DocumentProto(id="it's"), DocumentProto()]
    reply = await service.answer(request(docs), "grpc")
    description = reply.header.status.description
    assert description.startswith("2 of 3 documents failed: 'it\\'s': document has no content")
    assert "; #2: document has no content" in description
