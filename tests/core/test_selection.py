"""The config documents (forecast_core/selection.py) built from small hand-made mart rows.

The marts are DuckDB tables with exactly the columns dbt documents for them (dbt_metrics/models/*/schema.yml),
so a document field read from a column the marts do not have fails here. Every document must be one the
config-file schemas accept, and survive a write and a read unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from forecast_core import code_version
from forecast_core.configs import read_config, validate_document, write_config
from forecast_core.data import InvalidSymbolError, data_version
from forecast_core.forecasters import BASELINES
from forecast_core.selection import BASELINE_WINNERS, SEARCH_METHODS, best_document, default_document, model_documents
from forecast_core.selection_statistics import PROBABILISTIC_REFERENCE, REFERENCE
from forecast_core.sweep.spaces import default_trials
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec, plan_layout
from tests.support import REPO, TINY_BACKTEST

MARTS = ("stg_trials", "best_configs", "test_report", "model_choice", "leaderboard")
MODEL_IDS = {"toto": "Datadog/Toto-Open-Base-1.0", "toto2": "bundled:toto2-tiny", "kronos": "NeoQuasar/Kronos-small"}
RUNTIME_KNOBS = {"toto": {"samples_per_batch": 64}}
DATA_END = pd.Timestamp("2026-01-02")


def _documented_columns() -> dict[str, list[str]]:
    found = {}
    for path in sorted((REPO / "dbt_metrics" / "models").glob("*/schema.yml")):
        for model in yaml.safe_load(path.read_text()).get("models", []):
            found[model["name"]] = [c["name"] for c in model.get("columns", [])]
    return found


def _marts(tables: dict[str, list[dict]]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding ``tables`` (documented columns only; the rest null)."""
    documented = _documented_columns()
    con = duckdb.connect()
    for name in MARTS:
        rows = tables.get(name, [])
        unknown = set().union(*rows) - set(documented[name]) if rows else set()
        assert not unknown, f"{name} has no documented columns {sorted(unknown)}: the fixture drifted from the marts"
        frame = pd.DataFrame(rows, columns=documented[name])
        con.register("frame", frame)
        con.execute(f"create table {name} as select * from frame")
        con.unregister("frame")
    return con


def _metrics(val_mae: float, test_mae: float) -> dict:
    return {"val_mae_pct": val_mae, "test_mae_pct": test_mae, "val_crps_pct": val_mae * 0.7,
            "test_crps_pct": test_mae * 0.7, "val_mase": val_mae / 5, "test_mase": test_mae / 5,
            "val_coverage_10_90": 0.8, "test_coverage_10_90": 0.75, "val_windows": 3, "test_windows": 2}


def _board(model: str, config_hash: str, name: str, knobs: dict, val_mae: float, test_mae: float,
           symbol: str = "AAA") -> dict:
    return {"symbol": symbol, "model": model, "config_hash": config_hash, "config_name": name,
            "config_json": json.dumps(knobs, sort_keys=True), "seconds_per_forecast": 0.01, "data_version": "dv1",
            "data_end": DATA_END, **_metrics(val_mae, test_mae)}


TOTO_KNOBS = {"aggregate": "median", "num_samples": 1024}
TOTO2_KNOBS = {"checkpoint": "Datadog/Toto-2.0-22m", "context_length": 128, "decode_block_size": 0,
               "variates": "ohlc", "aggregate": "quantile_0.45"}
KRONOS_KNOBS = {"temperature": 0.3, "top_p": 0.9, "top_k": 0, "sample_count": 16, "max_context": 64, "clip": 2.5,
                "aggregate": "mean"}


def _selected(model: str, knobs: dict, **decision) -> dict:
    return {"symbol": "AAA", "model": model, "config_hash": f"{model}-sel", "config_name": f"{model}[sel]",
            "config_json": json.dumps(knobs, sort_keys=True), "seconds_per_forecast": 0.5, "tunable": True,
            "data_version": "dv1", "data_end": DATA_END, "default_config_hash": f"{model}-default",
            "selection_basis": "own", "selection_test": "StepM 5%, p=0.010", "p_value_vs_default": 0.01,
            "significant_vs_default": True, "configs_scored": 36, "configs_tested": 36, "confidence_set_size": 2,
            "confidence_set": json.dumps([f"{model}[sel]", f"{model}[other]"]), "selection_reason": "best, significant",
            "pooled_outcome": "no pooled challenger: 1 tunable symbol(s), pooling needs 2",
            "val_diff_vs_default": -0.4, "model_id": MODEL_IDS[model], "cutoff_kind": "training data end",
            "seen_through": pd.Timestamp("2024-05-01"), "test_windows_out_of_sample": 2,
            "pretraining_statement": "every test window is after the cutoff", **_metrics(4.0, 4.5), **decision}


