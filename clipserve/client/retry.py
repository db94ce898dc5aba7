"""Opt-in retries for transient failures (no I/O): which errors count, and how long to wait.

Transient: the server is unreachable or went away (``ServerUnavailableError``), it did not
answer in time (``ClientTimeoutError``), or it refused work because its queues are full
(``OverloadedError``). Everything else (bad input, authentication, a model failure reported
by the server) fails at once. After a transient failure the pipeline opens a new stream and
resends only the batches that were not answered; replies are matched by request id, so no
embedding is lost or duplicated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from clipserve.errors import ClientTimeoutError, OverloadedError, ServerUnavailableError

TRANSIENT_ERRORS = (ServerUnavailableError, ClientTimeoutError, OverloadedError)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` attempts after the first, each waiting ``backoff * 2**k`` seconds (with
    +-25 % jitter, capped at ``max_backoff``). The count restarts whenever a reply arrives,
    so a long job survives several separate outages."""

    retries: int = 0
    backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {self.retries!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("retry_backoff must be >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.75, 1.25)
