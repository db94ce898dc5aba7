"""Scoring for ``/rank``: ``clip_score`` by the served model's own rule
(``models.scoring``: CLIP-as-service's softmax of 100 x cosine over one query's candidates
for CLIP-style models, a sigmoid per pair for SigLIP), ``clip_score_cosine`` the cosine.
Candidates come back best first, by cosine (both rules keep its order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipserve.models.scoring import CLIP_AS_SERVICE, ScoreRule, softmax

LOGIT_SCALE = CLIP_AS_SERVICE.scale

__all__ = ["LOGIT_SCALE", "Ranking", "cosine_similarities", "rank", "softmax"]


@dataclass(frozen=True)
class Ranking:
    """Candidates best first: ``order[k]`` is the index of the k-th best candidate."""

    order: list[int]
    clip_scores: np.ndarray  # the model's rule, in the candidates' original order
    cosines: np.ndarray  # cosine similarity, in the candidates' original order
    #: ``op_name`` of ``clip_score`` on the wire: "softmax" or "sigmoid"
    op_name: str = CLIP_AS_SERVICE.kind


def cosine_similarities(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Cosine of ``query`` [D] with each row of ``candidates`` [N, D] -> [N]; 0 for zero rows."""
    query = np.asarray(query, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, query.shape[-1])
    norms = np.linalg.norm(candidates, axis=1) * np.linalg.norm(query)
    dots = candidates @ query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def rank(
    query: np.ndarray, candidates: np.ndarray, rule: ScoreRule = CLIP_AS_SERVICE
) -> Ranking:
    """Score and order ``candidates`` [N, D] against ``query`` [D], best first (stable)."""
    cosines = cosine_similarities(query, candidates)
    order = np.argsort(-cosines, kind="stable").tolist()
    return Ranking(order, rule.scores(cosines), cosines, rule.kind)
