"""Config documents from the dbt marts: the selection made there on validation, reported on test.

The marts (``best_configs``, ``test_report``, ``model_choice``, ``leaderboard``) decide; this module
only turns their rows into the §7 documents, so the CLI and the Dagster asset write the same files.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from . import code_version
from .backtest import Trial
from .data import data_version, validate_symbol
from .store import StoreError
from .windows import LAYOUT_FIELDS, Layout

SEARCH_METHODS = {"toto": "grid (num_samples x aggregation, one draw)",
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
        raise StoreError(f"no metrics database at {db_path}; materialise the dbt assets (dbt build) first")
    try:
        return duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        raise StoreError(f"{db_path}: cannot open the metrics database ({exc}); delete it and re-run dbt build") from exc


def model_documents(con: duckdb.DuckDBPyConnection, symbol: str, model_ids: dict[str, str],
                    runtime_knobs: dict[str, dict], base_seed: int) -> dict[str, dict]:
    """One §7 document per model with a selected config for ``symbol`` (keys: toto, kronos)."""
    symbol = validate_symbol(symbol)
    selected = _rows(con, "select * from best_configs where symbol = ?", [symbol])
    tests = _rows(con, "select * from test_report where symbol = ?", [symbol])
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    documents = {}
    for row in selected:
        model = row["model"]
        first = _rows(con, f"select model_revision, horizon, n_val, n_test, stride, context, {', '.join(LAYOUT_FIELDS)} "
                           "from stg_trials where symbol = ? and config_hash = ? limit 1", [symbol, row["config_hash"]])[0]
        persistence = _rows(con, "select test_mae_pct from leaderboard where symbol = ? and model = 'persistence'",
                            [symbol])
        default = _rows(con, "select test_mae_pct from leaderboard where symbol = ? and config_hash = ?",
                        [symbol, row["default_config_hash"]]) if row["default_config_hash"] else []
        vs = {t["reference"]: {"test_mae_pct_diff": t["test_mae_pct_diff"], "ci95": [t["test_diff_ci_low"],
              t["test_diff_ci_high"]], "windows": int(t["test_windows"])} for t in tests if t["model"] == model}
        documents[model] = {
            "symbol": symbol,
            "model": model,
            "config": {"name": row["config_name"], **json.loads(row["config_json"]), **runtime_knobs.get(model, {})},
            "validation": _scores(row, "val"),
            "test": _scores(row, "test"),
            "windows": {"n_val": int(first["n_val"]), "n_test": int(first["n_test"]),
                        "forecast_horizon": int(first["horizon"]), "stride": int(first["stride"]),
                        "context": int(first["context"]),
                        **{name: first[name] for name in LAYOUT_FIELDS if first[name] is not None}},
            "metadata": {
                "model_id": model_ids.get(model, model),
                "model_revision": first["model_revision"] or "unknown",
                "data_end": row["data_end"].date().isoformat(),
                "data_version": row["data_version"],
                "seed": int(base_seed),
                "search": {"method": SEARCH_METHODS.get(model, "sweep"), "trials": int(row["configs_scored"])},
                "baselines_on_test": {
                    "persistence_mae_pct": persistence[0]["test_mae_pct"] if persistence else None,
                    "default_config_mae_pct": default[0]["test_mae_pct"] if default else None,
                    "selected_vs": vs,
                },
                "selection": {
                    "tuned": bool(row["tunable"]),
                    "significant_vs_default": bool(row["significant_vs_default"]),
                    "reason": row["selection_reason"],
                    "val_mae_pct_diff_vs_default": row["val_diff_vs_default"],
                    "val_diff_ci95": [row["val_diff_ci_low"], row["val_diff_ci_high"]],
                },
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
    """``hyperparams/best/SYMBOL.json``: the model whose selected config wins on validation."""
    choice = _rows(con, "select * from model_choice where symbol = ?", [validate_symbol(symbol)])
    if not choice or choice[0]["winning_model"] not in documents:
        return None
    row = choice[0]
    winner = documents[row["winning_model"]]
    return {
        "symbol": winner["symbol"],
        "model": row["winning_model"],
        "config_path": f"hyperparams/{row['winning_model']}/{winner['symbol']}.json",
        "config": winner["config"],
        "validation": winner["validation"],
        "test": winner["test"],
        "metadata": {
            "selected_at": winner["metadata"]["selected_at"],
            "data_version": winner["metadata"]["data_version"],
            "compared": {model: {"val_mae_pct": doc["validation"]["mae_pct"], "test_mae_pct": doc["test"]["mae_pct"]}
                         for model, doc in documents.items()},
            "persistence_val_mae_pct": row["persistence_val_mae_pct"],
            "persistence_test_mae_pct": row["persistence_test_mae_pct"],
            "reason": row["choice_reason"],
            "code_version": winner["metadata"]["code_version"],
        },
    }
