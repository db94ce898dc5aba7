"""Server-side URI reading under the default policy (public http(s) addresses are fetched):
every guard's refusal, each naming its rule and how to change it, and the fetches that go
through.

A real HTTP server on 127.0.0.1 stands in for remote hosts. Reached as itself it needs
``allow_private`` (what ``--uri-allow-private`` sets); reached as a *public* host, a fake
DNS answer gives a name a public address and ``RoutingTransport`` carries the connection to
that address to the loopback server, so no test ever contacts a real public host.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.server.uri_fetch import fetch_uri
from clipserve.server.uri_policy import UriPolicy, address_refusal, host_allowed
from tests.reliability.public_origin import PUBLIC_IP, PUBLIC_IP_2, RoutingTransport, fake_dns
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


DEFAULT = UriPolicy()
#: what ``--uri-allow-private`` gives: the loopback origin can be reached as itself
LOCAL = UriPolicy(allow_private=True)
PRIVATE_HINT = "--uri-allow-private"


@pytest.fixture
def public(origin: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, RoutingTransport]:
    """``http://photos.example.com:<port>`` resolving to public addresses that lead to the
    loopback origin; returns that base URL and the transport that routes it."""
    port = urlsplit(origin).port
    assert port is not None
    fake_dns(monkeypatch, {"photos.example.com": [PUBLIC_IP], "v6.example.com": [PUBLIC_IP_2]})
    return f"http://photos.example.com:{port}", RoutingTransport(
        {PUBLIC_IP: port, PUBLIC_IP_2: port}
    )


# --- the default policy: public URLs are fetched ------------------------------------------


async def test_default_policy_fetches_a_public_url(public) -> None:
    base, transport = public
    _Handler.seen_hosts.clear()
    assert await fetch_uri(f"{base}/image", DEFAULT, transport=transport) == PAYLOAD
    port = urlsplit(base).port
    # connected to the address that was checked, with the name kept in the Host header
    assert transport.connected == [(PUBLIC_IP, f"photos.example.com:{port}")]
    assert _Handler.seen_hosts == [f"photos.example.com:{port}"]


async def test_default_policy_fetches_over_ipv6_and_follows_public_redirects(public) -> None:
    base, transport = public
    port = urlsplit(base).port
    target = f"http://v6.example.com:{port}/image"
    assert await fetch_uri(f"{base}/redirect?to={target}", DEFAULT, transport=transport) == PAYLOAD
    assert [address for address, _ in transport.connected] == [PUBLIC_IP, PUBLIC_IP_2]


async def test_no_fetch_uris_turns_fetching_off(public) -> None:
    base, transport = public
    off = UriPolicy(enabled=False)
    with pytest.raises(InputRefusedError, match="does not fetch URLs") as info:
        await fetch_uri(f"{base}/image", off, transport=transport)
    message = str(info.value)
    assert "rule uri_policy.enabled is off (--no-fetch-uris)" in message
    assert "without --no-fetch-uris" in message and "blob" in message
    assert transport.connected == []


async def test_data_uri_is_decoded_locally_whatever_the_policy() -> None:
    encoded = base64.b64encode(PAYLOAD).decode()
    for policy in (DEFAULT, UriPolicy(enabled=False)):
        assert await fetch_uri(f"data:image/png;base64,{encoded}", policy) == PAYLOAD
        assert await fetch_uri("data:text/plain,a%20b", policy) == b"a b"


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
        await fetch_uri(uri, DEFAULT)


async def test_data_uri_size_cap() -> None:
    encoded = base64.b64encode(b"z" * 2000).decode()
    with pytest.raises(InvalidInputError, match="larger than 1000 bytes"):
        await fetch_uri(f"data:;base64,{encoded}", UriPolicy(max_bytes=1000))


# --- scheme and host rules --------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["ftp://example.com/x.png", "gopher://127.0.0.1:6379/_INFO"])
async def test_other_schemes_are_never_fetched(uri: str) -> None:
    with pytest.raises(InputRefusedError, match="is not allowed") as info:
        await fetch_uri(uri, DEFAULT)
    assert "rule uri_policy.allowed_schemes = [http, https]" in str(info.value)
    assert "only http and https" in str(info.value)


async def test_a_scheme_left_out_of_allowed_schemes_is_refused(public) -> None:
    base, transport = public
    https_only = UriPolicy(allowed_schemes=("https",))
    with pytest.raises(InputRefusedError, match="scheme 'http' is not allowed") as info:
        await fetch_uri(f"{base}/image", https_only, transport=transport)
    assert "allowed_schemes: [http, https]" in str(info.value)  # how to allow it
    assert transport.connected == []


async def test_host_outside_the_allow_list_is_refused(public) -> None:
    base, transport = public
    policy = UriPolicy(allowed_hosts=("images.example.com", "*.cdn.example.org"))
    with pytest.raises(
        InputRefusedError, match="'photos.example.com' is not in the allow-list"
    ) as info:
        await fetch_uri(f"{base}/image", policy, transport=transport)
    assert "rule uri_policy.allowed_hosts = [images.example.com, *.cdn.example.org]" in str(
        info.value
    )
    assert "--uri-allowed-hosts" in str(info.value)
    with pytest.raises(InputRefusedError, match="not in the allow-list"):
        await fetch_uri("https://cdn.example.org.evil.net/a.png", policy)
    allowed = UriPolicy(allowed_hosts=("photos.example.com",))
    assert await fetch_uri(f"{base}/image", allowed, transport=transport) == PAYLOAD


def test_host_patterns() -> None:
    patterns = ("images.example.com", "*.cdn.example.org")
    assert host_allowed("IMAGES.example.com", patterns)
    assert host_allowed("a.b.cdn.example.org", patterns)
    assert not host_allowed("cdn.example.org", patterns)  # the wildcard means sub-domains
    assert not host_allowed("xcdn.example.org", patterns)
    assert not host_allowed("images.example.com.evil.net", patterns)
    assert host_allowed("anything.net", ())  # no allow-list: any (public) host


# --- address rules ----------------------------------------------------------------------------

NON_PUBLIC = [
    "127.0.0.1",
    "127.1.2.3",
    "[::1]",
    "0.0.0.0",
    "[::]",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "224.0.0.1",
    "240.0.0.1",
    "[fc00::1]",
    "[fe80::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
    "[::ffff:10.0.0.1]",  # IPv4-mapped private
    "[64:ff9b::a00:1]",  # NAT64 form of 10.0.0.1
    "[2002:7f00:1::]",  # 6to4 form of 127.0.0.1
    "[2002:c0a8:101::]",  # 6to4 form of 192.168.1.1
]
METADATA = [
    "169.254.169.254",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",  # NAT64 form of 169.254.169.254
    "169.254.170.2",
    "[fd00:ec2::254]",
    "100.100.100.200",
    "168.63.129.16",  # public, and still refused
]


@pytest.mark.parametrize("host", NON_PUBLIC)
async def test_non_public_addresses_are_refused_by_default(host: str) -> None:
    with pytest.raises(InputRefusedError, match="refused: .* address") as info:
        await fetch_uri(f"http://{host}/x.png", DEFAULT)
    message = str(info.value)
    assert host in message
    assert "rule uri_policy.allow_private is off" in message and PRIVATE_HINT in message


@pytest.mark.parametrize("host", METADATA)
@pytest.mark.parametrize("policy", [DEFAULT, LOCAL], ids=["default", "allow-private"])
async def test_metadata_addresses_are_refused_even_with_allow_private(
    host: str, policy: UriPolicy
) -> None:
    with pytest.raises(InputRefusedError, match="cloud metadata service address") as info:
        await fetch_uri(f"http://{host}/latest/meta-data/", policy)
    assert "rule cloud metadata endpoints are never fetched" in str(info.value)


def test_public_addresses_pass_the_address_check() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", PUBLIC_IP_2):
        assert address_refusal(ipaddress.ip_address(text)) is None, text


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    with pytest.raises(InputRefusedError, match="loopback") as info:
        await fetch_uri("http://localhost:9/x.png", DEFAULT)
    assert PRIVATE_HINT in str(info.value)


async def test_a_mixed_dns_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If any address of a name is private, the name is refused (DNS is attacker-controlled)."""
    fake_dns(monkeypatch, {"images.example.com": [PUBLIC_IP, "10.0.0.7"]})
    with pytest.raises(InputRefusedError, match="10.0.0.7 is a private address"):
        await fetch_uri("https://images.example.com/a.png", DEFAULT)


