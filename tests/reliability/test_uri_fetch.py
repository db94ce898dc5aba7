"""Server-side URI reading: every refusal of the SSRF policy, and fetches that may go through.

A real HTTP server on 127.0.0.1 stands in for a remote host; reaching it needs
``allow_private=True`` and the host on the allow-list, exactly as an operator would set it.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.server.uri_fetch import UriPolicy, address_refusal, fetch_uri, host_allowed
from tests.waiting import FAILSAFE_S

PAYLOAD = os.urandom(3000)
#: ``/slow`` answers only once this is set (or after the failsafe)
SLOW_RELEASE = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        _Handler.seen_hosts.append(self.headers.get("Host", ""))
        if parts.path == "/image":
            self._send(200, PAYLOAD)
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/big-declared":
            self._send(200, b"x" * 5000)
        elif parts.path == "/big-streamed":  # no Content-Length: the cap must count bytes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif parts.path == "/slow":
            SLOW_RELEASE.wait(FAILSAFE_S)
            self._send(200, PAYLOAD)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


LOCAL_OK = UriPolicy(
    enabled=True, allowed_schemes=("http",), allowed_hosts=("127.0.0.1",), allow_private=True
)


# --- the default policy reads nothing ----------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/cat.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.com/x.png",
        "gopher://127.0.0.1:6379/_INFO",
    ],
)
async def test_default_policy_fetches_no_url(uri: str) -> None:
    with pytest.raises(InputRefusedError, match="does not fetch URLs") as info:
        await fetch_uri(uri, UriPolicy())
    assert uri[:40] in str(info.value)


@pytest.mark.parametrize("uri", ["/etc/passwd", "file:///etc/passwd", "file://localhost/etc/hosts"])
async def test_default_policy_reads_no_local_file(uri: str) -> None:
    with pytest.raises(InputRefusedError, match="does not read local files") as info:
        await fetch_uri(uri, UriPolicy())
    assert uri in str(info.value)


async def test_data_uri_is_decoded_locally_even_by_default() -> None:
    encoded = base64.b64encode(PAYLOAD).decode()
    assert await fetch_uri(f"data:image/png;base64,{encoded}", UriPolicy()) == PAYLOAD
    assert await fetch_uri("data:text/plain,a%20b", UriPolicy()) == b"a b"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("data:image/png;base64,@@@not-base64", "invalid base64"),
        ("data:image/png;base64", "no ','"),
        ("", "empty"),
        ("http://[::1", "malformed"),
    ],
)
async def test_malformed_uris_are_invalid_input(uri: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        await fetch_uri(uri, UriPolicy(enabled=True))


async def test_data_uri_size_cap() -> None:
    encoded = base64.b64encode(b"z" * 2000).decode()
    with pytest.raises(InvalidInputError, match="larger than 1000 bytes"):
        await fetch_uri(f"data:;base64,{encoded}", UriPolicy(max_bytes=1000))


# --- enabled fetching: scheme, host and address checks ------------------------------------


async def test_scheme_outside_allow_list_is_refused(origin: str) -> None:
    policy = UriPolicy(enabled=True, allowed_hosts=("127.0.0.1",), allow_private=True)
    with pytest.raises(InputRefusedError, match="scheme 'http' is not allowed"):
        await fetch_uri(f"{origin}/image", policy)  # default allows https only
    with pytest.raises(InputRefusedError, match="scheme 'ftp' is not allowed"):
        await fetch_uri("ftp://127.0.0.1/image", LOCAL_OK)


async def test_host_outside_allow_list_is_refused() -> None:
    policy = UriPolicy(enabled=True, allowed_hosts=("images.example.com", "*.cdn.example.org"))
    with pytest.raises(InputRefusedError, match="'evil.example.net' is not in the allow-list"):
        await fetch_uri("https://evil.example.net/a.png", policy)
    with pytest.raises(InputRefusedError, match="not in the allow-list"):
        await fetch_uri("https://cdn.example.org.evil.net/a.png", policy)


def test_host_patterns() -> None:
    patterns = ("images.example.com", "*.cdn.example.org")
    assert host_allowed("IMAGES.example.com", patterns)
    assert host_allowed("a.b.cdn.example.org", patterns)
    assert not host_allowed("cdn.example.org", patterns)  # the wildcard means sub-domains
    assert not host_allowed("xcdn.example.org", patterns)
    assert not host_allowed("images.example.com.evil.net", patterns)
    assert host_allowed("anything.net", ())  # no allow-list: any (public) host


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1.2.3",
        "[::1]",
        "0.0.0.0",
        "[::]",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (CGNAT)
        "224.0.0.1",
        "240.0.0.1",
        "[fc00::1]",
        "[fe80::1]",
        "[ff02::1]",
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",  # NAT64 form of 169.254.169.254
        "[2002:7f00:1::]",  # 6to4 form of 127.0.0.1
    ],
)
async def test_non_public_addresses_are_refused(host: str) -> None:
    policy = UriPolicy(enabled=True, allowed_schemes=("http", "https"))
    with pytest.raises(InputRefusedError, match="refused: .* address") as info:
        await fetch_uri(f"http://{host}/x.png", policy)
    assert host in str(info.value)


def test_public_addresses_pass_the_address_check() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert address_refusal(ipaddress.ip_address(text)) is None, text


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    policy = UriPolicy(enabled=True, allowed_schemes=("http",))
    with pytest.raises(InputRefusedError, match="loopback"):
        await fetch_uri("http://localhost:9/x.png", policy)


async def test_a_mixed_dns_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If any address of a name is private, the name is refused (DNS is attacker-controlled)."""

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(InputRefusedError, match="10.0.0.7 is a private address"):
        await fetch_uri("https://images.example.com/a.png", UriPolicy(enabled=True))


