"""Faults and bad inputs on real parts: kill -9 mid-sweep, damaged files, parallel partitions, odd prices.

Real Parquet and DuckDB files, a real Dagster instance in a temp DAGSTER_HOME, real subprocesses
(`dagster asset materialize` killed with SIGKILL; partitions materialised in parallel processes).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, DagsterRunStatus, materialize

from forecast_core.backtest import draw, score_trials
from forecast_core.configs import ConfigFileError, config_path, read_config, write_config
from forecast_core.data import quality_checks
from forecast_core.forecasters import BASELINES, BATCH_RTOL
from forecast_core.store import Storage, StoreError
from forecast_core.windows import WindowSpec, build_windows
from hpo_assets.instance import reclaim_dead_runs, register_symbols
from hpo_assets.dbt_marts import dbt_metrics, metrics_assets
from hpo_assets.prices import price_history
from hpo_assets.selected_configs import selected_configs
from hpo_assets.sweeps import BASELINE_TRIALS, baseline_sweep, kronos_sweep, toto_sweep
from tests.support import REPO, TINY_BACKTEST
from tests.support import make_resources, materialize_prices
from forecast_core.synthetic import make_prices

pytestmark = pytest.mark.slow
DAGSTER = str(Path(sys.executable).parent / "dagster")
SPEC = WindowSpec(**TINY_BACKTEST)
WINDOWS = SPEC.n_val + SPEC.n_test
# Small budgets on the bundled tiny checkpoints: three Kronos draws (one per (max_context, clip)),
# so a kill after the first draw's trials land leaves work undone.
KRONOS_SMALL = {"presets": ["nvda_guide", "balanced"], "sample_counts": [2], "aggregations": ["mean", "median"],
                "search_budget": 2, "search_sample_count": 2, "keep_fraction": 0.5, "max_sample_count": 2}
TOTO_SMALL = {"sample_counts": [16], "aggregations": ["mean", "median"]}


def _failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)


def _meta(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def _kill_group_after_first_file(proc: subprocess.Popen, folder: Path, log: Path, timeout: float = 300.0) -> list[str]:
    """SIGKILL the process group as soon as ``folder`` holds a trial file; the files present then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before it could be killed:\n"
                                 f"{log.read_text()[-3000:]}")
        if folder.exists() and any(folder.glob("*.parquet")):
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its forkserver and the step process
            proc.wait()
            return sorted(p.name for p in folder.glob("*.parquet"))
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(f"no trial file in {folder} after {timeout}s")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One symbol tuned end to end, its Kronos sweep killed with SIGKILL mid-way and resumed.

    Also an uninterrupted Kronos run (same data, windows, config) in another storage root, to
    compare with. Returns the paths, the instance, the resources and what was seen on the way.
    """
    root = tmp_path_factory.mktemp("faults")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    csv = root / "csv"
    csv.mkdir()
    make_prices(300, seed=1).to_csv(csv / "AAA.csv", index=False)
    store_dir, reference_dir = root / "killed", root / "reference"
    seen: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        instance = DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("accelerator", 1)  # the killed run holds the only slot
    register_symbols(instance, ["AAA"])
    resources = make_resources(store_dir, csv)
    assert materialize([price_history, baseline_sweep, toto_sweep], partition_key="AAA", instance=instance,
                       resources=resources, run_config={"ops": {"toto_sweep": {"config": TOTO_SMALL}}}).success

    run_config = root / "run.json"
    run_config.write_text(json.dumps({"resources": {"backtest": {"config": TINY_BACKTEST}},
                                      "ops": {"kronos_sweep": {"config": KRONOS_SMALL}}}))
    env = {**os.environ, "HPO_STORAGE_DIR": str(store_dir), "DAGSTER_HOME": str(home)}
    for name in ("HPO_KRONOS_SOURCE", "HPO_KRONOS_TOKENIZER_SOURCE"):
        env.pop(name, None)  # the bundled tiny checkpoints, as in-process
    with open(root / "killed_run.log", "w") as log:
        proc = subprocess.Popen(
            [DAGSTER, "asset", "materialize", "-m", "hpo_assets.definitions", "-d", str(REPO),
             "--select", "kronos_sweep", "--partition", "AAA", "-c", str(run_config)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        folder = store_dir / "trials" / "sweep=kronos" / "symbol=AAA"
        with ThreadPoolExecutor(1) as pool:
            killed = pool.submit(_kill_group_after_first_file, proc, folder, root / "killed_run.log")
            # Meanwhile, the uninterrupted run to compare with (own storage, own instance).
            reference_instance = DagsterInstance.ephemeral()
            register_symbols(reference_instance, ["AAA"])
            reference_resources = make_resources(reference_dir, csv)
            Storage(reference_dir).write_prices("AAA", Storage(store_dir).read_prices("AAA"))
            reference = materialize([kronos_sweep], partition_key="AAA", instance=reference_instance,
                                    resources=reference_resources,
                                    run_config={"ops": {"kronos_sweep": {"config": KRONOS_SMALL}}})
            assert reference.success
            seen["at_kill"] = killed.result()
    seen["returncode"] = proc.returncode
    seen["log"] = (root / "killed_run.log").read_text()[-3000:]
    time.sleep(1.0)
    seen["after_kill"] = sorted(p.name for p in folder.glob("*.parquet"))  # nothing still writing
    seen["killed_runs"] = [r.dagster_run.status for r in instance.get_run_records()
                           if r.dagster_run.tags.get("dagster/partition") == "AAA"
                           and "kronos_sweep" in str(r.dagster_run.asset_selection)]
    seen["every_file"] = sorted(p.name for p in folder.iterdir())
    seen["reference_total"] = _meta(reference, "kronos_sweep")["trials_computed"]

    # A write killed mid-way leaves only a hidden temp file (the kill above may have left one too):
    # readers never see them, and the rerun clears those whose writer is gone.
    half = (folder / seen["at_kill"][0]).read_bytes()[:700]
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    (folder / f".{seen['at_kill'][0]}.w{gone.pid}@{socket.gethostname()}.k1ll3d_a.tmp").write_bytes(half)
    elsewhere = folder / f".{seen['at_kill'][0]}.w1@other-host.k1ll3d_b.tmp"
    elsewhere.write_bytes(half)
    os.utime(elsewhere, (time.time() - 7200, time.time() - 7200))  # another host's, hours old
    seen["rows_with_temp_files"] = len(Storage(store_dir).read_trials("kronos"))
    seen["reclaimed"] = reclaim_dead_runs(instance)  # else the rerun waits for the dead run's slot forever

    resumed = materialize([kronos_sweep], partition_key="AAA", instance=instance, resources=resources,
                          run_config={"ops": {"kronos_sweep": {"config": KRONOS_SMALL}}})
    assert resumed.success
    seen["resumed"] = _meta(resumed, "kronos_sweep")
    seen["temp_files_left"] = sorted(p.name for p in folder.glob(".*.tmp"))
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    return {"root": root, "store": store_dir, "reference": reference_dir, "instance": instance,
            "resources": resources, "csv": csv, "seen": seen}


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
    assert seen["rows_with_temp_files"] == len(seen["at_kill"]) * WINDOWS  # readers never see temp files

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
        assert len(got) == WINDOWS and got["trial_key"].nunique() == 1
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
    assert len(keys) == files * WINDOWS


def _reader(path: Path, stop: threading.Event, missing: list) -> None:
    while not stop.is_set():
        if not path.exists():
            missing.append(time.monotonic())


def test_hand_edited_and_corrupt_configs_are_named_and_set_aside(tuned):
    instance, resources = tuned["instance"], tuned["resources"]
    assert materialize([selected_configs], partition_key="AAA", instance=instance, resources=resources).success
    root = tuned["store"] / "hyperparams"
    paths = {kind: config_path(root, kind, "AAA") for kind in ("toto", "kronos", "best")}
    for kind, path in paths.items():
        read_config(path, kind)

    toto = json.loads(paths["toto"].read_text())
    toto["config"]["num_samples"] = -3  # hand-edited
    paths["toto"].write_text(json.dumps(toto))
    paths["kronos"].write_text(paths["kronos"].read_text()[:200])  # truncated
    best = json.loads(paths["best"].read_text())
    best["symbol"] = "BBB"  # copied over from another symbol
    paths["best"].write_text(json.dumps(best))
    expected = {
        "toto": ("'config.num_samples'", "-3 is less than the minimum of 1"),
        "kronos": ("not valid JSON", "line"),
        "best": ("'symbol'", "'BBB'"),
    }
    for kind, phrases in expected.items():
        with pytest.raises(ConfigFileError) as info:
            read_config(paths[kind], kind)
        message = str(info.value)
        assert str(paths[kind]) in message and all(p in message for p in phrases), message
        assert "re-materialise selected_configs" in message  # and how to fix it
    with pytest.raises(ConfigFileError, match=r"'config.aggregate'.*'meen'"):
        toto["config"].update(num_samples=16, aggregate="meen")  # passes the schema, not the parser
        paths["toto"].write_text(json.dumps(toto))
        read_config(paths["toto"], "toto")
    old = {kind: path.read_bytes() for kind, path in paths.items()}

    # The asset writes valid files and keeps each invalid one aside, byte for byte.
    result = materialize([selected_configs], partition_key="AAA", instance=instance, resources=resources)
    assert result.success
    aside = sorted(_meta(result, "selected_configs")["invalid_files_set_aside"])
    assert len(aside) == 3
    for kind, path in paths.items():
        read_config(path, kind)
        kept = [Path(a) for a in aside
                if Path(a).parent == path.parent and Path(a).name.startswith("AAA.json.invalid-")]
        assert len(kept) == 1 and kept[0].read_bytes() == old[kind]

    # Replacing an invalid file is atomic: a reader polling the path never finds it missing.
    document = read_config(paths["toto"], "toto")
    stop, missing = threading.Event(), []
    reader = threading.Thread(target=_reader, args=(paths["toto"], stop, missing))
    reader.start()
    try:
        for _ in range(60):
            paths["toto"].write_text("{broken")
            _, kept = write_config(root, "toto", "AAA", document)
            assert kept is not None
    finally:
        stop.set()
        reader.join()
    assert missing == []
    assert len(list(paths["toto"].parent.glob("AAA.json.invalid-*"))) == 61


def test_corrupt_trial_parquet_is_named_and_recomputed(tmp_path, csv_dir):
    instance = DagsterInstance.ephemeral()
    register_symbols(instance, ["AAA"])
    resources = make_resources(tmp_path / "st", csv_dir)
    assert materialize([price_history, baseline_sweep], partition_key="AAA", instance=instance,
                       resources=resources).success
    store = Storage(tmp_path / "st")
    victim = sorted((store.trials_dir / "sweep=baseline" / "symbol=AAA").glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:300])  # e.g. a copy cut short by a full disk

    with pytest.raises(StoreError) as info:
        store.read_trials()
    message = str(info.value)
    assert str(victim) in message and "re-materialise baseline_sweep for partition AAA" in message

    built = materialize([dbt_metrics], instance=instance, resources=resources, raise_on_error=False)
    assert not built.success
    message = _failure_message(built)
    assert victim.name in message and "re-materialise baseline_sweep" in message
    assert "Traceback" not in message and not store.duckdb_path.exists()  # stopped before dbt ran

    again = materialize([baseline_sweep], partition_key="AAA", instance=instance, resources=resources)
    assert again.success
    meta = _meta(again, "baseline_sweep")
    assert (meta["trials_computed"], meta["trials_skipped"]) == (1, len(BASELINE_TRIALS) - 1)  # only the damaged trial
    assert pq.read_table(victim).num_rows == WINDOWS
    rows = store.read_trials()
    assert len(rows) == len(BASELINE_TRIALS) * WINDOWS and not rows.duplicated(["config_hash", "origin_index"]).any()


def test_corrupt_metrics_duckdb_is_named_with_the_fix(tmp_path, csv_dir, tuned):
    instance = DagsterInstance.ephemeral()
    register_symbols(instance, ["AAA"])
    store_dir = tmp_path / "st"
    resources = make_resources(store_dir, csv_dir)
    assert materialize_prices(instance, "AAA", resources).success
    db = Storage(store_dir).duckdb_path

    db.write_bytes(b"not a database " * 4096)
    built = materialize([dbt_metrics], instance=instance, resources=resources, raise_on_error=False)
    assert not built.success
    message = _failure_message(built)
    assert str(db) in message and "damaged metrics database" in message and "delete it" in message
    assert "Traceback" not in message

    # A real marts file with damaged blocks: readers say the same instead of a DuckDB checksum trace.
    good = (tuned["store"] / "metrics.duckdb").read_bytes()
    damaged = bytearray(good)
    damaged[12288:] = bytes(len(good) - 12288)  # everything after DuckDB's headers zeroed
    db.write_bytes(bytes(damaged))
    with pytest.raises(StoreError, match="damaged metrics database"):
        Storage(store_dir).check_metrics_db()
    selected = materialize([selected_configs], partition_key="AAA", instance=instance, resources=resources,
                           raise_on_error=False)
    assert not selected.success
    message = _failure_message(selected)
    assert "AAA" in message and str(db) in message and "delete it" in message
    assert not (store_dir / "hyperparams").exists()  # nothing written from unreadable marts


def _materialize_partition(symbol: str, home: str, storage_dir: str, csv_dir: str, results) -> None:
    """One partition in its own process (forked from a server that preloaded the project)."""
    try:
        os.environ["DAGSTER_HOME"] = home
        result = materialize([price_history, baseline_sweep], partition_key=symbol, instance=DagsterInstance.get(),
                             resources=make_resources(Path(storage_dir), Path(csv_dir)), raise_on_error=False)
        results.put((symbol, os.getpid(), result.success, "" if result.success else _failure_message(result)))
    except BaseException:  # report instead of leaving the parent waiting
        results.put((symbol, os.getpid(), False, traceback.format_exc()))


def test_parallel_partitions_land_while_a_gappy_history_fails_alone(tmp_path, csv_dir, dagster_home):
    good = ["AAA", "BBB", "CCC", "DDD"]
    for seed, symbol in enumerate(good[2:], start=3):
        make_prices(300, seed=seed).to_csv(csv_dir / f"{symbol}.csv", index=False)
    gappy = make_prices(300, seed=9)
    gappy.loc[[120, 121], "close"] = np.nan  # refused under the default missing policy, reject
    gappy.to_csv(csv_dir / "GAPPY.csv", index=False)
    instance = DagsterInstance.get()
    register_symbols(instance, [*good, "GAPPY"])
    storage_dir = tmp_path / "st"

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.assets.test_faults"])
    results = context.Queue()
    procs = [context.Process(target=_materialize_partition,
                             args=(s, str(dagster_home), str(storage_dir), str(csv_dir), results))
             for s in [*good, "GAPPY"]]
    for proc in procs:
        proc.start()
    outcomes = {}
    for _ in procs:
        symbol, pid, success, message = results.get(timeout=300)
        outcomes[symbol] = (pid, success, message)
    for proc in procs:
        proc.join(timeout=60)
    assert len({pid for pid, _, _ in outcomes.values()}) == 5  # five processes
    assert {s for s, (_, ok, _) in outcomes.items() if ok} == set(good), outcomes
    message = outcomes["GAPPY"][2]
    day = gappy.loc[120, "timestamp"].date()
    assert f"GAPPY: price data rejected, nothing stored: 2 bars with missing (NaN or infinite) OHLC, first on {day}" \
        in message

    statuses = {r.dagster_run.tags["dagster/partition"]: r.dagster_run.status for r in instance.get_run_records()}
    assert statuses == {**{s: DagsterRunStatus.SUCCESS for s in good}, "GAPPY": DagsterRunStatus.FAILURE}
    store = Storage(storage_dir)
    rows = store.read_trials("baseline")
    assert sorted(rows["symbol"].unique()) == good
    assert len(rows) == len(good) * len(BASELINE_TRIALS) * WINDOWS
    assert not rows.duplicated(["symbol", "config_hash", "origin_index"]).any()
    assert not store.prices_path("GAPPY").exists()
    assert not (store.trials_dir / "sweep=baseline" / "symbol=GAPPY").exists()


# -- odd prices ---------------------------------------------------------------------------------------------
def _odd_prices() -> pd.DataFrame:
    """144 bars (exactly the windows' need): an untraded flat first context, zero-volume bars and an
    unadjusted 4:1 split inside a validation window."""
    frame = make_prices(144, seed=3)
    flat = frame.index < 64  # the first window's whole context: no trades, price unchanged
    frame.loc[flat, ["open", "high", "low", "close"]] = frame.loc[63, "close"]
    frame.loc[flat | (frame.index % 7 == 0), ["volume", "amount"]] = 0.0
    frame.loc[90:, ["open", "high", "low", "close"]] /= 4.0
    return frame


def _scaled(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    out = frame.copy()
    out[["open", "high", "low", "close", "amount"]] *= factor
    return out


def _baseline_scores(frame: pd.DataFrame) -> pd.DataFrame:
    windows = build_windows(frame, SPEC, "ODD")
    return pd.concat([score_trials(windows, draw(BASELINES[t.model], windows, t.num_samples), [t])
                      for t in BASELINE_TRIALS.values()], ignore_index=True)


def test_tiny_huge_split_and_zero_volume_prices_give_sane_scale_free_metrics():
    odd = _odd_prices()
    base = _baseline_scores(odd)
    metrics = ["mae_pct", "mase", "crps_pct", "coverage_10_90"]
    for factor in (1e-4, 1e5):
        frame = _scaled(odd, factor)
        checks = {c.name: c for c in quality_checks(frame, "ODD")}
        assert all(c.passed for c in checks.values() if c.blocking), checks
        assert not checks["no_suspected_splits"].passed and not checks["no_suspected_splits"].blocking
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            scores = _baseline_scores(frame)
        assert np.isfinite(scores[[*metrics, "mae"]].to_numpy()).all()
        np.testing.assert_allclose(scores[metrics].to_numpy(), base[metrics].to_numpy(), rtol=1e-9)
        np.testing.assert_allclose(scores["mae"], base["mae"] * factor, rtol=1e-9)
    # The flat context has no one-step change to scale by: MASE stays finite and the same at any price.
    first = base[base["origin_index"] == base["origin_index"].min()]
    assert (first["mase"] > 0).all() and np.isfinite(first["mase"]).all()


@pytest.mark.parametrize("factor", [1e-4, 1e5])
def test_price_asset_accepts_tiny_and_huge_prices_with_zero_volume(tmp_path, csv_dir, factor):
    _scaled(_odd_prices(), factor).to_csv(csv_dir / "ODD.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "ODD", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values() if c.severity == AssetCheckSeverity.ERROR)
    assert not checks["no_suspected_splits"].passed  # the unadjusted split warns
    stored = Storage(tmp_path / "st").read_prices("ODD")
    np.testing.assert_allclose(stored["close"], _scaled(_odd_prices(), factor)["close"], rtol=1e-12)


def test_missing_volume_blocks_the_partition_and_names_the_bar(tmp_path, csv_dir):
    """Kronos reads volume and amount: a NaN there is refused, not silently read as 'no trades'."""
    resources = make_resources(tmp_path / "st", csv_dir)
    instance = DagsterInstance.ephemeral()
    assert materialize_prices(instance, "AAA", resources).success
    before = (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes()
    frame = make_prices(300, seed=1).drop(columns=["amount"])
    frame.loc[[40, 41, 200], "volume"] = np.nan
    frame.to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(instance, "AAA", resources)
    assert not result.success
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["no_missing_prices"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["missing_volume_bars"].value == 3
    message = _failure_message(result)
    day = frame.loc[40, "timestamp"].date()
    assert f"AAA: price data rejected, nothing stored: 3 bars with missing (NaN or infinite) volume/amount, " \
           f"first on {day}" in message
    assert "fill them in the source (volume 0 where nothing traded), or set the price source's missing policy" in message
    assert (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes() == before

    # A source without any volume column is documented to mean volume 0 (and amount 0): accepted.
    frame.drop(columns=["volume"]).to_csv(csv_dir / "AAA.csv", index=False)
    assert materialize_prices(instance, "AAA", resources).success
    stored = Storage(tmp_path / "st").read_prices("AAA")
    assert (stored["volume"] == 0).all() and (stored["amount"] == 0).all()


def test_written_files_are_readable_by_other_users(tmp_path, csv_dir):
    """Atomic writes go through a private temp file; the final file gets the usual 0o666 - umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir)).success
    prices = Storage(tmp_path / "st").prices_path("AAA")
    assert prices.stat().st_mode & 0o777 == 0o666 & ~umask


