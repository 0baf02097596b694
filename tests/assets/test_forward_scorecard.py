"""The forward scorecard on a real temp instance: a daily feed appends bars to CSV files, the price
sensor refreshes them, `forward_scores` adds exactly the newly completed windows, and the stale-config
sensor asks to re-tune the symbol whose regime changed after selection (and only that one)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context, materialize

from forecast_core.forward import ForwardStore
from forecast_core.synthetic import make_prices
from hpo_assets.cli import main
from hpo_assets.dbt_marts import metrics_assets
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.scorecard import forward_scores
from hpo_assets.selected_configs import selected_configs
from hpo_assets.sensors import price_source_sensor, stale_config_sensor
from hpo_assets.sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep
from resources import RetuneSettings
from tests.support import TINY_BACKTEST, make_resources

pytestmark = pytest.mark.slow
SMALL_SWEEPS = {"ops": {
    "toto_sweep": {"config": {"sample_counts": [16], "aggregations": ["mean", "median"]}},
    "toto2_sweep": {"config": {"context_lengths": [0], "decode_block_sizes": [0], "variates": ["close"],
                               "aggregations": ["median", "mean"]}},
    "kronos_sweep": {"config": {"presets": [], "sample_counts": [4], "aggregations": ["mean"],
                                "search_budget": 2, "search_sample_count": 4, "max_sample_count": 4}},
}}
TUNED_BARS, FEED_BARS, STEP = 300, 96, 12
H = TINY_BACKTEST["horizon"]


def _series() -> dict[str, pd.DataFrame]:
    """CALM goes on as before. SHIFT is pinned after bar 300 (a takeover at a fixed price: closes
    scatter 0.1% around the last close), where persistence is nearly exact and a model that still
    forecasts the old volatility falls far behind it."""
    calm = make_prices(TUNED_BARS + FEED_BARS, seed=11)
    shift = make_prices(TUNED_BARS + FEED_BARS, seed=12)
    after = np.arange(TUNED_BARS, TUNED_BARS + FEED_BARS)
    rng = np.random.default_rng(13)
    pinned = shift["close"].iloc[TUNED_BARS - 1] * np.exp(rng.normal(0.0, 0.001, len(after)))
    shift.loc[after, "close"] = pinned
    shift.loc[after, "open"] = np.concatenate([[shift["close"].iloc[TUNED_BARS - 1]], pinned[:-1]])
    shift.loc[after, "high"] = shift.loc[after, ["open", "close"]].max(axis=1) * 1.0005
    shift.loc[after, "low"] = shift.loc[after, ["open", "close"]].min(axis=1) * 0.9995
    return {"CALM": calm, "SHIFT": shift}


def _write(folder, series, bars):
    for symbol, frame in series.items():
        frame.iloc[:bars].drop(columns=["amount"]).to_csv(folder / f"{symbol}.csv", index=False)


def test_a_daily_feed_grows_the_scorecard_and_drift_asks_for_a_retune(tmp_path, dagster_home, monkeypatch, capsys):
    """With the bundled tiny checkpoints (trained on real daily stocks, so near persistence on a random
    walk) and a drift margin of 50% (the tiny Kronos default runs ~20% behind persistence anyway)."""
    folder = tmp_path / "csv"
    folder.mkdir()
    series = _series()
    _write(folder, series, TUNED_BARS)
    instance = DagsterInstance.get()
    register_symbols(instance, list(series))
    resources = {**make_resources(tmp_path / "st", folder), "retune": RetuneSettings(drift_margin=0.5)}
    for symbol in series:
        assert materialize([price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep], partition_key=symbol,
                           instance=instance, resources=resources, run_config=SMALL_SWEEPS).success
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    for symbol in series:
        assert materialize([selected_configs], partition_key=symbol, instance=instance, resources=resources).success

    def price_sensor(cursor):
        return price_source_sensor(build_sensor_context(instance=instance, cursor=cursor,
                                                        resources={"prices": resources["prices"]}))

    def retune_sensor():
        return stale_config_sensor(build_sensor_context(instance=instance, resources=resources))

    cursor = price_sensor(None).cursor
    assert isinstance(retune_sensor(), SkipReason)  # just tuned: nothing to say yet
    store, quiet_steps = ForwardStore(tmp_path / "st"), 0
    for bars in range(TUNED_BARS + STEP, TUNED_BARS + FEED_BARS + 1, STEP):
        _write(folder, series, bars)  # the day's bars arrive
        result = price_sensor(cursor)
        cursor = result.cursor
        assert sorted(r.partition_key for r in result.run_requests) == sorted(series)
        complete, before = (bars - TUNED_BARS) // H, (bars - STEP - TUNED_BARS) // H
        quiet_steps += complete == before
        for request in result.run_requests:  # what the refresh_prices job runs
            run = materialize([price_history, forward_scores], partition_key=request.partition_key,
                              instance=instance, resources=resources)
            added = run.asset_materializations_for_node("forward_scores")[0].metadata["windows_added"].value
            assert added == 4 * (complete - before)  # the toto, toto2, kronos and best scorecards each
            rows = store.read(request.partition_key)
            per_role = rows.groupby(["scorecard", "role"]).size() if not rows.empty else pd.Series(dtype=int)
            assert (per_role == complete).all() and len(per_role) in ((0,) if complete == 0 else (15, 16))
        if complete < RetuneSettings().drift_min_windows:
            assert isinstance(retune_sensor(), SkipReason)  # too little forward evidence yet
    assert quiet_steps >= 2  # steps that completed no window added nothing

    again = materialize([forward_scores], partition_key="CALM", instance=instance, resources=resources)
    assert again.asset_materializations_for_node("forward_scores")[0].metadata["windows_added"].value == 0
    requests = retune_sensor()
    assert [r.partition_key for r in requests] == ["SHIFT"]
    assert requests[0].tags["retune_trigger"] == "forward evidence"
    assert "forward windows" in requests[0].tags["retune_reason"] and "vs persistence" in requests[0].tags["retune_reason"]
    report = store.read_report("SHIFT").query("current")
    assert set(report["kind"]) == {"toto", "toto2", "kronos", "best"}
    assert (report["forward_windows"] == FEED_BARS // H).all()

    assert materialize(metrics_assets(), instance=instance, resources=resources).success  # dbt reads the scorecard
    with duckdb.connect(str(tmp_path / "st" / "metrics.duckdb"), read_only=True) as con:
        marts = con.execute("select symbol, count(*), min(forward_windows), bool_and(days_since_selection >= 0) "
                            "from forward_report where current group by symbol order by symbol").fetchall()
    assert marts == [("CALM", 4, FEED_BARS // H, True), ("SHIFT", 4, FEED_BARS // H, True)]

    monkeypatch.setenv("HPO_STORAGE_DIR", str(tmp_path / "st"))  # `hpo forward` prints the same report
    capsys.readouterr()
    assert main(["forward"]) == 0
    printed = capsys.readouterr().out
    assert "CALM: forward windows after each selection" in printed and "SHIFT: forward windows" in printed
    assert "re-tune: " in printed.split("SHIFT:")[1] and "re-tune: " not in printed.split("SHIFT:")[0]
