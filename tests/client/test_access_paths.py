"""``access_paths`` from clipserve's own client against a real server (``hash`` model) on
every plain protocol, and HTTP in its JSON form: chunks holding texts, images (local files,
URLs, blobs, tensors) and both; nested and comma paths; refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from docarray import Document, DocumentArray

from clipserve import Client
from clipserve.client.inputs import tensor_to_png
from clipserve.errors import InvalidInputError, PartialFailureError

TRANSPORTS = ["grpc", "http", "http-json", "websocket"]
TENSOR = np.random.default_rng(7).integers(0, 256, (12, 16, 3)).astype(np.uint8)


@pytest.fixture(params=TRANSPORTS)
def client(request, hash_server) -> Iterator[Client]:
    name: str = request.param
    protocol, _, form = name.partition("-")
    with Client(hash_server.urls[protocol], http_format=form or "auto") as c:
        yield c


def texts_page() -> Document:
    page = Document()  # no content of its own: its chunks are what gets embedded
    page.chunks = [Document(text=f"line {i} of the page") for i in range(3)]
    return page


def images_page(photos: dict[str, Path], image_site: str) -> Document:
    page = Document()
    page.chunks = [
        Document(uri=str(photos["astronaut.png"])),  # a local file, read by the client
        Document(uri=f"{image_site}/coffee.jpg"),  # a URL, fetched by the client
        Document(blob=photos["chelsea.jpg"].read_bytes()),
        Document(tensor=TENSOR),
    ]
    return page


def image_bytes(photos: dict[str, Path]) -> list[bytes]:
    return [
        photos["astronaut.png"].read_bytes(),
        photos["coffee.jpg"].read_bytes(),
        photos["chelsea.jpg"].read_bytes(),
        tensor_to_png(TENSOR, "tensor"),
    ]


def test_chunk_texts(client, hash_server) -> None:
    pages = DocumentArray([texts_page(), texts_page()])
    result = client.encode(pages, access_paths="@c")
    assert result[0] is pages[0] and result[0].embedding is None
    expected = hash_server.model.encode_texts([f"line {i} of the page" for i in range(3)])
    for page in result:
        np.testing.assert_array_equal(page.chunks.embeddings, expected)


def test_chunk_images_from_files_urls_blobs_and_tensors(
    client, hash_server, photos, image_site
) -> None:
    page = images_page(photos, image_site)
    result = client.encode([page], parameters={"traversal_paths": "@c"})
    expected = hash_server.model.encode_images(image_bytes(photos))
    np.testing.assert_array_equal(result[0].chunks.embeddings, expected)
    assert not page.chunks[0].blob  # the caller's Documents are not loaded or changed


def test_texts_and_images_in_one_page_with_the_root_too(
    client, hash_server, photos, image_site
) -> None:
    page = images_page(photos, image_site)
    page.text = "the page's caption"
    page.chunks.append(Document(text="a chunk of text"))
    result = client.encode([page], access_paths="@r,c", batch_size=1)
    model = hash_server.model
    np.testing.assert_array_equal(page.embedding, model.encode_texts(["the page's caption"])[0])
    expected_images = model.encode_images(image_bytes(photos))
    np.testing.assert_array_equal(result[0].chunks[:4].embeddings, expected_images)
    np.testing.assert_array_equal(
        page.chunks[4].embedding, model.encode_texts(["a chunk of text"])[0]
    )


def test_nested_paths_and_windows(client, hash_server) -> None:
    book = Document(text="a book")
    for c in range(3):
        chapter = Document(text=f"chapter {c}")
        chapter.chunks = [Document(text=f"chapter {c} paragraph {p}") for p in range(2)]
        chapter.matches = [Document(text=f"a match of chapter {c}")]
        book.chunks.append(chapter)
    client.encode([book], access_paths="@cc[:1],cm,r")
    model = hash_server.model
    np.testing.assert_array_equal(book.embedding, model.encode_texts(["a book"])[0])
    for c, chapter in enumerate(book.chunks):
        assert chapter.embedding is None
        first, second = chapter.chunks
        expected = model.encode_texts([f"chapter {c} paragraph 0"])[0]
        np.testing.assert_array_equal(first.embedding, expected)
        assert second.embedding is None
        expected = model.encode_texts([f"a match of chapter {c}"])[0]
        np.testing.assert_array_equal(chapter.matches[0].embedding, expected)


def test_callbacks_see_the_nested_reply(client) -> None:
    seen: list[DocumentArray] = []
    result = client.encode([texts_page()], access_paths="@c", on_done=lambda r: seen.append(r.docs))
    assert result is None
    (docs,) = seen
    assert docs[0].embedding is None and docs[0].chunks.embeddings.shape[0] == 3


def test_a_malformed_selector_fails_the_call_naming_it(client) -> None:
    with pytest.raises(InvalidInputError, match=r"access_paths='@c\[1' is not a valid access"):
        client.encode([texts_page()], access_paths="@c[1")


def test_a_failing_chunk_is_named_and_the_others_still_embedded(client) -> None:
    page = Document(text="fine root")
    page.chunks = [Document(text="fine chunk"), Document(id="hollow")]
    with pytest.raises(PartialFailureError) as caught:
        client.encode([page], access_paths="@r,c")
    assert set(caught.value.failures) == {"hollow"}
    assert "document has no content" in caught.value.failures["hollow"]
    assert page.embedding is not None and page.chunks[0].embedding is not None


def test_a_selector_that_selects_nothing_is_not_an_error(client) -> None:
    pages = [texts_page()]
    assert client.encode(pages, access_paths="@m")[0] is pages[0]
    assert pages[0].chunks[0].embedding is None


def test_misuse_is_refused_before_sending(hash_server) -> None:
    with Client(hash_server.urls["grpc"]) as client:
        with pytest.raises(ValueError, match="strings have none"):
            client.encode(["a sentence"], access_paths="@c")
        with pytest.raises(ValueError, match="disagree"):
            client.encode([texts_page()], access_paths="@c", parameters={"access_paths": "@r"})
        with pytest.raises(TypeError, match="access_paths must be a str"):
            client.encode([texts_page()], access_paths=["@c"])
        # without an access path an empty Document is still refused at once
        with pytest.raises(InvalidInputError, match="has nothing to encode"):
            client.encode([texts_page()])
