"""The server's logs as an operator reads them: timestamps and levels, JSON lines for log
shippers, and the opt-in access log (one line per request, whatever the protocol)."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from clipserve import Client
from clipserve.server import logs
from tests.server.test_cli import serve

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_text_logs_have_timestamps_and_levels(tmp_path) -> None:
    with serve(tmp_path, "--model", "hash", "--grpc-port", "0", "--http-port", "0") as served:
        with Client(f"grpc://127.0.0.1:{served.ports['grpc']}") as client:
            client.encode(["not access-logged by default"])
        assert served.terminate() == 0
        text = served.log_text()
    ready = next(line for line in text.splitlines() if line.endswith("clipserve: ready"))
    assert re.fullmatch(rf"{TIMESTAMP} INFO    clipserve: ready", ready), ready
    assert "access:" not in text


def test_json_logs_and_the_access_log(tmp_path) -> None:
    args = ["--model", "hash", "--grpc-port", "0", "--http-port", "0", "--log-format", "json",
            "--access-log"]  # fmt: skip
    with serve(tmp_path, *args) as served:
        grpc, http = served.ports["grpc"], served.ports["http"]
        for url in (f"grpc://127.0.0.1:{grpc}", f"http://127.0.0.1:{http}",
                    f"ws://127.0.0.1:{http}"):  # fmt: skip
            with Client(url) as client:
                client.encode(["one", "two", "three"])
        base = f"http://127.0.0.1:{http}"
        httpx.post(base + "/v1/embeddings", json={"input": ["a", "b"]}).raise_for_status()
        assert httpx.post(base + "/post", content=b"{broken").status_code == 400
        assert served.terminate() == 0
        lines = served.log_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == len(lines), "every line is one JSON object"
    for record in records:
        assert re.fullmatch(TIMESTAMP, record["time"]) and record["level"] in ("INFO", "WARNING")
    assert any(r["message"] == "clipserve: ready" for r in records)
    access = [r for r in records if r["logger"] == "clipserve.access"]
    by_protocol = {(r["protocol"], r["endpoint"], r["status"]): r for r in access}
    for protocol, method in (("grpc", "Call"), ("http", "POST"), ("websocket", "message")):
        line = by_protocol[(protocol, "/encode", "ok")]
        assert line["method"] == method and line["documents"] == 3
        assert line["duration_ms"] >= 0 and line["client"].startswith("127.0.0.1:")
    openai = by_protocol[("http", "/v1/embeddings", "ok")]
    assert openai["documents"] == 2 and openai["method"] == "POST"
    refused = by_protocol[("http", "/", "invalid")]
    assert refused["documents"] == 0 and refused["duration_ms"] is None


def test_access_lines_in_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=logs.ACCESS.name)
    logs.access("grpc", "/rank", "partial", 12, 0.0123, "10.0.0.7:5123")
    (record,) = caplog.records
    assert record.getMessage() == "access: 10.0.0.7:5123 grpc Call /rank partial 12 docs 12.3 ms"
    assert logs.peer_address("ipv6:[::1]:5000") == "[::1]:5000"
    assert logs.peer_address(("::1", 5000)) == "[::1]:5000"
