"""Real embeddings through the client equal the in-process model's (builtin model, real
photos), and per-document server failures come back named, with partial results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from docarray import Document

from clipserve import Client
from clipserve.errors import PartialFailureError
from clipserve.server.app import RunningServer, loopback_config, running_server

SCHEMES = ["grpc", "http", "ws"]


@pytest.fixture(scope="module")
def builtin_server() -> Iterator[RunningServer]:
    from clipserve.models.registry import load_model

    model = load_model("builtin")
    with running_server(loopback_config(model="builtin"), model=model) as server:
        yield server


@pytest.mark.parametrize("scheme", SCHEMES)
def test_embeddings_match_the_model_in_process(builtin_server, photos, scheme) -> None:
    texts = ["a photo of an astronaut", "a cup of coffee", "a cat"]
    paths = [str(photos[name]) for name in ("astronaut.jpg", "coffee.png", "chelsea.jpg")]
    with Client(builtin_server.urls[scheme]) as client:
        out = client.encode(texts + paths, batch_size=4)
    model = builtin_server.model
    expected = np.concatenate(
        [model.encode_texts(texts), model.encode_images([Path(p).read_bytes() for p in paths])]
    )
    assert out.shape == (6, model.dim)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_broken_image_fails_alone_with_partial_results(builtin_server, scheme) -> None:
    docs = [Document(text="fine"), Document(blob=b"definitely not an image"), Document(text="ok")]
    with Client(builtin_server.urls[scheme]) as client, pytest.raises(PartialFailureError) as info:
        client.encode(docs)
    error = info.value
    assert list(error.failures) == [docs[1].id]
    assert docs[1].id in str(error) and "image" in error.failures[docs[1].id]
    partial = error.results
    assert partial[0].embedding is not None and partial[2].embedding is not None
    assert partial[1].embedding is None
    with Client(builtin_server.urls[scheme]) as client, pytest.raises(PartialFailureError) as info:
        client.encode(["fine", "data:image/png;base64,AAAA"])
    rows = info.value.results
    assert rows.shape[0] == 2 and not np.isnan(rows[0]).any() and np.isnan(rows[1]).all()
    assert list(info.value.failures) == ["1"]


def test_jina_json_over_http_matches_protobuf(builtin_server, photos) -> None:
    """The JSON body clip-client sends (what a jina gateway understands) gives the same
    embeddings, rank scores, failures and profile as the protobuf fast path."""
    url = builtin_server.urls["http"]
    inputs = ["a cat on a sofa", str(photos["chelsea.png"])]
    with Client(url, http_format="json") as as_json, Client(url) as as_proto:
        assert as_json.encode(["x"]).shape == as_proto.encode(["x"]).shape
        assert as_json._transports and not next(iter(as_json._transports.values())).protobuf
        np.testing.assert_allclose(as_json.encode(inputs), as_proto.encode(inputs), atol=1e-6)
        query = Document(text="a cat", matches=[Document(text=t) for t in ("a dog", "a cat")])
        ranked = as_json.rank([query])
        assert ranked[0].matches[0].text == "a cat"
        assert ranked[0].matches[0].scores["clip_score"].value > 0.5
        with pytest.raises(PartialFailureError):
            as_json.encode([Document(blob=b"not an image"), Document(text="fine")])
        assert as_json.profile()["Server"] >= 1.0
