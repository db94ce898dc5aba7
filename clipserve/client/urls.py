"""Parsing the server URL given to ``Client`` (no I/O).

Six schemes, as CLIP-as-service: ``grpc``, ``http``, ``websocket`` (or ``ws``) and their TLS
forms ``grpcs``, ``https``, ``websockets`` (or ``wss``). A missing port defaults to the
clipserve server's own ports for the plain schemes (gRPC 51000, HTTP/WebSocket 51001) and to
443 for the TLS schemes (a TLS deployment normally sits behind port 443).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Protocol = Literal["grpc", "http", "websocket"]

_SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
    "http": ("http", False),
    "https": ("http", True),
    "websocket": ("websocket", False),
    "ws": ("websocket", False),
    "websockets": ("websocket", True),
    "wss": ("websocket", True),
}
DEFAULT_PORTS: dict[tuple[Protocol, bool], int] = {
    ("grpc", False): 51000,
    ("http", False): 51001,
    ("websocket", False): 51001,
    ("grpc", True): 443,
    ("http", True): 443,
    ("websocket", True): 443,
}


@dataclass(frozen=True)
class ServerAddress:
    """Where the server is and how to talk to it."""

    url: str  # as given, for error messages
    protocol: Protocol
    tls: bool
    host: str
    port: int
    path: str = ""  # a path prefix for HTTP/WebSocket behind a reverse proxy

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def http_base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}{self.path}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.netloc}{self.path or '/'}"


def parse_server(url: str) -> ServerAddress:
    """``"grpc://host:port"`` -> ``ServerAddress``; raises ``ValueError`` on anything else."""
    if not isinstance(url, str):
        raise TypeError(f"server must be a URL string like 'grpc://0.0.0.0:51000', got {url!r}")
    text = url.strip()
    if "://" not in text:
        raise ValueError(
            f"server {url!r} has no scheme; use one of {', '.join(sorted(_SCHEMES))}, "
            "e.g. 'grpc://127.0.0.1:51000'"
        )
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"server {url!r} has unknown scheme {parts.scheme!r}; "
            f"expected one of {', '.join(sorted(_SCHEMES))}"
        )
    protocol, tls = _SCHEMES[scheme]
    if parts.username or parts.password:
        raise ValueError(f"server {url!r}: put credentials in `credential=`, not in the URL")
    host = parts.hostname
    if not host:
        raise ValueError(f"server {url!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:  # non-numeric or out of range
        raise ValueError(f"server {url!r} has an invalid port: {exc}") from exc
    if port is None:
        if parts.netloc.rstrip().endswith(":"):
            raise ValueError(f"server {url!r} has an empty port")
        port = DEFAULT_PORTS[(protocol, tls)]
    if port == 0:
        raise ValueError(f"server {url!r}: port 0 cannot be connected to")
    if parts.query or parts.fragment:
        raise ValueError(f"server {url!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    if path and protocol == "grpc":
        raise ValueError(f"server {url!r}: a gRPC address cannot have a path")
    return ServerAddress(url=url, protocol=protocol, tls=tls, host=host, port=port, path=path)
