"""``access_paths`` / ``traversal_paths`` as clients of CLIP-as-service send them: jina's raw
``Client.post`` (the issue's snippet: a content-less root whose chunks hold the inputs) and
the published clip-client 0.8.3, on gRPC, HTTP and WebSocket, against the builtin model.

The server may read the photos' folder (``uri_policy.allow_file``), as the original server
read local paths on its own disk; the other images travel as blobs and tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.compat.conftest import COMPAT_MODEL, Photos
from tests.compat.harness import DriverResults, run_driver, running_server, server_config

pytestmark = [pytest.mark.compat, pytest.mark.timeout(900)]

PROTOCOLS = ["grpc", "http", "websocket"]
TEXTS = ["a photo of a cat", "a cup of coffee", "an astronaut in a white suit"]


@pytest.fixture(scope="module")
def server(photos: Photos, builtin_model: Any) -> Iterator[Any]:
    folder = str(next(iter(photos.jpeg.values())).parent)
    policy = {"allow_file": True, "file_roots": [folder]}
    with running_server(server_config(model=COMPAT_MODEL, uri_policy=policy), builtin_model) as s:
        yield s


def text_specs() -> list[dict[str, Any]]:
    return [{"text": t} for t in TEXTS]


def file_specs(photos: Photos) -> list[dict[str, Any]]:
    return [{"uri": str(photos.jpeg["chelsea"])}, {"uri": str(photos.png["coffee"])}]


def blob_specs(photos: Photos) -> list[dict[str, Any]]:
    return [{"blob_file": str(photos.jpeg["astronaut"])}, {"tensor_file": str(photos.tensor_file)}]


def build_ops(photos: Photos) -> list[dict[str, Any]]:
    texts, files, blobs = text_specs(), file_specs(photos), blob_specs(photos)
    page = lambda chunks: [{"chunks": chunks}]  # noqa: E731 - DocumentArray.empty(1) + chunks
    book = {"text": "a book", "chunks": [
        {"text": "chapter one", "chunks": [{"text": "first line"}, {"text": "second line"}]},
        {"text": "chapter two", "chunks": [{"text": "third line"}],
         "matches": [{"text": "a match of chapter two"}]},
    ]}  # fmt: skip
    post = lambda name, docs, endpoint="/", **parameters: {  # noqa: E731
        "name": name, "op": "post", "docs": docs, "endpoint": endpoint, "parameters": parameters
    }  # fmt: skip
    tree = lambda name, docs, **parameters: {  # noqa: E731
        "name": name, "op": "encode_tree", "docs": docs, "kwargs": {"parameters": parameters}
    }  # fmt: skip
    return [
        # jina's raw Client.post, as in the issue: texts, images (files, blobs), both
        post("snippet_texts_traversal", page(texts), traversal_paths="@c"),
        post("snippet_texts_access", page(texts), access_paths="@c"),
        post("snippet_files", page(files), access_paths="@c"),
        post("snippet_blobs", page(blobs), traversal_paths="@c"),
        post("snippet_both", page(texts + files + blobs), "/encode", access_paths="@c"),
        post("post_nested", [book], "/encode", access_paths="@cc,r"),
        post("post_comma_windows", [book], access_paths="@c[1],cm,cc[:1]"),
        post("post_drop", [{"blob_file": str(photos.png["flower"]), "chunks": files + blobs}],
             access_paths="@c", drop_image_content=True),  # fmt: skip
        post("post_nothing_selected", page(texts), access_paths="@m"),
        post("post_malformed", page(texts), access_paths="@c["),
        # clip-client 0.8.3: roots need content of their own; the reply is read in on_done
        tree("client_texts", [{"text": "a page", "chunks": texts}], access_paths="@c"),
        tree("client_files_blobs", [{"text": "a page", "chunks": files + blobs}],
             traversal_paths="@c"),  # fmt: skip
        tree("client_nested", [book], access_paths="@r,cc"),
        tree("client_malformed", [{"text": "a page", "chunks": texts}], traversal_paths="@r,x"),
        {"name": "client_roots_only", "op": "encode_tree", "on_done": False,
         "docs": [{"text": "a page", "chunks": texts}],
         "kwargs": {"parameters": {"access_paths": "@r,c"}}},
        {"name": "client_chunks_only", "op": "encode_tree", "on_done": False,
         "docs": [{"text": "a page", "chunks": texts}],
         "kwargs": {"parameters": {"access_paths": "@c"}}},
    ]  # fmt: skip


@pytest.fixture(scope="module", params=PROTOCOLS)
def run(
    request: pytest.FixtureRequest,
    server: Any,
    clip_client_python: Path,
    photos: Photos,
    tmp_path_factory: pytest.TempPathFactory,
) -> DriverResults:
    scheme: str = request.param
    port = server.grpc_port if scheme == "grpc" else server.http_port
    results = run_driver(
        clip_client_python,
        {"default": {"server": f"{scheme}://127.0.0.1:{port}"}},
        build_ops(photos),
        tmp_path_factory.mktemp(f"access-paths-{scheme}"),
        timeout=300,
    )
    results.label = scheme
    return results


@pytest.fixture(scope="module")
def expected(builtin_model: Any, photos: Photos) -> dict[str, np.ndarray]:
    m = builtin_model
    files = m.encode_images([Path(spec["uri"]).read_bytes() for spec in file_specs(photos)])
    blobs = m.encode_images([photos.jpeg["astronaut"].read_bytes(), np.load(photos.tensor_file)])
    return {"texts": m.encode_texts(TEXTS), "files": files, "blobs": blobs}


def embedded(run: DriverResults, name: str) -> dict[str, np.ndarray]:
    """place -> embedding, for every document of an op's reply that has one."""
    tree = run.ok(name)["tree"]
    rows = [r["embedding_row"] for r in tree if r["embedding_row"] is not None]
    array = np.load(run.out_dir / f"{name}.npy") if rows else np.empty((0, 0))
    return {r["place"]: array[r["embedding_row"]] for r in tree if r["embedding_row"] is not None}


