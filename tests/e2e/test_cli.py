"""The `hpo` console script end to end: the main job on embedded data into a persistent instance, its
tables (within 100 columns) and their --json twins, and the show/status commands on full and empty stores."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DagsterRunStatus

from forecast_core.labels import short_label
from hpo_assets.cli import print_tuned
from hpo_assets.terminal import TABLE_WIDTH

pytestmark = pytest.mark.slow
HPO = str(Path(sys.executable).parent / "hpo")
# A row of the selection table: val MAE%, test MAE%, the ratio to persistence and its verdict.
ROW_NUMBERS = re.compile(r"(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d) (better|worse|ref)\b")


def _hpo(*args, env):
    return subprocess.run([HPO, *args], env=env, capture_output=True, text=True, timeout=900)


def _ok(done) -> str:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _fits(stdout: str) -> None:
    """Every line within the table width: stdout is a pipe here, as in CI logs."""
    wide = [line for line in stdout.splitlines() if len(line) > TABLE_WIDTH]
    assert not wide, f"{len(wide)} lines wider than {TABLE_WIDTH} columns, e.g. {wide[0]!r}"


def _table_rows(stdout: str) -> dict[str, tuple]:
    """{model: (val, test, ratio, verdict)} from the selection table's rows."""
    rows = {}
    for line in stdout.splitlines():
        found = ROW_NUMBERS.search(line)
        if found and line.split()[0] in ("persistence", "random_walk", "toto", "toto2", "kronos"):
            rows[line.split()[0]] = (*map(float, found.groups()[:3]), found.group(4))
    return rows


