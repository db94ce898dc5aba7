"""Reading a document's ``uri`` on the server, safely (SSRF defence).

``data:`` URIs carry their bytes inline and are always decoded. Remote ``http(s)`` URLs
are fetched under the ``UriPolicy`` (``uri_policy``: public addresses by default):

- the scheme must be allowed and the host must match ``allowed_hosts`` (empty: any host);
- the host is resolved here (``getaddrinfo`` in a thread) and every address it resolves to
  must pass the address rules (no cloud metadata service ever; no loopback, link-local,
  private, shared (CGNAT), multicast, reserved or unspecified address, including IPv4
  addresses hidden in IPv6 forms (``::ffff:a.b.c.d``, NAT64, 6to4), unless
  ``allow_private``); a mixed answer is refused;
- the connection goes to the very address that was checked. The URL handed to httpx names
  the IP, the ``Host`` header names the host, and for TLS the SNI and certificate check use
  the host name (httpcore's ``sni_hostname`` extension). A second DNS answer (rebinding)
  therefore never gets a say, and certificates are still verified against the real name;
- redirects are followed by hand, at most ``max_redirects``, each hop checked as above;
- the body is streamed with a ``max_bytes`` cap, the whole fetch under ``timeout_s``;
- environment proxies are ignored (a proxy would resolve the name itself).

Local files (``file://`` or a plain path) are read only with ``allow_file`` and only when
the resolved path (symlinks followed) lies under one of ``file_roots``.

Policy refusals raise ``InputRefusedError`` naming the rule and how to change it; fetches
that fail (unreachable, HTTP error, too large, too slow) raise ``InvalidInputError``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

from clipserve.errors import InvalidInputError
from clipserve.server.uri_policy import (
    IPAddress,
    UriPolicy,
    check_addresses,
    check_enabled,
    check_host,
    check_scheme,
    files_refused,
)
from clipserve.wire.data_uri import decode_data_uri
from clipserve.wire.data_uri import shorten_uri as describe

if TYPE_CHECKING:  # httpx loads with the first fetch: `clipserve --help` does not need it
    import httpx

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


async def fetch_uri(
    uri: str, policy: UriPolicy, *, transport: httpx.AsyncBaseTransport | None = None
) -> bytes:
    """The bytes ``uri`` names, if ``policy`` allows reading them. ``transport`` replaces
    httpx's own (tests route the checked address to a loopback server with it)."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError("uri is empty")
    uri = uri.strip()
    scheme = _scheme_of(uri)
    if scheme == "data":
        return decode_data_uri(uri, policy.max_bytes).data
    if scheme in ("", "file"):
        return await _read_file(uri, policy)
    check_enabled(uri, policy)
    try:
        return await asyncio.wait_for(_fetch_remote(uri, policy, transport), policy.timeout_s)
    except (TimeoutError, asyncio.TimeoutError) as exc:
        raise InvalidInputError(
            f"uri {describe(uri)}: fetch did not finish within {policy.timeout_s:g} s "
            "(rule uri_policy.timeout_s)"
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
        raise files_refused(uri, "", policy)
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise files_refused(uri, "file URIs on other hosts are never read", policy)
        raw_path = unquote_to_bytes(parts.path).decode("utf-8", "replace")
    else:
        raw_path = uri
    path = Path(raw_path).expanduser()
    if not path.is_absolute():
        raise files_refused(uri, "relative paths are never read", policy)
    resolved = await asyncio.to_thread(path.resolve)
    roots = [Path(root).resolve() for root in policy.file_roots]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise files_refused(uri, "path is outside the allowed directories", policy)
    return await asyncio.to_thread(_read_capped, resolved, uri, policy.max_bytes)


def _read_capped(path: Path, uri: str, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidInputError(f"uri {describe(uri)}: cannot read file ({exc.strerror})") from exc
    if len(data) > max_bytes:
        raise InvalidInputError(_too_large(uri, "file", max_bytes))
    return data


def _too_large(uri: str, what: str, max_bytes: int) -> str:
    return f"uri {describe(uri)}: {what} larger than {max_bytes} bytes (rule uri_policy.max_bytes)"


# --- remote URLs ------------------------------------------------------------------------


async def resolve_checked(host: str, port: int, uri: str, policy: UriPolicy) -> IPAddress:
    """Resolve ``host`` once and check every address; return the one to connect to."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
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
    check_addresses(uri, host, addresses, policy)
    return addresses[0]


def _check_url(url: str, policy: UriPolicy) -> tuple[str, str, int]:
    """Scheme/host/port of ``url`` after the policy checks that need no DNS."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInputError(f"uri {describe(url)}: malformed URL ({exc})") from exc
    scheme = parts.scheme.lower()
    check_scheme(url, scheme, policy)
    try:
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInputError(f"uri {describe(url)}: malformed URL ({exc})") from exc
    if not host:
        raise InvalidInputError(f"uri {describe(url)}: URL has no host")
    check_host(url, host, policy)
    return scheme, host, port


async def _fetch_remote(
    uri: str, policy: UriPolicy, transport: httpx.AsyncBaseTransport | None
) -> bytes:
    import httpx

    url = uri
    timeout = httpx.Timeout(policy.timeout_s)
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, timeout=timeout, transport=transport
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
    raise InvalidInputError(
        f"uri {describe(uri)}: more than {policy.max_redirects} redirects "
        "(rule uri_policy.max_redirects)"
    )


async def _read_body(response: httpx.Response, uri: str, max_bytes: int) -> bytes:
    length = response.headers.get("content-length")
    too_large = _too_large(uri, "body", max_bytes)
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
