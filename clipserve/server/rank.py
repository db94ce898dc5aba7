"""Scoring for ``/rank``, as CLIP-as-service does it.

``clip_score`` is the softmax, over one query's candidates, of 100 x cosine similarity
(100 being CLIP's logit scale); ``clip_score_cosine`` is the cosine itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class Ranking:
    """Candidates best first: ``order[k]`` is the index of the k-th best candidate."""

    order: list[int]
    clip_scores: np.ndarray  # softmax, in the candidates' original order
    cosines: np.ndarray  # cosine similarity, in the candidates' original order


def cosine_similarities(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` [D] with each row of ``candidates`` [N, D] -> [N]; 0 for zero rows."""
    query = np.asarray(query, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, query.shape[-1])
    norms = np.linalg.norm(candidates, axis=1) * np.linalg.norm(query)
    dots = candidates @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D array (empty in, empty out)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.size == 0:
        return logits
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def rank(query: np.ndarray, candidates: np.ndarray) -> Ranking:
    """Score and order ``candidates`` [N, D] against ``query`` [D], best first (stable)."""
    cosines = cosine_similarities(query, candidates)
    clip_scores = softmax(LOGIT_SCALE * cosines)
    order = np.argsort(-cosines, kind="stable").tolist()
    return Ranking(order=order, clip_scores=clip_scores, cosines=cosines)