def _trial_row(model: str, symbol: str = "AAA", **fields) -> dict:
    return {"symbol": symbol, "model": model, "config_hash": f"{model}-sel", "model_revision": f"{model}@rev",
            "horizon": 16, "n_val": 3, "n_test": 2, "stride": 16, "context": 64, "history_bars": 300,
            "tunable": True, "layout_reason": "requested layout", "effective_val_windows": 3.0,
            "effective_test_windows": 2.0, **fields}


def _report(model: str, reference: str, metric: str, subset: str, mean_diff: float, ci: tuple) -> dict:
    return {"symbol": "AAA", "model": model, "reference": reference, "metric": metric, "subset": subset,
            "mean_diff": mean_diff, "relative_diff": mean_diff / 5, "ci_low": ci[0], "ci_high": ci[1], "windows": 2,
            "significantly_better": ci[1] < 0}


@pytest.fixture
def marts():
    tables = {
        "best_configs": [
            _selected("toto", TOTO_KNOBS, pooled_config_hash="toto-pooled", p_value_vs_pooled=0.03,
                      significant_vs_pooled=True),
            _selected("toto2", TOTO2_KNOBS),
            _selected("kronos", KRONOS_KNOBS, confidence_set=None, confidence_set_size=None, seen_through=None,
                      cutoff_kind=None, test_windows_out_of_sample=None, default_config_hash="kronos-unscored"),
        ],
        "stg_trials": [_trial_row("toto"), _trial_row("toto2"),
                       _trial_row("kronos", model_revision=None, effective_val_windows=None),
                       _trial_row("toto", symbol="BBB", model_revision="other@rev", context=512)],
        "leaderboard": [
            _board("toto", "toto-sel", "toto[sel]", TOTO_KNOBS, 4.0, 4.5),
            _board("toto", "toto-default", "toto[default]", {"aggregate": "median", "num_samples": 256}, 4.6, 5.5),
            _board("toto", "toto-pooled", "toto[pooled]", {"aggregate": "mean", "num_samples": 512}, 4.2, 4.8),
            _board("persistence", "p", "persistence", {}, 5.0, 6.0),
            _board("random_walk", "rw", "random_walk", {"num_samples": 256}, 5.1, 6.1),
            _board("seasonal_naive", "sn", "seasonal_naive", {}, 3.0, 3.5),  # a baseline that cannot win
            _board("persistence", "p", "persistence", {}, 9.0, 9.0, symbol="BBB"),
        ],
        "test_report": [_report("toto", "persistence", "mae_pct", "all", -1.5, (-1.7, -1.3)),
                        _report("toto", "persistence", "mae_pct", "out_of_sample", -1.4, (-1.6, -1.2)),
                        _report("toto", "default", "crps_pct", "all", 0.1, (-0.1, 0.3)),
                        _report("kronos", "random_walk", "crps_pct", "all", -0.3, (-0.5, -0.1))],
        "model_choice": [{"symbol": "AAA", "winning_model": "toto", "winner_is_baseline": False,
                          "persistence_val_mae_pct": 5.0, "persistence_test_mae_pct": 6.0,
                          "selection_test": "StepM 5%, p=0.020", "p_value_vs_persistence": 0.02,
                          "significant_vs_persistence": True, "choice_reason": "lowest validation MAE%"}],
    }
    with _marts(tables) as con:
        yield con, tables


def _documents(con) -> dict[str, dict]:
    return model_documents(con, "aaa", MODEL_IDS, RUNTIME_KNOBS, base_seed=7)


def _round_trip(tmp_path: Path, kind: str, document: dict) -> dict:
    """Write the document as a config file and read it back (both validate against the schema)."""
    path, _ = write_config(tmp_path, kind, document["symbol"], document)
    return read_config(path, kind)


def test_each_selected_row_becomes_a_valid_config_file_with_its_knobs_scores_and_windows(marts, tmp_path):
    con, _ = marts
    documents = _documents(con)
    assert set(documents) == {"toto", "toto2", "kronos"}
    toto = documents["toto"]
    assert toto["symbol"] == "AAA" and toto["model"] == "toto"
    assert toto["config"] == {"name": "toto[sel]", **TOTO_KNOBS, "samples_per_batch": 64}  # runtime knobs added
    assert documents["kronos"]["config"] == {"name": "kronos[sel]", **KRONOS_KNOBS}
    assert toto["validation"] == {"mae_pct": 4.0, "crps_pct": 4.0 * 0.7, "mase": 4.0 / 5, "coverage_10_90": 0.8,
                                  "seconds_per_forecast": 0.5, "windows": 3}
    assert toto["test"] == {"mae_pct": 4.5, "crps_pct": 4.5 * 0.7, "mase": 4.5 / 5, "coverage_10_90": 0.75,
                            "seconds_per_forecast": 0.5, "windows": 2}
    # The windows of the symbol's own trials (not BBB's 512-bar context); null layout fields are left out.
    assert toto["windows"] == {"n_val": 3, "n_test": 2, "forecast_horizon": 16, "stride": 16, "context": 64,
                               "history_bars": 300, "tunable": True, "layout_reason": "requested layout",
                               "effective_val_windows": 3.0, "effective_test_windows": 2.0}
    assert "effective_val_windows" not in documents["kronos"]["windows"]
    for kind, document in documents.items():
        validate_document(document, kind, kind)
        assert _round_trip(tmp_path, kind, document) == document


