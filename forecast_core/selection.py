"""Config documents from the dbt marts: the selection made on validation, reported on test.

The selection statistics (forecast_core/selection_statistics.py) decide and the marts
(``best_configs``, ``test_report``, ``model_choice``, ``leaderboard``) join the decisions to their
metrics; this module only turns those rows into the §7 documents (and reads the leaderboard beside them),
so the CLI and the Dagster asset write the same files.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from . import code_version
from .backtest import Trial
from .configs import MODELS
from .data import data_version, validate_symbol
from .store import Storage, StoreError
from .windows import LAYOUT_FIELDS, Layout

BASELINE_WINNERS = ("persistence", "random_walk")  # the baselines that can win a symbol; every report shows them

SEARCH_METHODS = {"toto": "grid (num_samples x aggregation, one draw)",
                  "toto2": "grid (checkpoint x context x decoding x variates, one forward pass each; point rules)",
                  "kronos": "default + guide presets, TPE proposals with successive halving"}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _scores(row: dict, split: str) -> dict:
    """One split's means; a comparison-only layout has no validation windows (null metrics, 0 windows)."""
    return {
        "mae_pct": row[f"{split}_mae_pct"],
        "crps_pct": row[f"{split}_crps_pct"],
        "mase": row[f"{split}_mase"],
        "coverage_10_90": row[f"{split}_coverage_10_90"],
        "seconds_per_forecast": row["seconds_per_forecast"],
        "windows": int(row[f"{split}_windows"]),
    }


def open_marts(db_path: Path) -> duckdb.DuckDBPyConnection:
    if not Path(db_path).exists():
        raise StoreError(f"no metrics database at {db_path}; build the marts (dbt build) first")
    try:
        return duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise StoreError(f"{db_path}: cannot open the metrics database ({exc}); delete it and re-run dbt build") from exc


def _pretraining(row: dict) -> dict:
    """The model's pretraining cutoff and how many test windows lie after it (null when unknown)."""
    seen = row["seen_through"]
    return {"model_id": row["model_id"], "seen_through": seen.date().isoformat() if seen is not None else None,
            "kind": row["cutoff_kind"], "test_windows_out_of_sample": row["test_windows_out_of_sample"],
            "statement": row["pretraining_statement"]}


def _test_comparisons(tests: list[dict]) -> dict:
    """test_report rows as {reference: {metric: {subset: {mean_diff, ci95, windows, significantly_better}}}}."""
    out: dict = {}
    for t in tests:
        out.setdefault(t["reference"], {}).setdefault(t["metric"], {})[t["subset"]] = {
            "mean_diff": t["mean_diff"], "relative_diff": t["relative_diff"], "ci95": [t["ci_low"], t["ci_high"]],
            "windows": int(t["windows"]), "significantly_better": bool(t["significantly_better"])}
    return out


def _selection(row: dict, names: dict[str, str]) -> dict:
    """The selection block: the test, its p-value, the confidence set and the pooled challenger's outcome."""
    return {
        "tuned": bool(row["tunable"]),
        "test": row["selection_test"],
        "basis": row["selection_basis"],
        "significant_vs_default": bool(row["significant_vs_default"]),
        "p_value_vs_default": row["p_value_vs_default"],
        "configs_tested": row["configs_tested"],
        "confidence_set_size": row["confidence_set_size"],
        "confidence_set": json.loads(row["confidence_set"]) if row["confidence_set"] else [],
        "pooled_challenger": {"config": names.get(row["pooled_config_hash"]), "outcome": row["pooled_outcome"],
                              "p_value": row["p_value_vs_pooled"], "significant": row["significant_vs_pooled"]},
        "reason": row["selection_reason"],
        "val_mae_pct_diff_vs_default": row["val_diff_vs_default"],
    }


