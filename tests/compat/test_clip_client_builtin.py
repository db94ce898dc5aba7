"""The published clip-client 0.8.3 against a running clipserve on the builtin model.

One clip-client subprocess per protocol (grpc, http, websocket and their TLS forms) runs
every operation once; the tests below check its recorded results against the builtin
model run in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.compat.conftest import COMPAT_MODEL, Photos
from tests.compat.harness import DriverResults, run_driver, running_server, server_config

pytestmark = [pytest.mark.compat, pytest.mark.timeout(900)]

PROTOCOLS = ["grpc", "http", "websocket", "grpcs", "https", "wss"]
TLS_SCHEMES = {"grpcs", "https", "wss"}
TEXTS = [f"sentence number {i}: a photo of a {w}" for i, w in enumerate(
    ["cat", "dog", "rocket", "cup of coffee", "flower", "astronaut", "temple", "river",
     "mountain", "city at night", "bowl of soup", "red car", "bicycle", "beach", "forest",
     "old book", "piano", "snowy road", "lighthouse", "market"]
)]  # fmt: skip
MANY_TEXTS = [f"request {i} of many" for i in range(300)]
RANK_TEXTS = ["a photo of a cat", "a photo of a rocket", "a cup of coffee", "a red flower"]


@pytest.fixture(scope="module")
def servers(compat_cert: tuple[Path, Path], builtin_model: Any) -> Iterator[dict[str, Any]]:
    """One plain and one TLS server for the whole module."""
    cert, key = compat_cert
    model = COMPAT_MODEL
    with contextlib.ExitStack() as stack:
        plain = stack.enter_context(running_server(server_config(model=model), builtin_model))
        tls = server_config(model=model, tls_cert=str(cert), tls_key=str(key))
        secure = stack.enter_context(running_server(tls, builtin_model))
        yield {"plain": plain, "tls": secure}


def big_batch_paths(photos: Photos) -> list[str]:
    return [str(p) for p in photos.big_png.values()]


def build_ops(photos: Photos) -> list[dict[str, Any]]:
    jpeg, png = photos.jpeg, photos.png
    big = big_batch_paths(photos)
    return [
        {"name": "texts", "op": "encode", "content": TEXTS},
        {"name": "mixed_strings", "op": "encode",
         "content": [str(jpeg["chelsea"]), "a photo of a cat", str(png["coffee"])]},
        {"name": "documents", "op": "encode_docs", "docs": [
            {"id": "doc-text", "text": "a cup of coffee"},
            {"id": "doc-uri", "uri": str(jpeg["astronaut"])},
            {"id": "doc-blob", "blob_file": str(png["flower"])},
            {"id": "doc-tensor", "tensor_file": str(photos.tensor_file)},
        ]},
        {"name": "document_list", "op": "encode_docs", "as_document_array": False,
         "docs": [{"text": "a red flower"}, {"uri": str(png["china"])}]},
        {"name": "big_batch", "op": "encode", "content": big,
         "kwargs": {"batch_size": len(big)}, "timeout": 180},
        {"name": "rank_image_to_texts", "op": "rank", "queries": [{
            "query": {"uri": str(jpeg["chelsea"])},
            "matches": [{"id": f"text-{i}", "text": t} for i, t in enumerate(RANK_TEXTS)],
        }]},
        {"name": "rank_text_to_images", "op": "rank", "queries": [{
            "query": {"text": "a photo of a cat"},
            "matches": [{"id": n, "uri": str(jpeg[n])} for n in ("coffee", "chelsea", "flower")],
        }]},
        {"name": "profile", "op": "profile"},
        {"name": "profile_text", "op": "profile", "content": "hello, world"},
        {"name": "aencode", "op": "aencode", "content": TEXTS[:10], "kwargs": {"batch_size": 4}},
        # one document per request: far more requests in flight than a stream's window
        {"name": "many_small", "op": "encode", "content": MANY_TEXTS, "kwargs": {"batch_size": 1}},
        # parameters.model_name makes clip-client post to /encode/<model_name>
        {"name": "model_name", "op": "encode", "content": TEXTS[:3],
         "kwargs": {"parameters": {"model_name": COMPAT_MODEL}}},
        {"name": "bad_image", "op": "encode_docs", "timeout": 60, "docs": [
            {"id": "good-doc", "text": "fine"}, {"id": "bad-doc", "blob_text": "not an image"},
        ]},
    ]  # fmt: skip


@pytest.fixture(scope="module", params=PROTOCOLS)
def run(
    request: pytest.FixtureRequest,
    servers: dict[str, Any],
    clip_client_python: Path,
    photos: Photos,
    compat_cert: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> DriverResults:
    """Every op through one clip-client process speaking this protocol."""
    return drive(request.param, servers, clip_client_python, photos, compat_cert, tmp_path_factory)


def drive(
    scheme: str,
    servers: dict[str, Any],
    clip_client_python: Path,
    photos: Photos,
    compat_cert: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> DriverResults:
    """Run every op through one clip-client process speaking ``scheme`` to
    ``servers["plain"]`` or, for a TLS scheme, ``servers["tls"]``."""
    server = servers["tls" if scheme in TLS_SCHEMES else "plain"]
    port = server.grpc_port if scheme.startswith("grpc") else server.http_port
    results = run_driver(
        clip_client_python,
        {"default": {"server": f"{scheme}://127.0.0.1:{port}"}},
        build_ops(photos),
        tmp_path_factory.mktemp(f"clip-client-{scheme}"),
        ca_file=compat_cert[0] if scheme in TLS_SCHEMES else None,
        timeout=300,
    )
    results.label = scheme
    return results


@pytest.fixture(scope="module")
def expected(builtin_model, photos: Photos) -> dict[str, np.ndarray]:
    """What the builtin model gives in-process for the same inputs."""
    from PIL import Image  # noqa: F401 - fail here, not in the model, if Pillow is missing

    m, jpeg, png = builtin_model, photos.jpeg, photos.png
    images = lambda paths: m.encode_images([Path(p).read_bytes() for p in paths])  # noqa: E731
    return {
        "texts": m.encode_texts(TEXTS),
        "mixed_strings": np.concatenate([
            images([jpeg["chelsea"]]),
            m.encode_texts(["a photo of a cat"]),
            images([png["coffee"]]),
        ]),
        "documents": np.concatenate([
            m.encode_texts(["a cup of coffee"]),
            images([jpeg["astronaut"], png["flower"]]),
            m.encode_images([np.load(photos.tensor_file)]),
        ]),
        "document_list": np.concatenate(
            [m.encode_texts(["a red flower"]), images([png["china"]])]
        ),
        "big_batch": images(big_batch_paths(photos)),
        "aencode": m.encode_texts(TEXTS[:10]),
        "many_small": m.encode_texts(MANY_TEXTS),
        "model_name": m.encode_texts(TEXTS[:3]),
        "rank_texts": m.encode_texts(RANK_TEXTS + ["a photo of a cat"]),
        "rank_images": images([jpeg[n] for n in ("chelsea", "coffee", "flower")]),
    }  # fmt: skip


def assert_close(actual: np.ndarray, wanted: np.ndarray, scheme: str) -> None:
    # HTTP carries embeddings as JSON numbers, which clip-client reads back as float64
    assert actual.dtype == (np.float64 if scheme in ("http", "https") else np.float32)
    assert actual.shape == wanted.shape
    np.testing.assert_allclose(actual, wanted, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["texts", "mixed_strings", "documents", "document_list", "big_batch", "aencode",
     "many_small", "model_name"],
)  # fmt: skip
def test_embeddings_equal_the_model_in_process(
    run: DriverResults, expected: dict[str, np.ndarray], name: str
) -> None:
    assert_close(run.embeddings(name), expected[name], run.label)


def test_strings_give_an_ndarray_and_documents_a_document_array(run: DriverResults) -> None:
    assert run.ok("texts")["type"] == "ndarray"
    assert run.ok("aencode")["type"] == "ndarray"
    documents = run.ok("documents")
    assert documents["type"] == "DocumentArray"
    assert documents["ids_out"] == documents["ids_in"]
    listed = run.ok("document_list")
    assert listed["ids_out"] == listed["ids_in"]


def test_one_request_larger_than_4_mib(run: DriverResults, photos: Photos) -> None:
    request_bytes = sum(Path(p).stat().st_size for p in big_batch_paths(photos))
    assert request_bytes > 4 * 1024 * 1024
    assert run.ok("big_batch")["shape"][0] == len(big_batch_paths(photos))


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def check_ranking(
    matches: list[dict[str, Any]], query: np.ndarray, candidates: dict[str, np.ndarray]
) -> None:
    """Best first; clip_score is softmax(100 * cosine) over the matches; cosine is right."""
    names = [m["id"] for m in matches]
    assert sorted(names) == sorted(candidates)
    scores = np.array([m["clip_score"] for m in matches])
    assert list(scores) == sorted(scores, reverse=True)
    assert scores.sum() == pytest.approx(1.0, abs=1e-4)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cosines = np.array([float(unit(query) @ unit(candidates[n])) for n in names])
    np.testing.assert_allclose([m["cosine"] for m in matches], cosines, atol=1e-4)
    np.testing.assert_allclose(scores, softmax(100 * cosines), atol=1e-3)
    for match in matches:
        assert match["clip_score_op"] == "softmax"
        assert match["cosine_op"] == "cosine"
        assert not match["has_embedding"]


def test_rank_image_against_texts(run: DriverResults, expected: dict[str, np.ndarray]) -> None:
    (query,) = run.ok("rank_image_to_texts")["queries"]
    ids = [f"text-{i}" for i in range(len(RANK_TEXTS))]
    candidates = dict(zip(ids, expected["rank_texts"][:-1], strict=True))
    check_ranking(query["matches"], expected["rank_images"][0], candidates)


def test_rank_text_against_images(
    run: DriverResults, expected: dict[str, np.ndarray], photos: Photos
) -> None:
    (query,) = run.ok("rank_text_to_images")["queries"]
    ids = ["chelsea", "coffee", "flower"]
    candidates = dict(zip(ids, expected["rank_images"], strict=True))
    check_ranking(query["matches"], expected["rank_texts"][-1], candidates)


@pytest.mark.parametrize("name", ["profile", "profile_text"])
def test_profile_reports_real_timings(run: DriverResults, name: str) -> None:
    report = run.ok(name)["report"]
    assert set(report) == {
        "Roundtrip", "Client-server network", "Server", "Gateway-CLIP network", "CLIP model"
    }  # fmt: skip
    assert report["Roundtrip"] > 0
    assert report["Server"] >= 1  # under 1 ms the client divides by zero
    assert report["Server"] >= report["CLIP model"] >= 0


def test_a_bad_image_fails_the_call_naming_the_document(run: DriverResults) -> None:
    record = run["bad_image"]
    assert not record["ok"]
    assert record["error_type"] == "BadServer", record
    assert "bad-doc" in record["error"]


def test_one_client_at_batch_64_over_http_is_never_refused(
    servers: dict[str, Any], clip_client_python: Path, builtin_model: Any, tmp_path: Path
) -> None:
    # clip-client posts up to 100 requests at once over HTTP: at batch 64 that is 6,400
    # texts queued against a CPU model, which the server must take rather than refuse
    texts = [f"queued sentence {i}" for i in range(7000)]
    op = {"name": "many_at_64", "op": "encode", "content": texts, "timeout": 240,
          "kwargs": {"batch_size": 64}}  # fmt: skip
    server = f"http://127.0.0.1:{servers['plain'].http_port}"
    results = run_driver(clip_client_python, {"default": {"server": server}}, [op], tmp_path)
    embeddings = results.embeddings("many_at_64")
    assert embeddings.shape == (7000, builtin_model.dim)
    probe = [0, 3333, 6999]
    wanted = builtin_model.encode_texts([texts[i] for i in probe])
    np.testing.assert_allclose(embeddings[probe], wanted, atol=1e-4)


def test_a_burst_larger_than_the_queue_waits_instead_of_failing(
    clip_client_python: Path, builtin_model: Any, tmp_path: Path
) -> None:
    # the 6,400 texts clip-client has in flight at batch 64 overflow a queue of 4,096 (this
    # failed with "text queue is full" before calls could wait for room); now the overflow
    # waits its turn, and every text comes back
    texts = [f"burst sentence {i}" for i in range(7000)]
    op = {"name": "burst", "op": "encode", "content": texts, "timeout": 240,
          "kwargs": {"batch_size": 64}}  # fmt: skip
    config = server_config(model=COMPAT_MODEL, max_queue_items=4096, max_queue_wait_s=120.0)
    with running_server(config, builtin_model) as server:
        url = f"http://127.0.0.1:{server.http_port}"
        refused_before = _overload_refusals(server.server.metrics)
        results = run_driver(clip_client_python, {"default": {"server": url}}, [op], tmp_path)
        assert _overload_refusals(server.server.metrics) == refused_before
    embeddings = results.embeddings("burst")
    assert embeddings.shape == (7000, builtin_model.dim)
    probe = [0, 4500, 6999]
    wanted = builtin_model.encode_texts([texts[i] for i in probe])
    np.testing.assert_allclose(embeddings[probe], wanted, atol=1e-4)


def _overload_refusals(metrics: Any) -> float:
    """HTTP requests refused as overloaded so far (the registry may be shared)."""
    return sum(
        sample.value
        for family in metrics.requests.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
        and sample.labels.get("protocol") == "http"
        and sample.labels.get("status") == "overloaded"
    )
