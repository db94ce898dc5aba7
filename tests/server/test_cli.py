"""``clipserve serve`` and ``clipserve models`` as real subprocesses, and the config rules."""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from clipserve.cli import _log_cpu, build_parser, config_from_args, main
from clipserve.models import cpu
from clipserve.models.cpu import (
    CpuFeatures,
    cpu_features,
    cpu_summary,
    precision_verdicts,
    verdict_for,
)
from clipserve.server.config import ServerConfig, build_config
from clipserve.server.tls import TlsFiles
from tests.engine.helpers import png_bytes
from tests.models.clip_testkit import save_tiny_clip
from tests.server_process import wait_for_ports
from tests.waiting import FAILSAFE_S, wait_until

REPO = Path(__file__).resolve().parents[2]
TOKEN = "cli-token"


@dataclass
class Served:
    process: subprocess.Popen
    ports: dict[str, int | None]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text()

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextmanager
def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    port_file, log = tmp_path / "ports.json", tmp_path / "serve.log"
    command = [sys.executable, "-m", "clipserve", "serve", "--host", "127.0.0.1",
               "--port-file", str(port_file), *args]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "CLIPSERVE_AUTH_TOKEN"}
    environment.update(env or {})
    with open(log, "w") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=environment
        )
    try:
        try:
            ports = wait_for_ports(process, port_file)
        except (RuntimeError, AssertionError) as exc:
            pytest.fail(f"{exc}:\n{log.read_text()}")
        yield Served(process, ports, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_with_yaml_env_and_flags_then_sigterm_exits_0(tmp_path):
    config = tmp_path / "clipserve.yaml"
    config.write_text(
        "model: hash\nprotocols: [grpc, http]\ngrpc-port: 1\nhttp_port: 0\nmax_batch_size: 8\n"
    )
    with serve(
        tmp_path, "--config", str(config), "--grpc-port", "0", env={"CLIPSERVE_AUTH_TOKEN": TOKEN}
    ) as served:
        grpc_port, http_port = served.ports["grpc"], served.ports["http"]
        assert grpc_port and grpc_port != 1 and http_port
        base = f"http://127.0.0.1:{http_port}"
        body = {"data": [{"text": "hello"}]}
        assert httpx.post(base + "/post", json=body).status_code == 401
        reply = httpx.post(base + "/post", json=body, headers={"Authorization": TOKEN})
        assert reply.status_code == 200
        assert len(reply.json()["data"][0]["embedding"]) == 512
        assert httpx.get(base + "/health").json()["max_batch_size"] == 8
        code = served.terminate()
        log = served.log_text()
    assert code == 0, log
    assert "clipserve: model hash loaded (dim 512, backend none, precision float)" in log
    assert f"clipserve: {cpu_summary()}" in log  # the CPU and its verdicts, at start-up
    assert "backend torch" not in log  # the hash model has no backend; nothing says otherwise
    assert f"clipserve: serving grpc://127.0.0.1:{grpc_port}" in log
    assert f"clipserve: serving http://127.0.0.1:{http_port}" in log
    assert "ws://" not in log  # websocket was left out of protocols
    assert "clipserve: stopped" in log


@contextmanager
def held_image_site() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """``http://127.0.0.1:<port>/cat.png``: the request sets ``requested``, and the image is
    sent once ``release`` is set."""
    requested, release = threading.Event(), threading.Event()
    image = png_bytes(np.full((32, 32, 3), 200, dtype=np.uint8))

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.set()
            release.wait(FAILSAFE_S)
            self.send_response(200)
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}/cat.png", requested, release
    finally:
        release.set()
        site.shutdown()
        site.server_close()


