"""Aggregations of sample paths: every name, explicit sample axis, brute-force references."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from forecast_core.aggregate import Aggregation, aggregate, parse_aggregation

SETTINGS = settings(max_examples=60, deadline=None)

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def sample_matrices(draw, max_samples: int = 24, max_horizon: int = 24):
    """``[samples, horizon]`` matrices; samples < horizon, == horizon, > horizon and 1 all occur."""
    relation = draw(st.sampled_from(["one", "fewer", "equal", "more"]))
    horizon = draw(st.integers(1, max_horizon))
    if relation == "one":
        samples = 1
    elif relation == "fewer":
        samples = draw(st.integers(1, horizon))
    elif relation == "equal":
        samples = horizon
    else:
        samples = draw(st.integers(horizon, max_samples + horizon))
    return draw(hnp.arrays(np.float64, (samples, horizon), elements=FINITE))


def _trim_names():
    integer = st.integers(0, 49).map(str)
    decimal = st.sampled_from(["0.5", "2.5", "12.5", "33.3", "49.9", "10.0"])
    return st.one_of(integer, decimal)


def _quantile_names():
    return st.integers(0, 100).map(lambda k: "0" if k == 0 else "1" if k == 100 else f"0.{k:02d}")


def _k_names():
    return st.one_of(st.integers(0, 5).map(str), st.sampled_from(["0.5", "1.25", "0.0"]))


ALL_NAMES = st.one_of(
    st.sampled_from(["mean", "median"]),
    _trim_names().map(lambda x: f"trimmed_mean_{x}"),
    _quantile_names().map(lambda q: f"quantile_{q}"),
    _k_names().map(lambda k: f"mean_minus_std_{k}"),
    _k_names().map(lambda k: f"mean_plus_std_{k}"),
)


# -- brute-force references, one column (horizon step) at a time, in plain Python -------------------
def _ref_mean(col):
    return math.fsum(col) / len(col)


def _ref_median(col):
    s = sorted(col)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _ref_trimmed(col, pct: str):
    n = len(col)
    cut = math.floor(Fraction(n) * Fraction(pct) / 100)
    kept = sorted(col)[cut : n - cut]
    return math.fsum(kept) / len(kept)


def _ref_quantile(col, q: str):
    s = sorted(col)
    pos = Fraction(q) * (len(s) - 1)  # numpy's default "linear" definition
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    frac = float(pos - lo)
    return s[lo] + (s[hi] - s[lo]) * frac


def _ref_mean_std(col, k: float):
    return _ref_mean(col) + k * statistics.pstdev(col)


def reference(paths: np.ndarray, name: str) -> np.ndarray:
    """Aggregate ``[samples, horizon]`` column by column without numpy reductions."""
    cols = [paths[:, j].tolist() for j in range(paths.shape[1])]
    if name == "mean":
        fn = _ref_mean
    elif name == "median":
        fn = _ref_median
    elif name.startswith("trimmed_mean_"):
        pct = name.removeprefix("trimmed_mean_")
        fn = lambda c: _ref_trimmed(c, pct)  # noqa: E731
    elif name.startswith("quantile_"):
        q = name.removeprefix("quantile_")
        fn = lambda c: _ref_quantile(c, q)  # noqa: E731
    elif name.startswith("mean_minus_std_"):
        k = -float(name.removeprefix("mean_minus_std_"))
        fn = lambda c: _ref_mean_std(c, k)  # noqa: E731
    elif name.startswith("mean_plus_std_"):
        k = float(name.removeprefix("mean_plus_std_"))
        fn = lambda c: _ref_mean_std(c, k)  # noqa: E731
    else:  # pragma: no cover
        raise AssertionError(name)
    return np.array([fn(c) for c in cols])


def _close(actual, expected, paths):
    scale = max(1.0, float(np.abs(paths).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9 * scale)


# -- every aggregation equals its reference, whatever samples vs horizon ----------------------------
@SETTINGS
@given(paths=sample_matrices(), name=ALL_NAMES)
def test_every_aggregation_matches_brute_force_reference(paths, name):
    out = aggregate(paths, name, sample_axis=0)
    assert out.shape == (paths.shape[1],)
    _close(out, reference(paths, name), paths)


@SETTINGS
@given(paths=sample_matrices(), pct=_trim_names())
def test_trimmed_mean_drops_floor_n_x_over_100_from_each_side(paths, pct):
    name = f"trimmed_mean_{pct}"
    _close(aggregate(paths, name, sample_axis=0), reference(paths, name), paths)


@pytest.mark.parametrize("samples,horizon", [(1, 64), (2, 64), (64, 64), (65, 64), (3, 3), (8, 1)])
@pytest.mark.parametrize(
    "name", ["mean", "median", "trimmed_mean_10", "quantile_0.25", "mean_minus_std_1", "mean_plus_std_2"]
)
def test_samples_at_or_below_horizon_reduce_the_sample_axis(samples, horizon, name):
    rng = np.random.default_rng(samples * 100 + horizon)
    # every sample path is a constant level: the aggregate of any step lies between the levels,
    # and a reduction over the wrong axis would vary along the horizon
    levels = rng.normal(100, 10, samples)
    paths = np.repeat(levels[:, None], horizon, axis=1) + np.zeros((samples, horizon))
    out = aggregate(paths, name, sample_axis=0)
    assert out.shape == (horizon,)
    expected = reference(paths[:, :1], name)[0]
    np.testing.assert_allclose(out, np.full(horizon, expected), rtol=1e-12)


def test_trimmed_mean_hand_example():
    # 10 samples, 20% -> drop 2 lowest and 2 highest: mean of 3..8 = 5.5 (column 0); column 1 reversed
    paths = np.stack([np.array([100.0, -50, 3, 4, 5, 6, 7, 8, 1000, -1000]), np.arange(10.0)[::-1]], axis=1)
    out = aggregate(paths, "trimmed_mean_20", sample_axis=0)
    np.testing.assert_allclose(out, [5.5, 4.5])
    # 15% of 10 = 1.5 -> floor 1 per side
    np.testing.assert_allclose(aggregate(paths, "trimmed_mean_15", sample_axis=0)[1], np.mean(np.arange(1, 9)))


def test_one_sample_every_aggregation_returns_that_sample():
    path = np.array([[3.0, -1.5, 7.25]])
    for name in ["mean", "median", "trimmed_mean_49", "quantile_0", "quantile_1", "quantile_0.3",
                 "mean_minus_std_3", "mean_plus_std_3"]:
        np.testing.assert_array_equal(aggregate(path, name, sample_axis=0), path[0], err_msg=name)


# -- the explicit sample axis ---------------------------------------------------------------------------
@SETTINGS
@given(paths=sample_matrices(max_samples=10, max_horizon=10), name=ALL_NAMES)
def test_transposed_input_with_changed_axis_gives_the_same_result(paths, name):
    a = aggregate(paths, name, sample_axis=0)
    b = aggregate(paths.T, name, sample_axis=1)
    c = aggregate(paths.T, name, sample_axis=-1)
    np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * max(1.0, float(np.abs(paths).max())))
    np.testing.assert_array_equal(b, c)


@SETTINGS
@given(
    arr=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5), elements=FINITE),
    data=st.data(),
    name=ALL_NAMES,
)
def test_result_shape_is_input_shape_minus_sample_axis(arr, data, name):
    axis = data.draw(st.integers(-arr.ndim, arr.ndim - 1))
    out = np.asarray(aggregate(arr, name, sample_axis=axis))
    expected_shape = arr.shape[: axis % arr.ndim] + arr.shape[axis % arr.ndim + 1 :]
    assert out.shape == expected_shape
    # same as moving the sample axis first and reducing axis 0
    moved = np.moveaxis(arr, axis, 0)
    np.testing.assert_allclose(out, aggregate(moved, name, sample_axis=0), rtol=1e-12,
                               atol=1e-12 * max(1.0, float(np.abs(arr).max())))


def test_windows_samples_horizon_layout_reduces_axis_1():
    rng = np.random.default_rng(0)
    paths = rng.normal(size=(3, 4, 4))  # windows, samples == horizon
    for name in ["mean", "median", "trimmed_mean_25", "quantile_0.9", "mean_plus_std_1"]:
        out = aggregate(paths, name, sample_axis=1)
        assert out.shape == (3, 4)
        for w in range(3):
            np.testing.assert_allclose(out[w], reference(paths[w], name), rtol=1e-12, err_msg=name)


def test_sample_axis_is_required_keyword():
    with pytest.raises(TypeError):
        aggregate(np.ones((3, 2)), "mean")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        aggregate(np.ones((3, 2)), "mean", 0)  # type: ignore[misc]


@pytest.mark.parametrize("axis", [2, 3, -3])
def test_out_of_range_sample_axis_is_an_error_not_wrapped(axis):
    with pytest.raises(ValueError):
        aggregate(np.ones((3, 2)), "mean", sample_axis=axis)


def test_zero_samples_is_an_error():
    with pytest.raises(ValueError, match="zero"):
        aggregate(np.ones((0, 5)), "mean", sample_axis=0)


# -- invariants -----------------------------------------------------------------------------------------
@SETTINGS
@given(paths=sample_matrices(), name=st.one_of(
    st.sampled_from(["mean", "median"]),
    _trim_names().map(lambda x: f"trimmed_mean_{x}"),
    _quantile_names().map(lambda q: f"quantile_{q}"),
))
def test_location_aggregations_lie_between_min_and_max(paths, name):
    out = aggregate(paths, name, sample_axis=0)
    tol = 1e-12 * max(1.0, float(np.abs(paths).max()))
    assert np.all(out >= paths.min(axis=0) - tol)
    assert np.all(out <= paths.max(axis=0) + tol)


@SETTINGS
@given(paths=sample_matrices())
def test_mean_plus_std_zero_equals_mean_and_std_bands_are_ordered(paths):
    mean = aggregate(paths, "mean", sample_axis=0)
    np.testing.assert_array_equal(aggregate(paths, "mean_plus_std_0", sample_axis=0), mean)
    np.testing.assert_array_equal(aggregate(paths, "mean_minus_std_0", sample_axis=0), mean)
    lo = aggregate(paths, "mean_minus_std_1", sample_axis=0)
    hi = aggregate(paths, "mean_plus_std_1", sample_axis=0)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    np.testing.assert_allclose((hi - lo) / 2, paths.std(axis=0), rtol=1e-9, atol=1e-9 * max(1.0, np.abs(paths).max()))


@SETTINGS
@given(paths=sample_matrices())
def test_quantile_endpoints_and_half(paths):
    np.testing.assert_array_equal(aggregate(paths, "quantile_0", sample_axis=0), paths.min(axis=0))
    np.testing.assert_array_equal(aggregate(paths, "quantile_1", sample_axis=0), paths.max(axis=0))
    np.testing.assert_allclose(aggregate(paths, "quantile_0.5", sample_axis=0),
                               aggregate(paths, "median", sample_axis=0), rtol=1e-12, atol=1e-9)


@SETTINGS
@given(paths=sample_matrices(), name=ALL_NAMES)
def test_parsed_aggregation_object_equals_name(paths, name):
    agg = parse_aggregation(name)
    assert isinstance(agg, Aggregation) and agg.name == name
    np.testing.assert_array_equal(agg(paths, sample_axis=0), aggregate(paths, name, sample_axis=0))


def test_parse_values():
    assert parse_aggregation("trimmed_mean_12.5") == Aggregation("trimmed_mean_12.5", "trimmed_mean", 12.5)
    assert parse_aggregation("quantile_0.4") == Aggregation("quantile_0.4", "quantile", 0.4)
    assert parse_aggregation("mean_minus_std_2").param == -2.0
    assert parse_aggregation("mean_plus_std_0.5").param == 0.5
    assert parse_aggregation("median").kind == "median"


# -- invalid names ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["trimmed_mean_50", "trimmed_mean_75", "trimmed_mean_-1", "trimmed_mean_", "quantile_2", "quantile_1.5",
     "quantile_-0.1", "quantile_", "foo", "", "Mean", "mean_plus_std_-1", "mean_std_1", "median_2",
     "trimmed_mean_x", "quantile_0.5.1", "mean; drop"],
)
def test_invalid_names_raise_value_error_naming_the_value(name):
    with pytest.raises(ValueError) as info:
        parse_aggregation(name)
    assert repr(name) in str(info.value)
    with pytest.raises(ValueError) as info:
        aggregate(np.ones((4, 3)), name, sample_axis=0)
    assert repr(name) in str(info.value)
