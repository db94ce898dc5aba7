"""Texts -> token ids, by the model's own tokenizer and its family's ``TextRule``.

Two tokenizers cover the families: a ``tokenizers`` fast tokenizer copied from the
checkpoint's (CLIP BPE, Gemma BPE, XLM-R/mT5 unigram, BERT WordPiece), and SentencePiece
with SigLIP's text canonicalisation for the first SigLIP checkpoints, which ship only a
SentencePiece model. Both truncate to the context length keeping the special tokens, and
pad on the side the checkpoint's tokenizer pads: per batch to the longest member, or to
the fixed length for families whose tower reads the padding (``TextRule.fixed_length``).

Neither keeps mutable state after construction, so one instance serves many threads.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipserve.models.hf.core.spec import TextRule


@dataclass(frozen=True)
class TokenBatch:
    """Token ids and attention mask, int64 [N, L]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class TextTokenizer:
    """Encodes, truncates and pads a batch; subclasses only encode one batch of texts."""

    def __init__(self, rule: TextRule, pad_id: int, pad_left: bool = False) -> None:
        self.rule = rule
        self.pad_id = pad_id
        self.pad_left = pad_left
        self.context_length = rule.context_length

    def encode(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def __call__(self, texts: Sequence[str], pad_to: int | None = None) -> TokenBatch:
        """Tokenise; pad per the rule, or to at least ``pad_to`` if given."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = [str(text) for text in texts]
        if self.rule.lowercase:
            texts = [text.lower() for text in texts]
        rows = self.encode(texts)
        width = max((len(row) for row in rows), default=0)
        if self.rule.fixed_length:
            width = self.context_length
        width = max(width, pad_to or 0)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            span = slice(width - len(row), width) if self.pad_left else slice(0, len(row))
            input_ids[index, span] = row
            attention_mask[index, span] = 1
        return TokenBatch(input_ids, attention_mask)


class FastTokenizer(TextTokenizer):
    """A ``tokenizers.Tokenizer`` (copied from the checkpoint's), truncating to the context."""

    def __init__(
        self, backend: Any, rule: TextRule, pad_id: int, pad_left: bool = False
    ) -> None:
        from tokenizers import Tokenizer

        if not isinstance(backend, Tokenizer):
            raise TypeError(f"expected a tokenizers.Tokenizer, got {type(backend).__name__}")
        super().__init__(rule, pad_id, pad_left)
        self._tokenizer = backend
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=rule.context_length)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]


class SentencePieceTokenizer(TextTokenizer):
    """SigLIP's tokenizer: canonicalised text (lowercase, ASCII punctuation removed,
    whitespace squeezed) through SentencePiece, then the end token; truncation keeps it."""

    _PUNCTUATION = str.maketrans("", "", string.punctuation)
    _SPACES = re.compile(r"\s+")

    def __init__(
        self, model_file: Path, rule: TextRule, eos_id: int, pad_id: int, lowercase: bool = True
    ) -> None:
        import sentencepiece

        super().__init__(rule, pad_id)
        self._processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.eos_id = eos_id
        self._lowercase = lowercase

    def canonical(self, text: str) -> str:
        if self._lowercase:
            text = text.lower()
        text = text.translate(self._PUNCTUATION)
        return self._SPACES.sub(" ", text).strip()

    def encode(self, texts: list[str]) -> list[list[int]]:
        pieces = self._processor.encode([self.canonical(text) for text in texts])
        keep = self.context_length - 1
        return [list(ids[:keep]) + [self.eos_id] for ids in pieces]


def text_tokenizer(hf_tokenizer: Any, rule: TextRule) -> TextTokenizer:
    """The tokenizer for a transformers tokenizer object under ``rule``."""
    vocab_file = getattr(hf_tokenizer, "vocab_file", None)
    if type(hf_tokenizer).__name__ == "SiglipTokenizer" and vocab_file:
        return SentencePieceTokenizer(
            Path(vocab_file),
            rule,
            eos_id=int(hf_tokenizer.eos_token_id),
            pad_id=int(_pad_id(hf_tokenizer)),
            lowercase=bool(getattr(hf_tokenizer, "do_lower_case", True)),
        )
    backend_tokenizer = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise TypeError(
            f"{type(hf_tokenizer).__name__} has no fast (tokenizers) backend; clipserve needs "
            "a tokenizer.json or a SigLIP SentencePiece model"
        )
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(backend_tokenizer.to_str())  # a copy: never shared
    pad_left = getattr(hf_tokenizer, "padding_side", "right") == "left"
    return FastTokenizer(backend, rule, int(_pad_id(hf_tokenizer)), pad_left)


def load_hf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _pad_id(hf_tokenizer: Any) -> int:
    pad = hf_tokenizer.pad_token_id
    return int(hf_tokenizer.eos_token_id if pad is None else pad)
