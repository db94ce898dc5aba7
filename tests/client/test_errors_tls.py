"""Errors mapped into clipserve's tree on every protocol, credentials, and TLS."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from clipserve import Client
from clipserve.engine.metrics import Metrics
from clipserve.errors import (
    AuthenticationError,
    ClientTimeoutError,
    OverloadedError,
    ServerUnavailableError,
)
from clipserve.models.hashing import HashModel
from clipserve.server.app import RunningServer, loopback_config, running_server
from tests.engine.helpers import BLOCK, WrappedModel
from tests.waiting import FAILSAFE_S

SCHEMES = ["grpc", "http", "ws"]
TOKEN = "s3cret-token"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unreachable_server_is_an_error_naming_it(scheme) -> None:
    """A refused connection is a ServerUnavailableError at once, not the ClientTimeoutError
    of a client that kept waiting (its timeout here is only a failsafe)."""
    url = f"{scheme}://127.0.0.1:{closed_port()}"
    client = Client(url, connect_timeout=FAILSAFE_S, timeout=FAILSAFE_S)
    with client, pytest.raises(ServerUnavailableError) as info:
        client.encode(["hello"])
    assert url in str(info.value) and isinstance(info.value, ConnectionError)
    # the refusal itself is reported (gRPC used to wait out connect_timeout, then say so)
    message = str(info.value).lower()
    assert "refused" in message or "connect call failed" in message, message
    assert "within" not in message


def test_grpc_refusal_is_short_and_clear() -> None:
    """No chain through grpc's FutureTimeoutError: the cause, if any, is the OS error."""
    url = f"grpc://127.0.0.1:{closed_port()}"
    client = Client(url, connect_timeout=FAILSAFE_S)
    with client, pytest.raises(ServerUnavailableError, match="Connection refused") as info:
        client.encode(["hello"])
    cause = info.value.__cause__
    assert cause is None or isinstance(cause, OSError)


def test_grpc_to_a_port_without_a_grpc_server_names_the_mismatch(silent_port) -> None:
    """Something listens but never speaks HTTP/2: wait for connect_timeout, then say so."""
    url = f"grpc://127.0.0.1:{silent_port}"
    client = Client(url, connect_timeout=0.5, timeout=FAILSAFE_S)
    with client, pytest.raises(ServerUnavailableError, match="no gRPC server answered"):
        client.encode(["hello"])


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RunningServer]:
    with running_server(loopback_config(auth_token=TOKEN)) as server:
        yield server


@pytest.mark.parametrize("scheme", SCHEMES)
def test_credentials_on_every_protocol(auth_server, scheme) -> None:
    url = auth_server.urls[scheme]
    for credential in (None, "wrong"):
        with Client(url, credential) as client, pytest.raises(AuthenticationError):
            client.encode(["hello"])
    for credential in ({"Authorization": TOKEN}, TOKEN):
        with Client(url, credential) as client:
            assert client.encode(["hello"]).shape[0] == 1


@pytest.fixture(scope="module")
def tiny_queue_server() -> Iterator[RunningServer]:
    """A queue too small for a batch of 64: every such request is refused as overloaded (the
    cache is off, or the texts sent again would be answered from it)."""
    config = loopback_config(max_queue_items=8, cache_mb=0)
    with running_server(config, metrics=Metrics(CollectorRegistry())) as server:
        yield server


def overload_refusals(server: RunningServer, scheme: str) -> float:
    protocol = {"grpc": "grpc", "http": "http", "ws": "websocket"}[scheme]
    labels = {"protocol": protocol, "endpoint": "/encode", "status": "overloaded"}
    value = server.server.metrics.registry.get_sample_value("clipserve_requests_total", labels)
    return value or 0.0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_overload_is_overloaded_error_and_retried(tiny_queue_server, scheme) -> None:
    url = tiny_queue_server.urls[scheme]
    texts = [f"t{i}" for i in range(64)]
    refused = overload_refusals(tiny_queue_server, scheme)
    with Client(url) as client, pytest.raises(OverloadedError):
        client.encode(texts, batch_size=64)
    assert overload_refusals(tiny_queue_server, scheme) == refused + 1
    with Client(url, retries=2, retry_backoff=0.01) as client, pytest.raises(OverloadedError):
        client.encode(texts, batch_size=64)
    assert overload_refusals(tiny_queue_server, scheme) == refused + 4  # 1 + 1 + 2 retries
    with Client(url, prefetch=1) as client:  # one small batch at a time fits
        assert client.encode(texts, batch_size=4).shape[0] == 64


@pytest.fixture(scope="module")
def tls_server(tls_files) -> Iterator[RunningServer]:
    cert, key = tls_files
    with running_server(loopback_config(tls_cert=str(cert), tls_key=str(key))) as server:
        yield server


@pytest.mark.parametrize("scheme", ["grpcs", "https", "wss", "websockets"])
def test_tls_schemes_with_self_signed_certificate(tls_server, tls_files, scheme) -> None:
    cert, _ = tls_files
    port = tls_server.grpc_port if scheme == "grpcs" else tls_server.http_port
    url = f"{scheme}://127.0.0.1:{port}"
    with Client(url, verify=str(cert)) as client:
        assert client.encode(["secure hello"]).shape[0] == 1
    with Client(url, verify=False) as client:
        assert client.encode(["insecure hello"]).shape[0] == 1
    with Client(url, connect_timeout=2) as client, pytest.raises(ServerUnavailableError):
        client.encode(["an unknown certificate authority"])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_silent_server_times_out_instead_of_hanging(silent_port, scheme) -> None:
    url = f"{scheme}://127.0.0.1:{silent_port}"
    client = Client(url, connect_timeout=1, timeout=1)
    with client, pytest.raises((ServerUnavailableError, ClientTimeoutError)) as info:
        client.encode(["hello?"])
    assert url in str(info.value)


@pytest.fixture
def held_server() -> Iterator[tuple[RunningServer, WrappedModel]]:
    """A server whose model holds a batch with the BLOCK text until released."""
    model = WrappedModel(HashModel())
    with running_server(loopback_config(), model=model) as server:
        try:
            yield server, model
        finally:
            model.release.set()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_profile_waits_no_longer_than_the_client_timeout(held_server, scheme) -> None:
    server, model = held_server
    with Client(server.urls[scheme], timeout=0.5) as client:
        with pytest.raises(ClientTimeoutError, match=r"no reply to profile\(\) within 0.5s"):
            client.profile(BLOCK)
        assert model.forward_entered.wait(30)  # the request was sent and is held
        model.release.set()
        assert client.profile("answered")["Server"] > 0  # the client is still usable


def test_unknown_keywords_are_refused_before_anything_is_sent() -> None:
    with Client(f"grpc://127.0.0.1:{closed_port()}") as client:
        with pytest.raises(TypeError, match="batchsize; it takes access_paths, batch_size"):
            client.encode(["x"], batchsize=4)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"rank\(\) got unexpected keyword argument"):
            client.rank([], top_k=3)  # type: ignore[call-arg]
