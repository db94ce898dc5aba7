"""``access_paths`` / ``traversal_paths`` in the service: what is embedded, what is left
alone, limits, refusals and the other request parameters of CLIP-as-service's server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from skimage import data as skimage_data

from clipserve.engine import Engine, Metrics
from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.models.base import EmbeddingModel
from clipserve.server.dispatch import Dispatcher
from clipserve.server.limits import Limits
from clipserve.server.service import EmbeddingService
from clipserve.wire import DocumentProto, StatusProto
from clipserve.wire.messages import is_error, new_request
from clipserve.wire.ndarray import read_ndarray, write_ndarray
from tests.engine.helpers import png_bytes

LIMITS = Limits(max_docs_per_request=64)
ENCODE_ENDPOINTS = ["/", "/encode"]


@pytest.fixture(scope="module")
def cat_png() -> bytes:
    return png_bytes(skimage_data.chelsea()[::4, ::4])


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
async def service(hash_model: EmbeddingModel, metrics: Metrics) -> AsyncIterator[Dispatcher]:
    engine = Engine(hash_model, metrics=metrics)
    await engine.start()
    yield Dispatcher(EmbeddingService(engine, model_name="hash", limits=LIMITS), metrics)
    await engine.stop()


def embedding(doc: DocumentProto) -> np.ndarray | None:
    return read_ndarray(doc.embedding) if doc.HasField("embedding") else None


def page(cat_png: bytes) -> DocumentProto:
    """A root without content whose chunks hold a text, a blob and a tensor."""
    root = DocumentProto(id="page")
    root.chunks.add(id="caption", text="a cat on a sofa")
    root.chunks.add(id="photo", blob=cat_png, mime_type="image/png", uri="cat.png")
    tensor = root.chunks.add(id="pixels")
    write_ndarray(skimage_data.astronaut()[::8, ::8], tensor.tensor)
    return root


async def answer(service: Dispatcher, docs: list[DocumentProto], endpoint="/", **parameters):
    return await service.answer(new_request(docs, endpoint, parameters or None), "grpc")


@pytest.mark.parametrize("endpoint", ENCODE_ENDPOINTS)
@pytest.mark.parametrize("key", ["access_paths", "traversal_paths"])
async def test_chunks_are_embedded_in_place_and_the_root_is_left_alone(
    service: Dispatcher, hash_model: EmbeddingModel, cat_png: bytes, endpoint: str, key: str
) -> None:
    root = page(cat_png)
    reply = await answer(service, [root], endpoint, **{key: "@c"})
    assert not is_error(reply)
    (out,) = reply.data.docs.docs
    assert out.id == "page" and not out.HasField("embedding")
    caption, photo, pixels = out.chunks
    expected_text = hash_model.encode_texts(["a cat on a sofa"])[0]
    np.testing.assert_array_equal(embedding(caption), expected_text)
    np.testing.assert_array_equal(embedding(photo), hash_model.encode_images([cat_png])[0])
    astronaut = skimage_data.astronaut()[::8, ::8]
    np.testing.assert_array_equal(embedding(pixels), hash_model.encode_images([astronaut])[0])
    assert photo.blob == cat_png and pixels.HasField("tensor")  # kept: not asked to drop


async def test_drop_image_content_drops_it_from_the_embedded_documents_only(
    service: Dispatcher, cat_png: bytes
) -> None:
    root = page(cat_png)
    root.blob = cat_png  # the root is an image too, but not selected
    reply = await answer(service, [root], access_paths="@c", drop_image_content=True)
    (out,) = reply.data.docs.docs
    assert out.blob == cat_png and not out.HasField("embedding")
    caption, photo, pixels = out.chunks
    assert caption.text == "a cat on a sofa"
    assert photo.WhichOneof("content") is None and photo.uri == "cat.png"
    assert pixels.WhichOneof("content") is None
    assert all(embedding(chunk) is not None for chunk in out.chunks)


async def test_unselected_documents_come_back_byte_for_byte(
    service: Dispatcher, cat_png: bytes
) -> None:
    root = page(cat_png)
    root.text = "the page's own text"
    root.tags.update({"page": 3})
    root.matches.add(id="m", text="a match", granularity=0, adjacency=1)
    root.chunks[0].chunks.add(id="deep", blob=cat_png)
    sent = DocumentProto()
    sent.CopyFrom(root)
    reply = await answer(service, [root], access_paths="@c[0]", drop_image_content=True)
    (out,) = reply.data.docs.docs
    assert embedding(out.chunks[0]) is not None
    out.chunks[0].ClearField("embedding")
    assert out.SerializeToString(deterministic=True) == sent.SerializeToString(deterministic=True)


@pytest.mark.parametrize(
    ("selector", "embedded"),
    [
        ("@r", ["r0", "r1"]),
        ("@c", ["c0", "c1", "c2"]),
        ("@cc", ["cc0"]),
        ("@cm", ["cm0"]),
        ("@mc", ["mc0"]),
        ("@m", ["m0"]),
        ("@r,c", ["r0", "r1", "c0", "c1", "c2"]),
        ("@c[:1]", ["c0", "c2"]),
        ("@r[1]", ["r1"]),
        ("@r[1]c", ["c2"]),
        ("@c[-1],m", ["c1", "c2", "m0"]),
        ("@mm", []),  # selects nothing: not an error
    ],
)
async def test_selectors_embed_exactly_what_they_reach(
    service: Dispatcher, selector: str, embedded: list[str]
) -> None:
    r0 = DocumentProto(id="r0", text="root zero")
    c0 = r0.chunks.add(id="c0", text="chunk zero")
    c0.chunks.add(id="cc0", text="chunk of chunk")
    c1 = r0.chunks.add(id="c1", text="chunk one")
    c1.matches.add(id="cm0", text="match of chunk")
    m0 = r0.matches.add(id="m0", text="match zero")
    m0.chunks.add(id="mc0", text="chunk of match")
    r1 = DocumentProto(id="r1", text="root one")
    r1.chunks.add(id="c2", text="chunk two")
    reply = await answer(service, [r0, r1], "/encode", access_paths=selector)
    assert reply.header.status.code == StatusProto.SUCCESS
    found = []

    def walk(docs) -> None:
        for doc in docs:
            if doc.HasField("embedding"):
                found.append(doc.id)
            walk(doc.chunks)
            walk(doc.matches)

    walk(reply.data.docs.docs)
    assert sorted(found) == sorted(embedded)


async def test_an_empty_root_is_a_container_unless_only_roots_are_selected(
    service: Dispatcher, cat_png: bytes
) -> None:
    reply = await answer(service, [page(cat_png)], "/encode", access_paths="@r,c")
    assert not is_error(reply)  # the content-less root holds chunks: left out, not failed
    assert not reply.data.docs.docs[0].HasField("embedding")
    reply = await answer(service, [page(cat_png)], "/encode")  # @r: the root itself
    assert is_error(reply)
    assert reply.header.status.description == (
        "1 of 1 document failed: 'page': document has no content: set text, blob, tensor or "
        "uri (it holds 3 chunks: access_paths='@c' embeds those)"
    )


@pytest.mark.parametrize("endpoint", ENCODE_ENDPOINTS)  # "/" embeds "" only for profile's @r
async def test_a_failing_chunk_is_named_by_id_or_by_place(
    service: Dispatcher, metrics: Metrics, endpoint: str
) -> None:
    root = DocumentProto(id="book")
    root.chunks.add(id="fine", text="fine")
    write_ndarray(np.zeros(12, dtype=np.uint8), root.chunks.add().tensor)  # flat: not an image
    root.chunks.add(id="hollow")
    reply = await answer(service, [root], endpoint, access_paths="@c")
    description = reply.header.status.description
    assert description.startswith("2 of 3 documents failed: #0.chunks[1]: image tensor must")
    assert "; 'hollow': document has no content" in description
    assert embedding(reply.data.docs.docs[0].chunks[0]) is not None
    labels = {"protocol": "grpc", "endpoint": endpoint, "status": "error"}
    assert metrics.registry.get_sample_value("clipserve_documents_total", labels) == 2
    labels["status"] = "ok"
    assert metrics.registry.get_sample_value("clipserve_documents_total", labels) == 1


async def test_the_document_limit_counts_the_selected_documents(service: Dispatcher) -> None:
    root = DocumentProto(id="one-root", text="x")
    for i in range(10_000):
        root.chunks.add(id=str(i), text="chunk")
    with pytest.raises(InputRefusedError, match="'@c' selects more than 64 documents"):
        await answer(service, [root], "/encode", access_paths="@c")
    # a selector that looks at every chunk but selects none: refused after 64 x 64 looks
    with pytest.raises(InputRefusedError, match="'@cm' walks more than 4096 documents"):
        await answer(service, [root], "/encode", access_paths="@cm")
    assert service.service.engine.stats["text"].items == 0
    # the same request at @r is one document; its chunks travel back untouched
    reply = await answer(service, [root], "/encode")
    assert not is_error(reply) and len(reply.data.docs.docs[0].chunks) == 10_000


@pytest.mark.parametrize("endpoint", [*ENCODE_ENDPOINTS, "/rank"])
async def test_a_malformed_selector_refuses_the_whole_request(
    service: Dispatcher, endpoint: str
) -> None:
    doc = DocumentProto(id="q", text="x", matches=[DocumentProto(id="m", text="y")])
    with pytest.raises(InvalidInputError, match=r"traversal_paths='@c\[' is not a valid"):
        await answer(service, [doc], endpoint, traversal_paths="@c[")
    with pytest.raises(InvalidInputError, match="parameter 'access_paths' must be a str"):
        await answer(service, [doc], endpoint, access_paths=["@c"])


async def test_both_spellings_must_agree(service: Dispatcher) -> None:
    doc = DocumentProto(id="r", text="x", chunks=[DocumentProto(id="c", text="y")])
    reply = await answer(service, [doc], access_paths="@c", traversal_paths=" c")
    assert embedding(reply.data.docs.docs[0].chunks[0]) is not None
    with pytest.raises(InvalidInputError, match="access_paths='@c' and traversal_paths='@r'"):
        await answer(service, [doc], access_paths="@c", traversal_paths="@r")


async def test_rank_keeps_its_own_traversal(service: Dispatcher) -> None:
    query = DocumentProto(id="q", text="a cat", matches=[DocumentProto(id="m", text="cat")])
    reply = await answer(service, [query], "/rank", access_paths="@r")
    assert not is_error(reply) and reply.data.docs.docs[0].matches[0].scores["clip_score"].value
    with pytest.raises(InvalidInputError, match="does not apply to /rank"):
        await answer(service, [query], "/rank", access_paths="@c")


async def test_parameters_aimed_at_the_encoder_by_its_flow_name(service: Dispatcher) -> None:
    def docs() -> list[DocumentProto]:
        return [DocumentProto(id="r", text="x", chunks=[DocumentProto(id="c", text="y")])]

    for parameters in (
        {"clip_t__access_paths": "@c"},
        {"clip_o": {"access_paths": "@c"}},
        {"access_paths": "@r", "clip_r__access_paths": "@c"},
    ):
        (out,) = (await answer(service, docs(), **parameters)).data.docs.docs
        assert not out.HasField("embedding") and out.chunks[0].HasField("embedding"), parameters
    (out,) = (await answer(service, docs(), other_exec__access_paths="@c")).data.docs.docs
    assert out.HasField("embedding") and not out.chunks[0].HasField("embedding")
    with pytest.raises(InvalidInputError, match="'drop_image_content' must be a bool"):
        await answer(service, docs(), clip_t__drop_image_content="no")
