"""The watchdog as served: a stuck forward pass or a dead inference thread turns readiness
to 503 and gRPC health to NOT_SERVING, calls fail fast on every protocol with a clear
error, and a stuck pass that returns brings the server back by itself. With
``--exit-on-stuck`` the process exits non-zero. The model is ``FaultyModel`` (hangs on
``<stuck>``, kills its thread on ``<crash>``); the tests wait for the state to show."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from clipserve import Client
from clipserve.engine.metrics import Metrics
from clipserve.errors import ServerUnavailableError
from clipserve.server.app import RunningServer, loopback_config, running_server
from clipserve.wire import DocumentProto
from clipserve.wire.messages import new_request
from tests.engine.helpers import CRASH, STUCK, FaultyModel
from tests.reliability.gated import engine_of, texts_request
from tests.reliability.protocols import PROTOCOLS, send
from tests.server_process import wait_for_ports
from tests.waiting import FAILSAFE_S, eventually

REPO = Path(__file__).resolve().parents[2]
HEALTH_PATHS = ("/health", "/healthz", "/readyz")


@pytest.fixture
def watched() -> Iterator[tuple[RunningServer, FaultyModel, Metrics]]:
    model = FaultyModel()
    metrics = Metrics(CollectorRegistry())
    config = loopback_config(
        forward_timeout_s=0.3, max_batch_size=4, shutdown_grace_s=1.0, cache_mb=0
    )
    with running_server(config, model=model, metrics=metrics) as server:
        try:
            yield server, model, metrics
        finally:
            model.release.set()


def request_with(tag: str, text: str):
    return new_request([DocumentProto(id=f"{tag}-0", text=text)], request_id=tag)


async def grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        return response.status


async def health_codes(server: RunningServer) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=server.urls["http"]) as http:
        return {path: (await http.get(path)).status_code for path in HEALTH_PATHS}


async def test_a_stuck_pass_turns_health_and_calls_away_until_it_returns(watched) -> None:
    server, model, metrics = watched
    engine = engine_of(server)
    assert await health_codes(server) == dict.fromkeys(HEALTH_PATHS, 200)
    stuck = asyncio.ensure_future(send(server, "http-proto", request_with("stuck", STUCK)))
    await eventually(lambda: not engine.health.ok, "the watchdog reports the stuck pass")

    answer = await stuck  # the caller of the stuck pass is answered at once, not left hanging
    assert answer.code == 503 and "not healthy: a forward pass" in answer.message
    assert await health_codes(server) == dict.fromkeys(HEALTH_PATHS, 503)
    async with httpx.AsyncClient() as http:
        body = (await http.get(server.urls["http"] + "/readyz")).json()
    assert body["status"] == "unhealthy" and "more than 0.3 s" in body["reason"]
    gauge = metrics.registry.get_sample_value("clipserve_engine_healthy")
    assert gauge == 0
    assert await grpc_health(server.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING

    for protocol in PROTOCOLS:  # new calls fail fast, each with the reason
        answer = await send(server, protocol, texts_request(f"new-{protocol}", 2))
        assert answer.failed and "not healthy" in answer.message, (protocol, answer)
        expected = {"grpc": grpc.StatusCode.UNAVAILABLE, "http-json": 503, "http-proto": 503}
        if protocol in expected:
            assert answer.code == expected[protocol]
    with Client(server.urls["grpc"]) as client, pytest.raises(ServerUnavailableError):
        client.encode(["from clipserve's client"])

    model.release.set()  # the pass returns: everything comes back by itself
    await eventually(lambda: engine.health.ok, "healthy again")
    assert await health_codes(server) == dict.fromkeys(HEALTH_PATHS, 200)
    status = await grpc_health(server.grpc_port)
    assert status == health_pb2.HealthCheckResponse.SERVING
    for protocol in PROTOCOLS:
        answer = await send(server, protocol, texts_request(f"back-{protocol}", 2))
        assert not answer.failed, (protocol, answer.message)


async def test_a_dead_inference_thread_stays_unhealthy(watched) -> None:
    server, model, _ = watched
    engine = engine_of(server)
    answer = await send(server, "grpc", request_with("crash", CRASH))
    assert answer.failed and "died: SystemExit(3)" in answer.message
    await eventually(lambda: not engine.health.ok, "the dead thread is reported")
    assert await health_codes(server) == dict.fromkeys(HEALTH_PATHS, 503)
    async with httpx.AsyncClient() as http:
        health = (await http.get(server.urls["http"] + "/health")).json()
    assert "restart the server" in health["reason"]
    assert await grpc_health(server.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    answer = await send(server, "websocket", texts_request("after", 1))
    assert answer.failed and "died" in answer.message


@pytest.mark.parametrize("fault", [STUCK, CRASH])
def test_exit_on_stuck_exits_non_zero(tmp_path: Path, fault: str) -> None:
    port_file, log = tmp_path / "ports.json", tmp_path / "serve.log"
    command = [sys.executable, "-m", "tests.reliability.stuck_serve", "serve", "--model", "hash",
               "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0",
               "--port-file", str(port_file), "--forward-timeout-s", "0.5",
               "--exit-on-stuck"]  # fmt: skip
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        ports = wait_for_ports(process, port_file)
        url = f"http://127.0.0.1:{ports['http']}/post"
        # failed fast (503), or the process has already gone: both are fine
        with contextlib.suppress(httpx.TransportError):
            httpx.post(url, json={"data": [{"text": fault}]}, timeout=FAILSAFE_S)
        code = process.wait(timeout=FAILSAFE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert code == 70, output
    assert "exiting with status 70 (--exit-on-stuck)" in output
