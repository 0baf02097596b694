"""Damaged files: hand-edited, truncated and misplaced config files, a cut-short trial Parquet, a corrupt DuckDB.

Each is named in the error with the fix; config files are set aside byte for byte and rewritten atomically.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from forecast_core.configs import ConfigFileError, config_path, read_config, write_config
from forecast_core.store import Storage, StoreError
from hpo_assets.dbt_marts import dbt_metrics
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.selected_configs import selected_configs
from hpo_assets.sweeps import BASELINE_TRIALS, baseline_sweep
from tests.support import TINY_WINDOWS, make_resources, materialization_metadata, materialize_prices
from tests.support import step_failure_message

pytestmark = pytest.mark.slow


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
        assert "re-run the config selection for this symbol" in message  # and how to fix it
    with pytest.raises(ConfigFileError, match=r"'config.aggregate'.*'meen'"):
        toto["config"].update(num_samples=16, aggregate="meen")  # passes the schema, not the parser
        paths["toto"].write_text(json.dumps(toto))
        read_config(paths["toto"], "toto")
    old = {kind: path.read_bytes() for kind, path in paths.items()}

    # The asset writes valid files and keeps each invalid one aside, byte for byte.
    result = materialize([selected_configs], partition_key="AAA", instance=instance, resources=resources)
    assert result.success
    aside = sorted(materialization_metadata(result, "selected_configs")["invalid_files_set_aside"])
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
    assert str(victim) in message and "re-run the baseline sweep for AAA, which recomputes" in message

    built = materialize([dbt_metrics], instance=instance, resources=resources, raise_on_error=False)
    assert not built.success
    message = step_failure_message(built)
    assert victim.name in message and "materialise baseline_sweep for partition AAA" in message
    assert "Traceback" not in message and not store.duckdb_path.exists()  # stopped before dbt ran

    again = materialize([baseline_sweep], partition_key="AAA", instance=instance, resources=resources)
    assert again.success
    meta = materialization_metadata(again, "baseline_sweep")
    assert (meta["trials_computed"], meta["trials_skipped"]) == (1, len(BASELINE_TRIALS) - 1)  # only the damaged trial
    assert pq.read_table(victim).num_rows == TINY_WINDOWS
    rows = store.read_trials()
    assert len(rows) == len(BASELINE_TRIALS) * TINY_WINDOWS
    assert not rows.duplicated(["config_hash", "origin_index"]).any()


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
    message = step_failure_message(built)
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
    message = step_failure_message(selected)
    assert "AAA" in message and str(db) in message and "delete it" in message
    assert not (store_dir / "hyperparams").exists()  # nothing written from unreadable marts
