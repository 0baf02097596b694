"""The weekly loop closes by itself: the real `dagster-daemon` on a real temporary instance, with only
what the README's automation section lists turned on, takes a feed change to new config files.

CALM and SHIFT start tuned and selected (tests.support.tune_feed, what `hpo tune` leaves). The feed
then appends the bars in which SHIFT's regime changes; `price_source_sensor` sees the files change
and refreshes both symbols (prices, forward scorecard), `stale_config_sensor` reads SHIFT's drift and
requests its re-tune at the deployment's tune budget, and the `marts_and_config_files` automation
(on by default) builds the marts, the selection statistics and the selection marts, then writes
SHIFT's config files. CALM, which did not drift, keeps its files as they were.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter, SkipReason, build_sensor_context

from forecast_core.configs import read_config
from forecast_core.data import data_version
from forecast_core.store import Storage
from hpo_assets.instance import BUDGET_TAG, automation_state
from hpo_assets.sensors import stale_config_sensor
from tests.support import (
    FEED_BARS,
    FEED_BUDGET,
    FEED_TUNED_BARS,
    REPO,
    TINY_BACKTEST,
    feed_resources,
    regime_change_feed,
    write_feed,
)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
KINDS = ("toto", "toto2", "kronos", "best")
WAIT_SECONDS = 420  # the sensors' intervals below, five runs and a tune with the small budget, on 2 cores
# The instance's default (queued) run coordinator, dequeuing every second instead of every five.
IN_FLIGHT = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
DAGSTER_YAML = {"telemetry": {"enabled": False},
                "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                                    "config": {"dequeue_interval_seconds": 1}}}


def _environment(root: Path, budgets: Path) -> dict[str, str]:
    """What a deployment sets (README: automation, tune budget, price source), with short sensor intervals."""
    return {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), "HPO_STORAGE_DIR": str(root / "st"),
            "HPO_HYPERPARAMS_DIR": str(root / "st" / "hyperparams"), "HPO_PRICE_SOURCE": "csv_dir",
            "HPO_CSV_DIR": str(root / "csv"), "HPO_TUNE_BUDGET": "feed", "HPO_TUNE_BUDGETS_FILE": str(budgets),
            "HPO_PRICE_SENSOR_SECONDS": "2", "HPO_RETUNE_SENSOR_SECONDS": "2", "HPO_AUTOMATION_SECONDS": "2",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _files(root: Path, symbol: str) -> dict[str, dict]:
    return {kind: read_config(root / kind / f"{symbol}.json", kind) for kind in KINDS}


def _runs_report(instance: DagsterInstance) -> str:
    """Every run so far, one line each, for a failure message."""
    return "\n".join(f"{r.dagster_run.job_name} {r.dagster_run.tags.get('dagster/partition', '')} "
                     f"{r.dagster_run.status.value}" for r in reversed(instance.get_run_records()))


def _wait_until_idle(instance: DagsterInstance, timeout: float = 120) -> None:
    """Until no run is queued or in flight on two checks in a row (a tick may launch one in between)."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 2:
        assert time.monotonic() < deadline, f"runs still in flight after {timeout}s:\n{_runs_report(instance)}"
        quiet = quiet + 1 if not instance.get_run_records(RunsFilter(statuses=IN_FLIGHT)) else 0
        time.sleep(3)


