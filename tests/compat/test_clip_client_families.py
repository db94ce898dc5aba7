"""The published clip-client 0.8.3 against clipserve serving each model family.

Per family, one clip-client process speaks gRPC, HTTP and WebSocket to a server on a tiny
random checkpoint of that family; encodings must equal the model run in-process, and
``rank`` must order by cosine and score by the family's own rule (SigLIP's sigmoid, a
softmax at the model's scale for the others).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clipserve.models.base import EmbeddingModel
from clipserve.models.registry import load_model
from tests.compat.conftest import Photos
from tests.compat.harness import DriverResults, run_driver, running_server, server_config
from tests.models.family_testkit import FAMILY_KEYS, SAVERS

pytestmark = [pytest.mark.compat, pytest.mark.timeout(900)]

PROTOCOLS = ("grpc", "http", "websocket")
TEXTS = ["a photo of a cat", "Two DOGS playing in the snow!", "一只猫的照片", "un chat"]
IMAGES = ("chelsea", "coffee", "astronaut")


@pytest.fixture(scope="module", params=FAMILY_KEYS)
def family_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, EmbeddingModel]]:
    directory: Path = SAVERS[request.param](tmp_path_factory.mktemp(request.param) / "model")
    model = load_model(str(directory))
    with running_server(server_config(model=str(directory)), model) as server:
        yield server, model


def build_ops(photos: Photos) -> list[dict[str, Any]]:
    uris = [str(photos.jpeg[name]) for name in IMAGES]
    image_matches = [{"id": name, "uri": uri} for name, uri in zip(IMAGES, uris, strict=True)]
    ops: list[dict[str, Any]] = []
    for protocol in PROTOCOLS:
        ops += [
            {"name": f"{protocol}-texts", "op": "encode", "client": protocol, "content": TEXTS},
            {"name": f"{protocol}-images", "op": "encode", "client": protocol, "content": uris},
            {"name": f"{protocol}-rank", "op": "rank", "client": protocol, "queries": [
                {"query": {"uri": uris[0]},
                 "matches": [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)]},
                {"query": {"text": TEXTS[0]},
                 "matches": image_matches},
            ]},
        ]  # fmt: skip
    return ops


@pytest.fixture(scope="module")
def run(
    family_server: tuple[Any, EmbeddingModel],
    clip_client_python: Path,
    photos: Photos,
    tmp_path_factory: pytest.TempPathFactory,
) -> DriverResults:
    server, _ = family_server
    clients = {
        protocol: {
            "server": f"{protocol}://127.0.0.1:"
            f"{server.grpc_port if protocol == 'grpc' else server.http_port}"
        }
        for protocol in PROTOCOLS
    }
    return run_driver(
        clip_client_python,
        clients,
        build_ops(photos),
        tmp_path_factory.mktemp("clip-client-family"),
        timeout=300,
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_encodings_equal_the_model(
    run: DriverResults, family_server: tuple[Any, EmbeddingModel], photos: Photos, protocol: str
) -> None:
    _, model = family_server
    np.testing.assert_allclose(
        run.embeddings(f"{protocol}-texts"), model.encode_texts(TEXTS), atol=1e-5
    )
    files = [photos.jpeg[name].read_bytes() for name in IMAGES]
    np.testing.assert_allclose(
        run.embeddings(f"{protocol}-images"), model.encode_images(files), atol=1e-5
    )


def check(matches: list[dict[str, Any]], query: np.ndarray, candidates: dict[str, np.ndarray],
          model: EmbeddingModel) -> None:  # fmt: skip
    names = [match["id"] for match in matches]
    assert sorted(names) == sorted(candidates)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    cosines = np.array([float(unit(query) @ unit(candidates[name])) for name in names])
    assert list(cosines) == sorted(cosines, reverse=True)
    np.testing.assert_allclose([m["cosine"] for m in matches], cosines, atol=1e-5)
    expected = model.score_rule.scores(
        np.array([float(unit(query) @ unit(vector)) for vector in candidates.values()])
    )
    by_name = dict(zip(candidates, expected, strict=True))
    np.testing.assert_allclose([m["clip_score"] for m in matches], [by_name[n] for n in names],
                               atol=1e-5)  # fmt: skip
    assert {m["clip_score_op"] for m in matches} == {model.score_rule.kind}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rank_uses_the_familys_rule(
    run: DriverResults, family_server: tuple[Any, EmbeddingModel], photos: Photos, protocol: str
) -> None:
    _, model = family_server
    image_query, text_query = run.ok(f"{protocol}-rank")["queries"]
    files = [photos.jpeg[name].read_bytes() for name in IMAGES]
    images, texts = model.encode_images(files), model.encode_texts(TEXTS)
    text_candidates = {f"t{i}": vector for i, vector in enumerate(texts)}
    check(image_query["matches"], images[0], text_candidates, model)
    check(text_query["matches"], texts[0], dict(zip(IMAGES, images, strict=True)), model)
