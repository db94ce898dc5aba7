"""Tenants: who may call the server, each under a name, a token and an optional rate limit.

``--auth-tokens-file`` is a YAML (or JSON) mapping from tenant name to its token::

    alice: "a-long-random-token"                 # the token itself
    bob: "sha256:9f86d081884c7d65...0f00a08"     # or the hex SHA-256 of it
    carol:                                       # or a mapping, with a rate limit
      token_sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
      requests_per_s: 5        # token bucket refilled at this rate ...
      requests_burst: 10       # ... holding this many (default: the rate, at least 1)
      documents_per_s: 200     # the same per document
      documents_burst: 400

The server keeps only SHA-256 digests and compares the digest of a presented token with
every tenant's, in constant time, never stopping at a match. Metrics name the tenant,
never the token. The file is read again on SIGHUP (``TokenAuth.reload``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipserve.errors import InputRefusedError, RateLimitedError

_HASH_PREFIX = "sha256:"
_ENTRY_KEYS = {"token", "token_sha256", "requests_per_s", "requests_burst"}
_ENTRY_KEYS |= {"documents_per_s", "documents_burst"}
#: the tenant name of the single ``--auth-token``
DEFAULT_TENANT = "default"


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; ``clock`` is ``time.monotonic``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are there (0: now)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return 0.0 if self._tokens >= cost else (cost - self._tokens) / self.rate

    def take(self, cost: float) -> None:
        self._tokens -= cost


@dataclass(frozen=True)
class RateLimit:
    requests_per_s: float | None = None
    requests_burst: float | None = None
    documents_per_s: float | None = None
    documents_burst: float | None = None


@dataclass(eq=False)
class Tenant:
    """One accepted token. ``revoked`` listeners run when a reload removes it."""

    name: str
    digest: bytes = field(repr=False)
    limit: RateLimit = field(default_factory=RateLimit)
    revoked: bool = False
    _buckets: dict[str, TokenBucket] = field(default_factory=dict, repr=False)
    _listeners: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.set_limit(self.limit)

    def set_limit(self, limit: RateLimit) -> None:
        """(Re)build the buckets, full, for ``limit`` (a reload may change it)."""
        self.limit = limit
        self._buckets.clear()
        for kind in ("requests", "documents"):
            rate = getattr(self.limit, f"{kind}_per_s")
            if rate is not None:
                burst = getattr(self.limit, f"{kind}_burst") or max(1.0, rate)
                self._buckets[kind] = TokenBucket(rate, burst)

    def admit(self, documents: int) -> None:
        """Take one request and ``documents`` from the buckets, or raise: a request larger
        than a bucket can ever hold is refused (``InputRefusedError``), one over the rate
        is refused for now (``RateLimitedError`` with the seconds until it would fit)."""
        costs = {"requests": 1, "documents": documents}
        waits = {}
        for kind, bucket in self._buckets.items():
            if costs[kind] > bucket.burst:
                raise InputRefusedError(
                    f"a request of {costs[kind]} {kind} is more than tenant {self.name!r} "
                    f"may send at once ({kind}_burst {bucket.burst:g}); send smaller requests"
                )
            waits[kind] = bucket.wait_for(costs[kind])
        slowest = max(waits, key=waits.__getitem__, default=None)
        if slowest is not None and waits[slowest] > 0:
            rate = self._buckets[slowest].rate
            raise RateLimitedError(
                f"rate limit of tenant {self.name!r} ({rate:g} {slowest}/s): retry after "
                f"{waits[slowest]:.3f} s",
                retry_after=waits[slowest],
            )
        for kind, bucket in self._buckets.items():
            bucket.take(costs[kind])

    def on_revoke(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when this token is removed; returns a function that forgets it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def revoke(self) -> None:
        self.revoked = True
        for listener in list(self._listeners):
            listener()
        self._listeners.clear()


def load_tokens_file(path: str | Path) -> list[Tenant]:
    """Read a tokens file (YAML or JSON); ``ValueError`` naming the file and entry."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"auth tokens file {path}: cannot read it ({exc})") from exc
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"auth tokens file {path}: must map tenant names to tokens")
    tenants: list[Tenant] = []
    seen: dict[bytes, str] = {}
    for name, entry in data.items():
        where = f"auth tokens file {path}, tenant {name!r}"
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"auth tokens file {path}: tenant names must be non-empty strings")
        tenant = _tenant(name, entry, where)
        if tenant.digest in seen:
            raise ValueError(f"{where}: same token as tenant {seen[tenant.digest]!r}")
        seen[tenant.digest] = name
        tenants.append(tenant)
    return tenants


def _tenant(name: str, entry: Any, where: str) -> Tenant:
    if isinstance(entry, str):
        entry = {"token": entry}
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: give a token string or a mapping")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    token, hashed = entry.get("token"), entry.get("token_sha256")
    if isinstance(token, str) and token.startswith(_HASH_PREFIX) and hashed is None:
        token, hashed = None, token[len(_HASH_PREFIX) :]
    if (token is None) == (hashed is None):
        raise ValueError(f"{where}: give exactly one of token or token_sha256")
    if token is not None:
        if not isinstance(token, str) or not token:
            raise ValueError(f"{where}: the token must be a non-empty string")
        digest = digest_of(token)
    else:
        try:
            digest = bytes.fromhex(str(hashed))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ValueError(f"{where}: token_sha256 must be 64 hex digits (a SHA-256)")
    limits: dict[str, float] = {}
    for key in sorted(_ENTRY_KEYS - {"token", "token_sha256"}):
        value = entry.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{where}: {key} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where}: {key} must be finite")
        limits[key] = float(value)
    for kind in ("requests", "documents"):
        if f"{kind}_burst" in limits and f"{kind}_per_s" not in limits:
            raise ValueError(f"{where}: {kind}_burst needs {kind}_per_s")
    return Tenant(name, digest, RateLimit(**limits))
