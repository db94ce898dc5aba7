"""Token authentication, the same rule on every protocol, for one token or many tenants.

clip-client sends its credential verbatim (``credential={'Authorization': token}`` becomes
gRPC metadata ``authorization: <token>`` or the HTTP header ``Authorization: <token>``);
other clients send ``Bearer <token>``. Both forms are accepted.

Tokens: the single ``--auth-token`` (tenant ``default``) and/or ``--auth-tokens-file``
(tenants by name, see ``tenants``). Only SHA-256 digests are kept; a presented token's
digest is compared with every tenant's digest (``hmac.compare_digest``, no early exit),
so neither the token nor which tenant matched shows in the time taken. ``reload`` reads
the file again: new tokens work at once, removed ones are refused from then on and their
open streams are ended (``Tenant.on_revoke``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

from clipserve.errors import AuthenticationError
from clipserve.server.tenants import DEFAULT_TENANT, Tenant, digest_of, load_tokens_file

_SCHEME = "bearer "
#: who calls a server that asks for no token (the tenant label of its metrics)
ANONYMOUS = Tenant("anonymous", b"")


class TokenAuth:
    """The accepted tokens (none configured: every call is ``ANONYMOUS``)."""

    def __init__(self, token: str | None = None, tokens_file: str | Path | None = None) -> None:
        self._single = Tenant(DEFAULT_TENANT, digest_of(token)) if token else None
        self.tokens_file = Path(tokens_file) if tokens_file else None
        self._tenants: list[Tenant] = []
        self._set(load_tokens_file(self.tokens_file) if self.tokens_file else [])

    @property
    def enabled(self) -> bool:
        return bool(self._tenants)

    @property
    def tenants(self) -> list[Tenant]:
        return list(self._tenants)

    def identify(self, credential: str | bytes | None) -> Tenant | None:
        """The tenant whose token ``credential`` is; None when it is nobody's."""
        if not self._tenants:
            return ANONYMOUS
        if credential is None:
            return None
        if isinstance(credential, bytes):
            credential = credential.decode("utf-8", "replace")
        credential = credential.strip()
        if credential[: len(_SCHEME)].lower() == _SCHEME:
            credential = credential[len(_SCHEME) :].strip()
        presented = digest_of(credential)
        found = None
        for tenant in self._tenants:  # every digest compared, whatever matched before
            if hmac.compare_digest(presented, tenant.digest):
                found = tenant
        return found

    def accepts(self, credential: str | bytes | None) -> bool:
        return self.identify(credential) is not None

    def check(self, credential: str | bytes | None) -> Tenant:
        """The caller's tenant; ``AuthenticationError`` unless ``credential`` is right."""
        tenant = self.identify(credential)
        if tenant is None:
            reason = "missing credential" if not credential else "wrong credential"
            raise AuthenticationError(f"unauthenticated: {reason} (send 'authorization')")
        return tenant

    def check_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Tenant:
        """gRPC: the ``authorization`` metadata entry (keys are lower-case on the wire)."""
        return self.check(metadata_credential(metadata))

    def reload(self) -> tuple[list[str], list[str]]:
        """Read the tokens file again; (names added, names removed). Tokens that changed
        count as removed and added. On a bad file the old tokens stay (``ValueError``)."""
        if self.tokens_file is None:
            return [], []
        fresh = load_tokens_file(self.tokens_file)
        old = {(t.name, t.digest): t for t in self._tenants if t is not self._single}
        new = {(t.name, t.digest): t for t in fresh}
        kept = []
        for key, tenant in new.items():  # the same token keeps its object (and its streams)
            known = old.get(key)
            if known is not None and known.limit != tenant.limit:
                known.set_limit(tenant.limit)
            kept.append(known or tenant)
        removed = [tenant for key, tenant in old.items() if key not in new]
        self._set(kept)
        for tenant in removed:
            tenant.revoke()
        added = [name for (name, digest) in new if (name, digest) not in old]
        return added, [tenant.name for tenant in removed]

    def _set(self, from_file: list[Tenant]) -> None:
        tenants = list(from_file)
        if self._single is not None:
            if any(t.digest == self._single.digest for t in tenants):
                raise ValueError("--auth-token is also a token in the tokens file")
            tenants.append(self._single)
        self._tenants = tenants


def metadata_credential(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | bytes | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return value
    return None
