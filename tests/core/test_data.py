"""Price frames: layouts normalize_prices accepts, clear errors, quality checks, symbols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecast_core.data import (
    FRAME_COLUMNS,
    InvalidSymbolError,
    PriceDataError,
    blocking_failures,
    data_version,
    normalize_prices,
    quality_checks,
    validate_prices,
    validate_symbol,
)
from forecast_core.sources import CsvDirectorySource, read_csv
from forecast_core.synthetic import make_prices

OHLCV = ["open", "high", "low", "close", "volume"]


@pytest.fixture
def clean():
    return make_prices(60, seed=11)


def _assert_same_bars(out: pd.DataFrame, clean: pd.DataFrame, amount: bool = True) -> None:
    assert list(out.columns) == list(FRAME_COLUMNS)
    assert out["timestamp"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(out["timestamp"].to_numpy(), clean["timestamp"].to_numpy())
    np.testing.assert_allclose(out[OHLCV].to_numpy(), clean[OHLCV].to_numpy(), rtol=1e-13)
    if amount:
        np.testing.assert_allclose(out["amount"].to_numpy(), clean["amount"].to_numpy(), rtol=1e-13)
    assert out.index.tolist() == list(range(len(clean)))


# -- layouts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ts_name", ["timestamp", "date", "Date", "Datetime"])
def test_timestamp_column_names(clean, ts_name):
    raw = clean.rename(columns={"timestamp": ts_name})
    raw[ts_name] = raw[ts_name].dt.strftime("%Y-%m-%d")  # as read from a CSV
    _assert_same_bars(normalize_prices(raw, "t.csv"), clean)


@pytest.mark.parametrize("index_name", [None, "Date", "timestamp"])
def test_datetime_index(clean, index_name):
    raw = clean.set_index("timestamp")
    raw.index.name = index_name
    _assert_same_bars(normalize_prices(raw, "t"), clean)


def test_upper_case_columns_without_amount_derive_amount(clean):
    raw = clean.drop(columns=["amount"]).rename(columns=str.upper)
    out = normalize_prices(raw, "t")
    _assert_same_bars(out, clean, amount=False)
    expected = clean["volume"] * (clean["open"] + clean["high"] + clean["low"] + clean["close"]) / 4
    np.testing.assert_allclose(out["amount"].to_numpy(), expected.to_numpy(), rtol=1e-13)


def test_explicit_amount_is_kept(clean):
    raw = clean.assign(amount=np.arange(len(clean), dtype=float) + 0.5)
    np.testing.assert_array_equal(normalize_prices(raw, "t")["amount"].to_numpy(), raw["amount"].to_numpy())


def test_missing_volume_defaults_to_zero(clean):
    out = normalize_prices(clean.drop(columns=["volume", "amount"]), "t")
    assert (out["volume"] == 0).all() and (out["amount"] == 0).all()


def test_adj_close_and_extra_index_columns_are_ignored(clean, tmp_path):
    raw = clean.rename(columns=str.capitalize).rename(columns={"Timestamp": "Date"})
    raw["Adj Close"] = raw["Close"] * 0.5  # must not be taken for the close
    raw.to_csv(tmp_path / "x.csv", index=True)  # adds an "Unnamed: 0" column
    table = read_csv(tmp_path / "x.csv")
    assert "Unnamed: 0" in table.columns
    _assert_same_bars(normalize_prices(table, "x.csv"), clean)


def _with_adj_close(clean: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """A CSV-like table whose Adj Close folds in two dividends (factor 0.96, then 0.98, then 1)."""
    factor = np.where(clean.index < 20, 0.96, np.where(clean.index < 40, 0.98, 1.0))
    raw = clean.rename(columns=str.capitalize).rename(columns={"Timestamp": "Date"})
    raw["Adj Close"] = raw["Close"] * factor
    return raw, factor


def test_adj_close_is_scored_with_ohlc_scaled_alike_and_traded_value_kept(clean):
    raw, factor = _with_adj_close(clean)
    out = normalize_prices(raw, "x.csv", price_field="adj_close")
    np.testing.assert_array_equal(out["close"].to_numpy(), raw["Adj Close"].to_numpy())
    for col in ("open", "high", "low"):
        np.testing.assert_allclose(out[col].to_numpy(), clean[col].to_numpy() * factor, rtol=1e-15)
    np.testing.assert_allclose(out["volume"].to_numpy(), clean["volume"].to_numpy() / factor, rtol=1e-15)
    np.testing.assert_array_equal(out["amount"].to_numpy(), clean["amount"].to_numpy())
    assert not blocking_failures(quality_checks(out, "QQQ"))
    _assert_same_bars(normalize_prices(raw, "x.csv"), clean)  # the default still ignores it


def test_adj_close_without_the_column_is_a_clear_error(clean):
    with pytest.raises(PriceDataError) as info:
        normalize_prices(clean, "prices/ABC.csv", price_field="adj_close")
    message = str(info.value)
    assert "prices/ABC.csv" in message and "adj_close" in message and "'close'" in message
    assert "price_field close" in message


def test_unknown_price_field(clean):
    with pytest.raises(ValueError, match="'price_field'.*close, adj_close"):
        normalize_prices(clean, "x.csv", price_field="vwap")


def test_yfinance_multiindex_columns(clean):
    raw = clean.drop(columns=["amount"]).set_index("timestamp").rename(columns=str.capitalize)
    raw.index.name = "Date"
    raw = raw[["Close", "High", "Low", "Open", "Volume"]]  # yfinance's column order
    raw.columns = pd.MultiIndex.from_product([raw.columns, ["NVDA"]], names=["Price", "Ticker"])
    _assert_same_bars(normalize_prices(raw, "yfinance:NVDA"), clean, amount=False)


def test_tz_aware_timestamps_become_naive_utc(clean):
    raw = clean.copy()
    raw["timestamp"] = raw["timestamp"].dt.tz_localize("America/New_York")
    out = normalize_prices(raw, "t")
    assert out["timestamp"].dt.tz is None
    # midnight New York is 05:00 UTC in winter and 04:00 UTC in summer (DST from 2020-03-08)
    offsets = np.where(clean["timestamp"] < pd.Timestamp("2020-03-08"), 5, 4)
    np.testing.assert_array_equal(out["timestamp"].to_numpy(),
                                  (clean["timestamp"] + pd.to_timedelta(offsets, unit="h")).to_numpy())


# -- structural errors ---------------------------------------------------------------------------------------
def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "EMPTY.csv"
    path.write_text("")
    with pytest.raises(PriceDataError, match="empty") as info:
        read_csv(path)
    assert str(path) in str(info.value)
    with pytest.raises(PriceDataError) as info:
        CsvDirectorySource(tmp_path).load("EMPTY")
    assert str(path) in str(info.value)


def test_header_only_file_is_a_clear_error(tmp_path):
    path = tmp_path / "HDR.csv"
    path.write_text("date,open,high,low,close,volume\n")
    with pytest.raises(PriceDataError, match="no rows") as info:
        CsvDirectorySource(tmp_path).load("HDR")
    assert str(path) in str(info.value)


def test_missing_close_column(clean):
    with pytest.raises(PriceDataError) as info:
        normalize_prices(clean.drop(columns=["close"]), "prices/ABC.csv")
    message = str(info.value)
    assert "prices/ABC.csv" in message and "'close'" in message


def test_missing_timestamp_column(clean):
    with pytest.raises(PriceDataError) as info:
        normalize_prices(clean.rename(columns={"timestamp": "when"}).reset_index(drop=True), "ABC.csv")
    assert "ABC.csv" in str(info.value) and "timestamp" in str(info.value)


def test_non_numeric_prices(clean):
    raw = clean.astype({"high": object})
    raw.loc[7, "high"] = "n/a-ish"
    with pytest.raises(PriceDataError) as info:
        normalize_prices(raw, "ABC.csv")
    message = str(info.value)
    assert "ABC.csv" in message and "'high'" in message and "n/a-ish" in message and "row 7" in message


def test_dates_that_are_not_dates(clean):
    raw = clean.astype({"timestamp": object})
    raw.loc[3, "timestamp"] = "yesterday-ish"
    with pytest.raises(PriceDataError) as info:
        normalize_prices(raw, "ABC.csv")
    assert "ABC.csv" in str(info.value) and "timestamp" in str(info.value)


def test_missing_date_is_an_error_not_a_silent_nat(clean):
    raw = clean.astype({"timestamp": object})
    raw["timestamp"] = raw["timestamp"].astype(str)
    raw.loc[3, "timestamp"] = None
    with pytest.raises(PriceDataError) as info:
        normalize_prices(raw, "ABC.csv")
    assert "ABC.csv" in str(info.value) and "timestamp" in str(info.value)


def test_empty_frame():
    with pytest.raises(PriceDataError, match="ABC"):
        normalize_prices(pd.DataFrame(), "ABC")


# -- quality checks --------------------------------------------------------------------------------------------
def _failing(frame):
    return {c.name for c in blocking_failures(quality_checks(frame, "QQQ"))}


def _raises(frame):
    with pytest.raises(PriceDataError) as info:
        validate_prices(frame, "QQQ")
    assert "QQQ" in str(info.value)
    return str(info.value)


def test_clean_frame_passes_everything(clean):
    checks = quality_checks(clean, "QQQ")
    assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
    assert validate_prices(clean, "QQQ") is clean


def test_duplicate_timestamps(clean):
    frame = pd.concat([clean.iloc[:20], clean.iloc[19:]], ignore_index=True)
    assert _failing(frame) == {"sorted_unique_timestamps"}
    assert "1 duplicate" in _raises(frame)


def test_unsorted_timestamps(clean):
    frame = clean.copy()
    frame.loc[[10, 11], "timestamp"] = frame.loc[[11, 10], "timestamp"].to_numpy()
    assert _failing(frame) == {"sorted_unique_timestamps"}
    assert "1 out-of-order" in _raises(frame)


def test_nan_close(clean):
    frame = clean.copy()
    frame.loc[12, "close"] = np.nan
    assert _failing(frame) == {"no_missing_prices"}
    assert "1 missing close" in _raises(frame)


def test_infinite_close_is_blocked(clean):
    frame = clean.copy()
    frame.loc[12, "close"] = np.inf
    assert "no_missing_prices" in _failing(frame)
    _raises(frame)


def test_negative_price(clean):
    frame = clean.copy()
    frame.loc[5, "low"] = -1.0
    assert _failing(frame) == {"positive_prices"}
    assert "1 non-positive" in _raises(frame)
    frame = clean.copy()
    frame.loc[5, ["open", "high", "low", "close"]] = -frame.loc[5, ["open", "high", "low", "close"]].abs()
    assert "positive_prices" in _failing(frame)


def test_negative_volume(clean):
    frame = clean.copy()
    frame.loc[5, "volume"] = -3.0
    assert _failing(frame) == {"positive_prices"}
    assert "1 negative volume" in _raises(frame)


def test_high_below_close(clean):
    frame = clean.copy()
    frame.loc[9, "high"] = frame.loc[9, "close"] * 0.99
    frame.loc[9, "open"] = frame.loc[9, "low"] = frame.loc[9, "close"] * 0.98
    assert _failing(frame) == {"high_low_consistent"}
    assert "1 bars where high" in _raises(frame)


def test_a_short_history_is_not_bad_data(clean):
    """Length is the layout's business (plan_layout), never a data-quality failure."""
    assert _failing(clean.iloc[:3]) == set()


