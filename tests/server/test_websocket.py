"""The WebSocket front-end driven by the ``websockets`` library, as jina's client drives it:
binary DataRequestProto frames, replies matched by id, ``b"\\x00"`` ends the input."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from clipserve.wire import WS_END_OF_INPUT, DataRequestProto, StatusProto
from clipserve.wire.ndarray import read_ndarray
from tests.engine.helpers import BLOCK, WrappedModel
from tests.server.conftest import (
    filling_request,
    image_request,
    stoppable_server,
    text_request,
    ws_exchange,
)
from tests.waiting import FAILSAFE_S, eventually


async def test_frames_in_replies_out_then_close_1000(hash_server, hash_model, jpeg_photos):
    requests = [text_request(f"w{i}", f"sentence {i}", "another") for i in range(6)]
    requests.append(image_request("img", {"chelsea": jpeg_photos["chelsea"]}))
    frames = [r.SerializeToString() for r in requests] + [WS_END_OF_INPUT]

    replies, code = await ws_exchange(hash_server.urls["websocket"] + "/", frames)

    assert code == 1000
    assert sorted(r.header.request_id for r in replies) == sorted(
        r.header.request_id for r in requests
    )
    by_doc = {d.id: read_ndarray(d.embedding) for r in replies for d in r.data.docs.docs}
    np.testing.assert_array_equal(by_doc["w3-0"], hash_model.encode_texts(["sentence 3"])[0])
    expected_image = hash_model.encode_images([jpeg_photos["chelsea"]])[0]
    np.testing.assert_array_equal(by_doc["img-chelsea"], expected_image)


async def test_end_of_input_alone_closes_at_once(hash_server):
    replies, code = await ws_exchange(hash_server.urls["websocket"], [WS_END_OF_INPUT])
    assert (replies, code) == ([], 1000)


async def test_request_errors_are_error_replies(hash_server, tight_server):
    bad = text_request("bad", "x", endpoint="/nope")
    replies, code = await ws_exchange(
        hash_server.urls["websocket"], [bad.SerializeToString(), WS_END_OF_INPUT]
    )
    assert code == 1000
    assert replies[0].header.status.code == StatusProto.ERROR
    assert "unknown endpoint" in replies[0].header.status.description

    frames = [filling_request("fill"), text_request("one-more", "no room")]
    replies, code = await ws_exchange(
        tight_server.urls["websocket"], [f.SerializeToString() for f in frames] + [WS_END_OF_INPUT]
    )
    assert code == 1000
    by_id = {r.header.request_id: r.header.status for r in replies}
    assert by_id["fill"].code == StatusProto.SUCCESS  # answered once its batch ran
    status = by_id["one-more"]
    assert (status.code, status.exception.name) == (StatusProto.ERROR, "OverloadedError")
    assert status.description.startswith("overloaded")


async def test_malformed_frames(hash_server):
    header_only = DataRequestProto()
    header_only.header.request_id = "broken"
    damaged = header_only.SerializeToString() + b"\x22\xff\xff\xff\x0f\x01"
    good = text_request("good", "fine").SerializeToString()
    replies, code = await ws_exchange(
        hash_server.urls["websocket"], [damaged, good, WS_END_OF_INPUT]
    )
    by_id = {r.header.request_id: r.header.status for r in replies}
    assert by_id["broken"].code == StatusProto.ERROR
    assert by_id["good"].code == StatusProto.SUCCESS
    assert code == 1000

    replies, code = await ws_exchange(hash_server.urls["websocket"], [b"\xff\xff\xff"])
    assert (replies, code) == ([], 1007)
    replies, code = await ws_exchange(hash_server.urls["websocket"], ["a text frame"])
    assert (replies, code) == ([], 1003)


@pytest.mark.parametrize("photo", ["astronaut", "flower"])
async def test_builtin_model_over_websocket_matches_in_process(
    builtin_server, builtin_model, jpeg_photos, photo
):
    frames = [
        text_request("t", "a rocket launch").SerializeToString(),
        image_request("i", {photo: jpeg_photos[photo]}).SerializeToString(),
        WS_END_OF_INPUT,
    ]
    replies, code = await ws_exchange(builtin_server.urls["websocket"], frames, max_size=None)
    assert code == 1000
    by_doc = {d.id: read_ndarray(d.embedding) for r in replies for d in r.data.docs.docs}
    expected_text = builtin_model.encode_texts(["a rocket launch"])[0]
    np.testing.assert_allclose(by_doc["t-0"], expected_text, atol=1e-5)
    expected_image = builtin_model.encode_images([jpeg_photos[photo]])[0]
    np.testing.assert_allclose(by_doc[f"i-{photo}"], expected_image, atol=1e-5)


async def test_shutdown_answers_in_flight_requests_then_closes_1001(hash_model):
    model = WrappedModel(hash_model)
    with stoppable_server(model, shutdown_grace_s=60) as (server, stopper):
        async with websockets.connect(server.urls["websocket"], subprotocols=["bytes"]) as ws:
            await ws.send(text_request("late", BLOCK).SerializeToString())
            assert await asyncio.to_thread(model.forward_entered.wait, FAILSAFE_S)
            stopper.start()  # while the request is held in the model
            await eventually(lambda: not server.server.http_state.ready, "a drain begins")
            model.release.set()
            reply = DataRequestProto.FromString(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        await asyncio.to_thread(stopper.join, 30)
    assert reply.header.request_id == "late"
    assert reply.header.status.code == StatusProto.SUCCESS
    assert ws.close_code == 1001
