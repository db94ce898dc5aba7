"""clip-client 0.8.3's `credential={'Authorization': token}` against a clipserve that
requires a token. clip-client sends it as gRPC metadata `authorization` and as the HTTP
`Authorization` header (raw, no "Bearer"); over WebSocket it sends nothing at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.compat.harness import DriverResults, run_driver, running_server, server_config

pytestmark = [pytest.mark.compat, pytest.mark.timeout(900)]

TOKEN = "compat-secret-7f3a"
TEXTS = ["a photo of a cat", "a photo of a dog", "a red flower"]


@pytest.fixture(scope="module")
def auth_server() -> Iterator[Any]:
    with running_server(server_config(model="hash", auth_token=TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def run(
    auth_server: Any, clip_client_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> DriverResults:
    clients: dict[str, dict[str, Any]] = {}
    credentials = {"good": {"Authorization": TOKEN}, "wrong": {"Authorization": "nope"}}
    for scheme in ("grpc", "http", "websocket"):
        port = auth_server.grpc_port if scheme == "grpc" else auth_server.http_port
        for label in ("good", "wrong", "missing"):
            clients[f"{scheme}-{label}"] = {
                "server": f"{scheme}://127.0.0.1:{port}",
                "credential": credentials.get(label),
            }
    ops = [
        {"name": key, "op": "encode", "client": key, "content": TEXTS, "timeout": 60}
        for key in clients
    ]
    return run_driver(clip_client_python, clients, ops, tmp_path_factory.mktemp("clip-client-auth"))


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_the_right_token_is_accepted(run: DriverResults, scheme: str) -> None:
    embeddings = run.embeddings(f"{scheme}-good")
    assert embeddings.shape[0] == len(TEXTS)
    assert np.all(np.isfinite(embeddings))


@pytest.mark.parametrize("scheme", ["grpc", "http"])
@pytest.mark.parametrize("label", ["wrong", "missing"])
def test_a_wrong_or_missing_token_fails_promptly(
    run: DriverResults, scheme: str, label: str
) -> None:
    record = run[f"{scheme}-{label}"]
    assert not record["ok"]
    assert "unauthenticated" in record["error"], record


@pytest.mark.parametrize("label", ["good", "wrong", "missing"])
def test_websocket_clip_client_sends_no_credential_so_it_is_refused(
    run: DriverResults, label: str
) -> None:
    record = run[f"websocket-{label}"]
    assert not record["ok"]
    assert record["error_type"] != "Timeout", record
