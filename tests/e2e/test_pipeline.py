"""The whole Dagster path on a real temp instance: concurrent partitions, dbt build, idempotent re-runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus, materialize

from hpo_assets.dbt_marts import dbt_metrics
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.sweeps import BASELINE_TRIALS, baseline_sweep
from tests.support import REPO, TINY_BACKTEST
from tests.support import make_resources

pytestmark = pytest.mark.slow
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _run_partition_in_subprocess(symbol: str, run_config: Path, env: dict) -> subprocess.Popen:
    """`dagster asset materialize` runs with the code location's multiprocess executor (a process per step)."""
    return subprocess.Popen(
        [DAGSTER, "asset", "materialize", "-m", "hpo_assets.definitions", "-d", str(REPO),
         "--select", "price_history,baseline_sweep", "--partition", symbol, "-c", str(run_config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _trial_rows(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("select symbol, config_hash, split, origin_index from stg_trials").fetchall()


def test_concurrent_partitions_then_dbt_build(tmp_path, csv_dir, dagster_home):
    storage = tmp_path / "st"
    instance = DagsterInstance.get()
    register_symbols(instance, ["AAA", "BBB"])
    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"resources": {"backtest": {"config": TINY_BACKTEST}}}))
    env = {**os.environ, "HPO_STORAGE_DIR": str(storage), "HPO_PRICE_SOURCE": "csv_dir",
           "HPO_CSV_DIR": str(csv_dir), "DAGSTER_HOME": str(dagster_home)}

    procs = [_run_partition_in_subprocess(s, run_config, env) for s in ("AAA", "BBB")]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    runs = instance.get_run_records()
    assert len(runs) == 2 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)
    assert {r.dagster_run.tags["dagster/partition"] for r in runs} == {"AAA", "BBB"}

    resources = make_resources(storage, csv_dir)
    built = materialize([dbt_metrics], instance=instance, resources=resources)
    assert built.success
    rows = _trial_rows(storage / "metrics.duckdb")
    windows = TINY_BACKTEST["n_val"] + TINY_BACKTEST["n_test"]
    assert len(rows) == 2 * len(BASELINE_TRIALS) * windows  # 2 symbols x baselines x windows, nothing lost
    assert len(set(rows)) == len(rows)  # nothing duplicated

    # Re-materialising a partition replaces its trials: no new rows, every trial skipped.
    again = materialize([price_history, baseline_sweep], partition_key="AAA", instance=instance,
                        resources=resources)
    assert again.success
    sweep_meta = again.asset_materializations_for_node("baseline_sweep")[0].metadata
    assert sweep_meta["trials_computed"].value == 0 and sweep_meta["trials_skipped"].value == len(BASELINE_TRIALS)
    board_models = {record.data["model"] for record in sweep_meta["leaderboard"].records}
    assert "last_test_window" in sweep_meta and "persistence" in board_models
    assert materialize([dbt_metrics], instance=instance, resources=resources).success
    assert sorted(_trial_rows(storage / "metrics.duckdb")) == sorted(rows)

    with duckdb.connect(str(storage / "metrics.duckdb"), read_only=True) as con:
        board = con.execute("select symbol, model, val_windows, test_windows, val_rank, test_vs_persistence "
                            "from leaderboard order by symbol, val_rank").fetchall()
    assert {r[0] for r in board} == {"AAA", "BBB"} and len(board) == 2 * len(BASELINE_TRIALS)
    assert all(r[2] == TINY_BACKTEST["n_val"] and r[3] == TINY_BACKTEST["n_test"] for r in board)
    assert [r[5] for r in board if r[1] == "persistence"] == [1.0, 1.0]
