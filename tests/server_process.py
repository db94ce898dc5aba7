"""``clipserve serve --model hash`` as a subprocess on loopback, for tests that kill a server
by PID and start it again on the same ports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


class HashServerProcess:
    """Started with ``start()`` (again on the same ports after ``kill()``), killed by PID."""

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
                self.kill()
                raise RuntimeError("the clipserve subprocess did not start")
            time.sleep(0.05)
        self.ports = json.loads(port_file.read_text())

    def kill(self) -> None:
        # SIGKILL by PID; Popen.kill tolerates a process that another thread has just reaped
        # (a kill from a client's input generator can race a fixture's teardown)
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.ports['grpc' if scheme == 'grpc' else 'http']}"
