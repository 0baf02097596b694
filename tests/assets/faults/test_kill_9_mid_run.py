"""kill -9 mid-run: a Kronos sweep and forward scoring killed with SIGKILL, then re-run.

Real subprocesses (`dagster asset materialize`, its whole process group killed), a real Dagster
instance, real Parquet and DuckDB files: the re-run must lose and duplicate nothing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus, materialize

from forecast_core.configs import write_config
from forecast_core.forecasters import BATCH_RTOL
from forecast_core.store import Storage
from forecast_core.synthetic import make_prices
from hpo_assets.instance import reclaim_dead_runs, register_symbols
from tests.support import DAGSTER_CLI, REPO, TINY_BACKTEST, TINY_SPEC, TINY_WINDOWS, kill_group_after_first_file
from tests.support import make_resources, materialization_metadata

pytestmark = pytest.mark.slow


def test_kill_9_mid_sweep_then_rerun_loses_and_duplicates_nothing(tuned):
    seen, store = tuned["seen"], Storage(tuned["store"])
    total = seen["reference_total"]
    assert seen["returncode"] == -signal.SIGKILL, seen["log"]
    assert 1 <= len(seen["at_kill"]) < total, "the kill must land after the first trial, before the last"
    assert seen["after_kill"] == seen["at_kill"]  # every process of the group is gone
    assert seen["killed_runs"] and all(s == DagsterRunStatus.STARTED for s in seen["killed_runs"])
    reclaimed = [tuned["instance"].get_run_by_id(run_id) for run_id in seen["reclaimed"]]
    assert len(reclaimed) == len(seen["killed_runs"]) and all(r.status == DagsterRunStatus.FAILURE for r in reclaimed)
    # Only whole trial files under their final names (a kill mid-write leaves at most a hidden .tmp).
    assert all(n.endswith(".parquet") or (n.startswith(".") and n.endswith(".tmp")) for n in seen["every_file"])
    assert seen["rows_with_temp_files"] == len(seen["at_kill"]) * TINY_WINDOWS  # readers never see temp files

    # The rerun skips what landed, computes the rest, and clears the temp files of dead writers.
    assert seen["resumed"]["trials_skipped"] == len(seen["at_kill"])
    assert seen["resumed"]["trials_computed"] == total - len(seen["at_kill"])
    assert seen["temp_files_left"] == []

    folder = tuned["store"] / "trials" / "sweep=kronos" / "symbol=AAA"
    reference_folder = tuned["reference"] / "trials" / "sweep=kronos" / "symbol=AAA"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference_folder.iterdir())
    assert len(list(folder.iterdir())) == total
    for path in folder.iterdir():  # every file readable, the same numbers as the uninterrupted run
        got, want = pq.read_table(path).to_pandas(), pq.read_table(reference_folder / path.name).to_pandas()
        assert len(got) == TINY_WINDOWS and got["trial_key"].nunique() == 1
        assert got["origin_index"].tolist() == want["origin_index"].tolist()
        assert got["seed"].tolist() == want["seed"].tolist()
        # A resumed plan decodes only its pending configs (another batch shape): paths agree within
        # BATCH_RTOL of the price level, so MAE% (100 * MAE / mean |target|) within 100 * BATCH_RTOL
        # times level / mean |target| (under 2 for these series), not bitwise on every CPU.
        np.testing.assert_allclose(got["mae_pct"], want["mae_pct"], rtol=0, atol=100 * BATCH_RTOL * 2)

    # What dbt's staging sees: every trial once per window, nothing lost, nothing doubled.
    with duckdb.connect(str(store.duckdb_path), read_only=True) as con:
        keys = con.execute("select model, config_hash, split, origin_index from stg_trials").fetchall()
    assert len(keys) == len(set(keys))
    kronos = {k for k in keys if k[0] == "kronos"}
    reference_rows = Storage(tuned["reference"]).read_trials("kronos")
    assert kronos == set(zip(reference_rows["model"], reference_rows["config_hash"], reference_rows["split"],
                             reference_rows["origin_index"].astype(int)))
    files = len(list((tuned["store"] / "trials").rglob("*.parquet")))
    assert len(keys) == files * TINY_WINDOWS


# -- kill -9 mid forward scoring ------------------------------------------------------------------------------
FORWARD_TUNED, FORWARD_WINDOWS = 300, 32  # config files saw 300 bars; 32 forward windows of 16 bars are pending


def _forward_config(model: str, knobs: dict, data_end: str) -> dict:
    """A config file as selected_configs writes it (valid against the schema), for a stored history."""
    scores = {"mae_pct": 5.0, "windows": 2}
    return {"symbol": "AAA", "model": model, "config": {"name": f"{model}-picked", **knobs},
            "validation": scores, "test": scores,
            "windows": {"n_val": TINY_SPEC.n_val, "n_test": TINY_SPEC.n_test, "forecast_horizon": TINY_SPEC.horizon,
                        "stride": TINY_SPEC.step, "context": TINY_SPEC.context},
            "metadata": {"model_id": model, "model_revision": "bundled", "data_end": data_end, "data_version": "x",
                         "seed": 0, "search": {"method": "grid", "trials": 1}, "baselines_on_test": {},
                         "selection": {"significant_vs_default": False, "reason": "hand-made for the kill test"},
                         "selected_at": "2026-01-05T00:00:00+00:00", "code_version": "test"}}


def test_kill_9_mid_forward_scoring_then_rerun_loses_and_duplicates_nothing(tmp_path, dagster_home):
    """`forward_scores` writes the toto, kronos and best scorecards one after another; a SIGKILL once the
    first file lands must leave it whole, and the re-run must add exactly the missing scorecards' windows.
    A Toto config of 4096 samples (best points at it too) keeps the run busy for seconds after the first file."""
    from forecast_core.forward import ForwardStore, current_scorecards, forward_windows
    from hpo_assets.scorecard import forward_scores

    store_dir = tmp_path / "st"
    prices = make_prices(FORWARD_TUNED + FORWARD_WINDOWS * TINY_SPEC.horizon + TINY_SPEC.horizon - 1, seed=5)
    Storage(store_dir).write_prices("AAA", prices)
    data_end = prices["timestamp"].iloc[FORWARD_TUNED - 1].date().isoformat()
    hyperparams = store_dir / "hyperparams"
    toto = _forward_config("toto", {"num_samples": 4096, "aggregate": "median", "samples_per_batch": 4096}, data_end)
    kronos = _forward_config("kronos", {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "sample_count": 16,
                                        "max_context": 64, "clip": 5.0, "aggregate": "mean"}, data_end)
    write_config(hyperparams, "toto", "AAA", toto)
    write_config(hyperparams, "kronos", "AAA", kronos)
    write_config(hyperparams, "best", "AAA", {
        "symbol": "AAA", "model": "toto", "config_path": "hyperparams/toto/AAA.json", "config": toto["config"],
        "validation": toto["validation"], "test": toto["test"],
        "metadata": {"selected_at": toto["metadata"]["selected_at"], "data_version": "x", "compared": {},
                     "reason": "hand-made for the kill test"}})
    cards, problems = current_scorecards(hyperparams, "AAA")
    assert problems == [] and [c.kind for c in cards] == ["toto", "kronos", "best"]
    expected = {c.id: set(forward_windows(prices, c).origins.tolist()) for c in cards}
    assert all(len(origins) == FORWARD_WINDOWS for origins in expected.values())

    instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("accelerator", 1)  # the killed run holds the only slot
    register_symbols(instance, ["AAA"])
    run_config = tmp_path / "run.json"
    run_config.write_text(json.dumps({"resources": {"backtest": {"config": TINY_BACKTEST}}}))
    env = {**os.environ, "HPO_STORAGE_DIR": str(store_dir), "HPO_HYPERPARAMS_DIR": str(hyperparams),
           "DAGSTER_HOME": str(dagster_home)}
    for name in ("HPO_TOTO_SOURCE", "HPO_KRONOS_SOURCE", "HPO_KRONOS_TOKENIZER_SOURCE"):
        env.pop(name, None)  # the bundled tiny checkpoints, as in-process
    folder = store_dir / "forward" / "symbol=AAA"
    log = tmp_path / "killed_run.log"
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [DAGSTER_CLI, "asset", "materialize", "-m", "hpo_assets.definitions", "-d", str(REPO),
             "--select", "forward_scores", "--partition", "AAA", "-c", str(run_config)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        at_kill = kill_group_after_first_file(proc, folder, log)
    killed_after = time.monotonic() - started
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    by_id = {c.id: c for c in cards}
    assert at_kill == [f"{cards[0].id}.parquet"], (at_kill, killed_after)  # toto's landed; kronos, best pending
    rows_at_kill = {name: pq.read_table(folder / name).to_pandas() for name in at_kill}
    time.sleep(1.0)
    assert sorted(p.name for p in folder.glob("*.parquet")) == at_kill  # nothing of the group still writing
    for name, rows in rows_at_kill.items():  # the landed file is whole: every window of every role once
        card = by_id[name.removesuffix(".parquet")]
        assert set(rows["origin_index"]) == expected[card.id]
        assert (rows.groupby(["role", "origin_index"]).size() == 1).all() and set(rows["role"]) == set(card.trials)

    # A write cut short leaves only a hidden temp file beside the scorecards: readers never see it.
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    half = (folder / at_kill[0]).read_bytes()[:700]
    (folder / f".{cards[1].id}.parquet.w{gone.pid}@{socket.gethostname()}.k1ll3d_f.tmp").write_bytes(half)
    assert len(ForwardStore(store_dir).read("AAA")) == sum(len(r) for r in rows_at_kill.values())
    reclaimed = reclaim_dead_runs(instance)  # else the re-run waits for the dead run's slot forever
    assert len(reclaimed) == 1 and instance.get_run_by_id(reclaimed[0]).status == DagsterRunStatus.FAILURE

    resources = make_resources(store_dir)
    rerun = materialize([forward_scores], partition_key="AAA", instance=instance, resources=resources)
    assert rerun.success
    pending = sum(len(expected[c.id]) for c in cards if f"{c.id}.parquet" not in at_kill)
    added = materialization_metadata(rerun, "forward_scores")["windows_added"]
    assert added == pending  # only what the kill left undone

    # Only whole scorecard files under their final names; the stored rows at the kill are unchanged.
    assert sorted(p.name for p in folder.glob("*.parquet")) == sorted(f"{c.id}.parquet" for c in cards)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c.id}.parquet" for c in cards)  # temp file gone
    for name, rows in rows_at_kill.items():
        after = pq.read_table(folder / name).to_pandas()
        pd.testing.assert_frame_equal(after[after["origin_index"].isin(rows["origin_index"])].reset_index(drop=True),
                                      rows)
    rows = ForwardStore(store_dir).read("AAA")
    for card in cards:  # every scorecard: exactly one row per (role, window), every complete window
        mine = rows[rows["scorecard"] == card.id]
        per = mine.groupby(["role", "origin_index"]).size()
        assert (per == 1).all() and len(per) == len(card.trials) * len(expected[card.id])
        assert set(mine["role"]) == set(card.trials) and set(mine["origin_index"]) == expected[card.id]
    assert len(rows) == sum(len(c.trials) * len(expected[c.id]) for c in cards)

    again = materialize([forward_scores], partition_key="AAA", instance=instance, resources=resources)
    assert materialization_metadata(again, "forward_scores")["windows_added"] == 0
    assert ForwardStore(store_dir).read("AAA").equals(rows)