def test_sigterm_lets_in_flight_requests_finish(tmp_path):
    """The request is held inside the server (its image is being fetched) when SIGTERM
    arrives; the image comes once the server has begun to drain."""
    config = tmp_path / "clipserve.yaml"
    config.write_text(
        "model: hash\nshutdown_grace_s: 60\n"
        "uri_policy: {enabled: true, allowed_schemes: [http], allow_private: true, timeout_s: 60}\n"
    )  # generous grace and fetch timeouts: failsafes only
    with (
        held_image_site() as (image_url, requested, release),
        serve(tmp_path, "--config", str(config), "--grpc-port", "0", "--http-port", "0") as served,
    ):
        url = f"http://127.0.0.1:{served.ports['http']}/post"
        body = {"data": [{"id": "held", "uri": image_url}]}
        result: dict[str, httpx.Response] = {}
        sender = threading.Thread(
            target=lambda: result.update(r=httpx.post(url, json=body, timeout=FAILSAFE_S))
        )
        sender.start()
        assert requested.wait(FAILSAFE_S), "the server never fetched the image"
        served.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutting down" in served.log_text(), "serve should begin to drain")
        release.set()
        code = served.process.wait(timeout=FAILSAFE_S)
        sender.join(timeout=FAILSAFE_S)
    assert code == 0, served.log_text()
    assert result["r"].status_code == 200, result["r"].text
    (doc,) = result["r"].json()["data"]
    assert doc["id"] == "held" and len(doc["embedding"]) == 512


def test_models_lists_names_dims_and_local_weights(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clipserve", "models", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table, _, notes = done.stdout.partition("\n\n")
    lines = table.splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header == ["NAME", "DIM", "FAMILY", "LANGUAGES", "LOCAL", "DESCRIPTION"]
    rows, marked = {}, []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line[2:].strip())
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
        if line.startswith("* "):
            marked.append(cells[0])
    assert marked == ["builtin"]  # the default is marked
    assert (rows["builtin"]["DIM"], rows["builtin"]["LOCAL"]) == ("384", "yes")
    assert "not CLIP" in rows["builtin"]["DESCRIPTION"]
    assert (rows["hash"]["DIM"], rows["hash"]["LOCAL"]) == ("512", "yes")
    assert (rows["ViT-B-32::openai"]["DIM"], rows["ViT-B-32::openai"]["LOCAL"]) == ("512", "no")
    expected = {
        "ViT-B-16-SigLIP::webli": ("768", "SigLIP", "en"),
        "ViT-SO400M-14-SigLIP-384::webli": ("1152", "SigLIP", "en"),
        "ViT-B-16-SigLIP2::webli": ("768", "SigLIP 2", "multilingual"),
        "ViT-SO400M-14-SigLIP2-378::webli": ("1152", "SigLIP 2", "multilingual"),
        "ViT-B-32-worldwide::metaclip2_worldwide": ("512", "MetaCLIP 2", "300+ languages"),
        "CN-CLIP/ViT-B-16": ("512", "Chinese-CLIP", "zh"),
        "AltCLIP-m9/ViT-L-14": ("768", "AltCLIP", "9 languages"),
        "ViT-B-16-SigLIP::random": ("768", "SigLIP", "en"),
        "CN-CLIP/ViT-B-16::random": ("512", "Chinese-CLIP", "zh"),
    }
    for name, (dim, family, languages) in expected.items():
        assert (rows[name]["DIM"], rows[name]["FAMILY"], rows[name]["LANGUAGES"]) == (
            dim, family, languages
        ), name
    assert rows["ViT-B-16-SigLIP::webli"]["DESCRIPTION"].endswith("google/siglip-base-patch16-224")
    assert f"Looked for weights in {tmp_path / 'hub'}" in notes
    assert "MiniLM-L6" in notes and "EfficientNet-Lite0" in notes


def test_models_never_imports_torch():
    """Listing reads dimensions from tables: no torch, transformers or onnxruntime."""
    script = (
        "import sys; from clipserve.cli import main; main(['models'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: hash\nreplicas: 2\ncors: ['https://a.example']\nmax-batch-wait-ms: 7\n"
    )
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--replicas", "3", "--protect-metrics"]
    )
    resolved = config_from_args(args)
    assert (resolved.model, resolved.replicas, resolved.cors) == ("hash", 3, ("https://a.example",))
    assert resolved.open_metrics is False and resolved.open_health is True
    assert resolved.max_wait_ms == 7
    assert resolved.grpc_port == 51000 and resolved.http_port == 51001
    assert resolved.host == "0.0.0.0" and resolved.grpc_max_message_mb == 256
    with_env = build_config(config_file=config, environ={"CLIPSERVE_AUTH_TOKEN": "env-secret"})
    assert with_env.auth_token == "env-secret"
    assert "env-secret" not in json.dumps(with_env.public_dict())