async def test_unresolvable_host_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="cannot resolve host"):
        await fetch_uri("https://no-such-host.invalid/a.png", DEFAULT)


# --- redirects: every hop checked again ------------------------------------------------------


async def test_redirect_from_a_public_host_to_a_private_address_is_refused(public, origin) -> None:
    base, transport = public
    for target in (f"{origin}/image", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(InputRefusedError, match="refused: .* address"):
            await fetch_uri(f"{base}/redirect?to={target}", DEFAULT, transport=transport)
    # only the public first hops were ever connected to
    assert {address for address, _ in transport.connected} == {PUBLIC_IP}


async def test_redirect_to_a_disallowed_host_or_scheme_is_refused(public) -> None:
    base, transport = public
    policy = UriPolicy(allowed_hosts=("photos.example.com",))
    uri = f"{base}/redirect?to=http://elsewhere.example.net/latest"
    with pytest.raises(InputRefusedError, match="'elsewhere.example.net' is not in the allow-list"):
        await fetch_uri(uri, policy, transport=transport)
    with pytest.raises(InputRefusedError, match="scheme 'ftp'"):
        await fetch_uri(
            f"{base}/redirect?to=ftp://photos.example.com/x", DEFAULT, transport=transport
        )


async def test_too_many_redirects(public) -> None:
    base, transport = public
    with pytest.raises(InvalidInputError, match="more than 3 redirects") as info:
        await fetch_uri(f"{base}/loop", DEFAULT, transport=transport)
    assert "rule uri_policy.max_redirects" in str(info.value)


async def test_redirect_within_loopback_with_allow_private(origin: str) -> None:
    assert await fetch_uri(f"{origin}/redirect?to=/image", LOCAL) == PAYLOAD


# --- fetches that go through, and their limits ---------------------------------------------


async def test_fetch_from_loopback_with_allow_private(origin: str) -> None:
    assert await fetch_uri(f"{origin}/image", LOCAL) == PAYLOAD


async def test_connects_to_the_checked_address_with_the_original_host_header(
    origin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once by us; the request goes to that IP and keeps the Host."""
    port = urlsplit(origin).port
    lookups = fake_dns(monkeypatch, {"images.test": ["127.0.0.1"]})
    _Handler.seen_hosts.clear()
    assert await fetch_uri(f"http://images.test:{port}/image", LOCAL) == PAYLOAD
    assert lookups == ["images.test"]  # one lookup, nothing re-resolved by the HTTP stack
    assert _Handler.seen_hosts == [f"images.test:{port}"]


async def test_http_error_status_is_invalid_input(public) -> None:
    base, transport = public
    with pytest.raises(InvalidInputError, match="HTTP 404"):
        await fetch_uri(f"{base}/missing", DEFAULT, transport=transport)


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
async def test_size_cap(public, path: str) -> None:
    base, transport = public
    policy = UriPolicy(max_bytes=4000)
    with pytest.raises(InvalidInputError, match="larger than 4000 bytes") as info:
        await fetch_uri(f"{base}{path}", policy, transport=transport)
    assert "rule uri_policy.max_bytes" in str(info.value)


async def test_timeout(public) -> None:
    base, transport = public
    policy = UriPolicy(timeout_s=0.5)
    SLOW_RELEASE.clear()
    try:  # the body comes only after the fetch gave up: had it waited, it would succeed
        with pytest.raises(InvalidInputError, match="within 0.5 s") as info:
            await fetch_uri(f"{base}/slow", policy, transport=transport)
        assert "rule uri_policy.timeout_s" in str(info.value)
    finally:
        SLOW_RELEASE.set()


async def test_unreachable_port_is_invalid_input() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(InvalidInputError, match="fetch failed"):
        await fetch_uri(f"http://127.0.0.1:{port}/x", LOCAL)
