"""The symbol the kill -9 and damaged-file tests share: tuned end to end, its Kronos sweep killed mid-way.

Package-scoped: built once (a real SIGKILL mid-sweep takes a while) and shared by both files that read it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dagster import DagsterInstance, materialize

from forecast_core.store import Storage
from forecast_core.synthetic import make_prices
from hpo_assets.dbt_marts import metrics_assets
from hpo_assets.instance import reclaim_dead_runs, register_symbols
from hpo_assets.prices import price_history
from hpo_assets.sweeps import baseline_sweep, kronos_sweep, toto_sweep
from tests.support import DAGSTER_CLI, REPO, TINY_BACKTEST, kill_group_after_first_file, make_resources
from tests.support import materialization_metadata

# Small budgets on the bundled tiny checkpoints: three Kronos draws (one per (max_context, clip)),
# so a kill after the first draw's trials land leaves work undone.
KRONOS_SMALL = {"presets": ["nvda_guide", "balanced"], "sample_counts": [2], "aggregations": ["mean", "median"],
                "search_budget": 2, "search_sample_count": 2, "keep_fraction": 0.5, "max_sample_count": 2}
TOTO_SMALL = {"sample_counts": [16], "aggregations": ["mean", "median"]}


@pytest.fixture(scope="package")
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
            [DAGSTER_CLI, "asset", "materialize", "-m", "hpo_assets.definitions", "-d", str(REPO),
             "--select", "kronos_sweep", "--partition", "AAA", "-c", str(run_config)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        folder = store_dir / "trials" / "sweep=kronos" / "symbol=AAA"
        with ThreadPoolExecutor(1) as pool:
            killed = pool.submit(kill_group_after_first_file, proc, folder, root / "killed_run.log")
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
    seen["reference_total"] = materialization_metadata(reference, "kronos_sweep")["trials_computed"]

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
    seen["resumed"] = materialization_metadata(resumed, "kronos_sweep")
    seen["temp_files_left"] = sorted(p.name for p in folder.glob(".*.tmp"))
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    return {"root": root, "store": store_dir, "reference": reference_dir, "instance": instance,
            "resources": resources, "csv": csv, "seen": seen}
