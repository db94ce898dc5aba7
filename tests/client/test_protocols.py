"""The client against a real clipserve server (``hash`` model) on every plain protocol."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator

import numpy as np
import pytest
from docarray import Document, DocumentArray

from clipserve import Client
from clipserve.client.inputs import tensor_to_png
from clipserve.errors import InvalidInputError

PROTOCOLS = ["grpc", "http", "websocket"]


@pytest.fixture(params=PROTOCOLS)
def client(request, hash_server) -> Iterator[Client]:
    with Client(hash_server.urls[request.param]) as c:
        yield c


def test_texts_come_back_in_input_order(client, hash_server) -> None:
    texts = [f"sentence number {i}" for i in range(150)]
    out = client.encode(texts, batch_size=7)
    assert out.dtype == np.float32 and out.shape == (150, hash_server.model.dim)
    np.testing.assert_array_equal(out, hash_server.model.encode_texts(texts))


def test_generators_tuples_and_default_batch(client, hash_server) -> None:
    texts = tuple(f"t{i}" for i in range(70))
    expected = hash_server.model.encode_texts(list(texts))
    np.testing.assert_array_equal(client.encode(t for t in texts), expected)
    np.testing.assert_array_equal(client.encode(texts, batch_size=1000), expected)


def test_images_from_every_source(client, hash_server, photos, image_site, monkeypatch) -> None:
    png = photos["astronaut.png"]
    jpg = photos["coffee.jpg"]
    png_bytes, jpg_bytes = png.read_bytes(), jpg.read_bytes()
    monkeypatch.chdir(png.parent)
    data_uri = "data:image/png;base64," + base64.b64encode(png_bytes).decode()
    inputs = [
        str(png),  # absolute path
        "coffee.jpg",  # relative path
        jpg.as_uri(),  # file:// URL
        f"{image_site}/astronaut.png?id=3",  # http URL with a query string
        data_uri,
        "a sentence between images",
    ]
    out = client.encode(inputs, batch_size=4)
    model = hash_server.model
    expected_images = model.encode_images([png_bytes, jpg_bytes, jpg_bytes, png_bytes, png_bytes])
    np.testing.assert_array_equal(out[:5], expected_images)
    np.testing.assert_array_equal(out[5], model.encode_texts([inputs[5]])[0])


def test_documents_blob_tensor_uri_text(client, hash_server, photos) -> None:
    jpg_bytes = photos["chelsea.jpg"].read_bytes()
    tensor = np.random.default_rng(1).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    docs = DocumentArray(
        [
            Document(text="she smiled, with pain"),
            Document(blob=jpg_bytes),
            Document(tensor=tensor),
            Document(uri=str(photos["chelsea.jpg"])),
        ]
    )
    ids = [d.id for d in docs]
    result = client.encode(docs, batch_size=3)
    assert isinstance(result, DocumentArray) and [d.id for d in result] == ids
    assert result[0] is docs[0]  # the caller's own Documents, embedding set in place
    model = hash_server.model
    expected = np.concatenate(
        [
            model.encode_texts(["she smiled, with pain"]),
            model.encode_images([jpg_bytes, tensor_to_png(tensor, "t"), jpg_bytes]),
        ]
    )
    np.testing.assert_array_equal(result.embeddings, expected)
    gen = client.encode(Document(text=t) for t in ["a", "b"])
    assert isinstance(gen, DocumentArray) and gen.embeddings.shape == (2, model.dim)


def test_rank_reorders_matches_by_clip_score(client) -> None:
    candidates = ["control room", "lecture room", "conference room", "podium", "studio"]
    query = Document(
        text="a photo of conference room",
        matches=[Document(text=f"a photo of a {p}") for p in candidates],
    )
    originals = {m.id: m for m in query.matches}
    ranked = client.rank([query])
    texts, scores = ranked["@m", ["text", "scores__clip_score__value"]]
    assert sorted(texts) == sorted(f"a photo of a {p}" for p in candidates)
    assert scores == sorted(scores, reverse=True)
    assert abs(sum(scores) - 1.0) < 1e-4
    assert all(m is originals[m.id] for m in ranked[0].matches)  # caller's objects, reordered


def test_profile_prints_the_tree_and_returns_ms(client, capsys) -> None:
    stats = client.profile()
    printed = capsys.readouterr().out
    assert list(stats) == ["Roundtrip", "Client-server network", "Server", "CLIP model"]
    for name in stats:
        assert name in printed and stats[name] >= 0
    assert "Gateway" not in printed  # one process: no gateway-executor hop to show
    assert stats["Server"] >= 1.0 and stats["Roundtrip"] >= stats["Server"]
    assert client.profile("hello, world")["Roundtrip"] > 0


def test_callbacks_receive_each_reply(client, hash_server) -> None:
    texts = [f"x{i}" for i in range(25)]
    seen: dict[int, np.ndarray] = {}

    def on_done(response) -> None:
        for i, row in zip(response.ids, response.embeddings, strict=True):
            seen[int(i)] = row

    assert client.encode(texts, batch_size=4, on_done=on_done) is None
    assert sorted(seen) == list(range(25))
    np.testing.assert_array_equal(np.stack([seen[i] for i in range(25)]),
                                  hash_server.model.encode_texts(texts))  # fmt: skip


def test_progress_bar(client, capsys) -> None:
    assert client.encode([f"p{i}" for i in range(30)], batch_size=8, show_progress=True).shape[0]
    out = capsys.readouterr().out
    assert "30/30" in out and "items/s" in out
    client.encode((f"p{i}" for i in range(30)), batch_size=8, show_progress=True)
    assert "30 items" in capsys.readouterr().out


async def test_sync_methods_work_inside_a_running_loop(client) -> None:
    assert client.encode(["inside a loop"]).shape[0] == 1  # as in Jupyter


async def test_aencode_leaves_the_event_loop_free(client) -> None:
    """While ``aencode`` runs, other coroutines run too: a loop that only yields advances
    hundreds of times before the call is done (a call that blocked the event loop would let
    it run about once). How much other work is slowed: benchmarks/bench_responsiveness.py."""
    texts = ["hello world"] * 3000
    call = asyncio.ensure_future(client.aencode(texts, batch_size=8))
    turns = 0
    while not call.done():
        turns += 1
        await asyncio.sleep(0)
    assert (await call).shape[0] == 3000
    assert turns > 375, f"other work ran only {turns} times during 375 requests"


def test_unreadable_inputs_name_themselves(client, image_site, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="cat.jpg"):
        client.encode(["fine", "cat.jpg"])
    with pytest.raises(InvalidInputError, match="missing.png"):
        client.encode([f"{image_site}/missing.png"])
    with pytest.raises(InvalidInputError, match="model_name|nope"):
        client.encode(["x"], parameters={"model_name": "nope"})


def test_lazy_loading_reads_files_just_in_time(client, tmp_path, photos) -> None:
    """A file created after encode() started (but before its batch) is read fine."""
    late = tmp_path / "late.png"
    first = photos["coffee.png"]

    def items() -> Iterator[str]:
        yield str(first)
        yield "a sentence"
        os.link(first, late) if not late.exists() else None
        yield str(late)

    out = client.encode(items(), batch_size=1)
    np.testing.assert_array_equal(out[0], out[2])


def test_input_is_consumed_lazily_within_the_window(client) -> None:
    consumed = answered = worst = 0

    def items() -> Iterator[str]:
        nonlocal consumed
        for i in range(600):
            consumed += 1
            yield f"t{i}"

    def on_done(response) -> None:
        nonlocal answered, worst
        worst = max(worst, consumed - answered)
        answered += len(response.ids)

    client.encode(items(), batch_size=10, prefetch=3, on_done=on_done)
    assert answered == 600
    assert worst <= (3 + 1) * 10, f"{worst} inputs were read ahead of the replies"
