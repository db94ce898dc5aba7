"""A stand-in for public image hosts: names that resolve to public addresses, and an httpx
transport that routes those addresses to a loopback server, so the fetcher's whole public
path (resolve, check, connect to the checked address, Host header, redirects) runs over
real sockets without any test ever contacting a real public host."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

#: public (global) addresses the fake names resolve to; never contacted
PUBLIC_IP = "93.184.215.14"
PUBLIC_IP_2 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


class RoutingTransport(httpx.AsyncBaseTransport):
    """Sends requests for a routed address to a loopback port; refuses every other address
    (so a test can never reach a real host). Records the address each request named."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes
        self.inner = httpx.AsyncHTTPTransport()
        self.connected: list[tuple[str, str]] = []  # (address the URL named, Host header)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        address = request.url.host
        self.connected.append((address, request.headers.get("host", "")))
        port = self.routes.get(address)
        if port is None:
            raise httpx.ConnectError(f"test transport: no route to {address}", request=request)
        request.url = request.url.copy_with(host="127.0.0.1", port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open: each fetch's client closes its transport, and this one is reused."""


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, list[str]]) -> list[str]:
    """Make ``socket.getaddrinfo`` answer ``names`` (others resolve as usual); returns the
    list of names looked up, in order."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        lookups.append(host)
        if host in names:
            return [_info(address, port) for address in names[host]]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def _info(address: str, port: object) -> tuple:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sockaddr = (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)
    return (family, socket.SOCK_STREAM, 6, "", sockaddr)


class _ImageHandler(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.server.body if self.path == "/image.jpg" else b"not found"  # type: ignore[attr-defined]
        self.send_response(200 if self.path == "/image.jpg" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def image_origin(body: bytes) -> Iterator[int]:
    """A loopback HTTP server answering ``GET /image.jpg`` with ``body``; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    server.body = body  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def public_image_host(
    server: Any, monkeypatch: pytest.MonkeyPatch, body: bytes, name: str = "photos.example.com"
) -> Iterator[tuple[str, RoutingTransport]]:
    """``http://<name>:<port>/image.jpg`` served to ``server`` (a ``RunningServer``) as if
    from a public host: the name resolves to ``PUBLIC_IP``, which its URI fetches reach
    through ``RoutingTransport``. Yields the URL and the transport."""
    documents = server.server.service.documents
    with image_origin(body) as port:
        fake_dns(monkeypatch, {name: [PUBLIC_IP]})
        transport = RoutingTransport({PUBLIC_IP: port})
        saved, documents.transport = documents.transport, transport
        try:
            yield f"http://{name}:{port}/image.jpg", transport
        finally:
            documents.transport = saved