def check_rows(got: dict[str, np.ndarray], places: list[str], wanted: np.ndarray) -> None:
    assert sorted(got) == sorted(places)
    np.testing.assert_allclose(np.stack([got[p] for p in places]), wanted, rtol=0, atol=1e-5)


def chunk_places(count: int, root: str = "#0") -> list[str]:
    return [f"{root}.chunks[{i}]" for i in range(count)]


@pytest.mark.parametrize("name", ["snippet_texts_traversal", "snippet_texts_access"])
def test_the_snippet_embeds_chunk_texts(
    run: DriverResults, expected: dict[str, np.ndarray], name: str
) -> None:
    assert run.ok(name)["type"] == "DocumentArray"
    check_rows(embedded(run, name), chunk_places(3), expected["texts"])


def test_the_snippet_embeds_chunk_images_from_files_and_blobs(
    run: DriverResults, expected: dict[str, np.ndarray]
) -> None:
    check_rows(embedded(run, "snippet_files"), chunk_places(2), expected["files"])
    check_rows(embedded(run, "snippet_blobs"), chunk_places(2), expected["blobs"])
    wanted = np.concatenate([expected["texts"], expected["files"], expected["blobs"]])
    check_rows(embedded(run, "snippet_both"), chunk_places(7), wanted)


def test_nested_and_comma_paths(run: DriverResults, builtin_model: Any) -> None:
    text = lambda *t: builtin_model.encode_texts(list(t))  # noqa: E731
    got = embedded(run, "post_nested")  # @cc,r
    places = ["#0", "#0.chunks[0].chunks[0]", "#0.chunks[0].chunks[1]", "#0.chunks[1].chunks[0]"]
    check_rows(got, places, text("a book", "first line", "second line", "third line"))
    got = embedded(run, "post_comma_windows")  # @c[1],cm,cc[:1]
    places = ["#0.chunks[1]", "#0.chunks[1].matches[0]", "#0.chunks[0].chunks[0]",
              "#0.chunks[1].chunks[0]"]  # fmt: skip
    wanted = text("chapter two", "a match of chapter two", "first line", "third line")
    check_rows(got, places, wanted)
    tree = {r["place"]: r for r in run.ok("post_nested")["tree"]}
    assert tree["#0.chunks[1].matches[0]"]["text"] == "a match of chapter two"  # untouched


def test_image_content_is_dropped_from_embedded_documents_only(
    run: DriverResults, photos: Photos
) -> None:
    tree = {r["place"]: r for r in run.ok("post_drop")["tree"]}
    assert tree["#0"]["has_blob"] and tree["#0"]["embedding_row"] is None  # not selected
    chunks = [tree[p] for p in chunk_places(4)]
    assert all(c["embedding_row"] is not None for c in chunks)
    assert not any(c["has_blob"] or c["has_tensor"] for c in chunks)
    assert [c["uri"] for c in chunks[:2]] == [s["uri"] for s in file_specs(photos)]  # kept


def test_a_selector_that_selects_nothing_is_not_an_error(run: DriverResults) -> None:
    assert embedded(run, "post_nothing_selected") == {}


@pytest.mark.parametrize(
    ("name", "selector"), [("post_malformed", "'@c['"), ("client_malformed", "'@r,x'")]
)
def test_a_malformed_selector_fails_the_request_naming_it(
    run: DriverResults, name: str, selector: str
) -> None:
    record = run[name]
    assert not record["ok"]
    # jina raises BadServer (gRPC, WebSocket) or ValueError with the HTTP 400 body
    assert record["error_type"] in ("BadServer", "ValueError"), record
    assert f"={selector} is not a valid access path" in record["error"].replace("\\'", "'")


def test_clip_client_with_chunks(
    run: DriverResults, expected: dict[str, np.ndarray], builtin_model: Any
) -> None:
    check_rows(embedded(run, "client_texts"), chunk_places(3), expected["texts"])
    wanted = np.concatenate([expected["files"], expected["blobs"]])
    check_rows(embedded(run, "client_files_blobs"), chunk_places(4), wanted)
    got = embedded(run, "client_nested")  # @r,cc
    places = ["#0", "#0.chunks[0].chunks[0]", "#0.chunks[0].chunks[1]", "#0.chunks[1].chunks[0]"]
    check_rows(got, places, builtin_model.encode_texts(
        ["a book", "first line", "second line", "third line"]))  # fmt: skip


def test_clip_client_copies_back_only_the_top_level(run: DriverResults, builtin_model: Any) -> None:
    # clip-client 0.8.3 merges replies by id at the top level: with @r,c the roots get
    # their embedding; the chunks' embeddings reach only an on_done callback
    assert run.ok("client_roots_only")["type"] == "DocumentArray"
    got = embedded(run, "client_roots_only")
    check_rows(got, ["#0"], builtin_model.encode_texts(["a page"]))
    # with @c alone no root has an embedding, which clip-client takes for a broken server
    record = run["client_chunks_only"]
    assert record["error_type"] == "ValueError", record
    assert "Empty embedding returned from the server" in record["error"]