def test_metadata_names_the_model_revision_search_baselines_and_pretraining(marts):
    con, _ = marts
    documents = _documents(con)
    meta = {kind: d["metadata"] for kind, d in documents.items()}
    assert meta["toto"]["model_id"] == MODEL_IDS["toto"]
    assert meta["toto2"]["model_id"] == TOTO2_KNOBS["checkpoint"]  # the checkpoint the config chose
    assert (meta["toto"]["model_revision"], meta["kronos"]["model_revision"]) == ("toto@rev", "unknown")
    assert meta["toto"]["data_end"] == "2026-01-02" and meta["toto"]["data_version"] == "dv1"
    assert meta["toto"]["seed"] == 7 and meta["toto"]["code_version"] == code_version()
    assert datetime.fromisoformat(meta["toto"]["selected_at"]).utcoffset().total_seconds() == 0
    assert {k: m["search"] for k, m in meta.items()} == {k: {"method": SEARCH_METHODS[k], "trials": 36}
                                                         for k in documents}
    assert meta["toto"]["baselines_on_test"] == {
        "persistence_mae_pct": 6.0, "random_walk_crps_pct": 6.1 * 0.7, "random_walk_coverage_10_90": 0.75,
        "default_config_mae_pct": 5.5,
        "selected_vs": {
            "persistence": {"mae_pct": {
                "all": {"mean_diff": -1.5, "relative_diff": -1.5 / 5, "ci95": [-1.7, -1.3], "windows": 2,
                        "significantly_better": True},
                "out_of_sample": {"mean_diff": -1.4, "relative_diff": -1.4 / 5, "ci95": [-1.6, -1.2], "windows": 2,
                                  "significantly_better": True}}},
            "default": {"crps_pct": {"all": {"mean_diff": 0.1, "relative_diff": 0.1 / 5, "ci95": [-0.1, 0.3],
                                             "windows": 2, "significantly_better": False}}}}}
    kronos_baselines = meta["kronos"]["baselines_on_test"]
    assert kronos_baselines["default_config_mae_pct"] is None  # its default has no leaderboard row
    assert list(kronos_baselines["selected_vs"]) == ["random_walk"]
    assert meta["toto2"]["baselines_on_test"]["selected_vs"] == {}
    assert meta["toto"]["pretraining"] == {"model_id": MODEL_IDS["toto"], "seen_through": "2024-05-01",
                                           "kind": "training data end", "test_windows_out_of_sample": 2,
                                           "statement": "every test window is after the cutoff"}
    assert meta["kronos"]["pretraining"]["seen_through"] is None


def test_selection_block_names_the_pooled_challenger_and_parses_the_confidence_set(marts):
    con, _ = marts
    documents = _documents(con)
    toto = documents["toto"]["metadata"]["selection"]
    assert toto["pooled_challenger"] == {"config": "toto[pooled]", "outcome": toto["pooled_challenger"]["outcome"],
                                         "p_value": 0.03, "significant": True}
    assert toto["confidence_set"] == ["toto[sel]", "toto[other]"] and toto["confidence_set_size"] == 2
    assert (toto["tuned"], toto["significant_vs_default"], toto["p_value_vs_default"]) == (True, True, 0.01)
    assert (toto["basis"], toto["reason"], toto["val_mae_pct_diff_vs_default"]) == ("own", "best, significant", -0.4)
    kronos = documents["kronos"]["metadata"]["selection"]
    assert kronos["confidence_set"] == [] and kronos["pooled_challenger"]["config"] is None


def test_a_symbol_without_selected_configs_gets_no_documents_and_a_bad_symbol_never_reaches_sql(marts):
    con, _ = marts
    assert model_documents(con, "BBB", MODEL_IDS, RUNTIME_KNOBS, base_seed=0) == {}
    assert best_document(con, "BBB", {}) is None  # no model_choice row
    with pytest.raises(InvalidSymbolError):
        model_documents(con, "AAA' or 1=1 --", MODEL_IDS, RUNTIME_KNOBS, base_seed=0)


