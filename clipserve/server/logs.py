"""The server's logs: lines with a timestamp and a level (``text``) or one JSON object per
line (``json``, for log shippers), and an opt-in access log: one line per request, written
by the ``Dispatcher`` whatever the protocol.

    2025-01-31T12:00:00.123Z INFO    clipserve: serving grpc://0.0.0.0:51000
    2025-01-31T12:00:01.456Z INFO    access: 127.0.0.1:53412 grpc Call /encode ok 32 docs 12.4 ms
    {"time": "...", "level": "INFO", "logger": "clipserve.access", "message": "access: ...",
     "method": "Call", "endpoint": "/encode", "protocol": "grpc", "documents": 32,
     "status": "ok", "duration_ms": 12.4, "client": "127.0.0.1:53412"}

``status`` is the label of ``clipserve_requests_total`` (``ok``, ``partial``, ``invalid``,
``refused``, ``unauthenticated``, ``overloaded``, ``error``, ``cancelled``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
#: the access log's logger: silent unless ``configure(access_log=True)`` (or a caller's
#: own logging setup) lets its INFO records through
ACCESS = logging.getLogger("clipserve.access")
#: how each protocol's requests are named in the access log
METHODS = {"http": "POST", "grpc": "Call", "websocket": "message"}


def access(
    protocol: str,
    endpoint: str,
    status: str,
    documents: int,
    elapsed_s: float | None,
    client: str,
    tenant: str | None = None,
) -> None:
    """Write one access-log line (its fields also go to JSON logs as keys); ``tenant`` is
    the name of the caller's token (``--auth-tokens-file``), never the token."""
    method = METHODS.get(protocol, protocol)
    duration_ms = None if elapsed_s is None else round(elapsed_s * 1000.0, 2)
    fields = {"method": method, "endpoint": endpoint, "protocol": protocol,
              "documents": documents, "status": status, "duration_ms": duration_ms,
              "client": client or "-"}  # fmt: skip
    took = "-" if duration_ms is None else f"{duration_ms:.1f} ms"
    who = fields["client"]
    if tenant is not None:
        fields["tenant"] = tenant
        who = f"{who} tenant={tenant}"
    ACCESS.info(
        "access: %s %s %s %s %s %d docs %s", who, protocol, method, endpoint,
        status, documents, took, extra={"fields": fields},
    )  # fmt: skip


class TextFormatter(logging.Formatter):
    """``2025-01-31T12:00:00.123Z INFO    message`` (UTC)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's ``fields``
    (access-log lines) and the traceback of a logged exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(
    level: str = "info",
    log_format: str = "text",
    access_log: bool = False,
    stream: IO[str] | None = None,
) -> None:
    """Send every log record (uvicorn's included) to ``stream`` (stderr) in one format."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    ACCESS.setLevel(logging.INFO if access_log else logging.WARNING)


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def peer_address(peer: Any) -> str:
    """``host:port`` from grpc's ``ipv4:1.2.3.4:5`` / ``ipv6:[::1]:5`` or ASGI's
    ``(host, port)``; empty when unknown."""
    if isinstance(peer, str):
        return peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:")) else peer
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return ""
