"""Parallel partitions: five symbols materialised at once in forked processes, one with a gappy history.

The good partitions land; the gappy one fails alone, with the bar named, and stores nothing.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from pathlib import Path

import numpy as np
import pytest
from dagster import DagsterInstance, DagsterRunStatus, materialize

from forecast_core.store import Storage
from forecast_core.synthetic import make_prices
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.sweeps import BASELINE_TRIALS, baseline_sweep
from tests.support import TINY_WINDOWS, make_resources, step_failure_message

pytestmark = pytest.mark.slow


def _materialize_partition(symbol: str, home: str, storage_dir: str, csv_dir: str, results) -> None:
    """One partition in its own process (forked from a server that preloaded the project)."""
    try:
        os.environ["DAGSTER_HOME"] = home
        result = materialize([price_history, baseline_sweep], partition_key=symbol, instance=DagsterInstance.get(),
                             resources=make_resources(Path(storage_dir), Path(csv_dir)), raise_on_error=False)
        results.put((symbol, os.getpid(), result.success, "" if result.success else step_failure_message(result)))
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
    context.set_forkserver_preload(["tests.assets.faults.test_parallel_partitions"])
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
    assert len(rows) == len(good) * len(BASELINE_TRIALS) * TINY_WINDOWS
    assert not rows.duplicated(["symbol", "config_hash", "origin_index"]).any()
    assert not store.prices_path("GAPPY").exists()
    assert not (store.trials_dir / "sweep=baseline" / "symbol=GAPPY").exists()
