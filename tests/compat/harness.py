"""Host-side helpers for driving clip-client 0.8.3 (in its own venv) against clipserve.

Shared by the compat tests and the benchmarks: building the clip-client venv, a
self-signed certificate, starting `clipserve serve` as a subprocess, and running
`driver.py` with a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.server_process import wait_for_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup_clip_client_venv.sh"
DRIVER = Path(__file__).resolve().parent / "driver.py"
SERVE_MAIN = "import sys; from clipserve.cli import main; sys.exit(main())"


def ensure_clip_client_venv(timeout: float = 900.0) -> Path:
    """Creates the clip-client venv if missing (quick when it exists); returns its python."""
    done = subprocess.run(
        ["bash", str(SETUP_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"clip-client venv setup failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def driver_env(ca_file: Path | None = None) -> dict[str, str]:
    """Environment for the clip-client process: no version check, loopback without proxies,
    and, for TLS, the self-signed certificate as the only trusted root (gRPC reads
    GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, aiohttp's default SSL context reads SSL_CERT_FILE)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        NO_VERSION_CHECK="1",
        JINA_OPTOUT_TELEMETRY="1",
        JINA_LOG_LEVEL="ERROR",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"):
        env.pop(name, None)
    env.pop("CLIP_AUTH_TOKEN", None)
    if ca_file is not None:
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(ca_file)
        env["SSL_CERT_FILE"] = str(ca_file)
    return env


@dataclass
class DriverResults:
    """What one driver run left behind: one record per op, embeddings by op name."""

    out_dir: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: str = ""
    #: free-form label set by the caller (the compat tests put the URL scheme here)
    label: str = ""

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self.records:
            raise AssertionError(f"op {name!r} left no result; driver log:\n{self.log[-3000:]}")
        return self.records[name]

    def ok(self, name: str) -> dict[str, Any]:
        record = self[name]
        error = f"{record['error_type']}: {record['error']}\n{record.get('trace')}"
        assert record["ok"], f"{name}: {error}"
        return record

    def embeddings(self, name: str) -> np.ndarray:
        self.ok(name)
        return np.load(self.out_dir / f"{name}.npy")


def run_driver(
    python: Path,
    clients: dict[str, dict[str, Any]],
    ops: list[dict[str, Any]],
    out_dir: Path,
    *,
    ca_file: Path | None = None,
    timeout: float = 240.0,
) -> DriverResults:
    """Runs driver.py once in the clip-client venv with these clients and ops."""
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(json.dumps({"out_dir": str(out_dir), "clients": clients, "ops": ops}))
    try:
        done = subprocess.run(
            [str(python), str(DRIVER), str(job_file)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=driver_env(ca_file),
            check=False,
        )
        log = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        log = f"driver timed out after {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}"
    results = DriverResults(out_dir=out_dir, log=str(log))
    results_file = out_dir / "results.jsonl"
    if results_file.exists():
        for line in results_file.read_text().splitlines():
            record = json.loads(line)
            results.records[record["name"]] = record
    return results


@dataclass
class ServerProcess:
    """A `clipserve serve` subprocess on loopback with the ports it reported."""

    process: subprocess.Popen
    grpc_port: int | None
    http_port: int | None


@contextlib.contextmanager
def serve_subprocess(
    extra_args: list[str],
    *,
    ready_timeout: float = 300.0,
    log_file: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Starts `clipserve serve` on 127.0.0.1 port 0 and stops it (SIGTERM) on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "ports.json"
        log = open(log_file or Path(tmp) / "server.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-c", SERVE_MAIN,
                   "serve", "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0",
                   "--port-file", str(port_file), *extra_args]  # fmt: skip
        server_env = {k: v for k, v in os.environ.items() if k != "CLIPSERVE_AUTH_TOKEN"}
        server_env.update(env or {})
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=server_env
        )
        try:
            try:
                ports = wait_for_ports(process, port_file, ready_timeout)
            except RuntimeError as exc:
                log.flush()
                text = Path(log.name).read_text()[-3000:]
                raise RuntimeError(f"server did not start ({command}): {exc}\n{text}") from None
            yield ServerProcess(process, ports.get("grpc"), ports.get("http"))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()


def server_config(**overrides: Any) -> Any:
    """A clipserve ServerConfig on 127.0.0.1 port 0 (builtin model unless overridden)."""
    from clipserve.server.config import ServerConfig

    settings: dict[str, Any] = {
        "model": "builtin", "host": "127.0.0.1", "grpc_port": 0, "http_port": 0,
        "shutdown_grace_s": 2.0,
    }  # fmt: skip
    settings.update(overrides)
    return ServerConfig(**settings)


def running_server(config: Any, model: Any = None) -> Any:
    """clipserve's in-process server (imported lazily: the compat module may land first);
    ``model`` reuses an already loaded model."""
    from clipserve.server.app import running_server as start

    return start(config, model=model)