def _started(command: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_a_feed_change_ends_in_new_config_files_with_only_the_daemon_running(tuned_feed):
    root = tuned_feed / "st" / "hyperparams"
    (tuned_feed / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump(DAGSTER_YAML))
    budgets = tuned_feed / "budgets.yaml"
    budgets.write_text(yaml.safe_dump({"feed": FEED_BUDGET}))
    series = regime_change_feed()
    before = {symbol: _files(root, symbol) for symbol in series}
    instance = DagsterInstance.get()
    tuned_runs = len(instance.get_run_records())

    write_feed(tuned_feed / "csv", series, FEED_TUNED_BARS + FEED_BARS)  # the bars of SHIFT's new regime arrive
    workspace = tuned_feed / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "tests.e2e.daemon_location", "working_directory": str(REPO), "location_name": "toto_kronos_hpo"}}]}))
    env = _environment(tuned_feed, budgets)
    # The README's list (the automation is on by default); the daemon starts alongside.
    switches = [_started([str(BIN / "dagster"), "sensor", "start", sensor, "-w", str(workspace)], env, tuned_feed,
                         tuned_feed / f"{sensor}.log") for sensor in ("price_source_sensor", "stale_config_sensor")]
    log = tuned_feed / "daemon.log"
    daemon = _started([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, tuned_feed, log)
    try:
        for switch, sensor in zip(switches, ("price_source_sensor", "stale_config_sensor")):
            assert switch.wait(timeout=300) == 0, (tuned_feed / f"{sensor}.log").read_text()[-3000:]
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert daemon.poll() is None, f"dagster-daemon exited:\n{log.read_text()[-4000:]}"
            shift = read_config(root / "best" / "SHIFT.json", "best")
            if shift["metadata"]["data_version"] != before["SHIFT"]["best"]["metadata"]["data_version"]:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no new SHIFT config files after {WAIT_SECONDS}s; runs:\n{_runs_report(instance)}\n"
                        f"daemon log:\n{log.read_text()[-4000:]}")
        _wait_until_idle(instance)  # stopping the daemon would stop its runs in flight
        from tests.e2e.daemon_location import defs as location

        state = automation_state(instance, location)  # what `hpo status` shows
        assert state["daemon_running"] and {p["name"]: p["on"] for p in state["parts"]} == {
            "weekly_retune": False, "price_source_sensor": True, "stale_config_sensor": True,
            "marts_and_config_files": True}
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)

    after = {symbol: _files(root, symbol) for symbol in series}
    fed = Storage(tuned_feed / "st").read_prices("SHIFT")
    assert len(fed) == FEED_TUNED_BARS + FEED_BARS
    for kind in ("toto", "toto2", "kronos"):
        moved, was = after["SHIFT"][kind]["metadata"], before["SHIFT"][kind]["metadata"]
        assert moved["data_end"] == fed["timestamp"].iloc[-1].date().isoformat() != was["data_end"]
        assert moved["data_version"] == data_version(fed) and moved["search"] == was["search"]  # the same budget
    assert after["SHIFT"]["best"]["metadata"]["data_version"] == data_version(fed)
    assert after["CALM"] == before["CALM"]  # no drift, no re-tune: its files (and forward scorecard) stay

    runs = [r.dagster_run for r in instance.get_run_records()][:-tuned_runs]  # the daemon's, newest first
    assert all(run.status == DagsterRunStatus.SUCCESS for run in runs), _runs_report(instance)
    assert sorted(run.tags["dagster/partition"] for run in runs if run.job_name == "refresh_prices") == ["CALM", "SHIFT"]
    tunes = [run for run in runs if run.job_name == "tune_symbol"]
    assert [run.tags["dagster/partition"] for run in tunes] == ["SHIFT"]
    assert tunes[0].tags["retune_trigger"] == "forward evidence" and tunes[0].tags[BUDGET_TAG] == "feed"
    retuned = instance.get_latest_materialization_event(AssetKey("toto_sweep")).asset_materialization
    assert retuned.partition == "SHIFT" and retuned.metadata["budget"].value == "feed"  # the deployment's budget
    automated = [{key.to_user_string() for key in run.asset_selection} for run in runs if run.job_name == "__ASSET_JOB"]
    assert any({"stg_trials", "leaderboard", "selection/decisions", "best_configs", "model_choice"} <= keys
               for keys in automated)  # the marts stage in one run
    assert [run.tags["dagster/partition"] for run in runs
            if run.asset_selection and AssetKey("selected_configs") in run.asset_selection] == ["SHIFT"]

    with duckdb.connect(str(tuned_feed / "st" / "metrics.duckdb"), read_only=True) as con:  # built by the automation
        marts = con.execute("select symbol, count(*), min(forward_windows), bool_and(days_since_selection >= 0) "
                            "from forward_report where current group by symbol order by symbol").fetchall()
    windows = FEED_BARS // TINY_BACKTEST["horizon"]
    assert marts == [("CALM", 4, windows, True), ("SHIFT", 4, windows, True)]  # the scorecards the refresh wrote
    # That evidence was about SHIFT's replaced files: no second re-tune from it (say, when the next bar arrives).
    with build_sensor_context(instance=instance, resources=feed_resources(tuned_feed)) as context:
        assert isinstance(stale_config_sensor(context), SkipReason)
