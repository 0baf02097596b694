"""The `hpo` console script end to end: the main job on embedded data into a persistent instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus

pytestmark = pytest.mark.slow
HPO = str(Path(sys.executable).parent / "hpo")


def _hpo(*args, env):
    return subprocess.run([HPO, *args], env=env, capture_output=True, text=True, timeout=900)


def test_demo_subset_lands_in_the_instance(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "TQDM_DISABLE": "1"}
    done = _hpo("demo", "--symbols", "NVDA", "AAPL", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "leaderboard" in done.stdout and "NVDA" in done.stdout and "persistence" in done.stdout
    with duckdb.connect(str(tmp_path / "st" / "metrics.duckdb"), read_only=True) as con:
        symbols = {r[0] for r in con.execute("select distinct symbol from leaderboard").fetchall()}
    assert symbols == {"AAPL", "NVDA"}

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # the instance the UI would open
    try:
        instance = DagsterInstance.get()
        assert sorted(instance.get_dynamic_partitions("symbols")) == ["AAPL", "NVDA"]
        runs = instance.get_run_records()
        assert len(runs) == 3 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)
    finally:
        del os.environ["DAGSTER_HOME"]


def test_bad_symbol_is_rejected_before_anything_runs(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st")}
    for bad in ("../etc", "A;DROP TABLE x"):
        done = _hpo("add-symbols", bad, env=env)
        assert done.returncode == 2 and "invalid symbol" in done.stderr
    assert not (tmp_path / "st").exists()
