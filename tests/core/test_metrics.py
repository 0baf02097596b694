"""Per-window metrics: CRPS against its O(n^2) definition, scale-free %, MASE, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forecast_core.metrics import (
    METRIC_COLUMNS,
    coverage,
    crps,
    crps_pct,
    mae,
    mae_pct,
    mase,
    score_windows,
)

SETTINGS = settings(max_examples=60, deadline=None)
VALUES = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=64)


def crps_brute_force(paths: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """E|X - y| - 0.5 E|X - X'| over all n^2 sample pairs, per step, averaged over the horizon."""
    w, n, h = paths.shape
    out = np.zeros(w)
    for i in range(w):
        per_step = []
        for t in range(h):
            xs = [float(v) for v in paths[i, :, t]]
            y = float(targets[i, t])
            e_xy = sum(abs(x - y) for x in xs) / n
            e_xx = sum(abs(a - b) for a in xs for b in xs) / (n * n)
            per_step.append(e_xy - 0.5 * e_xx)
        out[i] = sum(per_step) / h
    return out


@st.composite
def paths_and_targets(draw):
    w = draw(st.integers(1, 3))
    n = draw(st.integers(1, 12))
    h = draw(st.integers(1, 6))
    paths = draw(hnp.arrays(np.float64, (w, n, h), elements=VALUES))
    targets = draw(hnp.arrays(np.float64, (w, h), elements=VALUES))
    return paths, targets


@SETTINGS
@given(data=paths_and_targets())
def test_crps_sorted_identity_equals_pairwise_definition(data):
    paths, targets = data
    expected = crps_brute_force(paths, targets)
    np.testing.assert_allclose(crps(paths, targets), expected, rtol=1e-9, atol=1e-9 * 1e4)


@SETTINGS
@given(data=paths_and_targets())
def test_crps_is_non_negative_and_at_most_mae_of_every_path_mean(data):
    paths, targets = data
    value = crps(paths, targets)
    assert np.all(value >= -1e-8)
    # CRPS <= E|X - y| (the pairwise term is non-negative)
    assert np.all(value <= np.abs(paths - targets[:, None, :]).mean(axis=(1, 2)) + 1e-8)


@SETTINGS
@given(point=hnp.arrays(np.float64, (3, 7), elements=VALUES), targets=hnp.arrays(np.float64, (3, 7), elements=VALUES))
def test_crps_of_one_sample_equals_mae(point, targets):
    np.testing.assert_allclose(crps(point[:, None, :], targets), mae(point, targets), rtol=1e-12, atol=1e-9)


def test_crps_hand_example():
    # samples {0, 2}, y = 1: E|X-y| = 1, E|X-X'| = (0 + 2 + 2 + 0) / 4 = 1 -> CRPS = 0.5
    paths = np.array([[[0.0], [2.0]]])
    np.testing.assert_allclose(crps(paths, np.array([[1.0]])), [0.5])
    # y = 4: E|X-y| = 3 -> 2.5
    np.testing.assert_allclose(crps(paths, np.array([[4.0]])), [2.5])
    # CRPS% divides by mean |y| = 4
    np.testing.assert_allclose(crps_pct(paths, np.array([[4.0]])), [100 * 2.5 / 4])


def test_crps_does_not_depend_on_sample_order():
    rng = np.random.default_rng(3)
    paths = rng.normal(size=(2, 9, 5))
    targets = rng.normal(size=(2, 5))
    shuffled = paths[:, rng.permutation(9)]
    np.testing.assert_allclose(crps(shuffled, targets), crps(paths, targets), rtol=1e-12)


def _random_windows(seed: int = 0, w: int = 4, n: int = 16, h: int = 8, ctx: int = 20, price: float = 100.0):
    rng = np.random.default_rng(seed)
    context = price * np.exp(np.cumsum(rng.normal(0, 0.02, (w, ctx)), axis=1))
    targets = context[:, -1:] * np.exp(np.cumsum(rng.normal(0, 0.02, (w, h)), axis=1))
    paths = context[:, -1:, None] * np.exp(np.cumsum(rng.normal(0, 0.02, (w, n, h)), axis=2))
    point = paths.mean(axis=1)
    return point, paths, targets, context


