"""Rank scoring: by default softmax of 100 x cosine over one query's candidates, best first;
the model's own rule where it has one (a softmax at its scale, SigLIP's sigmoid per pair)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from clipserve.models.scoring import SIGMOID, SOFTMAX, ScoreRule
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


def test_sigmoid_rule_scores_each_pair_on_its_own() -> None:
    """SigLIP: sigmoid(scale * cos + bias) per pair; no sum to 1, no effect of other pairs."""
    rule = ScoreRule(SIGMOID, scale=10.0, bias=-2.0)
    query = np.array([1.0, 0.0])
    candidates = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    result = rank(query, candidates, rule)
    assert result.order == [1, 2, 0] and result.op_name == "sigmoid"
    logits = 10.0 * result.cosines - 2.0
    np.testing.assert_allclose(result.clip_scores, 1 / (1 + np.exp(-logits)), rtol=1e-12)
    alone = rank(query, candidates[1:2], rule).clip_scores[0]
    assert alone == result.clip_scores[1]  # the same pair scores the same among others


def test_softmax_rule_uses_the_models_scale() -> None:
    rule = ScoreRule(SOFTMAX, scale=14.3)
    result = rank(np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0]]), rule)
    expected = np.exp([14.3, 0.0]) / np.exp([14.3, 0.0]).sum()
    np.testing.assert_allclose(result.clip_scores, expected, rtol=1e-12)
    assert result.op_name == "softmax"


def test_rules_describe_themselves_and_survive_a_round_trip() -> None:
    rule = ScoreRule(SIGMOID, scale=117.33, bias=-12.93)
    assert rule.describe() == "sigmoid(117.3 * cos - 12.93)"
    assert ScoreRule.from_dict(rule.to_dict()) == rule
    assert ScoreRule.from_dict(None).describe() == "softmax(100 * cos) over the candidates"
    extreme = rule.scores(np.array([-1.0, 1.0]))  # no overflow at large logits
    assert np.isfinite(extreme).all() and extreme[0] < 1e-50 and extreme[1] == 1.0
