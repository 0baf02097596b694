"""The tuning loop on a real temp instance: sweeps -> dbt -> selected configs, resumable and honest."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from forecast_core.configs import read_config
from forecast_core.files import atomic_write_parquet
from hpo_assets.dbt_marts import dbt_metrics, dbt_selection_marts, metrics_assets
from hpo_assets.dbt_project import DBT_EXECUTABLE, dbt_project
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.selected_configs import selected_configs
from hpo_assets.sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep
from resources.runtimes import KronosRuntime
from tests.support import SMALL_SWEEPS, make_resources

pytestmark = pytest.mark.slow
SYMBOLS = ["AAA", "BBB"]


def _computed(result, asset: str) -> int:
    return result.asset_materializations_for_node(asset)[0].metadata["trials_computed"].value


def _column_docs_mismatch(db) -> dict[str, tuple[list[str], list[str]]]:
    """Per dbt model: (built columns schema.yml does not describe, described columns not built); the UI's
    Columns tab shows these descriptions."""
    import duckdb

    mismatch = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for assets_def in (dbt_metrics, dbt_selection_marts):
            for key, spec in assets_def.specs_by_key.items():
                schema = spec.metadata.get("dagster/column_schema")  # dagster-dbt's, from schema.yml
                described = {c.name for c in schema.columns if c.description} if schema else set()
                built = {row[0] for row in con.execute(f"describe {key.path[-1]}").fetchall()}
                if built != described:
                    mismatch[key.to_user_string()] = (sorted(built - described), sorted(described - built))
    return mismatch


def _assert_selection_numbers(meta, best: dict, documents: dict) -> None:
    """selected_configs' numeric metadata (the Plots tab's series) and table agree with the files written;
    both are the files' values rounded to 5 significant digits (1e-4 relative)."""
    from dagster import FloatMetadataValue, IntMetadataValue

    rows = {r.data["model"]: r.data for r in meta["selected"].records}
    assert set(rows) == set(documents)
    for model, document in documents.items():
        persistence = document["metadata"]["baselines_on_test"]["persistence_mae_pct"]
        expected = {"val_mae_pct": document["validation"]["mae_pct"], "test_mae_pct": document["test"]["mae_pct"],
                    "test_ratio_to_persistence": document["test"]["mae_pct"] / persistence}
        for name, value in expected.items():
            assert isinstance(meta[f"{model}_{name}"], FloatMetadataValue), (model, name)
            assert meta[f"{model}_{name}"].value == pytest.approx(value, rel=1e-4) == rows[model][name], (model, name)
        assert meta[f"{model}_val_windows"].value == document["validation"]["windows"] == rows[model]["val_windows"]
    reasons = meta["selection_reasons"].value  # the long names and reasons, below the table
    assert all(f"**{m}** `{d['config']['name']}`: {d['metadata']['selection']['reason']}" in reasons
               for m, d in documents.items())
    assert isinstance(meta["winner_is_model"], IntMetadataValue)
    assert meta["winner_is_model"].value == (0 if best["metadata"]["baseline"] else 1)


def _selected(db) -> dict:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("select symbol, model, config_hash, test_mae_pct from best_configs").fetchall()
    return {(s, m): (h, t) for s, m, h, t in rows}