def test_limit_and_uri_flags_merge_into_the_yaml_mappings(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("limits: {max_text_chars: 100}\nuri_policy: {allow_private: true}\n")
    args = build_parser().parse_args(
        ["serve", "--config", str(config), "--max-docs-per-request", "8", "--fetch-uris",
         "--uri-allowed-hosts", "img.example.com, *.cdn.example.com"]
    )  # fmt: skip
    resolved = config_from_args(args)
    assert resolved.limits == {"max_text_chars": 100, "max_docs_per_request": 8}
    assert resolved.uri_policy == {
        "allow_private": True,
        "enabled": True,
        "allowed_hosts": ("img.example.com", "*.cdn.example.com"),
    }


def test_uri_flags_turn_fetching_off_or_let_private_networks_in():
    def policy(*flags: str) -> object:
        return config_from_args(build_parser().parse_args(["serve", *flags])).uri_policy

    assert policy() is None  # UriPolicy's defaults: public http(s) fetched
    assert policy("--no-fetch-uris") == {"enabled": False}
    assert policy("--uri-allow-private") == {"allow_private": True}
    assert policy("--uri-allowed-hosts", "a.example") == {"allowed_hosts": ("a.example",)}


def test_defaults_match_the_documented_ones():
    config = ServerConfig()
    assert (config.model, config.grpc_port, config.http_port) == ("builtin", 51000, 51001)
    assert config.protocols == ("grpc", "http", "websocket")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["serve", "--protocols", "grpc,ftp"], "protocols must be"),
        (["serve", "--tls-cert", "c.pem"], "both a certificate"),
        (["serve", "--max-batch-size", "0"], "max_batch_size must be >= 1"),
    ],
)
def test_bad_settings_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_keys_are_refused(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("modle: hash\n")
    with pytest.raises(ValueError, match="unknown setting.*modle"):
        build_config(config_file=config)


def test_tls_files_are_checked_before_binding(tmp_path, tls_pair):
    with pytest.raises(ValueError, match="certificate file not found"):
        TlsFiles.from_paths(str(tmp_path / "missing.pem"), str(tls_pair.key))
    with pytest.raises(ValueError, match="cannot load TLS"):
        TlsFiles.from_paths(str(tls_pair.key), str(tls_pair.key))
    assert TlsFiles.from_paths(str(tls_pair.cert), str(tls_pair.key)) is not None


def test_prepare_fills_the_caches_once_then_exits(tmp_path, capsys):
    model_dir = save_tiny_clip(tmp_path / "tiny-clip")
    cache = tmp_path / "cache"
    argv = ["prepare", "--model", str(model_dir), "--backend", "onnx", "--precision", "int8",
            "--cache-dir", str(cache)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dim 24, backend onnx, precision int8" in out
    lines = out.splitlines()
    cached = [Path(line.removeprefix("cached: ")) for line in lines if line.startswith("cached: ")]
    assert len(cached) == 2 and all(path.is_file() and cache in path.parents for path in cached)
    made = [path.stat().st_mtime_ns for path in cached]
    assert main(argv) == 0  # everything is found in the cache this time
    assert [path.stat().st_mtime_ns for path in cached] == made


def test_doctor_reports_this_cpus_features_and_verdicts(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    features = cpu_features()
    assert f"CPU: {features.name} ({features.kind};" in out
    assert f"int8 kernel (onnxruntime u8 x s8): {features.int8_kernel}" in out
    for verdict in precision_verdicts(features):
        assert f"  {verdict.precision:<6} {verdict.status:<8} {verdict.reason}" in out


def test_start_up_says_how_the_precision_runs_here(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="clipserve.server")
    _log_cpu(ServerConfig(backend="onnx", precision="int8"))
    int8 = verdict_for("int8")
    assert f"precision int8 is {int8.status} on this CPU: {int8.reason}" in caplog.text
    # a CPU without AVX2, where int8 may not beat float32: a warning
    caplog.clear()
    monkeypatch.setattr(cpu, "cpu_features", lambda: CpuFeatures(name="Old CPU"))
    _log_cpu(ServerConfig(backend="onnx", precision="int8"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "precision int8 is slow on this CPU: no AVX2" in warnings[0].getMessage()
    assert "CPU Old CPU (x86-64 without AVX2)" in caplog.text


def test_prepare_reports_what_it_cannot_load(capsys):
    assert main(["prepare", "--model", "no-such-model"]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert main(["prepare", "--model", "hash", "--precision", "int8"]) == 1
    assert "precision 'int8' needs backend 'onnx'" in capsys.readouterr().err
