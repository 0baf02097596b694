"""price_history through Dagster: checks are reported, bad data fails the partition and stores nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from forecast_core.store import Storage
from tests.dagster_helpers import materialize_prices, make_resources
from tests.synthetic import make_prices


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)


def _checks(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_clean_csv_is_stored_with_passing_checks(tmp_path, csv_dir):
    instance = DagsterInstance.ephemeral()
    result = materialize_prices(instance, "AAA", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    checks = _checks(result)
    assert {n for n, c in checks.items() if c.passed} >= {
        "sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent", "enough_bars"}
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
    elif how == "short":
        frame = frame.iloc[:50]
    return frame


@pytest.mark.parametrize("how, check", [
    ("duplicate", "sorted_unique_timestamps"), ("unsorted", "sorted_unique_timestamps"),
    ("nan", "no_missing_prices"), ("negative", "positive_prices"), ("short", "enough_bars"),
])
def test_bad_values_fail_the_check_and_keep_the_old_copy(tmp_path, csv_dir, how, check):
    instance = DagsterInstance.ephemeral()
    resources = make_resources(tmp_path / "st", csv_dir)
    assert materialize_prices(instance, "AAA", resources).success
    before = (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes()

    _spoil(make_prices(300, seed=1), how).to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(instance, "AAA", resources)
    assert not result.success
    assert "AAA" in _failure_message(result)
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
    message = _failure_message(result)
    assert phrase in message and "BAD.csv" in message
    assert not (tmp_path / "st" / "prices").exists()


def test_unadjusted_split_only_warns(tmp_path, csv_dir):
    frame = make_prices(300, seed=1)
    frame.loc[200:, ["open", "high", "low", "close"]] /= 4.0
    frame.to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    split = _checks(result)["no_suspected_splits"]
    assert not split.passed and split.severity == AssetCheckSeverity.WARN
