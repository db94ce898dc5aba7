"""TLS material for the listeners: one certificate/key pair serves gRPC, HTTPS and WSS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @classmethod
    def from_paths(cls, cert: str | None, key: str | None) -> TlsFiles | None:
        """Validate the pair early, so a typo fails at start-up with a clear message."""
        if not cert and not key:
            return None
        if not cert or not key:
            raise ValueError("TLS needs both --tls-cert and --tls-key")
        files = cls(Path(cert), Path(key))
        for label, path in (("certificate", files.cert), ("key", files.key)):
            if not path.is_file():
                raise ValueError(f"TLS {label} file not found: {path}")
        try:  # the same check uvicorn would do later, but before anything is bound
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                str(files.cert), str(files.key)
            )
        except (ssl.SSLError, OSError) as exc:
            message = f"cannot load TLS certificate/key ({files.cert}, {files.key}): {exc}"
            raise ValueError(message) from exc
        return files

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())])