def test_models_forecast_sub_unit_prices_like_dollar_prices():
    """Both scalers floor the scale at an absolute value; 1e-4 prices must not turn into noise."""
    from forecast_core.aggregate import aggregate
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, load_kronos
    from forecast_core.metrics import mae_pct
    from forecast_core.toto import TotoForecaster, load_toto

    toto = TotoForecaster(load_toto())
    kronos = KronosForecaster(*load_kronos(), KronosSamplingConfig(sample_count=8))
    frame = make_prices(SPEC.min_bars, seed=11)
    for forecaster in (toto, kronos):
        scores = {}
        for factor in (1.0, 1e-4):
            windows = build_windows(_scaled(frame, factor), SPEC, "ODD")
            paths = forecaster.sample_paths(windows.batch, 8)
            scores[factor] = mae_pct(aggregate(paths, "median", sample_axis=1), windows.targets).mean()
        assert np.isfinite(list(scores.values())).all()
        assert abs(scores[1e-4] - scores[1.0]) < 0.5 * scores[1.0], (forecaster.name, scores)


# -- kill -9 mid forward scoring ------------------------------------------------------------------------------
FORWARD_TUNED, FORWARD_WINDOWS = 300, 32  # config files saw 300 bars; 32 forward windows of 16 bars are pending


def _forward_config(model: str, knobs: dict, data_end: str) -> dict:
    """A config file as selected_configs writes it (valid against the schema), for a stored history."""
    scores = {"mae_pct": 5.0, "windows": 2}
    return {"symbol": "AAA", "model": model, "config": {"name": f"{model}-picked", **knobs},
            "validation": scores, "test": scores,
            "windows": {"n_val": SPEC.n_val, "n_test": SPEC.n_test, "forecast_horizon": SPEC.horizon,
                        "stride": SPEC.step, "context": SPEC.context},
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
    prices = make_prices(FORWARD_TUNED + FORWARD_WINDOWS * SPEC.horizon + SPEC.horizon - 1, seed=5)
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
            [DAGSTER, "asset", "materialize", "-m", "hpo_assets.definitions", "-d", str(REPO),
             "--select", "forward_scores", "--partition", "AAA", "-c", str(run_config)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        at_kill = _kill_group_after_first_file(proc, folder, log)
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
    assert _meta(rerun, "forward_scores")["windows_added"] == pending  # only what the kill left undone

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
    assert _meta(again, "forward_scores")["windows_added"] == 0
    assert ForwardStore(store_dir).read("AAA").equals(rows)
