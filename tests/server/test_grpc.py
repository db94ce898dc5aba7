"""The gRPC front-end driven by a raw grpc.aio client, as clip-client drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clipserve.server.app import RunningServer
from clipserve.server.limits import MiB
from clipserve.wire import GRPC_METHOD, DataRequestProto, DocumentProto, StatusProto
from clipserve.wire.messages import new_request
from clipserve.wire.ndarray import read_ndarray
from tests.engine.helpers import BLOCK, WrappedModel
from tests.server.conftest import (
    filling_request,
    image_request,
    stoppable_server,
    text_request,
)
from tests.waiting import FAILSAFE_S, eventually


async def call(
    port: int,
    requests: Iterable[DataRequestProto | bytes],
    metadata: Sequence[tuple[str, str]] = (("__prefetch__", "100"),),
) -> list[DataRequestProto]:
    """One bidirectional stream: send every request, half-close, collect every reply."""
    options = [("grpc.max_receive_message_length", 64 * MiB)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stream = channel.stream_stream(
            GRPC_METHOD,
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=DataRequestProto.FromString,
        )

        async def send() -> AsyncIterator[DataRequestProto | bytes]:
            for request in requests:
                yield request

        return [reply async for reply in stream(send(), metadata=metadata)]


def embeddings_by_id(replies: Iterable[DataRequestProto]) -> dict[str, np.ndarray]:
    out = {}
    for reply in replies:
        for doc in reply.data.docs.docs:
            out[doc.id] = read_ndarray(doc.embedding, doc.id)
    return out


async def test_stream_answers_every_request_by_id(hash_server, hash_model, jpeg_photos):
    texts = [("r0", "a photo of a cat", "a dog"), ("r1", "rocket"), ("r2", "x", "y", "z")]
    requests = [text_request(rid, *words) for rid, *words in texts]
    requests.append(image_request("r3", jpeg_photos))
    requests += [text_request(f"bulk{i}", f"sentence {i}") for i in range(12)]

    replies = await call(hash_server.grpc_port, requests)

    assert sorted(r.header.request_id for r in replies) == sorted(
        r.header.request_id for r in requests
    )
    assert all(r.header.status.code == StatusProto.SUCCESS for r in replies)
    got = embeddings_by_id(replies)
    for rid, *words in texts:
        expected = hash_model.encode_texts(words)
        for index in range(len(words)):
            np.testing.assert_array_equal(got[f"{rid}-{index}"], expected[index])
    images = hash_model.encode_images(list(jpeg_photos.values()))
    for index, name in enumerate(jpeg_photos):
        assert got[f"r3-{name}"].dtype == np.float32
        np.testing.assert_array_equal(got[f"r3-{name}"], images[index])
    reply = next(r for r in replies if r.header.request_id == "r0")
    assert [route.executor for route in reply.routes] == ["gateway", "clip_t"]
    assert reply.data.docs.docs[0].embedding.cls_name == "numpy"


async def test_prefetch_of_one_still_answers_everything(hash_server):
    requests = [text_request(f"p{i}", f"text {i}") for i in range(5)]
    replies = await call(hash_server.grpc_port, requests, metadata=[("__prefetch__", "1")])
    assert sorted(r.header.request_id for r in replies) == [f"p{i}" for i in range(5)]


async def test_messages_above_grpc_default_4mib_are_accepted(hash_server, hash_model):
    big = bytes(np.random.default_rng(0).integers(0, 256, 6 * MiB, dtype=np.uint8))
    request = new_request([DocumentProto(id="big", blob=big)], request_id="big")
    (reply,) = await call(hash_server.grpc_port, [request])
    assert reply.header.status.code == StatusProto.SUCCESS
    embedding = embeddings_by_id([reply])["big"]
    np.testing.assert_array_equal(embedding, hash_model.encode_images([big])[0])


async def test_request_level_errors_are_in_band_and_the_stream_goes_on(hash_server):
    bad_endpoint = text_request("bad", "hello", endpoint="/nope")
    pickled = DataRequestProto()
    pickled.header.request_id = "pickle"
    pickled.data.docs_bytes = b"\x80\x04not really a pickle"
    good = text_request("good", "hello")

    replies = {
        r.header.request_id: r
        for r in await call(hash_server.grpc_port, [bad_endpoint, pickled, good])
    }

    assert replies["good"].header.status.code == StatusProto.SUCCESS
    for rid, words in (("bad", "unknown endpoint"), ("pickle", "docs_bytes")):
        status = replies[rid].header.status
        assert status.code == StatusProto.ERROR
        assert words in status.description
        assert status.exception.name == "InvalidInputError"


async def test_one_bad_image_fails_alone(hash_server, jpeg_photos):
    docs = [DocumentProto(id="ok", text="fine"), DocumentProto(id="empty-blob", blob=b"")]
    docs[1].uri = "http://192.168.7.7/cat.jpg"
    docs[1].ClearField("blob")
    (reply,) = await call(hash_server.grpc_port, [new_request(docs, request_id="mixed")])
    assert reply.header.status.code == StatusProto.ERROR
    assert "'empty-blob'" in reply.header.status.description
    assert "192.168.7.7 is a private address" in reply.header.status.description
    ok = next(d for d in reply.data.docs.docs if d.id == "ok")
    assert read_ndarray(ok.embedding).shape == (hash_server.model.dim,)


async def test_malformed_message_with_a_readable_id_gets_an_error_reply(hash_server):
    header_only = DataRequestProto()
    header_only.header.request_id = "broken"
    damaged = header_only.SerializeToString() + b"\x22\xff\xff\xff\x0f\x01"  # data: bad length
    replies = await call(hash_server.grpc_port, [damaged, text_request("after", "still ok")])
    by_id = {r.header.request_id: r for r in replies}
    assert by_id["broken"].header.status.code == StatusProto.ERROR
    assert "malformed" in by_id["broken"].header.status.description
    assert by_id["after"].header.status.code == StatusProto.SUCCESS


async def test_malformed_message_without_id_ends_the_call_invalid_argument(hash_server):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(hash_server.grpc_port, [b"\xff\xff\xff"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in info.value.details()


async def test_full_queue_is_resource_exhausted(tight_server):
    requests = [filling_request("fill"), text_request("one-more", "no room")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(tight_server.grpc_port, requests)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "overloaded" in info.value.details()


async def test_health_service_reports_serving(hash_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hash_server.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "jina.JinaRPC"):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_builtin_model_over_grpc_matches_in_process(
    builtin_server: RunningServer, builtin_model, jpeg_photos
):
    photos = dict(list(jpeg_photos.items())[:2])
    texts = ["a photo of an astronaut", "a cat lying on a blanket"]
    replies = await call(
        builtin_server.grpc_port, [text_request("t", *texts), image_request("i", photos)]
    )
    got = embeddings_by_id(replies)
    expected_texts = builtin_model.encode_texts(texts)
    expected_images = builtin_model.encode_images(list(photos.values()))
    for index in range(len(texts)):
        np.testing.assert_allclose(got[f"t-{index}"], expected_texts[index], atol=1e-5)
    for index, name in enumerate(photos):
        np.testing.assert_allclose(got[f"i-{name}"], expected_images[index], atol=1e-5)


async def test_shutdown_lets_an_open_stream_finish(hash_model):
    model = WrappedModel(hash_model)
    with stoppable_server(model, shutdown_grace_s=60) as (server, stopper):
        pending = asyncio.ensure_future(call(server.grpc_port, [text_request("late", BLOCK)]))
        assert await asyncio.to_thread(model.forward_entered.wait, FAILSAFE_S)
        stopper.start()  # while the request is held in the model
        await eventually(lambda: not server.server.http_state.ready, "a drain begins")
        model.release.set()
        replies = await pending
        await asyncio.to_thread(stopper.join, 30)
    assert [r.header.request_id for r in replies] == ["late"]
    assert replies[0].header.status.code == StatusProto.SUCCESS