async def test_unresolvable_host_is_invalid_input() -> None:
    policy = UriPolicy(enabled=True)
    with pytest.raises(InvalidInputError, match="cannot resolve host"):
        await fetch_uri("https://no-such-host.invalid/a.png", policy)


# --- fetches that go through, and their limits ---------------------------------------------


async def test_fetch_from_an_allowed_host(origin: str) -> None:
    assert await fetch_uri(f"{origin}/image", LOCAL_OK) == PAYLOAD


async def test_connects_to_the_checked_address_with_the_original_host_header(
    origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once by us; the request goes to that IP and keeps the Host."""
    port = urlsplit(origin).port
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def fake_getaddrinfo(host: str, *args: object, **kwargs: object) -> list:
        lookups.append(host)
        if host == "images.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    policy = UriPolicy(
        enabled=True, allowed_schemes=("http",), allowed_hosts=("images.test",), allow_private=True
    )
    _Handler.seen_hosts.clear()
    assert await fetch_uri(f"http://images.test:{port}/image", policy) == PAYLOAD
    assert lookups == ["images.test"]  # one lookup, nothing re-resolved by the HTTP stack
    assert _Handler.seen_hosts == [f"images.test:{port}"]


async def test_redirect_within_the_allow_list_is_followed(origin: str) -> None:
    assert await fetch_uri(f"{origin}/redirect?to=/image", LOCAL_OK) == PAYLOAD


async def test_redirect_to_a_disallowed_host_is_refused(origin: str) -> None:
    uri = f"{origin}/redirect?to=http://metadata.internal/latest"
    with pytest.raises(InputRefusedError, match="'metadata.internal' is not in the allow-list"):
        await fetch_uri(uri, LOCAL_OK)


async def test_redirect_to_a_private_address_is_refused(origin: str) -> None:
    policy = UriPolicy(enabled=True, allowed_schemes=("http",), allow_private=False)
    with pytest.raises(InputRefusedError, match="loopback"):
        await fetch_uri(f"{origin}/image", policy)  # even the first hop
    wide = UriPolicy(enabled=True, allowed_schemes=("http",), allow_private=True)
    redirect = f"{origin}/redirect?to=ftp://127.0.0.1/x"
    with pytest.raises(InputRefusedError, match="scheme 'ftp'"):
        await fetch_uri(redirect, wide)


async def test_too_many_redirects(origin: str) -> None:
    with pytest.raises(InvalidInputError, match="more than 3 redirects"):
        await fetch_uri(f"{origin}/loop", LOCAL_OK)


async def test_http_error_status_is_invalid_input(origin: str) -> None:
    with pytest.raises(InvalidInputError, match="HTTP 404"):
        await fetch_uri(f"{origin}/missing", LOCAL_OK)


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
async def test_size_cap(origin: str, path: str) -> None:
    policy = dataclasses.replace(LOCAL_OK, max_bytes=4000)
    with pytest.raises(InvalidInputError, match="larger than 4000 bytes"):
        await fetch_uri(f"{origin}{path}", policy)


async def test_timeout(origin: str) -> None:
    policy = dataclasses.replace(LOCAL_OK, timeout_s=0.5)
    SLOW_RELEASE.clear()
    try:  # the body comes only after the fetch gave up: had it waited, it would succeed
        with pytest.raises(InvalidInputError, match="within 0.5 s"):
            await fetch_uri(f"{origin}/slow", policy)
    finally:
        SLOW_RELEASE.set()


async def test_unreachable_port_is_invalid_input() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InvalidInputError, match="fetch failed"):
        await fetch_uri(f"http://127.0.0.1:{port}/x", LOCAL_OK)


# --- local files --------------------------------------------------------------------------


async def test_files_only_under_the_allowed_roots(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "cat.png").write_bytes(PAYLOAD)
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "escape.png").symlink_to(tmp_path / "secret.txt")
    policy = UriPolicy(allow_file=True, file_roots=(str(root),))

    assert await fetch_uri(str(root / "cat.png"), policy) == PAYLOAD
    assert await fetch_uri((root / "cat.png").as_uri(), policy) == PAYLOAD
    for refused in (
        str(tmp_path / "secret.txt"),
        f"{root}/../secret.txt",
        str(root / "escape.png"),  # a symlink out of the root
        "images/cat.png",  # relative
        "file://otherhost/etc/passwd",
    ):
        with pytest.raises(InputRefusedError):
            await fetch_uri(refused, policy)
    with pytest.raises(InvalidInputError, match="cannot read file"):
        await fetch_uri(str(root / "missing.png"), policy)
    with pytest.raises(InvalidInputError, match="larger than 100 bytes"):
        small = UriPolicy(allow_file=True, file_roots=(str(root),), max_bytes=100)
        await fetch_uri(str(root / "cat.png"), small)


async def test_allow_file_without_roots_reads_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PAYLOAD)
    with pytest.raises(InputRefusedError):
        await fetch_uri(str(tmp_path / "a.png"), UriPolicy(allow_file=True))