def _dbt_unit_test_results(target: Path, env: dict[str, str]) -> dict[str, str]:
    """`dbt test --select test_type:unit` against the built database (``env``: where it is, as the dbt
    assets set it): the SQL selection rules on their given rows (dbt_metrics/models/*/schema.yml), which
    the pipeline's dbt build leaves out. Per unit test, its status."""
    done = subprocess.run([DBT_EXECUTABLE, "test", "--select", "test_type:unit", "--target-path", str(target),
                           "--log-path", str(target)], cwd=dbt_project.project_dir, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {r["unique_id"]: r["status"] for r in results}


def test_tune_select_resume_and_never_read_test(tmp_path, csv_dir, random_checkpoints, dagster_home):
    instance = DagsterInstance.get()
    register_symbols(instance, SYMBOLS)
    resources = make_resources(tmp_path / "st", csv_dir, random_checkpoints)
    # a hand-made cutoff after the data's end for Kronos; Toto's random checkpoint has no known cutoff
    resources["kronos"] = KronosRuntime(source=str(random_checkpoints["kronos"]), device="cpu",
                                        tokenizer_source=str(random_checkpoints["kronos_tokenizer"]),
                                        pretraining_cutoff="2100-01-01")
    sweeps = [price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep]
    for symbol in SYMBOLS:
        first = materialize(sweeps, partition_key=symbol, instance=instance, resources=resources,
                            run_config=SMALL_SWEEPS)
        assert first.success
        # toto: 2 counts x 3 aggregations + default + 3 guide presets; toto2: 2 contexts x 2 decodings x
        # 2 variates, each pass scoring 2 point rules; kronos: default (1 mean, 4 x 2 aggregations), one
        # preset and one TPE promotion, each 4 samples x 2 aggregations (capped)
        assert [_computed(first, a) for a in ("toto_sweep", "toto2_sweep", "kronos_sweep")] == [10, 16, 7]
    retired = tmp_path / "st" / "selection" / "model_choice.parquet"  # winner_tests' name in older versions
    retired.parent.mkdir(parents=True)
    pd.DataFrame({"symbol": ["AAA"], "winning_model": ["toto"]}).to_parquet(retired)
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    assert not retired.exists()  # a stale copy under the old name would read as current
    assert _column_docs_mismatch(tmp_path / "st" / "metrics.duckdb") == {}
    unit_tests = _dbt_unit_test_results(tmp_path / "dbt_unit_tests", resources["storage"].dbt_env())
    defined = json.loads((tmp_path / "dbt_unit_tests" / "manifest.json").read_text())["unit_tests"]
    assert set(unit_tests) == set(defined) and len(unit_tests) >= 5  # every unit test ran
    assert set(unit_tests.values()) == {"pass"}, unit_tests
    selection_meta = {}
    for symbol in SYMBOLS:
        written = materialize([selected_configs], partition_key=symbol, instance=instance, resources=resources)
        assert written.success
        selection_meta[symbol] = written.asset_materializations_for_node("selected_configs")[0].metadata

    root = tmp_path / "st" / "hyperparams"
    for symbol in SYMBOLS:
        best = read_config(root / "best" / f"{symbol}.json", "best")
        for model in ("toto", "toto2", "kronos"):
            document = read_config(root / model / f"{symbol}.json", model)  # validates against the schema
            assert document["symbol"] == symbol and document["windows"]["forecast_horizon"] == 16
            assert document["validation"]["windows"] == 3 and document["test"]["windows"] == 2
            assert document["metadata"]["selection"]["test"]  # names the test run (or why none was)
        toto, toto2, kronos = (read_config(root / m / f"{symbol}.json", m)["metadata"] for m in ("toto", "toto2", "kronos"))
        for random_weights in (toto, toto2):  # unknown cutoffs, and said so
            assert random_weights["pretraining"]["test_windows_out_of_sample"] is None
            assert random_weights["pretraining"]["statement"].startswith("unknown pretraining cutoff for ")
        assert toto2["model_id"] == str(random_checkpoints["toto2"])  # the checkpoint the config chose
        assert kronos["pretraining"]["test_windows_out_of_sample"] == 0
        assert kronos["pretraining"]["statement"].startswith("every test window (2) is inside the pretraining period")
        assert all(set(by_metric) == {"all"} for by_metric in
                   (m for ref in kronos["baselines_on_test"]["selected_vs"].values() for m in ref.values()))
        _assert_selection_numbers(selection_meta[symbol], best, {m: read_config(root / m / f"{symbol}.json", m)
                                                                 for m in ("toto", "toto2", "kronos")})
        if best["model"] in ("persistence", "random_walk"):  # no model beat persistence on validation
            assert best["config_path"] is None and best["metadata"]["baseline"] and best["metadata"]["reason"]
        else:
            assert best["config_path"] == f"hyperparams/{best['model']}/{symbol}.json"

    # Re-materialising skips every stored trial.
    again = materialize(sweeps, partition_key="AAA", instance=instance, resources=resources, run_config=SMALL_SWEEPS)
    assert again.success
    assert [_computed(again, a) for a in ("baseline_sweep", "toto_sweep", "toto2_sweep", "kronos_sweep")] == [0] * 4

    # Perturbing every test metric changes the test report but not a single selection.
    db = tmp_path / "st" / "metrics.duckdb"
    before = _selected(db)
    for path in (tmp_path / "st" / "trials").rglob("*.parquet"):
        rows = pd.read_parquet(path)
        test = rows["split"] == "test"
        rows.loc[test, "mae_pct"] = rows.loc[test, "mae_pct"] * 3.0 + 7.0
        atomic_write_parquet(path, rows)
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    after = _selected(db)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert all(after[k][1] == pytest.approx(before[k][1] * 3.0 + 7.0) for k in before)
    assert instance.get_latest_materialization_event(AssetKey("best_configs")) is not None