def test_best_points_at_the_winning_models_file_and_compares_only_the_baselines_that_can_win(marts, tmp_path):
    con, _ = marts
    documents = _documents(con)
    best = best_document(con, "AAA", documents)
    assert (best["model"], best["config_path"]) == ("toto", "hyperparams/toto/AAA.json")
    assert best["config"] == documents["toto"]["config"]
    assert (best["validation"], best["test"]) == (documents["toto"]["validation"], documents["toto"]["test"])
    meta = best["metadata"]
    assert meta["selected_at"] == documents["toto"]["metadata"]["selected_at"] and meta["baseline"] is False
    assert set(meta["compared"]) == {*documents, *BASELINE_WINNERS}  # seasonal_naive scored lower, never compared
    assert meta["compared"]["toto2"] == {"val_mae_pct": 4.0, "test_mae_pct": 4.5, "test_crps_pct": 4.5 * 0.7}
    assert meta["compared"]["persistence"] == {"val_mae_pct": 5.0, "test_mae_pct": 6.0, "test_crps_pct": 6.0 * 0.7}
    assert (meta["persistence_val_mae_pct"], meta["p_value_vs_persistence"], meta["significant_vs_persistence"]) \
        == (5.0, 0.02, True)
    assert meta["reason"] == "lowest validation MAE%" and meta["test"] == "StepM 5%, p=0.020"
    assert _round_trip(tmp_path, "best", best) == best


def test_a_baseline_winner_has_no_config_file_and_a_missing_winner_writes_no_best(marts, tmp_path):
    _, tables = marts
    choice = tables["model_choice"][0]
    baseline = {**choice, "winning_model": "random_walk", "winner_is_baseline": True,
                "significant_vs_persistence": False, "choice_reason": "random_walk is best: persistence named"}
    with _marts({**tables, "model_choice": [baseline]}) as con:
        documents = _documents(con)
        best = best_document(con, "AAA", documents)
    assert (best["model"], best["config_path"], best["metadata"]["baseline"]) == ("random_walk", None, True)
    assert best["config"] == {"name": "random_walk", "num_samples": 256}
    assert best["validation"] == {"mae_pct": 5.1, "crps_pct": 5.1 * 0.7, "mase": 5.1 / 5, "coverage_10_90": 0.8,
                                  "seconds_per_forecast": 0.01, "windows": 3}
    assert best["metadata"]["data_version"] == "dv1"
    assert _round_trip(tmp_path, "best", best) == best

    with _marts({**tables, "model_choice": [{**choice, "winning_model": "kronos"}]}) as con:
        documents = _documents(con)
        del documents["kronos"]
        assert best_document(con, "AAA", documents) is None  # it names a model without a document


def test_the_baselines_that_can_win_are_the_references_the_model_choice_compares():
    assert set(BASELINE_WINNERS) == {REFERENCE, PROBABILISTIC_REFERENCE} and set(BASELINE_WINNERS) <= set(BASELINES)


# -- too short to score anything --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["toto", "toto2", "kronos"])
def test_a_history_too_short_for_any_window_keeps_each_default_unscored_with_the_reason(family, tmp_path):
    spec = WindowSpec(**TINY_BACKTEST)
    prices = make_prices(60, seed=4)
    layout = plan_layout(len(prices), spec)
    assert layout.spec is None
    trial = default_trials()[family]
    document = default_document("new", trial, RUNTIME_KNOBS.get(family, {}), layout, prices, "model-x", "",
                                 base_seed=3)
    assert (document["symbol"], document["model"]) == ("NEW", family)
    assert document["config"] == {"name": trial.name, **trial.knobs, **RUNTIME_KNOBS.get(family, {})}
    nothing = {"mae_pct": None, "crps_pct": None, "mase": None, "coverage_10_90": None, "seconds_per_forecast": None,
               "windows": 0}
    assert document["validation"] == document["test"] == nothing
    assert document["windows"] == layout.as_dict() and document["windows"]["history_bars"] == 60
    meta = document["metadata"]
    assert meta["data_end"] == prices["timestamp"].iloc[-1].date().isoformat()
    assert meta["data_version"] == data_version(prices) and meta["model_revision"] == "unknown"
    assert meta["search"]["trials"] == 0 and meta["seed"] == 3
    assert meta["selection"] == {"tuned": False, "significant_vs_default": False, "reason": layout.reason}
    assert _round_trip(tmp_path, family, document) == document


@pytest.mark.parametrize("bars", [90, 300])  # comparison-only windows; the requested layout
def test_a_history_with_any_scored_window_gets_no_unscored_default(bars):
    layout = plan_layout(bars, WindowSpec(**TINY_BACKTEST))
    with pytest.raises(ValueError, match="allows scored windows.*run the sweeps and dbt"):
        default_document("AAA", default_trials()["toto"], {}, layout, make_prices(bars, seed=1), "m", "r", 0)