def test_every_problem_is_listed(clean):
    frame = pd.concat([clean.iloc[:20], clean.iloc[19:]], ignore_index=True)
    frame.loc[30, "close"] = np.nan
    message = _raises(frame)
    assert "duplicate" in message and "missing close" in message
    assert message.count("QQQ") == 1 and message.startswith("QQQ: ")


def _warnings_only(frame):
    checks = quality_checks(frame, "QQQ")
    assert not blocking_failures(checks)
    validate_prices(frame, "QQQ")  # does not raise
    return {c.name: c for c in checks if not c.passed}


def test_ten_day_gap_is_a_warning(clean):
    frame = clean.copy()
    frame.loc[30:, "timestamp"] = frame.loc[30:, "timestamp"] + pd.Timedelta(days=10)
    failed = _warnings_only(frame)
    assert set(failed) == {"no_large_gaps"}
    assert failed["no_large_gaps"].blocking is False and failed["no_large_gaps"].metadata["gaps"] == 1
    assert "QQQ" in failed["no_large_gaps"].description


def test_unadjusted_three_for_one_split_is_a_warning(clean):
    frame = clean.copy()
    cols = ["open", "high", "low", "close"]
    frame.loc[40:, cols] = frame.loc[40:, cols] / 3.0
    failed = _warnings_only(frame)
    assert set(failed) == {"no_suspected_splits"}
    check = failed["no_suspected_splits"]
    assert check.blocking is False and check.metadata["suspected_splits"] == 1
    assert str(clean.loc[40, "timestamp"].date()) in check.description


