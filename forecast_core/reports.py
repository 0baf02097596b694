"""What the ``hpo`` command reports, as plain records: the selection marts per symbol and the stored
config files with their provenance. No Dagster and no rendering here: the terminal tables and the
``--json`` output are both drawn from these records, so they carry the same numbers.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from .configs import KINDS, MODELS, ConfigFileError, config_path, read_config
from .labels import short_label
from .selection import BASELINE_WINNERS as BASELINES
from .selection import open_marts

if TYPE_CHECKING:  # forward pulls in the engines (torch); `hpo show` needs neither
    from .forward import DriftPolicy

ROW_ORDER = (*BASELINES, *MODELS)  # the rows of a symbol's table

# Each model's selected config (best_configs) and the two baselines (leaderboard), with persistence's
# test MAE% beside each for the ratio, and the winner of the symbol (model_choice).
_SELECTED_SQL = """
    with persistence as (select symbol, test_mae_pct from leaderboard where model = 'persistence'),
    chosen as (
        select symbol, model, config_name, config_json, val_mae_pct, test_mae_pct, val_windows, test_windows,
               test_windows_out_of_sample, p_value_vs_default, significant_vs_default, selection_basis,
               confidence_set_size, seconds_per_forecast
        from best_configs
        union all
        select symbol, model, config_name, config_json, val_mae_pct, test_mae_pct, val_windows, test_windows,
               null, null, null, null, null, seconds_per_forecast
        from leaderboard where list_contains($baselines, model)
    )
    select c.*, c.test_mae_pct / nullif(p.test_mae_pct, 0) as test_vs_persistence,
           m.winning_model = c.model as winner
    from chosen c
    left join persistence p on p.symbol = c.symbol
    left join model_choice m on m.symbol = c.symbol
    where $every or list_contains($symbols, c.symbol)
    order by c.symbol, list_position($order, c.model)
"""

_CHOICE_SQL = """
    select m.symbol, m.winning_model, m.choice_reason, m.p_value_vs_persistence, m.significant_vs_persistence,
           list(b.model || ': ' || b.pretraining_statement order by b.model)
               filter (where b.pretraining_statement is not null) as pretraining
    from model_choice m left join best_configs b on b.symbol = m.symbol
    where $every or list_contains($symbols, m.symbol)
    group by all order by m.symbol
"""

# The window layout per symbol (one per symbol: every config of a symbol is scored on the same windows).
_LAYOUT_SQL = """
    select symbol, any_value(history_bars) as bars, any_value(horizon) as horizon, any_value(context) as context,
           any_value(stride) as stride, max(val_windows) as val_windows, max(test_windows) as test_windows,
           any_value(layout_reason) as layout_reason
    from leaderboard where model = 'persistence' and ($every or list_contains($symbols, symbol))
    group by symbol order by symbol
