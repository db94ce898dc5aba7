"""One error tree for clipserve, shared by server, engine, models and client.

    ClipServeError
     ├── InvalidInputError (ValueError)        a document or request is malformed
     │    └── InputRefusedError                 well-formed but not allowed (SSRF, size limits)
     ├── AuthenticationError                    missing or wrong credential
     ├── OverloadedError                        queues are full; retry later
     │    └── RateLimitedError                  a tenant's rate limit; retry after a hint
     ├── ModelError                             the model failed on a batch
     │    └── ModelUnavailableError             weights cannot be found or loaded
     ├── RemoteError                            the server reported a failure (client side)
     │    └── PartialFailureError               some documents failed, others have results
     ├── ServerUnavailableError (ConnectionError) cannot reach the server / it went away
     │    └── EngineUnhealthyError              a forward pass is stuck / an inference thread died
     ├── ClientTimeoutError (TimeoutError)      no answer within the configured timeout
     │    └── DeadlineExceededError             the caller's deadline passed; work dropped
     └── MissingDependencyError (ImportError)   an optional extra is not installed

Front-ends translate these to gRPC codes, HTTP statuses and WebSocket close codes in
one table each; clients translate them back into this tree.
"""

from __future__ import annotations


class ClipServeError(Exception):
    """Base of every error clipserve raises on purpose."""


class InvalidInputError(ClipServeError, ValueError):
    """A document or request cannot be processed as sent. ``param`` names the request
    field at fault where there is one (HTTP error bodies carry it, as OpenAI's do)."""

    def __init__(
        self, message: str, doc_id: str | None = None, *, param: str | None = None
    ) -> None:
        super().__init__(f"document {doc_id!r}: {message}" if doc_id else message)
        self.reason = message
        self.doc_id = doc_id
        self.param = param


class InputRefusedError(InvalidInputError):
    """Well-formed input the server is configured not to accept."""


class AuthenticationError(ClipServeError):
    """The credential is missing or wrong."""


class OverloadedError(ClipServeError):
    """The server's queues are full; the request was refused, not queued.

    ``retry_after`` (seconds), when known, is how long to wait before trying again."""

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(OverloadedError):
    """A tenant's rate limit refused the request; ``retry_after`` says when it fits."""


class ModelError(ClipServeError):
    """The model failed while encoding a batch."""


class ModelUnavailableError(ModelError):
    """Model weights are not available locally and cannot be downloaded."""


class RemoteError(ClipServeError):
    """The server answered with an error status."""

    def __init__(self, message: str, failures: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or {}


class PartialFailureError(RemoteError):
    """Some documents failed; ``results`` holds what did succeed."""

    def __init__(self, message: str, failures: dict[str, str], results: object = None) -> None:
        super().__init__(message, failures)
        self.results = results


class ServerUnavailableError(ClipServeError, ConnectionError):
    """The server cannot be reached, or the connection broke."""


class EngineUnhealthyError(ServerUnavailableError):
    """The engine cannot answer: a forward pass exceeded its time limit, or an inference
    thread died. The server reports not ready until it recovers."""


class ClientTimeoutError(ClipServeError, TimeoutError):
    """The server did not answer within the configured timeout."""


class DeadlineExceededError(ClientTimeoutError):
    """The caller's deadline passed before the work was computed; the server dropped it."""


class MissingDependencyError(ClipServeError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""