def model_documents(con: duckdb.DuckDBPyConnection, symbol: str, model_ids: dict[str, str],
                    runtime_knobs: dict[str, dict], base_seed: int) -> dict[str, dict]:
    """One §7 document per model with a selected config for ``symbol`` (keys: toto, toto2, kronos).

    ``model_ids`` names each runtime's model; a Toto 2.0 document names the checkpoint its config chose.
    """
    symbol = validate_symbol(symbol)
    selected = _rows(con, "select * from best_configs where symbol = ?", [symbol])
    tests = _rows(con, "select * from test_report where symbol = ?", [symbol])
    board = {r["config_hash"]: r for r in _rows(con, "select * from leaderboard where symbol = ?", [symbol])}
    names = {h: r["config_name"] for h, r in board.items()}
    references = {r["model"]: r for r in board.values() if r["model"] in BASELINE_WINNERS}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    documents = {}
    for row in selected:
        model = row["model"]
        first = _rows(con, f"select model_revision, horizon, n_val, n_test, stride, context, {', '.join(LAYOUT_FIELDS)} "
                           "from stg_trials where symbol = ? and config_hash = ? limit 1", [symbol, row["config_hash"]])[0]
        default = board.get(row["default_config_hash"])
        persistence, random_walk = references.get("persistence"), references.get("random_walk")
        knobs = json.loads(row["config_json"])
        documents[model] = {
            "symbol": symbol,
            "model": model,
            "config": {"name": row["config_name"], **knobs, **runtime_knobs.get(model, {})},
            "validation": _scores(row, "val"),
            "test": _scores(row, "test"),
            "windows": {"n_val": int(first["n_val"]), "n_test": int(first["n_test"]),
                        "forecast_horizon": int(first["horizon"]), "stride": int(first["stride"]),
                        "context": int(first["context"]),
                        **{name: first[name] for name in LAYOUT_FIELDS if first[name] is not None}},
            "metadata": {
                "model_id": knobs.get("checkpoint") or model_ids.get(model, model),
                "model_revision": first["model_revision"] or "unknown",
                "data_end": row["data_end"].date().isoformat(),
                "data_version": row["data_version"],
                "seed": int(base_seed),
                "search": {"method": SEARCH_METHODS.get(model, "sweep"), "trials": int(row["configs_scored"])},
                "baselines_on_test": {
                    "persistence_mae_pct": persistence["test_mae_pct"] if persistence else None,
                    "random_walk_crps_pct": random_walk["test_crps_pct"] if random_walk else None,
                    "random_walk_coverage_10_90": random_walk["test_coverage_10_90"] if random_walk else None,
                    "default_config_mae_pct": default["test_mae_pct"] if default else None,
                    "selected_vs": _test_comparisons([t for t in tests if t["model"] == model]),
                },
                "selection": _selection(row, names),
                "pretraining": _pretraining(row),
                "selected_at": now,
                "code_version": code_version(),
            },
        }
    return documents


def default_document(symbol: str, trial: Trial, runtime_knobs: dict, layout: Layout, prices, model_id: str,
                     model_revision: str, base_seed: int) -> dict:
    """The §7 document of a model's default config for a history too short for any scored window.

    Nothing was measured, so every score is null with 0 windows; the reason says what tuning needs.
    """
    if layout.spec is not None:
        raise ValueError(f"{symbol}: its history allows scored windows ({layout.reason}); run the sweeps and "
                         "dbt instead of writing an unscored default")
    empty = {"mae_pct": None, "crps_pct": None, "mase": None, "coverage_10_90": None, "seconds_per_forecast": None,
             "windows": 0}
    return {
        "symbol": validate_symbol(symbol),
        "model": trial.model,
        "config": {"name": trial.name, **trial.knobs, **runtime_knobs},
        "validation": empty,
        "test": empty,
        "windows": layout.as_dict(),
        "metadata": {
            "model_id": model_id,
            "model_revision": model_revision or "unknown",
            "data_end": prices["timestamp"].iloc[-1].date().isoformat(),
            "data_version": data_version(prices),
            "seed": int(base_seed),
            "search": {"method": "none: insufficient history", "trials": 0},
            "baselines_on_test": {"persistence_mae_pct": None, "default_config_mae_pct": None, "selected_vs": {}},
            "selection": {"tuned": False, "significant_vs_default": False, "reason": layout.reason},
            "selected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(),
        },
    }