"""


def _clean(value):
    """A JSON-safe scalar: NaN/NA become None, numpy scalars and timestamps plain Python/ISO text."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def frame_records(frame: pd.DataFrame) -> list[dict]:
    """A table's rows as JSON-safe dicts (what ``--json`` prints and the terminal tables render)."""
    return [{k: _clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict("records")]


def _records(con: duckdb.DuckDBPyConnection, sql: str, symbols: list[str] | None) -> list[dict]:
    params = {"every": symbols is None, "symbols": list(symbols or [])}
    for name, value in (("order", ROW_ORDER), ("baselines", BASELINES)):
        if f"${name}" in sql:
            params[name] = list(value)
    cursor = con.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [{k: v if isinstance(v, list) else _clean(v) for k, v in zip(names, row)} for row in cursor.fetchall()]


def selection_report(con: duckdb.DuckDBPyConnection, symbols: list[str] | None = None) -> list[dict]:
    """Per symbol (all when ``symbols`` is None): the window layout, each model's selected config and
    the baselines with their evidence, and the winner with its reason (the ``hpo demo`` table)."""
    layouts = {r["symbol"]: r for r in _records(con, _LAYOUT_SQL, symbols)}
    choices = {r["symbol"]: r for r in _records(con, _CHOICE_SQL, symbols)}
    rows: dict[str, list[dict]] = {}
    for row in _records(con, _SELECTED_SQL, symbols):
        symbol, knobs, ratio = row.pop("symbol"), row.pop("config_json"), row["test_vs_persistence"]
        row.update(label=short_label(row["model"], knobs or "{}"), winner=bool(row["winner"]),
                   better_than_persistence=None if ratio is None or row["model"] == "persistence" else ratio < 1)
        rows.setdefault(symbol, []).append(row)
    report = []
    for symbol in sorted(rows):
        choice = choices.get(symbol, {})
        layout = {k: v for k, v in layouts.get(symbol, {}).items() if k != "symbol"}
        report.append({"symbol": symbol, "layout": layout, "models": rows[symbol],
                       "winner": choice.get("winning_model"), "reason": choice.get("choice_reason"),
                       "p_value_vs_persistence": choice.get("p_value_vs_persistence"),
                       "significant_vs_persistence": choice.get("significant_vs_persistence"),
                       "pretraining": choice.get("pretraining") or []})
    return report


def read_selection_report(db_path: Path, symbols: list[str] | None = None) -> list[dict]:
    """:func:`selection_report` from the marts at ``db_path`` (a StoreError when they cannot be opened)."""
    with open_marts(db_path) as con:
        return selection_report(con, symbols)


def _age_days(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return round((now - moment).total_seconds() / 86400, 1)


def _file_record(document: dict, kind: str, now: datetime) -> dict:
    """The provenance and evidence of one config file, whichever of the two schemas it follows."""
    meta = document["metadata"]
    selection = meta.get("selection", {})
    config = document.get("config") or {}
    knobs = {k: v for k, v in config.items() if k != "name"}
    return {
        "model": document["model"], "config": config.get("name", document["model"]),
        "label": short_label(document["model"], knobs) if knobs or document["model"] in BASELINES
        else document["model"],
        "selected_at": meta["selected_at"], "age_days": _age_days(meta["selected_at"], now),
        "data_end": meta.get("data_end"), "data_version": meta.get("data_version"),
        "model_id": meta.get("model_id"), "model_revision": meta.get("model_revision"),
        "val_mae_pct": document["validation"]["mae_pct"], "test_mae_pct": document["test"]["mae_pct"],
        "val_windows": document["validation"]["windows"], "test_windows": document["test"]["windows"],
        "test_windows_out_of_sample": meta.get("pretraining", {}).get("test_windows_out_of_sample"),
        "basis": selection.get("basis"),
        "p_value": selection.get("p_value_vs_default", meta.get("p_value_vs_persistence")),
        "p_value_against": "default" if kind in MODELS else "persistence",
        "reason": selection.get("reason", meta.get("reason")),
        "config_path": document.get("config_path"),
    }


def _forward_line(report: pd.DataFrame, kind: str) -> dict | None:
    current = report[report["current"] & (report["kind"] == kind)] if not report.empty else report
    if current.empty:
        return None
    row = current.iloc[0]
    return {k: _clean(row[k]) for k in ("forward_windows", "mae_pct", "persistence_mae_pct", "ratio_to_persistence",
                                         "default_mae_pct", "worse_than_persistence_in_a_row")}


def stored_configs(hyperparams_dir: Path, symbol: str, forward_report: pd.DataFrame,
                   now: datetime | None = None) -> list[dict]:
    """Per stored file of ``symbol`` (toto, toto2, kronos, best): its path, config, provenance, evidence
    and the forward scorecard's current line; an unreadable file gives its error instead. Missing
    files are left out (an empty list: nothing stored)."""
    now = now or datetime.now(timezone.utc)
    files = []
    for kind in KINDS:
        path = config_path(hyperparams_dir, kind, symbol)
        if not path.exists():
            continue
        entry = {"kind": kind, "path": str(path.resolve())}
        try:
            entry.update(_file_record(read_config(path, kind), kind, now))
            entry["forward"] = _forward_line(forward_report, kind)
        except ConfigFileError as exc:
            entry["error"] = str(exc)
        files.append(entry)
    return files


def symbol_state(hyperparams_dir: Path, symbol: str, stale: str | None, forward_report: pd.DataFrame,
                 policy: DriftPolicy) -> dict:
    """Whether ``symbol``'s configs are untuned (no file), stale (``stale``: retune_reason's answer),
    drifting (drift_reason's) or current, and why; the same verdicts as stale_config_sensor."""
    stored = [kind for kind in KINDS if config_path(hyperparams_dir, kind, symbol).exists()]
    if not stored:
        return {"state": "untuned", "reason": f"no config files yet: run `hpo tune --symbol {symbol}`",
                "stored": stored}
    from .forward import drift_reason

    drift = None if stale else drift_reason(forward_report, policy)
    state = "stale" if stale else "drifting" if drift else "current"
    return {"state": state, "reason": stale or drift, "stored": stored}
