"""Backtest windows (brief §2): layout of origins and splits, min_bars, seeds, calendar, no leakage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from forecast_core.backtest import Trial, draw, score_trials
from forecast_core.forecasters import BASELINES, PRICE_COLUMNS, ContextBatch, Persistence
from forecast_core.windows import TEST, VALIDATION, WindowSpec, build_windows, future_calendar, window_seed
from tests.conftest import TINY_BACKTEST
from tests.leakage import assert_no_leakage, garbage_after
from tests.synthetic import make_prices

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


@pytest.mark.parametrize("field", ["horizon", "n_val", "n_test", "context", "stride"])
def test_spec_rejects_non_positive_fields(field):
    with pytest.raises(ValueError, match=field):
        WindowSpec(**{field: 0})


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
