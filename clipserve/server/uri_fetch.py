"""Reading a document's ``uri`` on the server, safely (SSRF defence).

By default the server reads nothing a client names: no remote URL, no local file. Clients
send bytes (``blob``/``tensor``). Only ``data:`` URIs are always accepted, because they
carry their bytes inline and touch nothing outside the request.

When remote fetching is enabled (``UriPolicy(enabled=True, ...)``):

- the scheme must be in ``allowed_schemes`` and the host must match ``allowed_hosts``
  (exact names, or ``*.example.com`` for any sub-domain; empty means any host);
- the host is resolved here (``getaddrinfo`` in a thread) and every address it resolves to
  must be public: loopback, link-local, private, shared (CGNAT), multicast, reserved and
  unspecified addresses are refused, including IPv4 addresses hidden in IPv6 forms
  (``::ffff:a.b.c.d``, NAT64, 6to4), unless ``allow_private``;
- the connection goes to the very address that was checked. The URL handed to httpx names
  the IP, the ``Host`` header names the host, and for TLS the SNI and certificate check use
  the host name (httpcore's ``sni_hostname`` extension). A second DNS answer (rebinding)
  therefore never gets a say, and certificates are still verified against the real name;
- redirects are followed by hand, at most ``max_redirects``, each hop checked as above;
- the body is streamed with a ``max_bytes`` cap, the whole fetch under ``timeout_s``;
- environment proxies are ignored (a proxy would resolve the name itself).

Local files (``file://`` or a plain path) are read only with ``allow_file`` and only when
the resolved path (symlinks followed) lies under one of ``file_roots``.

Policy refusals raise ``InputRefusedError``; fetches that fail (unreachable, HTTP error,
too large, too slow) raise ``InvalidInputError``. Messages name the URI and the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from clipserve.errors import InputRefusedError, InvalidInputError
from clipserve.server.limits import MiB
from clipserve.wire.data_uri import decode_data_uri
from clipserve.wire.data_uri import shorten_uri as describe

if TYPE_CHECKING:  # httpx loads with the first fetch: `clipserve --help` does not need it
    import httpx

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class UriPolicy:
    """What the server may read when a document names a ``uri``. Defaults: nothing."""

    enabled: bool = False  # fetch remote http(s) URLs at all
    allowed_schemes: tuple[str, ...] = ("https",)
    allowed_hosts: tuple[str, ...] = ()  # "img.example.com", "*.example.com"; () = any host
    allow_private: bool = False  # loopback / private / link-local targets
    max_bytes: int = 16 * MiB
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_file: bool = False  # file:// and plain paths, only under file_roots
    file_roots: tuple[str, ...] = ()


async def fetch_uri(uri: str, policy: UriPolicy) -> bytes:
    """The bytes ``uri`` names, if ``policy`` allows reading them."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError("uri is empty")
    uri = uri.strip()
    scheme = _scheme_of(uri)
    if scheme == "data":
        return decode_data_uri(uri, policy.max_bytes).data
    if scheme in ("", "file"):
        return await _read_file(uri, policy)
    if not policy.enabled:
        raise InputRefusedError(
            f"uri {describe(uri)}: this server does not fetch URLs; send the image bytes "
            "(blob) instead, or start the server with URI fetching enabled"
        )
    try:
        return await asyncio.wait_for(_fetch_remote(uri, policy), policy.timeout_s)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise InvalidInputError(
            f"uri {describe(uri)}: fetch did not finish within {policy.timeout_s:g} s"
        ) from exc


def _scheme_of(uri: str) -> str:
    if len(uri) > 2 and uri[1] == ":" and uri[0].isalpha() and uri[2] in "\\/":
        return ""  # a Windows drive path, not a one-letter scheme
    try:
        return urlsplit(uri).scheme.lower()
    except ValueError as exc:
        raise InvalidInputError(f"uri {describe(uri)}: malformed URI ({exc})") from exc


# --- local files ------------------------------------------------------------------------


