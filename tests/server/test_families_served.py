"""Each model family served for real (127.0.0.1, port 0): ``/v1/embeddings`` for texts and
images, ``/rank`` with the family's own ``clip_score`` rule, and the health body naming it."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data

from clipserve.models.base import EmbeddingModel
from clipserve.models.registry import load_model
from clipserve.server.app import RunningServer, loopback_config, running_server
from tests.models.family_testkit import FAMILY_KEYS, SAVERS

TEXTS = ["a photo of a cat", "Two dogs playing in the snow!", "一只猫的照片", ""]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTOS = [png(data.astronaut()[::4, ::4]), png(data.chelsea()[::3, ::3])]


@pytest.fixture(scope="module", params=FAMILY_KEYS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, EmbeddingModel]]:
    directory: Path = SAVERS[request.param](tmp_path_factory.mktemp(request.param) / "model")
    model = load_model(str(directory))
    with running_server(loopback_config(model=str(directory)), model=model) as server:
        yield server, model


def test_openai_embeddings_of_texts_and_images(
    served: tuple[RunningServer, EmbeddingModel],
) -> None:
    server, model = served
    url = server.urls["http"] + "/v1/embeddings"
    reply = httpx.post(url, json={"input": TEXTS, "model": model.name}, timeout=60).json()
    got = np.array([item["embedding"] for item in reply["data"]], dtype=np.float32)
    assert got.shape == (len(TEXTS), model.dim)
    np.testing.assert_allclose(got, model.encode_texts(TEXTS), atol=1e-5)
    uris = ["data:image/png;base64," + base64.b64encode(photo).decode() for photo in PHOTOS]
    body = {"input": uris, "modality": "image", "encoding_format": "base64"}
    reply = httpx.post(url, json=body, timeout=60).json()
    got = np.stack(
        [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in reply["data"]]
    )
    np.testing.assert_allclose(got, model.encode_images(PHOTOS), atol=1e-5)


def test_rank_scores_by_the_models_rule(served: tuple[RunningServer, EmbeddingModel]) -> None:
    server, model = served
    query = {"id": "photo", "blob": base64.b64encode(PHOTOS[0]).decode()}
    candidates = TEXTS[:3]  # a match without content (an empty text) would fail the query
    query["matches"] = [{"id": f"t{i}", "text": text} for i, text in enumerate(candidates)]
    reply = httpx.post(server.urls["http"] + "/rank", json={"data": [query]}, timeout=60)
    assert reply.status_code == 200, reply.text
    matches = reply.json()["data"][0]["matches"]
    image = model.encode_images(PHOTOS[:1])[0]
    texts = model.encode_texts(candidates)
    cosines = texts @ image / (np.linalg.norm(texts, axis=1) * np.linalg.norm(image))
    expected = model.score_rule.scores(cosines)
    assert [m["id"] for m in matches] == [f"t{i}" for i in np.argsort(-cosines, kind="stable")]
    for match in matches:
        index = int(match["id"][1:])
        clip_score = match["scores"]["clip_score"]
        assert clip_score["op_name"] == model.score_rule.kind
        assert clip_score["value"] == pytest.approx(expected[index], abs=1e-5)
        cosine = match["scores"]["clip_score_cosine"]["value"]
        assert cosine == pytest.approx(cosines[index], abs=1e-5)
    total = sum(m["scores"]["clip_score"]["value"] for m in matches)
    if model.score_rule.kind == "softmax":
        assert total == pytest.approx(1.0, abs=1e-5)


def test_health_names_family_and_rule(served: tuple[RunningServer, EmbeddingModel]) -> None:
    server, model = served
    body = httpx.get(server.urls["http"] + "/health", timeout=30).json()
    assert (body["family"], body["languages"], body["dim"]) == (
        model.family, model.languages, model.dim
    )  # fmt: skip
    assert body["clip_score"] == model.score_rule.describe()
