"""TLS (self-signed certificate) and token auth on all three protocols."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator

import grpc
import httpx
import pytest
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import GRPC_METHOD, WS_END_OF_INPUT, DataRequestProto, StatusProto
from tests.conftest import TlsPair
from tests.server.conftest import text_request, ws_exchange

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def secure_server(tls_pair: TlsPair, hash_model) -> Iterator[RunningServer]:
    """TLS + token; health open (default), metrics protected."""
    config = loopback_config(
        tls_cert=str(tls_pair.cert),
        tls_key=str(tls_pair.key),
        auth_token=TOKEN,
        open_metrics=False,
    )
    with running_server(config, model=hash_model) as server:
        yield server


@pytest.fixture(scope="module")
def guarded_server(hash_model) -> Iterator[RunningServer]:
    """Token without TLS, health protected too."""
    config = loopback_config(auth_token=TOKEN, open_health=False)
    with running_server(config, model=hash_model) as server:
        yield server


def client_context(tls_pair: TlsPair) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_pair.cert))


# ---- gRPC -------------------------------------------------------------------------------


async def grpc_call(channel: grpc.aio.Channel, metadata: tuple) -> list[DataRequestProto]:
    stream = channel.stream_stream(
        GRPC_METHOD,
        request_serializer=DataRequestProto.SerializeToString,
        response_deserializer=DataRequestProto.FromString,
    )

    async def send():
        yield text_request("g", "over tls")

    return [reply async for reply in stream(send(), metadata=metadata, timeout=30)]


def secure_channel(server: RunningServer, tls_pair: TlsPair | None) -> grpc.aio.Channel:
    roots = tls_pair.cert.read_bytes() if tls_pair else None
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.aio.secure_channel(f"localhost:{server.grpc_port}", credentials)


@pytest.mark.parametrize("credential", [TOKEN, f"Bearer {TOKEN}"])
async def test_grpc_over_tls_with_token(secure_server, tls_pair, credential):
    async with secure_channel(secure_server, tls_pair) as channel:
        (reply,) = await grpc_call(channel, (("authorization", credential),))
    assert reply.header.status.code == StatusProto.SUCCESS
    assert secure_server.urls["grpc"].startswith("grpcs://")


@pytest.mark.parametrize("metadata", [(), (("authorization", "wrong"),)])
async def test_grpc_refuses_missing_or_wrong_token(secure_server, tls_pair, metadata):
    async with secure_channel(secure_server, tls_pair) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_call(channel, metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_client_that_does_not_trust_the_cert_fails(secure_server):
    async with secure_channel(secure_server, None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_call(channel, (("authorization", TOKEN),))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpc_health_open_or_protected(secure_server, guarded_server, tls_pair):
    request = health_pb2.HealthCheckRequest(service="")
    async with secure_channel(secure_server, tls_pair) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(request)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{guarded_server.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(request)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        response = await stub.Check(request, metadata=(("authorization", TOKEN),))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


# ---- HTTP -------------------------------------------------------------------------------


def test_https_with_token(secure_server, tls_pair):
    url = secure_server.urls["https"]
    with httpx.Client(verify=client_context(tls_pair)) as client:
        body = {"data": [{"text": "hello"}]}
        ok = client.post(url + "/post", json=body, headers={"Authorization": TOKEN})
        assert ok.status_code == 200
        bearer = client.post(url + "/post", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        for headers in ({}, {"Authorization": "wrong"}):
            refused = client.post(url + "/post", json=body, headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "AuthenticationError"
        assert client.get(url + "/health").status_code == 200  # open by default
        assert client.get(url + "/openapi.json").status_code == 200
        assert client.get(url + "/metrics").status_code == 401  # protected here
        assert client.get(url + "/metrics", headers={"Authorization": TOKEN}).status_code == 200


def test_https_client_that_does_not_trust_the_cert_fails(secure_server):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(secure_server.urls["https"] + "/health")


def test_protected_health_over_http(guarded_server):
    url = guarded_server.urls["http"]
    assert httpx.get(url + "/health").status_code == 401
    assert httpx.get(url + "/readyz", headers={"Authorization": TOKEN}).status_code == 200


# ---- WebSocket --------------------------------------------------------------------------


async def wss_exchange(url: str, tls_pair: TlsPair, first: list, **connect) -> tuple[list, int]:
    frames = [*first, text_request("w", "hello").SerializeToString(), WS_END_OF_INPUT]
    return await ws_exchange(url, frames, ssl=client_context(tls_pair), **connect)


async def test_wss_with_token_header_or_first_frame(secure_server, tls_pair):
    url = secure_server.urls["wss"]
    header = {"additional_headers": {"Authorization": TOKEN}}
    replies, code = await wss_exchange(url, tls_pair, [], **header)
    assert code == 1000 and replies[0].header.status.code == StatusProto.SUCCESS
    replies, code = await wss_exchange(url, tls_pair, [json.dumps({"authorization": TOKEN})])
    assert code == 1000 and replies[0].header.request_id == "w"


@pytest.mark.parametrize(
    "first, connect",
    [
        ([], {}),  # no credential at all: the binary frame is not an auth frame
        (['{"authorization": "wrong"}'], {}),
        ([], {"additional_headers": {"Authorization": "wrong"}}),
    ],
)
async def test_wss_refuses_missing_or_wrong_token(secure_server, tls_pair, first, connect):
    replies, code = await wss_exchange(secure_server.urls["wss"], tls_pair, first, **connect)
    assert (replies, code) == ([], 1008)


async def test_wss_client_that_does_not_trust_the_cert_fails(secure_server):
    with pytest.raises(ssl.SSLCertVerificationError):
        async with websockets.connect(secure_server.urls["wss"], subprotocols=["bytes"]):
            pass
