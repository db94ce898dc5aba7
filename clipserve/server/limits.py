"""Per-request limits the service enforces before any work is queued."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    - ``max_docs_per_request``: documents one request asks to embed (those its access path
      selects; rank matches included); a larger request is refused as a whole
      (``InputRefusedError``) before any work is queued.
    - ``max_text_chars``: longer sentences are truncated to this many characters. Models
      keep only their first few hundred tokens anyway, so the embedding is unchanged; the
      cut only bounds the tokenizer's work.
    - ``max_image_bytes``: an image blob, tensor buffer or fetched URI above this size fails
      its own document (``InputRefusedError``).
    """

    max_docs_per_request: int = 2048
    max_text_chars: int = 20_000
    max_image_bytes: int = 16 * MiB

    def __post_init__(self) -> None:
        for name in ("max_docs_per_request", "max_text_chars", "max_image_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
