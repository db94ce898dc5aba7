"""Rank scoring: softmax of 100 x cosine over one query's candidates, best first."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clipserve.server.rank import LOGIT_SCALE, cosine_similarities, rank, softmax

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


def test_cosine_of_known_vectors() -> None:
    query = np.array([1.0, 0.0])
    candidates = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(
        cosine_similarities(query, candidates), [1.0, 0.0, -1.0, np.sqrt(0.5), 0.0], atol=1e-12
    )


def test_rank_orders_best_first_and_scores_like_clip() -> None:
    query = np.array([1.0, 0.0, 0.0])
    candidates = np.array([[0.0, 1.0, 0.0], [1.0, 0.1, 0.0], [1.0, 1.0, 0.0]])
    result = rank(query, candidates)
    assert result.order == [1, 2, 0]
    expected = np.exp(LOGIT_SCALE * result.cosines) / np.exp(LOGIT_SCALE * result.cosines).sum()
    np.testing.assert_allclose(result.clip_scores, expected, rtol=1e-9)
    assert result.clip_scores[1] > 0.99  # 100x logit scale makes the softmax sharp


def test_ties_keep_the_callers_order() -> None:
    result = rank(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]))
    assert result.order == [0, 1, 2]
    np.testing.assert_allclose(result.clip_scores, [1 / 3] * 3)


def test_softmax_of_nothing_is_nothing() -> None:
    assert softmax(np.array([])).shape == (0,)


@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.just(4)), elements=finite))
def test_scores_sum_to_one_and_follow_the_order(candidates: np.ndarray) -> None:
    query = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
    result = rank(query, candidates)
    assert sorted(result.order) == list(range(len(candidates)))
    assert np.isclose(result.clip_scores.sum(), 1.0)
    ordered = result.cosines[result.order]
    assert np.all(np.diff(ordered) <= 1e-12)
    assert np.all(np.diff(result.clip_scores[result.order]) <= 1e-12)
    assert np.all((result.cosines >= -1 - 1e-9) & (result.cosines <= 1 + 1e-9))
