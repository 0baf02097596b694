"""The `hpo` console script end to end: the main job on embedded data into a persistent instance."""

from __future__ import annotations

import json
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


def test_demo_subset_lands_in_the_instance_then_compare_reads_it(tmp_path):
    """The main job as a user runs it (bundled tiny checkpoints, embedded data, default windows; the
    same code path as `hpo tune --budget demo`), then `hpo compare` on the configs it stored."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp"), "TQDM_DISABLE": "1"}
    done = _hpo("demo", "--symbols", "NVDA", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "selected configs" in done.stdout and "NVDA" in done.stdout and "persistence" in done.stdout
    for kind in ("toto", "toto2", "kronos", "best"):
        assert [p.name for p in (tmp_path / "hp" / kind).glob("*.json")] == ["NVDA.json"]
    for model in ("toto", "toto2", "kronos"):  # the selection block names the test and its evidence
        meta = json.loads((tmp_path / "hp" / model / "NVDA.json").read_text())["metadata"]
        selection = meta["selection"]
        assert selection["test"].startswith("StepM at 5% (SPA p-value), circular bootstrap, block 1; MCS at 10%")
        assert 0.0 <= selection["p_value_vs_default"] <= 1.0
        assert 1 <= selection["confidence_set_size"] == len(selection["confidence_set"]) <= selection["configs_tested"]
        assert selection["pooled_challenger"]["outcome"].startswith("no pooled challenger: 1 tunable symbol(s)")
        assert meta["pretraining"]["test_windows_out_of_sample"] == 8  # the tiny models never saw 2019-09 on
        assert meta["pretraining"]["statement"].startswith("8 of 8 test windows out-of-sample")
    best = json.loads((tmp_path / "hp" / "best" / "NVDA.json").read_text())
    assert f"NVDA: {best['model']} wins: {best['metadata']['reason']}" in done.stdout
    assert (best["config_path"] is None) == (best["model"] in ("persistence", "random_walk"))
    winner_row = next(line for line in done.stdout.splitlines() if line.strip().startswith("NVDA") and " * " in line)
    assert f"{best['model']} *" in winner_row  # the table marks the winner, persistence included
    with duckdb.connect(str(tmp_path / "st" / "metrics.duckdb"), read_only=True) as con:
        symbols = {r[0] for r in con.execute("select distinct symbol from leaderboard").fetchall()}
    assert symbols == {"NVDA"}

    # The guide's loop goes on: score the stored configs, with an env override on top.
    stored = json.loads((tmp_path / "hp" / "toto" / "NVDA.json").read_text())["config"]
    compared = _hpo("compare", "--symbol", "NVDA", "--forecast-horizon", "64", "--use-stored-hyperparams",
                    env={**env, "KRONOS_TOP_K": "20"})
    assert compared.returncode == 0, compared.stdout[-2000:] + compared.stderr[-3000:]
    assert "KRONOS_TOP_K=20" in compared.stdout
    assert f"toto[aggregate={stored['aggregate']},num_samples={stored['num_samples']}]" in compared.stdout
    assert "top_k=20" in compared.stdout
    stored = json.loads((tmp_path / "hp" / "toto2" / "NVDA.json").read_text())["config"]
    assert stored["name"] in compared.stdout

    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # the instance the UI would open
    try:
        instance = DagsterInstance.get()
        assert instance.get_dynamic_partitions("symbols") == ["NVDA"]
        runs = instance.get_run_records()
        assert len(runs) == 3 and all(r.dagster_run.status == DagsterRunStatus.SUCCESS for r in runs)
        limits = {k: instance.event_log_storage.get_concurrency_info(k).slot_count
                  for k in ("accelerator", "metrics_duckdb")}
        assert limits == {"accelerator": os.cpu_count(), "metrics_duckdb": 1}  # no GPU here: one slot per core
    finally:
        del os.environ["DAGSTER_HOME"]


def test_bad_symbol_is_rejected_before_anything_runs(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st")}
    for bad in ("../etc", "A;DROP TABLE x"):
        done = _hpo("add-symbols", bad, env=env)
        assert done.returncode == 2 and "invalid symbol" in done.stderr
    assert not (tmp_path / "st").exists()


def _model_env(tmp_path, random_checkpoints, **extra):
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
            "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp"), "HPO_TOTO_SOURCE": str(random_checkpoints["toto"]),
            "HPO_KRONOS_SOURCE": str(random_checkpoints["kronos"]),
            "HPO_KRONOS_TOKENIZER_SOURCE": str(random_checkpoints["kronos_tokenizer"]),
            "HPO_TOTO2_CHECKPOINTS": str(random_checkpoints["toto2"]), "TQDM_DISABLE": "1", **extra}


def test_compare_honours_and_echoes_env_overrides(tmp_path, random_checkpoints):
    env = _model_env(tmp_path, random_checkpoints, TOTO_NUM_SAMPLES="512", TOTO_AGGREGATE="trimmed_mean_10",
                     KRONOS_TEMPERATURE="0.5", KRONOS_SAMPLE_COUNT="4", KRONOS_MAX_CONTEXT="128",
                     TOTO2_CONTEXT_LENGTH="32", TOTO2_VARIATES="ohlc", TOTO2_AGGREGATE="quantile_0.45")
    done = _hpo("compare", "--symbol", "NVDA", "--forecast-horizon", "16", env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "TOTO_NUM_SAMPLES=512" in out and "KRONOS_TEMPERATURE=0.5" in out
    assert "toto[aggregate=trimmed_mean_10,num_samples=512]" in out
    assert "max_context=128" in out and "sample_count=4" in out and "temperature=0.5" in out
    assert "TOTO2_VARIATES=ohlc" in out and "context_length=32" in out and "aggregate=quantile_0.45" in out
    assert "persistence" in out and "test_vs_persistence" in out
    trials = list((tmp_path / "st" / "trials").rglob("*.parquet"))  # the same store the assets write
    assert {p.parent.parent.name for p in trials} == {"sweep=baseline", "sweep=toto", "sweep=toto2", "sweep=kronos"}


def test_compare_rejects_bad_overrides_and_missing_stored_configs(tmp_path, random_checkpoints):
    bad = _hpo("compare", "--symbol", "NVDA", env=_model_env(tmp_path, random_checkpoints, TOTO_NUM_SAMPLES="lots",
                                                            KRONOS_TOP_P="1.5"))
    assert bad.returncode != 0
    assert "TOTO_NUM_SAMPLES='lots'" in bad.stderr and "KRONOS_TOP_P='1.5'" in bad.stderr
    missing = _hpo("compare", "--stocks", "NVDA", "AAPL", "--use-stored-hyperparams",
                   env=_model_env(tmp_path, random_checkpoints))
    assert missing.returncode == 1
    assert "hp/toto/NVDA.json: no such config file" in missing.stderr
    assert "hp/toto/AAPL.json: no such config file" in missing.stderr
