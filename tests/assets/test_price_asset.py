"""price_history through Dagster: checks are reported, bad data fails the partition and stores nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from forecast_core.data import validate_prices
from forecast_core.repairs import OHLC, PricePolicy
from forecast_core.store import Storage
from forecast_core.synthetic import make_prices
from resources import PriceSourceResource
from tests.support import make_resources, materialize_prices, step_failure_message


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_clean_csv_is_stored_with_passing_checks(tmp_path, csv_dir):
    instance = DagsterInstance.ephemeral()
    result = materialize_prices(instance, "AAA", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    checks = _checks(result)
    assert {n for n, c in checks.items() if c.passed} >= {
        "sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent"}
    stored = Storage(tmp_path / "st").read_prices("AAA")
    assert len(stored) == 300 and stored["timestamp"].is_monotonic_increasing


def _spoil(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    frame = frame.copy()
    if how == "duplicate":
        frame.loc[5, "timestamp"] = frame.loc[4, "timestamp"]
    elif how == "unsorted":
        frame.loc[[5, 6]] = frame.loc[[6, 5]].to_numpy()
    elif how == "nan":
        frame.loc[10, "close"] = float("nan")
    elif how == "negative":
        frame.loc[10, ["open", "high", "low", "close"]] = -1.0
    return frame


@pytest.mark.parametrize("how, check", [
    ("duplicate", "sorted_unique_timestamps"), ("unsorted", "sorted_unique_timestamps"),
    ("nan", "no_missing_prices"), ("negative", "positive_prices"),
])
def test_bad_values_fail_the_check_and_keep_the_old_copy(tmp_path, csv_dir, how, check):
    instance = DagsterInstance.ephemeral()
    resources = make_resources(tmp_path / "st", csv_dir)
    assert materialize_prices(instance, "AAA", resources).success
    before = (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes()

    _spoil(make_prices(300, seed=1), how).to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(instance, "AAA", resources)
    assert not result.success
    assert "AAA" in step_failure_message(result)
    failed = _checks(result)[check]
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    assert (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes() == before


@pytest.mark.parametrize("content, phrase", [
    ("", "empty"),
    ("date,open,high,low\n2020-01-01,1,2,0.5\n", "missing required column 'close'"),
    ("date,open,high,low,close\n2020-01-01,1,2,0.5,abc\n", "non-numeric"),
])
def test_unreadable_files_fail_before_any_check(tmp_path, csv_dir, content, phrase):
    (csv_dir / "BAD.csv").write_text(content)
    result = materialize_prices(DagsterInstance.ephemeral(), "BAD", make_resources(tmp_path / "st", csv_dir))
    assert not result.success
    message = step_failure_message(result)
    assert phrase in message and "BAD.csv" in message
    assert not (tmp_path / "st" / "prices").exists()


def test_short_history_is_stored_with_a_layout_warning(tmp_path, csv_dir):
    """50 bars (TINY_BACKTEST needs 144): stored, and the warning says what the history allows."""
    make_prices(50, seed=1).to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir))
    assert result.success and len(Storage(tmp_path / "st").read_prices("AAA")) == 50
    check = _checks(result)["enough_bars_to_tune"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.description.startswith("50 bars: insufficient history: 50 bars, tuning needs ")
    meta = result.asset_materializations_for_node("price_history")[0].metadata
    assert not meta["tunable"].value and "insufficient history" in meta["layout_reason"].value


def test_a_sweep_without_stored_prices_names_the_asset_to_run(tmp_path, csv_dir):
    """The core says what is missing and its fix; the asset adds how Dagster stores the prices."""
    from dagster import materialize

    from hpo_assets.instance import register_symbols
    from hpo_assets.sweeps import baseline_sweep

    instance = DagsterInstance.ephemeral()
    register_symbols(instance, ["AAA"])
    result = materialize([baseline_sweep], partition_key="AAA", instance=instance,
                         resources=make_resources(tmp_path / "st", csv_dir), raise_on_error=False)
    assert not result.success
    message = step_failure_message(result)
    assert "AAA: no stored price history" in message and "load and store its prices first" in message
    assert "(in Dagster: materialise price_history for partition AAA)" in message
    assert "Traceback" not in message


def test_unadjusted_split_only_warns(tmp_path, csv_dir):
    frame = make_prices(300, seed=1)
    frame.loc[200:, ["open", "high", "low", "close"]] /= 4.0
    frame.to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    split = _checks(result)["no_suspected_splits"]
    assert not split.passed and split.severity == AssetCheckSeverity.WARN


# -- policies: missing bars and splits, through a real materialisation ----------------------------
BLOCKING = {"sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent"}
NO_CLOSE = [50, 300, 450, 600]
NO_OHLC = [120, 121, 122, 200, 201, 202, 203, 500, 501, 640, 641, 699]
SPOILED = pd.date_range("2020-01-01", periods=700)[sorted(NO_CLOSE + NO_OHLC)]


@pytest.fixture
def crypto_dir(tmp_path):
    """700 calendar days of BTC-USD with 4 missing closes and 12 bars whose OHLC are all missing."""
    folder = tmp_path / "crypto"
    folder.mkdir()
    frame = make_prices(700, seed=4, calendar="D")
    frame.loc[NO_CLOSE, "close"] = np.nan
    frame.loc[NO_OHLC, OHLC] = np.nan
    frame.to_csv(folder / "BTC-USD.csv", index=False)
    return folder


def _materialize(tmp_path, folder, symbol="BTC-USD", **policy):
    resources = make_resources(tmp_path / "st", folder)
    resources["prices"] = PriceSourceResource(kind="csv_dir", csv_dir=str(folder), **policy)
    return materialize_prices(DagsterInstance.get(), symbol, resources)  # the temp DAGSTER_HOME's instance


def _metadata(result) -> dict:
    [event] = result.asset_materializations_for_node("price_history")
    return {k: getattr(v, "value", getattr(v, "text", v)) for k, v in event.metadata.items()}


@pytest.mark.parametrize("missing, bars", [("ffill", 700), ("drop", 684)])
def test_crypto_with_dropped_ticks_is_repaired_and_listed(tmp_path, dagster_home, crypto_dir, missing, bars):
    result = _materialize(tmp_path, crypto_dir, missing=missing)
    assert result.success
    checks = _checks(result)
    assert all(checks[name].passed for name in BLOCKING)
    meta = _metadata(result)
    assert meta["bars"] == bars and meta["missing_policy"] == missing and meta["repaired_bars"] == 16
    assert meta[{"ffill": "filled_bars", "drop": "dropped_bars"}[missing]] == 16
    assert meta["repaired_first_dates"] == ", ".join(str(d.date()) for d in SPOILED[:10]) + " (+6 more)"
    stored = Storage(tmp_path / "st").read_prices("BTC-USD")
    assert len(stored) == bars and np.isfinite(stored[OHLC].to_numpy()).all()


def test_crypto_with_dropped_ticks_is_rejected_by_default(tmp_path, dagster_home, crypto_dir):
    result = _materialize(tmp_path, crypto_dir)
    assert not result.success
    failed = _checks(result)["no_missing_prices"]
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.count("BTC-USD") == 1 and message.startswith("BTC-USD: price data rejected, nothing stored")
    assert f"16 bars with missing (NaN or infinite) OHLC, first on {SPOILED[0].date()}" in message
    assert not (tmp_path / "st" / "prices").exists()
    assert not result.asset_materializations_for_node("price_history")


def test_unadjusted_split_is_adjusted_and_listed_in_the_metadata(tmp_path, dagster_home, csv_dir):
    truth = make_prices(300, seed=1)
    raw = truth.copy()
    raw.loc[:199, OHLC] *= 2.0
    raw.loc[:199, "volume"] /= 2.0
    raw.to_csv(csv_dir / "AAA.csv", index=False)
    result = _materialize(tmp_path, csv_dir, "AAA", splits="adjust")
    assert result.success and _checks(result)["no_suspected_splits"].passed
    meta = _metadata(result)
    splits = [record.data for record in meta["split_table"].records]
    assert meta["split_adjustments"] == 1 and splits == [{**splits[0], "date": str(truth.loc[200, "timestamp"].date()),
                                                          "ratio": "2:1", "adjusted": True}]
    stored = Storage(tmp_path / "st").read_prices("AAA")
    np.testing.assert_allclose(stored[OHLC].to_numpy(), truth[OHLC].to_numpy(), rtol=1e-12)


def test_every_failure_names_the_symbol_once(tmp_path, csv_dir):
    frame = make_prices(300, seed=1)
    frame.loc[5, "timestamp"] = frame.loc[4, "timestamp"]
    frame.loc[10, "close"] = float("nan")
    frame.iloc[:60].to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir))
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.count("AAA") == 1 and "duplicate" in message and "missing" in message


# -- the resource's policy fields --------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, allowed", [("missing", "fill", "reject, drop, ffill"),
                                                   ("splits", "auto", "warn, adjust"),
                                                   ("price_field", "vwap", "close, adj_close")])
def test_resource_rejects_unknown_policy_values_naming_field_and_choices(monkeypatch, field, value, allowed):
    with pytest.raises(Exception) as info:
        PriceSourceResource(**{field: value})
    assert repr(field) in str(info.value) and allowed in str(info.value)
    monkeypatch.setenv({"missing": "HPO_MISSING_POLICY", "splits": "HPO_SPLITS", "price_field": "HPO_PRICE_FIELD"}[field],
                       value)
    with pytest.raises(Exception) as info:
        PriceSourceResource()
    assert repr(value) in str(info.value) and allowed in str(info.value)


def test_cli_path_gets_the_policy_from_the_environment(monkeypatch, crypto_dir):
    """`hpo compare` calls PriceSourceResource().source().load(symbol): the env policy applies there too."""
    monkeypatch.setenv("HPO_PRICE_SOURCE", "csv_dir")
    monkeypatch.setenv("HPO_CSV_DIR", str(crypto_dir))
    monkeypatch.delenv("HPO_SPLITS", raising=False)
    monkeypatch.delenv("HPO_PRICE_FIELD", raising=False)
    monkeypatch.delenv("HPO_MISSING_POLICY", raising=False)
    assert PriceSourceResource().policy() == PricePolicy()
    assert not np.isfinite(PriceSourceResource().source().load("BTC-USD")[OHLC].to_numpy()).all()
    monkeypatch.setenv("HPO_MISSING_POLICY", "drop")
    frame = PriceSourceResource().source().load("BTC-USD")
    assert len(frame) == 684 and validate_prices(frame, "BTC-USD") is frame
