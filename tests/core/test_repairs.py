"""Missing-bar and split policies: what each repairs, what it leaves, and what it reports."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from forecast_core.data import blocking_failures, quality_checks
from forecast_core.repairs import (
    OHLC,
    SPLIT_RATIOS,
    PricePolicy,
    RepairReport,
    find_splits,
    repair_prices,
)
from forecast_core.synthetic import make_prices

ADJUST = PricePolicy(splits="adjust")
VALUES = [*OHLC, "volume", "amount"]


def _stock(n: int = 300, seed: int = 5) -> pd.DataFrame:
    """Synthetic bars with stock-like volume (log-normal, +-30% a day) instead of a 1:100 uniform draw."""
    frame = make_prices(n, seed=seed)
    frame["volume"] = np.round(1e6 * np.exp(np.random.default_rng(seed + 100).normal(0, 0.3, n)))
    frame["amount"] = frame["volume"] * frame[OHLC].mean(axis=1)
    return frame


def _unadjust(adjusted: pd.DataFrame, row: int, ratio: Fraction) -> pd.DataFrame:
    """The raw feed of an ``ratio`` split at ``row``: earlier prices ``ratio`` times higher, fewer shares."""
    raw = adjusted.copy()
    raw.loc[: row - 1, OHLC] = raw.loc[: row - 1, OHLC] * ratio.numerator / ratio.denominator
    raw.loc[: row - 1, "volume"] = raw.loc[: row - 1, "volume"] * ratio.denominator / ratio.numerator
    return raw  # amount (traded value) is the same in both


def _split_check(frame: pd.DataFrame):
    return {c.name: c for c in quality_checks(frame, "SPL")}["no_suspected_splits"]


# -- splits ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio, label", [(Fraction(2), "2:1"), (Fraction(1, 10), "1:10"), (Fraction(3, 2), "3:2")])
def test_unadjusted_split_is_back_adjusted_to_the_adjusted_series(ratio, label):
    truth = _stock()
    raw = _unadjust(truth, 150, ratio)
    assert not _split_check(raw).passed  # before: a warning
    out, report = repair_prices(raw, ADJUST)
    np.testing.assert_allclose(out[VALUES].to_numpy(), truth[VALUES].to_numpy(), rtol=1e-9, atol=0)
    pd.testing.assert_series_equal(out["timestamp"], truth["timestamp"])
    [event] = report.splits
    assert (event.date, event.ratio, event.label, event.adjusted) == (truth.loc[150, "timestamp"], ratio, label, True)
    assert report.adjustments == [event] and event.volume_change == pytest.approx(float(ratio), rel=0.5)
    meta = report.metadata()
    assert meta["split_adjustments"] == 1 and meta["repaired_bars"] == 0
    assert f"| {truth.loc[150, 'timestamp'].date()} | {label} |" in meta["split_table"]
    assert _split_check(out).passed  # after: nothing left to flag
    assert not blocking_failures(quality_checks(out, "SPL"))


def test_power_of_two_splits_are_exact_and_others_one_rounding():
    truth = _stock()
    out, _ = repair_prices(_unadjust(truth, 150, Fraction(2)), ADJUST)
    np.testing.assert_array_equal(out[VALUES].to_numpy(), truth[VALUES].to_numpy())
    out, _ = repair_prices(_unadjust(truth, 150, Fraction(1, 10)), ADJUST)
    np.testing.assert_allclose(out[VALUES].to_numpy(), truth[VALUES].to_numpy(), rtol=4 * np.finfo(float).eps)


def test_two_splits_multiply_for_the_bars_before_both():
    truth = _stock()
    raw = _unadjust(_unadjust(truth, 200, Fraction(3, 2)), 100, Fraction(2))
    out, report = repair_prices(raw, ADJUST)
    assert [e.label for e in report.adjustments] == ["2:1", "3:2"]
    np.testing.assert_allclose(out[VALUES].to_numpy(), truth[VALUES].to_numpy(), rtol=1e-12, atol=0)


def test_split_warn_lists_but_changes_nothing_and_flags_a_three_for_two_split():
    raw = _unadjust(_stock(), 150, Fraction(3, 2))  # a 33% move: under the 45% move threshold
    out, report = repair_prices(raw, PricePolicy())
    pd.testing.assert_frame_equal(out, raw)
    [event] = report.splits
    assert event.label == "3:2" and not event.adjusted and "warn" in event.note
    check = _split_check(raw)
    assert not check.passed and check.metadata["suspected_splits"] == 1
    assert str(raw.loc[150, "timestamp"].date()) in check.description


def test_jump_matching_no_ratio_stays_a_warning_and_is_not_adjusted():
    raw = _stock()
    raw.loc[150:, OHLC] /= 2.5  # between 2 and 3: no common split ratio
    out, report = repair_prices(raw, ADJUST)
    pd.testing.assert_frame_equal(out, raw)
    assert report.splits == () and report.metadata()["split_adjustments"] == 0
    check = _split_check(out)
    assert not check.passed and str(raw.loc[150, "timestamp"].date()) in check.description


def _crash(frame: pd.DataFrame, row: int, at_open: bool, volume_factor: float) -> pd.DataFrame:
    """The price level halves at ``row`` and stays there; heavy trading for a few days (META 2022: x4)."""
    out = frame.copy()
    out.loc[row:, OHLC] *= 0.5
    if not at_open:  # opens near the previous close, sells off during the day
        out.loc[row, "open"] = out.loc[row - 1, "close"] * 0.99
        out.loc[row, "high"] = out.loc[row, "open"] * 1.005
    out.loc[row:row + 9, "volume"] *= volume_factor
    out["amount"] = out["volume"] * out[OHLC].mean(axis=1)
    return out


@pytest.mark.parametrize("at_open", [False, True], ids=["intraday", "gap-down"])
def test_a_fifty_percent_crash_is_not_taken_for_a_two_for_one_split(at_open):
    crash = _crash(_stock(), 150, at_open, volume_factor=8.0)
    out, report = repair_prices(crash, ADJUST)
    pd.testing.assert_frame_equal(out, crash)
    assert report.adjustments == []
    if at_open:  # the gap alone matches 2:1 to the tolerance; the volume says otherwise, and the report shows it
        [event] = report.splits
        assert event.label == "2:1" and not event.adjusted and "crash?" in event.note
        assert event.volume_change == pytest.approx(8.0, rel=0.5)
    else:
        assert report.splits == ()  # the open did not gap: the move happened in trading
    assert not _split_check(out).passed  # still a warning either way


def test_without_volume_a_gap_to_an_exact_ratio_is_indistinguishable_from_a_split():
    """The documented limit of the rule: prices alone cannot tell, so such a bar is adjusted and listed."""
    crash = _crash(_stock(), 150, at_open=True, volume_factor=8.0).assign(volume=0.0, amount=0.0)
    _, report = repair_prices(crash, ADJUST)
    [event] = report.adjustments
    assert event.label == "2:1" and event.volume_change is None and "no volume" in event.note


def test_split_ratios_cover_the_common_splits_and_their_reverses():
    forward = {Fraction(2), Fraction(3), Fraction(3, 2), Fraction(4), Fraction(5), Fraction(8), Fraction(10),
               Fraction(20)}
    assert set(SPLIT_RATIOS) == forward | {1 / r for r in forward}


def test_find_splits_ignores_missing_values_and_ordinary_days():
    frame = _stock()
    assert find_splits(frame) == []
    frame.loc[[10, 11], "close"] = np.nan
    frame.loc[20, "open"] = np.nan
    assert find_splits(frame) == []


# -- missing bars ------------------------------------------------------------------------------------------
@pytest.fixture
def gappy():
    frame = make_prices(40, seed=2, calendar="D")
    frame.loc[10, "close"] = np.nan
    frame.loc[20, OHLC] = np.nan
    frame.loc[21, OHLC] = np.nan
    frame.loc[30, ["volume", "amount"]] = np.nan
    return frame


def test_reject_changes_nothing_and_the_check_names_count_and_first_date(gappy):
    out, report = repair_prices(gappy, PricePolicy())
    pd.testing.assert_frame_equal(out, gappy)
    assert report.changed == [] and report.metadata()["repaired_bars"] == 0
    [failed] = blocking_failures(quality_checks(out, "GAP"))
    assert failed.name == "no_missing_prices"
    assert failed.description.count("GAP") == 1
    assert "3 bars with missing (NaN or infinite) OHLC, first on 2020-01-11" in failed.description
    assert "1 bars with missing (NaN or infinite) volume/amount, first on 2020-01-31" in failed.description
    assert "ffill" in failed.description and failed.metadata["missing_bars"] == 3


def test_ffill_carries_the_last_close_with_volume_zero(gappy):
    out, report = repair_prices(gappy, PricePolicy(missing="ffill"))
    assert len(out) == 40 and not blocking_failures(quality_checks(out, "GAP"))
    for row, source in ((10, 9), (20, 19), (21, 19)):
        assert (out.loc[row, OHLC] == gappy.loc[source, "close"]).all()
        assert out.loc[row, "volume"] == 0 and out.loc[row, "amount"] == 0
    assert out.loc[30, "volume"] == 0 and out.loc[30, "amount"] == 0
    untouched = [i for i in range(40) if i not in (10, 20, 21, 30)]
    pd.testing.assert_frame_equal(out.loc[untouched], gappy.loc[untouched])
    ts = gappy["timestamp"]
    assert report.filled == (ts[10], ts[20], ts[21]) and report.volume_zeroed == (ts[30],) and report.dropped == ()
    assert report.changed == [ts[10], ts[20], ts[21], ts[30]]
    assert report.metadata()["repaired_first_dates"] == ", ".join(str(t.date()) for t in ts[[10, 20, 21, 30]])


def test_ffill_drops_leading_bars_it_has_no_close_for(gappy):
    gappy.loc[0, "close"] = np.nan
    out, report = repair_prices(gappy, PricePolicy(missing="ffill"))
    assert len(out) == 39 and out["timestamp"].iloc[0] == gappy["timestamp"].iloc[1]
    assert report.dropped == (gappy["timestamp"].iloc[0],) and len(report.changed) == 5


def test_drop_removes_bars_and_zeroes_missing_volume(gappy):
    gappy.loc[30, "amount"] = 123.0  # volume missing, amount given: kept
    gappy.loc[31, "amount"] = np.nan  # amount missing only: derived from volume
    out, report = repair_prices(gappy, PricePolicy(missing="drop"))
    assert len(out) == 37 and not blocking_failures(quality_checks(out, "GAP"))
    kept = gappy.drop(index=[10, 20, 21]).reset_index(drop=True)
    np.testing.assert_array_equal(out["timestamp"], kept["timestamp"])
    row30, row31 = (out.index[out["timestamp"] == gappy.loc[i, "timestamp"]][0] for i in (30, 31))
    assert out.loc[row30, "volume"] == 0 and out.loc[row30, "amount"] == 123.0
    assert out.loc[row31, "amount"] == pytest.approx(gappy.loc[31, "volume"] * gappy.loc[31, OHLC].mean())
    ts = gappy["timestamp"]
    assert report.dropped == (ts[10], ts[20], ts[21]) and report.volume_zeroed == (ts[30], ts[31])


def test_metadata_lists_the_first_ten_dates_and_counts_the_rest():
    report = RepairReport(filled=tuple(pd.date_range("2021-01-01", periods=16)))
    meta = report.metadata()
    assert meta["repaired_bars"] == 16 and meta["filled_bars"] == 16
    assert meta["repaired_first_dates"].startswith("2021-01-01, 2021-01-02")
    assert meta["repaired_first_dates"].endswith("2021-01-10 (+6 more)")


def test_missing_bars_are_repaired_before_splits_are_looked_for():
    truth = _stock(seed=7)
    raw = _unadjust(truth, 150, Fraction(2))
    raw.loc[160, OHLC] = np.nan
    out, report = repair_prices(raw, PricePolicy(missing="ffill", splits="adjust"))
    assert [e.label for e in report.adjustments] == ["2:1"] and len(report.filled) == 1
    np.testing.assert_array_equal(out.loc[:149, OHLC].to_numpy(), truth.loc[:149, OHLC].to_numpy())


# -- policy ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, allowed", [("missing", "fill", "reject, drop, ffill"),
                                                   ("splits", "yes", "warn, adjust"),
                                                   ("price_field", "adjusted", "close, adj_close")])
def test_policy_errors_name_the_field_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as info:
        PricePolicy(**{field: value})
    message = str(info.value)
    assert repr(field) in message and repr(value) in message and allowed in message


def test_policy_from_env(monkeypatch):
    for name in ("HPO_MISSING_POLICY", "HPO_SPLITS", "HPO_PRICE_FIELD"):
        monkeypatch.delenv(name, raising=False)
    assert PricePolicy.from_env() == PricePolicy("reject", "warn", "close")
    monkeypatch.setenv("HPO_MISSING_POLICY", "ffill")
    monkeypatch.setenv("HPO_SPLITS", "adjust")
    monkeypatch.setenv("HPO_PRICE_FIELD", "adj_close")
    assert PricePolicy.from_env() == PricePolicy("ffill", "adjust", "adj_close")
