"""``clipserve serve`` subprocesses on loopback: waiting for the ports one reports, and a
hash-model server for tests that kill it by PID and start it again on the same ports."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from tests.waiting import FAILSAFE_S, wait_until


def wait_for_ports(
    process: subprocess.Popen, port_file: Path, timeout_s: float = FAILSAFE_S * 2
) -> dict:
    """The ports a ``clipserve serve --port-file`` subprocess reports once it is ready (the
    server writes the file atomically). ``RuntimeError`` if it exits first; ``timeout_s`` is
    a failsafe."""
    wait_until(
        lambda: port_file.exists() or process.poll() is not None,
        "the clipserve subprocess should report its ports",
        timeout_s,
    )
    if not port_file.exists():
        raise RuntimeError(f"the clipserve subprocess exited with code {process.returncode}")
    return json.loads(port_file.read_text())


class HashServerProcess:
    """Started with ``start()`` (again on the same ports after ``kill()``), killed by PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen | None = None
        self.ports = {"grpc": 0, "http": 0}
        self.starts = 0
        self.restarted = threading.Event()

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
        try:
            self.ports = wait_for_ports(self.proc, port_file)
        except RuntimeError:
            self.kill()
            raise

    def kill(self) -> None:
        # SIGKILL by PID; Popen.kill tolerates a process that another thread has just reaped
        # (a kill from a client's input generator can race a fixture's teardown)
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def killed_at(self, items: Iterable[str], position: int) -> Iterator[str]:
        """``items``, killing this server when ``position`` is reached and starting it
        again in a thread (set ``restarted`` when up): while the new process starts, a
        client's attempts fail."""
        self.restarted = threading.Event()

        def restart() -> None:
            self.start()
            self.restarted.set()

        for index, item in enumerate(items):
            if index == position:
                self.kill()
                threading.Thread(target=restart, daemon=True).start()
            yield item

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.ports['grpc' if scheme == 'grpc' else 'http']}"
