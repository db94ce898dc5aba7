"""What the server may read when a document names a ``uri``, and the words for each refusal.

The default follows the spec ("to encode a remote image, you can simply put its address
into uri field"): public ``http(s)`` addresses are fetched; nothing on the server's own
networks is. Every refusal names the rule that refused it and how an operator changes it
(a ``clipserve serve`` flag where there is one, else the ``uri_policy`` mapping of the
``--config`` YAML). The fetching itself (resolve once, connect to the checked address,
re-check every redirect, cap size and time) is ``uri_fetch``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from clipserve.errors import InputRefusedError
from clipserve.server.limits import MiB
from clipserve.wire.data_uri import shorten_uri as describe

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: cloud metadata services (AWS, GCP, Azure, Oracle, DigitalOcean: 169.254.169.254; AWS ECS
#: task metadata, AWS IPv6 IMDS, Alibaba, Azure's platform address). Refused even with
#: ``allow_private``: an image store never lives there, credentials do.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "168.63.129.16",
    )
)


@dataclass(frozen=True)
class UriPolicy:
    """What the server may read for a document's ``uri``. ``data:`` URIs always work."""

    enabled: bool = True  # fetch public http(s) URLs (--no-fetch-uris turns it off)
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allowed_hosts: tuple[str, ...] = ()  # "img.example.com", "*.example.com"; () = any host
    allow_private: bool = False  # loopback / private / link-local targets
    max_bytes: int = 16 * MiB
    timeout_s: float = 10.0
    max_redirects: int = 3
    allow_file: bool = False  # file:// and plain paths, only under file_roots
    file_roots: tuple[str, ...] = ()


def refused(uri: str, what: str, rule: str, change: str) -> InputRefusedError:
    """``uri '...' refused: <what> (rule <rule>); <how to change it>``."""
    return InputRefusedError(f"uri {describe(uri)} refused: {what} (rule {rule}); {change}")


def yaml_hint(setting: str) -> str:
    return f"uri_policy: {{{setting}}} in the --config YAML"


# --- the rules, one function each ---------------------------------------------------------


def check_enabled(uri: str, policy: UriPolicy) -> None:
    if not policy.enabled:
        raise refused(
            uri,
            "this server does not fetch URLs",
            "uri_policy.enabled is off (--no-fetch-uris)",
            "send the image bytes (blob) instead, or start the server without "
            f"--no-fetch-uris ({yaml_hint('enabled: true')})",
        )


def check_scheme(url: str, scheme: str, policy: UriPolicy) -> None:
    if scheme in ("http", "https") and scheme in policy.allowed_schemes:
        return
    allowed = ", ".join(policy.allowed_schemes) or "none"
    if scheme in ("http", "https"):
        change = f"to allow it: {yaml_hint('allowed_schemes: [http, https]')}"
    else:
        change = "only http and https URLs (and data: URIs) are ever fetched"
    raise refused(
        url,
        f"scheme {scheme!r} is not allowed",
        f"uri_policy.allowed_schemes = [{allowed}]",
        change,
    )


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


def check_host(url: str, host: str, policy: UriPolicy) -> None:
    if host_allowed(host, policy.allowed_hosts):
        return
    raise refused(
        url,
        f"host {host!r} is not in the allow-list",
        f"uri_policy.allowed_hosts = [{', '.join(policy.allowed_hosts)}] (--uri-allowed-hosts)",
        "add the host to --uri-allowed-hosts to fetch from it",
    )


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (``::ffff:a.b.c.d``, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be contacted without ``allow_private``, or None."""
    embedded = embedded_ipv4(address)
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


def metadata_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is never contacted (a cloud metadata service), or None."""
    plain = embedded_ipv4(address) or address
    if plain in METADATA_ADDRESSES:
        where = "" if plain == address else f" (embedded in {address})"
        return f"{plain} is a cloud metadata service address{where}"
    return None


def check_addresses(url: str, host: str, addresses: list[IPAddress], policy: UriPolicy) -> None:
    """Every address a host resolves to must pass: a mixed answer is refused."""
    for address in addresses:
        reason = metadata_refusal(address)
        if reason:
            raise refused(
                url,
                f"host {host!r} refused: {reason}",
                "cloud metadata endpoints are never fetched",
                "no setting allows them",
            )
    if policy.allow_private:
        return
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise refused(
                url,
                f"host {host!r} refused: {reason}",
                "uri_policy.allow_private is off: loopback, private, link-local, multicast "
                "and reserved targets are not fetched",
                "to fetch from private networks, start the server with --uri-allow-private "
                f"({yaml_hint('allow_private: true')})",
            )


# --- local files --------------------------------------------------------------------------


def files_refused(uri: str, what: str, policy: UriPolicy) -> InputRefusedError:
    """A refused local path; the rule depends on whether files are allowed at all."""
    if not policy.allow_file or not policy.file_roots:
        return refused(
            uri,
            "this server does not read local files",
            "uri_policy.allow_file is off",
            f"send the bytes, or set {yaml_hint('allow_file: true, file_roots: [/dir]')}",
        )
    roots = ", ".join(policy.file_roots)
    return refused(
        uri, what, f"uri_policy.file_roots = [{roots}]", "add its directory to file_roots"
    )
