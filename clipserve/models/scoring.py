"""How a model turns the cosine similarity of a query and a candidate into ``clip_score``.

Each model family scores pairs the way it was trained to:

* ``softmax`` (CLIP, MetaCLIP 2, Chinese-CLIP, AltCLIP): ``softmax(scale * cosine)`` over one
  query's candidates, ``scale`` being the model's learnt ``exp(logit_scale)`` (100 for the
  published CLIP checkpoints, the value CLIP-as-service hard-codes). The scores of one
  query's candidates sum to 1.
* ``sigmoid`` (SigLIP, SigLIP 2): ``sigmoid(scale * cosine + bias)`` for each pair on its
  own, with the model's ``exp(logit_scale)`` and ``logit_bias``: a probability that the pair
  matches, independent of the other candidates.

Models without a learnt scale (the built-in and hash models) use CLIP-as-service's rule,
``softmax(100 * cosine)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SOFTMAX = "softmax"
SIGMOID = "sigmoid"
RULES = (SOFTMAX, SIGMOID)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D array (empty in, empty out)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.size == 0:
        return logits
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function, stable for large negative and positive logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


@dataclass(frozen=True)
class ScoreRule:
    """``kind`` (softmax or sigmoid) of ``scale * cosine + bias``."""

    kind: str = SOFTMAX
    scale: float = 100.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"score rule must be one of {', '.join(RULES)}; got {self.kind!r}")

    def scores(self, cosines: np.ndarray) -> np.ndarray:
        """One query's candidates' cosines [N] -> their ``clip_score`` [N]."""
        logits = self.scale * np.asarray(cosines, dtype=np.float64) + self.bias
        return softmax(logits) if self.kind == SOFTMAX else sigmoid(logits)

    def describe(self) -> str:
        """``softmax(100 * cos) over the candidates`` / ``sigmoid(117.3 * cos - 12.93)``."""
        if self.kind == SOFTMAX:
            return f"softmax({self.scale:.4g} * cos) over the candidates"
        sign = "-" if self.bias < 0 else "+"
        return f"sigmoid({self.scale:.4g} * cos {sign} {abs(self.bias):.4g})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "bias": self.bias}

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> ScoreRule:
        if not value:
            return CLIP_AS_SERVICE
        return cls(str(value["kind"]), float(value["scale"]), float(value.get("bias", 0.0)))


#: CLIP-as-service's rule, for models that learnt none
CLIP_AS_SERVICE = ScoreRule(SOFTMAX, 100.0, 0.0)