def best_document(con: duckdb.DuckDBPyConnection, symbol: str, documents: dict[str, dict]) -> dict | None:
    """``hyperparams/best/SYMBOL.json``: the model whose selected config beats persistence on validation,
    or the baseline (``config_path`` null) when none does."""
    symbol = validate_symbol(symbol)
    choice = _rows(con, "select * from model_choice where symbol = ?", [symbol])
    if not choice or not (choice[0]["winning_model"] in documents or choice[0]["winner_is_baseline"]):
        return None
    row = choice[0]
    board = {r["model"]: r for r in _rows(con, "select * from leaderboard where symbol = ? and model in (?, ?)",
                                            [symbol, *BASELINE_WINNERS])}
    compared = {model: {"val_mae_pct": doc["validation"]["mae_pct"], "test_mae_pct": doc["test"]["mae_pct"],
                        "test_crps_pct": doc["test"]["crps_pct"]} for model, doc in documents.items()}
    compared.update({model: {"val_mae_pct": r["val_mae_pct"], "test_mae_pct": r["test_mae_pct"],
                             "test_crps_pct": r["test_crps_pct"]} for model, r in board.items()})
    if row["winner_is_baseline"]:
        baseline = board[row["winning_model"]]
        winner = {"symbol": symbol, "config": {"name": baseline["config_name"], **json.loads(baseline["config_json"])},
                  "validation": _scores(baseline, "val"), "test": _scores(baseline, "test"),
                  "metadata": {"selected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "data_version": baseline["data_version"], "code_version": code_version()}}
        config_path = None
    else:
        winner = documents[row["winning_model"]]
        config_path = f"hyperparams/{row['winning_model']}/{symbol}.json"
    return {
        "symbol": symbol,
        "model": row["winning_model"],
        "config_path": config_path,
        "config": winner["config"],
        "validation": winner["validation"],
        "test": winner["test"],
        "metadata": {
            "selected_at": winner["metadata"]["selected_at"],
            "data_version": winner["metadata"]["data_version"],
            "baseline": bool(row["winner_is_baseline"]),
            "compared": compared,
            "persistence_val_mae_pct": row["persistence_val_mae_pct"],
            "persistence_test_mae_pct": row["persistence_test_mae_pct"],
            "test": row["selection_test"],
            "p_value_vs_persistence": row["p_value_vs_persistence"],
            "significant_vs_persistence": bool(row["significant_vs_persistence"]),
            "reason": row["choice_reason"],
            "code_version": winner["metadata"]["code_version"],
        },
    }


def model_leaderboard(con: duckdb.DuckDBPyConnection, symbol: str) -> pd.DataFrame:
    """Every model config scored for ``symbol``: its validation and test MAE% and cost (no baselines)."""
    return con.execute("select model, config_hash, config_name, val_mae_pct, test_mae_pct, seconds_per_forecast "
                       "from leaderboard where symbol = ? and list_contains(?, model)",
                       [validate_symbol(symbol), list(MODELS)]).df()


def selection_from_marts(store: Storage, symbol: str, model_ids: dict[str, str], runtime_knobs: dict[str, dict],
                         base_seed: int) -> tuple[dict[str, dict], dict | None, pd.DataFrame]:
    """(a document per model, the best document, the model leaderboard) of ``symbol`` from the marts.

    A :class:`StoreError` saying what to rebuild when the marts are missing, damaged or hold no model
    trials of ``symbol``.
    """
    db = store.duckdb_path
    try:
        store.check_metrics_db()
        with open_marts(db) as con:
            documents = model_documents(con, symbol, model_ids=model_ids, runtime_knobs=runtime_knobs,
                                        base_seed=base_seed)
            if not documents:
                raise StoreError(f"{symbol}: no model trials in the marts; run its model sweeps, then rebuild the "
                                 "marts (dbt build)")
            return documents, best_document(con, symbol, documents), model_leaderboard(con, symbol)
    except duckdb.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        raise StoreError(f"{db}: cannot read the dbt marts ({reason}); rebuild them (dbt build)") from None
