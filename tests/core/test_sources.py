"""Price sources: the embedded data set, a directory of CSV files, and yfinance (optional extra)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from forecast_core.data import FRAME_COLUMNS, PriceDataError, validate_prices
from forecast_core.repairs import PricePolicy
from forecast_core.sources import CsvDirectorySource, EmbeddedSource, YFinanceSource, _embedded_table, make_source
from forecast_core.synthetic import make_prices

EMBEDDED = ["AAPL", "AMZN", "GOOG", "META", "NFLX", "NVDA"]


# -- embedded ------------------------------------------------------------------------------------------------
def test_embedded_symbols():
    assert EmbeddedSource().symbols() == EMBEDDED


@pytest.mark.parametrize("symbol", EMBEDDED)
def test_embedded_loads_full_clean_history(symbol):
    frame = EmbeddedSource().load(symbol.lower())
    assert len(frame) == 2699
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2013-01-02")
    assert frame["timestamp"].iloc[-1] == pd.Timestamp("2023-09-21")
    assert validate_prices(frame, symbol) is frame
    # amount is derived from volume and OHLC (the file has none)
    expected = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    np.testing.assert_allclose(frame["amount"], expected, rtol=1e-12)


def test_embedded_close_is_the_close_column_not_adjusted():
    frame = EmbeddedSource().load("META")
    assert frame["close"].iloc[0] == 28.0
    assert frame["open"].iloc[0] == pytest.approx(27.440000534057617, rel=1e-15)


def test_embedded_fingerprint_per_symbol():
    source = EmbeddedSource()
    assert source.fingerprint("NVDA") == source.fingerprint("nvda")
    assert len({source.fingerprint(s) for s in EMBEDDED}) == len(EMBEDDED)


def test_embedded_unknown_symbol():
    with pytest.raises(PriceDataError, match="TSLA") as info:
        EmbeddedSource().load("TSLA")
    assert str(info.value).count("TSLA") == 1


def test_embedded_adj_close_is_the_adjusted_column():
    raw = _embedded_table()
    raw = raw[raw["symbol"] == "AAPL"].reset_index(drop=True)
    frame = EmbeddedSource(PricePolicy(price_field="adj_close")).load("AAPL")
    np.testing.assert_array_equal(frame["close"].to_numpy(), raw["adjusted"].to_numpy())
    factor = raw["adjusted"] / raw["close"]
    assert factor.min() < 0.9  # dividends folded in
    np.testing.assert_allclose(frame["open"], raw["open"] * factor, rtol=1e-15)
    np.testing.assert_allclose(frame["volume"], raw["volume"] / factor, rtol=1e-15)
    assert validate_prices(frame, "AAPL") is frame


# -- csv directory ---------------------------------------------------------------------------------------------
def test_csv_dir_lists_and_loads_both_layouts(csv_dir):
    source = CsvDirectorySource(csv_dir)
    assert source.symbols() == ["AAA", "BBB"]
    a = source.load("AAA")
    b = source.load("bbb")
    ref_a = make_prices(300, seed=1)
    ref_b = make_prices(300, seed=2, calendar="D", price=0.5)
    for got, ref in ((a, ref_a), (b, ref_b)):
        assert list(got.columns) == list(FRAME_COLUMNS)
        np.testing.assert_array_equal(got["timestamp"].to_numpy(), ref["timestamp"].to_numpy())
        np.testing.assert_allclose(got[list(FRAME_COLUMNS[1:])].to_numpy(), ref[list(FRAME_COLUMNS[1:])].to_numpy(),
                                   rtol=1e-12)
        assert validate_prices(got, "X") is got
    assert source.path("bbb").name == "bbb.csv"


def test_csv_dir_ignores_files_that_are_not_tickers(csv_dir):
    (csv_dir / "notes backup.csv").write_text("date,close\n2020-01-01,1\n")
    (csv_dir / "readme.txt").write_text("hello")
    assert CsvDirectorySource(csv_dir).symbols() == ["AAA", "BBB"]


def test_csv_dir_fingerprint_changes_on_append(csv_dir):
    source = CsvDirectorySource(csv_dir)
    before = source.fingerprint("AAA")
    assert source.fingerprint("AAA") == before
    other = source.fingerprint("BBB")
    with open(csv_dir / "AAA.csv", "a") as handle:
        handle.write("2021-03-01,1,2,0.5,1.5,100\n")
    assert source.fingerprint("AAA") != before
    assert source.fingerprint("BBB") == other
    assert len(source.load("AAA")) == 301


def test_csv_dir_with_symbol_column_keeps_only_that_symbol(tmp_path):
    a = make_prices(20, seed=1).assign(symbol="AAA")
    b = make_prices(20, seed=2).assign(symbol="zzz")
    pd.concat([a, b]).to_csv(tmp_path / "AAA.csv", index=False)
    frame = CsvDirectorySource(tmp_path).load("AAA")
    np.testing.assert_allclose(frame["close"].to_numpy(), a["close"].to_numpy(), rtol=1e-12)


def test_csv_dir_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(PriceDataError) as info:
        CsvDirectorySource(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(PriceDataError):
        make_source("csv_dir", str(missing))
    with pytest.raises(ValueError, match="csv_dir"):
        make_source("csv_dir", "")


def test_csv_dir_missing_symbol_and_unsafe_symbol(csv_dir):
    source = CsvDirectorySource(csv_dir)
    with pytest.raises(PriceDataError) as info:
        source.load("CCC")
    assert "CCC" in str(info.value) and str(csv_dir) in str(info.value)
    with pytest.raises(ValueError):
        source.load("../AAA")


def test_sources_apply_their_policy_in_load(csv_dir):
    frame = make_prices(300, seed=1)
    frame.loc[[10, 11], "close"] = np.nan
    frame.to_csv(csv_dir / "AAA.csv", index=False)
    with pytest.raises(PriceDataError, match="AAA: 2 bars with missing"):
        validate_prices(CsvDirectorySource(csv_dir).load("AAA"), "AAA")
    for policy, bars in ((PricePolicy(missing="ffill"), 300), (PricePolicy(missing="drop"), 298)):
        source = make_source("csv_dir", str(csv_dir), policy=policy)
        assert source.policy == policy
        loaded, report = source.load_report("aaa")
        assert len(loaded) == bars and len(report.changed) == 2
        pd.testing.assert_frame_equal(source.load("AAA"), loaded)
        assert validate_prices(loaded, "AAA") is loaded


def test_csv_dir_adj_close(csv_dir):
    frame = CsvDirectorySource(csv_dir, PricePolicy(price_field="adj_close")).load("BBB")  # Adj Close == Close
    np.testing.assert_allclose(frame["close"], make_prices(300, seed=2, calendar="D", price=0.5)["close"], rtol=1e-12)
    with pytest.raises(PriceDataError, match="adj_close"):
        CsvDirectorySource(csv_dir, PricePolicy(price_field="adj_close")).load("AAA")


def test_make_source_kinds(csv_dir):
    assert isinstance(make_source("embedded"), EmbeddedSource)
    assert isinstance(make_source("csv_dir", str(csv_dir)), CsvDirectorySource)
    assert make_source("yfinance", yfinance_symbols=["nvda", "NVDA", "amd"]).symbols() == ["AMD", "NVDA"]
    with pytest.raises(ValueError, match="ftp"):
        make_source("ftp")


# -- yfinance ----------------------------------------------------------------------------------------------------
def test_yfinance_without_the_extra_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yfinance", None)  # makes `import yfinance` raise ImportError
    source = YFinanceSource(["nvda"])
    with pytest.raises(PriceDataError) as info:
        source.load("NVDA")
    message = str(info.value)
    assert "[yfinance]" in message and "pip install" in message


def test_yfinance_rejects_unsafe_symbols():
    with pytest.raises(ValueError):
        YFinanceSource(["../etc"])


def test_yfinance_download_failure_is_a_price_data_error(monkeypatch):
    class _Broken:
        @staticmethod
        def download(*args, **kwargs):
            raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "yfinance", _Broken)
    with pytest.raises(PriceDataError, match="NVDA.*offline"):
        YFinanceSource(["NVDA"]).load("NVDA")


def test_yfinance_multiindex_download_is_normalised(monkeypatch):
    ref = make_prices(30, seed=3)

    class _Fake:
        @staticmethod
        def download(symbol, **kwargs):
            raw = ref.drop(columns=["amount"]).set_index("timestamp").rename(columns=str.capitalize)
            raw.index.name = "Date"
            raw.columns = pd.MultiIndex.from_product([raw.columns, [symbol]], names=["Price", "Ticker"])
            return raw

    monkeypatch.setitem(sys.modules, "yfinance", _Fake)
    frame = YFinanceSource(["NVDA"]).load("NVDA")
    np.testing.assert_allclose(frame["close"].to_numpy(), ref["close"].to_numpy())
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), ref["timestamp"].to_numpy())


def test_yfinance_adj_close_downloads_raw_bars_and_adjusts_them_here(monkeypatch):
    ref = make_prices(30, seed=3)
    calls = []

    class _Fake:
        @staticmethod
        def download(symbol, **kwargs):
            calls.append(kwargs["auto_adjust"])
            raw = ref.drop(columns=["amount"]).set_index("timestamp").rename(columns=str.capitalize)
            if not kwargs["auto_adjust"]:
                raw["Adj Close"] = raw["Close"] * 0.5
            return raw

    monkeypatch.setitem(sys.modules, "yfinance", _Fake)
    frame = YFinanceSource(["NVDA"], policy=PricePolicy(price_field="adj_close")).load("NVDA")
    np.testing.assert_array_equal(frame["close"].to_numpy(), ref["close"].to_numpy() * 0.5)
    YFinanceSource(["NVDA"]).load("NVDA")
    assert calls == [False, True]