# -- symbols ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../etc", "A;DROP TABLE x", "a/b", "", "..", "A" * 40, ".hidden", "A B",
                                 "a\\b", "-X", "A\x00", None, 123])
def test_unsafe_or_invalid_symbols_are_rejected(bad):
    with pytest.raises(InvalidSymbolError) as info:
        validate_symbol(bad)
    assert repr(bad) in str(info.value)
    assert issubclass(InvalidSymbolError, ValueError)


@pytest.mark.parametrize("good,canonical", [("nvda", "NVDA"), ("BRK.B", "BRK.B"), ("BTC-USD", "BTC-USD"),
                                            ("eurusd=x", "EURUSD=X"), (" aapl ", "AAPL"), ("A" * 32, "A" * 32)])
def test_valid_symbols(good, canonical):
    assert validate_symbol(good) == canonical


# -- data version ---------------------------------------------------------------------------------------------
def test_data_version_changes_with_any_bar(clean):
    base = data_version(clean)
    assert data_version(clean.copy()) == base
    assert len(base) == 16
    changed = clean.copy()
    changed.loc[17, "close"] = np.nextafter(changed.loc[17, "close"], np.inf)
    assert data_version(changed) != base
    vol = clean.copy()
    vol.loc[0, "volume"] += 1
    assert data_version(vol) != base
    moved = clean.copy()
    moved.loc[59, "timestamp"] += pd.Timedelta(seconds=1)
    assert data_version(moved) != base
    extra = clean.iloc[[-1]].assign(timestamp=clean["timestamp"].iloc[-1] + pd.offsets.BDay(1))
    appended = pd.concat([clean, extra], ignore_index=True)
    assert data_version(appended) != base
    assert data_version(appended.iloc[:60]) == base
