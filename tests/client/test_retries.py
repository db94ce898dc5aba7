"""Retries: a server killed (SIGKILL) mid-stream and restarted on the same ports; with
``retries`` the call completes with every embedding present exactly once, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clipserve import Client
from clipserve.errors import ServerUnavailableError
from clipserve.models.hashing import HashModel


class ServerProcess:
    """``clipserve serve --model hash`` as a subprocess on loopback (killed by PID)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen | None = None
        self.ports = {"grpc": 0, "http": 0}
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        port_file = self.folder / f"ports-{self.starts}.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipserve", "serve", "--model", "hash",
             "--host", "127.0.0.1", "--grpc-port", str(self.ports["grpc"]),
             "--http-port", str(self.ports["http"]), "--port-file", str(port_file),
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the clipserve subprocess did not start")
            time.sleep(0.05)
        self.ports = json.loads(port_file.read_text())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def url(self, scheme: str) -> str:
        port = self.ports["grpc" if scheme == "grpc" else "http"]
        return f"{scheme}://127.0.0.1:{port}"


@pytest.fixture
def server(tmp_path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    process.start()
    yield process
    process.kill()


@pytest.mark.parametrize("scheme", ["grpc", "http", "ws"])
def test_kill_and_restart_mid_stream_loses_and_duplicates_nothing(server, scheme) -> None:
    texts = [f"text number {i}" for i in range(2000)]
    restarted = threading.Event()

    def restart_later() -> None:
        time.sleep(0.8)  # the client sees refused connections meanwhile
        server.start()
        restarted.set()

    def items() -> Iterator[str]:
        for i, text in enumerate(texts):
            if i == 700:  # batches before this one are in flight or answered
                server.kill()
                threading.Thread(target=restart_later, daemon=True).start()
            yield text

    client = Client(server.url(scheme), retries=8, retry_backoff=0.2, connect_timeout=2)
    replies: list[list[str]] = []
    out = client.encode(items(), batch_size=10, prefetch=8)
    client.close()
    assert restarted.is_set() and server.starts == 2
    np.testing.assert_array_equal(out, HashModel().encode_texts(texts))
    with Client(server.url(scheme)) as again:  # and the restarted server answers callbacks
        again.encode(texts[:30], batch_size=10, on_done=lambda r: replies.append(r.ids))
    assert sorted(int(i) for ids in replies for i in ids) == list(range(30))


def test_without_retries_a_killed_server_is_an_error(server) -> None:
    def items() -> Iterator[str]:
        for i in range(500):
            if i == 100:
                server.kill()
            yield f"t{i}"

    client = Client(server.url("grpc"), connect_timeout=1)
    with client, pytest.raises(ServerUnavailableError, match="127.0.0.1"):
        client.encode(items(), batch_size=10)