def test_demo_subset_lands_in_the_instance_then_compare_reads_it(tmp_path, monkeypatch, capsys):
    """The main job as a user runs it (bundled tiny checkpoints, embedded data, default windows; the
    same code path as `hpo tune --budget demo`), then `hpo show`/`status`/`compare` on what it stored."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp")}
    env.pop("COLUMNS", None)  # the default width of a pipe
    done = _hpo("demo", "--symbols", "NVDA", env=env)
    out = _ok(done)
    _fits(out)
    assert "selected configs" in out and "NVDA" in out and "persistence" in out
    assert "Running with dbt" not in out and "Running with dbt" not in done.stderr  # the dbt log only on failure
    assert "NVDA: prices + sweeps done" in done.stderr  # progress goes to stderr, plain lines when not a terminal
    for kind in ("toto", "toto2", "kronos", "best"):
        assert [p.name for p in (tmp_path / "hp" / kind).glob("*.json")] == ["NVDA.json"]
    documents = {kind: json.loads((tmp_path / "hp" / kind / "NVDA.json").read_text())
                 for kind in ("toto", "toto2", "kronos", "best")}
    for model in ("toto", "toto2", "kronos"):  # the selection block names the test and its evidence
        meta = documents[model]["metadata"]
        selection = meta["selection"]
        assert selection["test"].startswith("StepM at 5% (SPA p-value), circular bootstrap, block 1; MCS at 10%")
        assert 0.0 <= selection["p_value_vs_default"] <= 1.0
        assert 1 <= selection["confidence_set_size"] == len(selection["confidence_set"]) <= selection["configs_tested"]
        assert selection["pooled_challenger"]["outcome"].startswith("no pooled challenger: 1 tunable symbol(s)")
        assert meta["pretraining"]["test_windows_out_of_sample"] == 8  # the tiny models never saw 2019-09 on
        assert meta["pretraining"]["statement"].startswith("8 of 8 test windows out-of-sample")
    best = documents["best"]
    assert f"NVDA: {best['model']} wins: {best['metadata']['reason']}" in " ".join(out.split())  # wrapped at 100
    assert (best["config_path"] is None) == (best["model"] in ("persistence", "random_walk"))
    rows = _table_rows(out)
    assert set(rows) == {"persistence", "random_walk", "toto", "toto2", "kronos"}
    winner_row = next(line for line in out.splitlines() if " * " in line)
    assert winner_row.startswith(f"{best['model']} *")  # the table marks the winner, persistence included
    for model in ("toto", "toto2", "kronos"):  # short labels (their first line: a long one wraps in its cell)
        doc = documents[model]
        label = short_label(model, {k: v for k, v in doc["config"].items() if k != "name"})
        row = next(line for line in out.splitlines() if line.startswith(model + " "))
        assert label.startswith(row[len(model):].strip().split("  ")[0])
        assert doc["config"]["name"] not in out
        assert rows[model][:2] == (round(doc["validation"]["mae_pct"], 2), round(doc["test"]["mae_pct"], 2))
        ratio = doc["test"]["mae_pct"] / best["metadata"]["persistence_test_mae_pct"]
        assert rows[model][2:] == (round(ratio, 2), "better" if ratio < 1 else "worse")
    with duckdb.connect(str(tmp_path / "st" / "metrics.duckdb"), read_only=True) as con:
        symbols = {r[0] for r in con.execute("select distinct symbol from leaderboard").fetchall()}
    assert symbols == {"NVDA"}

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

    # What is stored, and whether it is current: a table each, and the same as JSON.
    shown = _ok(_hpo("show", "NVDA", env=env))
    _fits(shown)
    for kind, doc in documents.items():
        assert str((tmp_path / "hp" / kind / "NVDA.json").resolve()) in shown
        assert f"test {doc['test']['mae_pct']:.2f} on 8" in shown
    files = {f["kind"]: f for f in json.loads(_ok(_hpo("show", "NVDA", "--json", env=env)))["symbols"][0]["files"]}
    assert set(files) == set(documents)
    for kind, doc in documents.items():
        assert files[kind]["test_mae_pct"] == doc["test"]["mae_pct"]
        assert files[kind]["selected_at"] == doc["metadata"]["selected_at"] and 0 <= files[kind]["age_days"] < 1
    assert files["kronos"]["model_revision"] == documents["kronos"]["metadata"]["model_revision"]
    assert files["toto"]["p_value"] == documents["toto"]["metadata"]["selection"]["p_value_vs_default"]
    status = _ok(_hpo("status", env=env))
    _fits(status)
    assert re.search(r"^NVDA\s+\d{4}-\d\d-\d\dT\d\d:\d\d .*4/4\s+current", status, re.M)
    assert "no failed runs" in status
    state = json.loads(_ok(_hpo("status", "--json", env=env)))
    assert [(s["symbol"], s["state"], s["reason"]) for s in state["symbols"]] == [("NVDA", "current", None)]
    assert state["failed_runs"] == [] and state["symbols"][0]["last_tune"] is not None

    # --json carries the table's numbers: what `hpo demo --json` prints after the run, from the same marts.
    for name in ("DAGSTER_HOME", "HPO_STORAGE_DIR", "HPO_HYPERPARAMS_DIR"):
        monkeypatch.setenv(name, env[name])
    capsys.readouterr()
    assert print_tuned(argparse.Namespace(json=True), ["NVDA"], [], 0.0) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["failed"] == [] and [s["symbol"] for s in again["symbols"]] == ["NVDA"]
    report = again["symbols"][0]
    assert report["winner"] == best["model"] and report["reason"] == best["metadata"]["reason"]
    for row in report["models"]:
        assert rows[row["model"]][:3] == tuple(round(row[k], 2) for k in ("val_mae_pct", "test_mae_pct",
                                                                            "test_vs_persistence"))
        assert row["winner"] == (row["model"] == best["model"])
        if row["model"] in documents:
            p_value, oos = row["p_value_vs_default"], row["test_windows_out_of_sample"]
            assert re.search(rf"\b{oos}/{row['test_windows']}\s+{p_value:.3f}\s+{row['selection_basis']}\b",
                             next(line for line in out.splitlines() if line.startswith(row["model"] + " ")))
            assert row["config_name"] == documents[row["model"]]["config"]["name"]

    # The guide's loop goes on: score the stored configs, with an env override on top.
    stored = documents["toto"]["config"]
    compared = _hpo("compare", "--symbol", "NVDA", "--forecast-horizon", "64", "--use-stored-hyperparams",
                    env={**env, "KRONOS_TOP_K": "20"})
    out = _ok(compared)
    _fits(out)
    assert "KRONOS_TOP_K=20" in out
    assert f"n={stored['num_samples']} {stored['aggregate']}" in out
    assert "k=20" in out
    stored = documents["toto2"]["config"]
    assert short_label("toto2", {k: v for k, v in stored.items() if k != "name"}).split()[0] in out


def test_show_and_status_on_an_empty_instance(tmp_path):
    """Nothing stored yet: a clear message and exit code 0; --version and plain help."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp")}
    assert _ok(_hpo("--version", env=env)).strip() == f"hpo {version('toto-kronos-hpo')}"
    helped = _ok(_hpo("--help", env=env))
    assert "``" not in helped and "exit codes: 0" in helped
    for command in ("show", "status"):
        assert "``" not in _ok(_hpo(command, "--help", env=env))

    shown = _ok(_hpo("show", "NVDA", env=env))
    assert "nothing stored for NVDA" in shown and "hpo tune --symbol NVDA" in shown
    assert json.loads(_ok(_hpo("show", "NVDA", "--json", env=env)))["symbols"] == [{"symbol": "NVDA", "files": []}]
    assert "no Dagster instance at" in _ok(_hpo("status", env=env))
    assert not (tmp_path / "home").exists()  # status only reads
    empty = json.loads(_ok(_hpo("status", "--json", env=env)))
    assert empty["symbols"] == [] and empty["failed_runs"] == [] and "no Dagster instance" in empty["notes"][0]

    assert json.loads(_ok(_hpo("add-symbols", "NVDA", "--json", env=env))) == {"added": ["NVDA"]}
    status = _ok(_hpo("status", env=env))
    assert re.search(r"^NVDA\s+never\s+0/4\s+untuned\s+no config files yet", status, re.M)
    state = json.loads(_ok(_hpo("status", "--json", env=env)))
    assert [(s["symbol"], s["state"], s["last_tune"]) for s in state["symbols"]] == [("NVDA", "untuned", None)]
    # the automation as a new instance has it: only the marts-and-config-files automation on, and no daemon
    assert {p["name"]: p["on"] for p in state["automation"]["parts"]} == {
        "weekly_retune": False, "price_source_sensor": False, "stale_config_sensor": False,
        "marts_and_config_files": True}
    assert not state["automation"]["daemon_running"]
    assert any(note.startswith("off: weekly_retune, price_source_sensor, stale_config_sensor") for note in state["notes"])
    assert any(note.startswith("no dagster-daemon is running") for note in state["notes"])
    assert re.search(r"^stale_config_sensor\s+sensor\s+off\s+dagster sensor start stale_config_sensor", status, re.M)


