"""Backtest windows: layout of origins and splits, min_bars, seeds, calendar, no leakage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from forecast_core.backtest import Trial, draw, score_trials
from forecast_core.forecasters import BASELINES, PRICE_COLUMNS, ContextBatch, Persistence
from forecast_core.synthetic import make_prices
from forecast_core.windows import (
    TEST,
    VALIDATION,
    WindowSpec,
    build_windows,
    future_calendar,
    plan_layout,
    window_seed,
)
from tests.support import TINY_BACKTEST
from tests.support import assert_no_leakage, garbage_after

SPEC = WindowSpec(**TINY_BACKTEST)  # horizon 16, n_val 3, n_test 2, context 64


# -- layout -------------------------------------------------------------------------------------------------
def test_origins_and_splits_layout_from_the_end():
    frame = make_prices(400, seed=1)
    w = build_windows(frame, SPEC, "AAA")
    # stride defaults to the horizon: last target ends at the last bar, origins step back by 16
    np.testing.assert_array_equal(w.origins, [320, 336, 352, 368, 384])
    assert w.splits.tolist() == [VALIDATION] * 3 + [TEST] * 2
    assert SPEC.step == 16 and SPEC.as_dict()["stride"] == 16
    assert len(w) == 5 and len(w.split(TEST)) == 2 and len(w.split(VALIDATION)) == 3
    np.testing.assert_array_equal(w.split(TEST).origins, [368, 384])
    closes = frame["close"].to_numpy()
    values = frame.loc[:, list(PRICE_COLUMNS)].to_numpy()
    stamps = frame["timestamp"].to_numpy()
    for i, o in enumerate(w.origins):
        np.testing.assert_array_equal(w.targets[i], closes[o : o + 16])
        np.testing.assert_array_equal(w.target_timestamps[i], stamps[o : o + 16])
        np.testing.assert_array_equal(w.batch.values[i], values[o - 64 : o])  # context ends right before origin
        np.testing.assert_array_equal(w.batch.timestamps[i], stamps[o - 64 : o])
        assert w.origin_timestamps[i] == stamps[o]
    assert w.origins[-1] + SPEC.horizon == len(frame)
    # targets do not overlap and tile the last (n_val + n_test) * horizon bars
    covered = np.concatenate([np.arange(o, o + 16) for o in w.origins])
    assert len(np.unique(covered)) == len(covered) == 80
    np.testing.assert_array_equal(covered, np.arange(320, 400))
    # every validation window is before every test window
    assert w.split(VALIDATION).origins.max() < w.split(TEST).origins.min()


def test_explicit_stride_overlaps_targets():
    spec = WindowSpec(horizon=16, n_val=3, n_test=2, stride=4, context=32)
    w = build_windows(make_prices(200), spec, "AAA")
    np.testing.assert_array_equal(w.origins, [184 - 4 * k for k in range(5)][::-1])
    assert spec.min_bars == 32 + 4 * 4 + 16
    assert spec.as_dict()["stride"] == 4


def test_min_bars_is_exactly_enough_and_error_names_symbol_and_bars():
    assert SPEC.min_bars == 64 + (3 + 2 - 1) * 16 + 16 == 144
    assert WindowSpec().min_bars == 512 + 15 * 64 + 64
    frame = make_prices(144)
    w = build_windows(frame, SPEC, "AAA")
    assert w.origins[0] - SPEC.context == 0  # the first context starts at the first bar
    with pytest.raises(ValueError) as info:
        build_windows(make_prices(143), SPEC, "SHORTY")
    message = str(info.value)
    assert "SHORTY" in message and "144" in message and "143" in message


@pytest.mark.parametrize("field", ["horizon", "n_test", "context", "stride"])
def test_spec_rejects_non_positive_fields(field):
    with pytest.raises(ValueError, match=field):
        WindowSpec(**{field: 0})


def test_spec_allows_no_validation_windows_only_for_comparisons():
    assert WindowSpec(n_val=0).min_bars == 512 + 7 * 64 + 64
    with pytest.raises(ValueError, match="n_val"):
        WindowSpec(n_val=-1)


# -- the layout a history allows --------------------------------------------------------------------------
REQUESTED = WindowSpec()  # horizon 64, 8 + 8 windows, context 512: needs 1536 bars


def _shape(layout):
    spec = layout.spec
    return None if spec is None else (spec.context, spec.n_val, spec.n_test, spec.step)


@pytest.mark.parametrize("bars, shape, tunable", [
    (1536, (512, 8, 8, 64), True),  # the requested layout, untouched
    (5000, (512, 8, 8, 64), True),
    (1300, (256, 8, 8, 64), True),  # 1. context shrinks in whole Toto patches
    (1100, (128, 8, 7, 64), True),  # 2. then windows: test first on ties, then the larger count
    (700, (128, 4, 4, 64), True),
    (300, (128, 4, 2, 21), True),  # 3. then windows overlap (stride < horizon)
    (272, (128, 4, 2, 16), True),  # the tuning floor exactly
    (271, (128, 0, 2, 16), False),  # too short to tune: defaults vs persistence on test windows
    (254, (128, 0, 2, 16), False),
    (196, (64, 0, 2, 16), False),
    (128, (64, 0, 1, 16), False),
    (127, None, False),  # not even one comparison window
])
def test_layout_rule_on_short_histories(bars, shape, tunable):
    layout = plan_layout(bars, REQUESTED)
    assert _shape(layout) == shape and layout.tunable is tunable
    if layout.spec is not None:
        assert layout.spec.min_bars <= bars  # it fits
        w = build_windows(make_prices(bars), layout.spec, "AAA")
        assert len(w) == layout.spec.n_val + layout.spec.n_test and w.origins[-1] + 64 == bars
    assert layout.needed_to_tune == 272
    if not tunable:
        assert layout.reason.startswith(f"insufficient history: {bars} bars, tuning needs 272")


def test_layout_is_the_richest_at_each_step():
    """One bar fewer than a layout needs moves to the next step; every intermediate bar count fits."""
    for bars in range(100, 1600, 7):
        layout = plan_layout(bars, REQUESTED)
        if layout.spec is None:
            continue
        assert layout.spec.min_bars <= bars
        if layout.spec.context < 512 and layout.spec.n_val == 8:  # context was shrunk as little as possible
            assert layout.spec.min_bars + 64 > bars


def test_layout_evidence_counts_overlap_and_states_the_reason():
    layout = plan_layout(300, REQUESTED)
    evidence = layout.evidence()
    assert evidence["n_val"] == 4 and evidence["effective_val_windows"] == pytest.approx((3 * 21 + 64) / 64, abs=1e-3)
    described = layout.as_dict()
    assert described["tunable"] and described["history_bars"] == 300 and described["stride"] == 21
    assert "stride 64->21 (windows overlap)" in described["layout_reason"]
    assert plan_layout(2000, REQUESTED).as_dict()["layout_reason"] == "requested layout"


def test_layout_serves_short_horizons_and_never_raises_floors_above_the_request():
    short_horizon = plan_layout(254, WindowSpec(horizon=16))  # hpo compare --forecast-horizon 16
    assert short_horizon.tunable and _shape(short_horizon) == (128, 4, 3, 16)
    tiny = WindowSpec(horizon=16, n_val=3, n_test=2, context=64)  # below every floor already
    assert plan_layout(144, tiny).spec == tiny
    assert plan_layout(100, tiny).reason.endswith("stride 16->5 (windows overlap)")
    fallback = plan_layout(80, tiny)
    assert not fallback.tunable and fallback.spec.context <= 64 and fallback.spec.n_val == 0


# -- seeds --------------------------------------------------------------------------------------------------
def test_seeds_shared_by_all_configs_of_a_window():
    frame = make_prices(300, seed=4)
    w = build_windows(frame, SPEC, "AAA")
    again = build_windows(frame, SPEC, "AAA")
    np.testing.assert_array_equal(w.batch.seeds, again.batch.seeds)
    # a shorter model window (e.g. Kronos max_context) keeps the window's seed
    np.testing.assert_array_equal(w.batch.last(16).seeds, w.batch.seeds)
    # a different context length builds the same dated windows with the same seeds
    np.testing.assert_array_equal(build_windows(frame, WindowSpec(16, 3, 2, None, 32), "AAA").batch.seeds,
                                  w.batch.seeds)
    # every trial scored from a draw carries the same seed per window
    trials = [Trial("persistence", {"a": i}, aggregate=agg) for i, agg in enumerate(["mean", "median", "quantile_0.1"])]
    rows = score_trials(w, draw(Persistence(), w, 1), trials)
    per_window = rows.groupby("origin_index")["seed"].nunique()
    assert (per_window == 1).all() and len(per_window) == len(w)
    np.testing.assert_array_equal(rows.groupby("origin_index")["seed"].first().to_numpy(), w.batch.seeds)
    assert len(set(w.batch.seeds.tolist())) == len(w)  # different windows, different seeds


def test_seeds_stable_when_new_bars_are_appended():
    frame = make_prices(400, seed=5)
    old = build_windows(frame.iloc[:368], SPEC, "AAA")
    new = build_windows(frame, SPEC, "AAA")  # 32 bars later: two windows move out of the test set
    common = np.intersect1d(old.origin_timestamps, new.origin_timestamps)
    assert len(common) == 3
    for ts in common:
        i = int(np.flatnonzero(old.origin_timestamps == ts)[0])
        j = int(np.flatnonzero(new.origin_timestamps == ts)[0])
        assert old.batch.seeds[i] == new.batch.seeds[j]
    # the seed is keyed by the date of the last context bar
    assert new.batch.seeds[-1] == window_seed("AAA", frame["timestamp"].to_numpy()[new.origins[-1] - 1])


def test_seeds_differ_across_symbols_and_base_seeds():
    frame = make_prices(300)
    a = build_windows(frame, SPEC, "AAA").batch.seeds
    b = build_windows(frame, SPEC, "BBB").batch.seeds
    c = build_windows(frame, SPEC, "AAA", base_seed=1).batch.seeds
    assert not set(a.tolist()) & set(b.tolist())
    assert not set(a.tolist()) & set(c.tolist())
    assert (a >= 0).all() and a.dtype == np.int64


def test_seed_and_context_do_not_depend_on_target_bars():
    frame = make_prices(300, seed=6)
    clean = build_windows(frame, SPEC, "AAA")
    for i, origin in enumerate(clean.origins):
        spoiled = build_windows(garbage_after(frame, int(origin)), SPEC, "AAA")
        assert spoiled.batch.seeds[i] == clean.batch.seeds[i]
        np.testing.assert_array_equal(spoiled.batch.values[i], clean.batch.values[i])
        np.testing.assert_array_equal(spoiled.batch.future_timestamps[i], clean.batch.future_timestamps[i])
        assert not np.array_equal(spoiled.targets[i], clean.targets[i])


# -- future calendar -------------------------------------------------------------------------------------------
def _days(*dates):
    return pd.to_datetime(list(dates)).to_numpy(dtype="datetime64[ns]")


def test_future_calendar_business_days_for_stocks():
    context = pd.bdate_range("2024-01-01", "2024-01-05").to_numpy(dtype="datetime64[ns]")  # Mon..Fri
    np.testing.assert_array_equal(future_calendar(context, 3), _days("2024-01-08", "2024-01-09", "2024-01-10"))
    # a holiday gap in the context does not matter; the time of day is kept
    context = (pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-05", "2024-01-08", "2024-01-09"])
               + pd.Timedelta(hours=16)).to_numpy(dtype="datetime64[ns]")
    expected = pd.to_datetime(["2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15"]) + pd.Timedelta(hours=16)
    np.testing.assert_array_equal(future_calendar(context, 4), expected.to_numpy(dtype="datetime64[ns]"))


def test_future_calendar_daily_steps_for_crypto():
    context = pd.date_range("2024-01-01", "2024-01-06", freq="D").to_numpy(dtype="datetime64[ns]")  # ends Sat
    np.testing.assert_array_equal(future_calendar(context, 3), _days("2024-01-07", "2024-01-08", "2024-01-09"))


@pytest.mark.parametrize("calendar", ["B", "D"])
def test_future_calendar_matches_real_target_dates_of_regular_series(calendar):
    w = build_windows(make_prices(250, calendar=calendar), SPEC, "AAA")
    np.testing.assert_array_equal(w.batch.future_timestamps, w.target_timestamps)
    weekdays = pd.DatetimeIndex(w.batch.future_timestamps.ravel()).day_of_week
    assert (weekdays < 5).all() if calendar == "B" else (weekdays >= 5).any()


# -- no leakage for every baseline -------------------------------------------------------------------------------
LEAK_SPEC = WindowSpec(horizon=16, n_val=3, n_test=2, context=64)


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("calendar", ["B", "D"])
def test_baselines_do_not_see_the_future(name, calendar):
    assert_no_leakage(BASELINES[name], make_prices(220, seed=7, calendar=calendar), LEAK_SPEC)


@dataclass(frozen=True)
class _BatchStatsForecaster:
    """Leaky on purpose: normalises with statistics of the whole batch (later windows see the future)."""

    name: str = "leaky"

    def sample_paths(self, batch: ContextBatch, num_samples: int = 1) -> np.ndarray:
        level = batch.column("close").max()
        return np.full((batch.num_windows, 1, batch.horizon), level)


def test_leakage_check_catches_a_leaky_forecaster():
    with pytest.raises(AssertionError, match="saw the future"):
        assert_no_leakage(_BatchStatsForecaster(), make_prices(220, seed=7), LEAK_SPEC)