@pytest.mark.parametrize("factor", [1e-4, 1e5])
def test_percentage_metrics_are_scale_free(factor):
    point, paths, targets, context = _random_windows()
    base = score_windows(point, paths, targets, context)
    scaled = score_windows(point * factor, paths * factor, targets * factor, context * factor)
    for name in ("mae_pct", "crps_pct", "mase", "coverage_10_90"):
        assert np.all(np.isfinite(scaled[name])), name
        np.testing.assert_allclose(scaled[name], base[name], rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(scaled["mae"], base["mae"] * factor, rtol=1e-9)


def test_percentage_metrics_of_tiny_prices_are_finite_and_exact():
    # a sub-cent token priced around 1e-4: no division by zero, no clamping by an epsilon
    point, paths, targets, context = _random_windows(seed=5, price=1e-4)
    with np.errstate(all="raise"):
        scores = score_windows(point, paths, targets, context)
    expected_mae_pct = 100 * np.abs(point - targets).mean(axis=1) / np.abs(targets).mean(axis=1)
    np.testing.assert_allclose(scores["mae_pct"], expected_mae_pct, rtol=1e-12)
    assert all(np.all(np.isfinite(v)) for v in scores.values())
    assert set(scores) == set(METRIC_COLUMNS)


def test_mae_pct_and_mase_hand_example():
    context = np.array([[1.0, 2.0, 4.0]])  # one-step changes 1, 2 -> naive MAE 1.5
    point = np.array([[3.0, 3.0]])
    targets = np.array([[4.0, 6.0]])  # errors 1, 3 -> MAE 2; mean |y| = 5
    np.testing.assert_allclose(mae(point, targets), [2.0])
    np.testing.assert_allclose(mae_pct(point, targets), [40.0])
    np.testing.assert_allclose(mase(point, targets, context), [2.0 / 1.5])


def test_mase_uses_each_windows_own_context():
    context = np.array([[10.0, 10.0, 13.0, 12.0], [5.0, 6.0, 7.0, 8.0]])  # naive 4/3 and 1
    point = np.array([[12.0], [8.0]])
    targets = np.array([[14.0], [5.0]])  # errors 2 and 3
    np.testing.assert_allclose(mase(point, targets, context), [2.0 / (4.0 / 3.0), 3.0])


def test_mae_pct_uses_absolute_targets():
    targets = np.array([[-2.0, 2.0]])  # mean |y| = 2 (mean y would be 0)
    np.testing.assert_allclose(mae_pct(np.array([[0.0, 0.0]]), targets), [100.0])


def test_coverage_of_10_90_band_known_example():
    # 11 samples 0..10 at every step: the 10% and 90% sample quantiles are exactly 1 and 9
    h = 6
    paths = np.repeat(np.arange(11.0)[None, :, None], h, axis=2)
    targets = np.array([[0.5, 1.0, 5.0, 9.0, 9.5, 12.0]])  # inside (bounds inclusive): 1, 5, 9
    np.testing.assert_allclose(coverage(paths, targets), [0.5])
    # a second window whose band misses every target
    paths2 = np.concatenate([paths, paths + 100.0])
    targets2 = np.concatenate([targets, targets])
    np.testing.assert_allclose(coverage(paths2, targets2), [0.5, 0.0])


def test_score_windows_columns_and_values_agree_with_functions():
    point, paths, targets, context = _random_windows(seed=9)
    scores = score_windows(point, paths, targets, context)
    assert tuple(scores) == METRIC_COLUMNS
    expected_crps_pct = 100 * crps_brute_force(paths, targets) / np.abs(targets).mean(axis=1)
    np.testing.assert_allclose(scores["crps_pct"], expected_crps_pct, rtol=1e-9)
    np.testing.assert_allclose(scores["mase"], mase(point, targets, context))
    for value in scores.values():
        assert value.shape == (4,)