async def _read_file(uri: str, policy: UriPolicy) -> bytes:
    if not policy.allow_file or not policy.file_roots:
        raise InputRefusedError(
            f"uri {describe(uri)}: this server does not read local files; send the bytes"
        )
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputRefusedError(f"uri {describe(uri)}: file URIs on other hosts are refused")
        raw_path = unquote_to_bytes(parts.path).decode("utf-8", "replace")
    else:
        raw_path = uri
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        raise InputRefusedError(f"uri {describe(uri)}: relative paths are refused")
    resolved = await asyncio.to_thread(path.resolve)
    roots = [Path(root).resolve() for root in policy.file_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise InputRefusedError(f"uri {describe(uri)}: path is outside the allowed directories")
    return await asyncio.to_thread(_read_capped, resolved, uri, policy.max_bytes)


def _read_capped(path: Path, uri: str, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"uri {describe(uri)}: cannot read file ({exc.strerror})") from exc
    if len(data) > max_bytes:
        raise InvalidInputError(f"uri {describe(uri)}: file larger than {max_bytes} bytes")
    return data


# --- remote URLs ------------------------------------------------------------------------


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Exact (case-insensitive) names, or ``*.example.com`` for strict sub-domains."""
    if not allowed_hosts:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


def address_refusal(address: _IPAddress) -> str | None:
    """Why ``address`` must not be contacted without ``allow_private``, or None."""
    embedded: _IPAddress | None = None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            embedded = address.ipv4_mapped
        elif address.sixtofour is not None:
            embedded = address.sixtofour
        elif address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if embedded is not None:
        reason = address_refusal(embedded)
        return f"{reason} (embedded in {address})" if reason else None
    checks = (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "the unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private address"),
    )
    for attribute, label in checks:
        if getattr(address, attribute):
            return f"{address} is {label}"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


async def resolve_checked(host: str, port: int, uri: str, policy: UriPolicy) -> _IPAddress:
    """Resolve ``host`` once and check every address; return the one to connect to."""
    try:
        literal: _IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise InvalidInputError(f"uri {describe(uri)}: cannot resolve host {host!r}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise InvalidInputError(f"uri {describe(uri)}: host {host!r} has no address")
    if not policy.allow_private:
        for address in addresses:  # all must pass: a mixed answer is suspicious
            reason = address_refusal(address)
            if reason:
                raise InputRefusedError(f"uri {describe(uri)}: host {host!r} refused: {reason}")
    return addresses[0]


def _check_url(url: str, policy: UriPolicy) -> tuple[str, str, int]:
    """Scheme/host/port of ``url`` after the policy checks that need no DNS."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"uri {describe(url)}: malformed URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or scheme not in policy.allowed_schemes:
        allowed = ", ".join(policy.allowed_schemes) or "none"
        raise InputRefusedError(
            f"uri {describe(url)}: scheme {scheme!r} is not allowed (allowed: {allowed})"
        )
    try:
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInputError(f"uri {describe(url)}: malformed URL ({exc})") from exc
    if not host:
        raise InvalidInputError(f"uri {describe(url)}: URL has no host")
    if not host_allowed(host, policy.allowed_hosts):
        raise InputRefusedError(f"uri {describe(url)}: host {host!r} is not in the allow-list")
    return scheme, host, port


async def _fetch_remote(uri: str, policy: UriPolicy) -> bytes:
    import httpx

    url = uri
    timeout = httpx.Timeout(policy.timeout_s)
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=timeout
    ) as client:
        for _hop in range(policy.max_redirects + 1):
            scheme, host, port = _check_url(url, policy)
            address = await resolve_checked(host, port, url, policy)
            parts = urlsplit(url)
            ip_host = f"[{address}]" if address.version == 6 else str(address)
            target = parts._replace(netloc=f"{ip_host}:{port}").geturl()
            default_port = port == (443 if scheme == "https" else 80)
            headers = {"Host": host if default_port else f"{host}:{port}"}
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            request = client.build_request("GET", target, headers=headers, extensions=extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise InvalidInputError(
                    f"uri {describe(uri)}: fetch failed ({type(exc).__name__}: {exc})"
                ) from exc
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise InvalidInputError(f"uri {describe(uri)}: redirect without Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise InvalidInputError(
                        f"uri {describe(uri)}: server answered HTTP {response.status_code}"
                    )
                return await _read_body(response, uri, policy.max_bytes)
            finally:
                await response.aclose()
    raise InvalidInputError(f"uri {describe(uri)}: more than {policy.max_redirects} redirects")


async def _read_body(response: httpx.Response, uri: str, max_bytes: int) -> bytes:
    length = response.headers.get("content-length")
    too_large = f"uri {describe(uri)}: body larger than {max_bytes} bytes"
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise InvalidInputError(too_large)
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():  # decoded bytes: a gzip bomb hits the cap too
        received += len(chunk)
        if received > max_bytes:
            raise InvalidInputError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)
