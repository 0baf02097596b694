"""The forward scorecard on a real temp instance: a daily feed appends bars to CSV files, the price
sensor refreshes them, `forward_scores` adds exactly the newly completed windows, and the stale-config
sensor asks to re-tune the symbol whose regime changed after selection (and only that one).
tests/e2e/test_daemon.py runs the same feed under the real daemon, through the re-tune to new files."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import DagsterInstance, SkipReason, build_sensor_context, materialize

from forecast_core.forward import ForwardStore
from hpo_assets.cli import main
from hpo_assets.prices import price_history
from hpo_assets.scorecard import forward_scores
from hpo_assets.sensors import price_source_sensor, stale_config_sensor
from resources import RetuneSettings
from tests.support import FEED_BARS, FEED_TUNED_BARS, TINY_BACKTEST, feed_resources, regime_change_feed, write_feed

pytestmark = pytest.mark.slow
TUNED_BARS, STEP = FEED_TUNED_BARS, 12
H = TINY_BACKTEST["horizon"]


def test_a_daily_feed_grows_the_scorecard_and_drift_asks_for_a_retune(tuned_feed, monkeypatch, capsys):
    """With the bundled tiny checkpoints (trained on real daily stocks, so near persistence on a random
    walk) and a drift margin of FEED_DRIFT_MARGIN; CALM and SHIFT tuned and selected (tests.support.tune_feed)."""
    folder, series, instance = tuned_feed / "csv", regime_change_feed(), DagsterInstance.get()
    resources = feed_resources(tuned_feed)

    def price_sensor(cursor):
        with build_sensor_context(instance=instance, cursor=cursor, resources={"prices": resources["prices"]}) as context:
            return price_source_sensor(context)

    def retune_sensor():
        with build_sensor_context(instance=instance, resources=resources) as context:
            return stale_config_sensor(context)

    cursor = price_sensor(None).cursor
    assert isinstance(retune_sensor(), SkipReason)  # just tuned: nothing to say yet
    store, quiet_steps = ForwardStore(tuned_feed / "st"), 0
    for bars in range(TUNED_BARS + STEP, TUNED_BARS + FEED_BARS + 1, STEP):
        write_feed(folder, series, bars)  # the day's bars arrive
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

    monkeypatch.setenv("HPO_STORAGE_DIR", str(tuned_feed / "st"))  # `hpo forward` prints the same report
    monkeypatch.setenv("HPO_HYPERPARAMS_DIR", str(tuned_feed / "st" / "hyperparams"))
    capsys.readouterr()
    assert main(["forward"]) == 0
    printed = capsys.readouterr().out
    assert "CALM: forward windows after each selection" in printed and "SHIFT: forward windows" in printed
    assert "re-tune: " in printed.split("SHIFT:")[1] and "re-tune: " not in printed.split("SHIFT:")[0]
