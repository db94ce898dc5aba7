"""Shared-token authentication, the same rule on every protocol.

clip-client sends its credential verbatim (``credential={'Authorization': token}`` becomes
gRPC metadata ``authorization: <token>`` or the HTTP header ``Authorization: <token>``);
other clients send ``Bearer <token>``. Both forms are accepted, compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from clipserve.errors import AuthenticationError

_SCHEME = "bearer "


class TokenAuth:
    """Checks a presented credential against the configured token (None: no auth)."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def accepts(self, credential: str | bytes | None) -> bool:
        if self._token is None:
            return True
        if credential is None:
            return False
        if isinstance(credential, bytes):
            credential = credential.decode("utf-8", "replace")
        credential = credential.strip()
        if credential[: len(_SCHEME)].lower() == _SCHEME:
            credential = credential[len(_SCHEME) :].strip()
        return hmac.compare_digest(credential.encode("utf-8"), self._token)

    def check(self, credential: str | bytes | None) -> None:
        """Raise ``AuthenticationError`` unless ``credential`` is right."""
        if not self.accepts(credential):
            reason = "missing credential" if not credential else "wrong credential"
            raise AuthenticationError(f"unauthenticated: {reason} (send 'authorization')")

    def check_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """gRPC: the ``authorization`` metadata entry (keys are lower-case on the wire)."""
        credential = None
        for key, value in metadata or ():
            if key.lower() == "authorization":
                credential = value
                break
        self.check(credential)