def test_bad_symbol_is_rejected_before_anything_runs(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st")}
    for bad in ("../etc", "A;DROP TABLE x"):
        done = _hpo("add-symbols", bad, env=env)
        assert done.returncode == 2 and "invalid symbol" in done.stderr
    assert not (tmp_path / "st").exists() and not (tmp_path / "home").exists()  # nothing created


def test_tune_with_no_trials_stored_says_there_is_nothing_to_build(tmp_path):
    """Every symbol fails its prices on an empty store: a clear end instead of dbt's missing metrics.duckdb."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp")}
    done = _hpo("tune", "--stocks", "ZZZA", "ZZZB", env=env)  # not in the embedded data set
    assert done.returncode == 1 and done.stdout == ""
    assert "ZZZA: prices + sweeps FAILED" in done.stderr and "ZZZB: prices + sweeps FAILED" in done.stderr
    assert "nothing to build: no trials are stored" in done.stderr
    assert "dbt build" not in done.stderr and "metrics.duckdb" not in done.stderr
    assert not (tmp_path / "st" / "metrics.duckdb").exists() and not (tmp_path / "hp").exists()


def _model_env(tmp_path, random_checkpoints, **extra):
    return {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
            "HPO_HYPERPARAMS_DIR": str(tmp_path / "hp"), "HPO_TOTO_SOURCE": str(random_checkpoints["toto"]),
            "HPO_KRONOS_SOURCE": str(random_checkpoints["kronos"]),
            "HPO_KRONOS_TOKENIZER_SOURCE": str(random_checkpoints["kronos_tokenizer"]),
            "HPO_TOTO2_CHECKPOINTS": str(random_checkpoints["toto2"]), **extra}


def test_compare_honours_and_echoes_env_overrides(tmp_path, random_checkpoints):
    """--json: the full config names, the overrides echoed, the sweeps' progress on stderr only."""
    env = _model_env(tmp_path, random_checkpoints, TOTO_NUM_SAMPLES="512", TOTO_AGGREGATE="trimmed_mean_10",
                     KRONOS_TEMPERATURE="0.5", KRONOS_SAMPLE_COUNT="4", KRONOS_MAX_CONTEXT="128",
                     TOTO2_CONTEXT_LENGTH="32", TOTO2_VARIATES="ohlc", TOTO2_AGGREGATE="quantile_0.45")
    done = _hpo("compare", "--symbol", "NVDA", "--forecast-horizon", "16", "--json", env=env)
    result = json.loads(_ok(done))  # nothing but the document on stdout
    assert result["failed"] == [] and "scored" in done.stderr
    (symbol,) = result["symbols"]
    assert "TOTO_NUM_SAMPLES=512" in symbol["overrides"] and "KRONOS_TEMPERATURE=0.5" in symbol["overrides"]
    assert "TOTO2_VARIATES=ohlc" in symbol["overrides"]
    configs = {row["model"]: row["config"] for row in symbol["rows"]}
    assert configs["toto"] == "toto[aggregate=trimmed_mean_10,num_samples=512]"
    assert all(k in configs["kronos"] for k in ("max_context=128", "sample_count=4", "temperature=0.5"))
    assert all(k in configs["toto2"] for k in ("context_length=32", "variates=ohlc", "aggregate=quantile_0.45"))
    persistence = next(row for row in symbol["rows"] if row["model"] == "persistence")
    assert persistence["test_vs_persistence"] == 1.0
    assert {row["label"] for row in symbol["rows"]} >= {"n=512 trimmed_mean_10", "persistence"}
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
