"""Helpers shared by the asset modules: partitions, metadata tables and plots."""

from __future__ import annotations

import base64
import io
import math
from typing import Mapping

import matplotlib
import numpy as np
import pandas as pd
from dagster import (
    DagsterInstance,
    DynamicPartitionsDefinition,
    MetadataValue,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
)

from forecast_core.data import validate_symbol
from forecast_core.files import process_alive
from forecast_core.labels import short_label

matplotlib.use("Agg")  # plots are rendered to PNG for asset metadata; no display here
symbols_partitions = DynamicPartitionsDefinition(name="symbols")


def register_symbols(instance: DagsterInstance, symbols: list[str]) -> list[str]:
    """Add symbols (validated, canonical) as partitions; returns the ones that were new."""
    wanted = sorted({validate_symbol(s) for s in symbols})
    existing = set(instance.get_dynamic_partitions(symbols_partitions.name))
    new = [s for s in wanted if s not in existing]
    if new:
        instance.add_dynamic_partitions(symbols_partitions.name, new)
    return new


ACCELERATOR_POOL, METRICS_POOL = "accelerator", "metrics_duckdb"

# Steps in the accelerator pool ask Kubernetes for one GPU each when run by the k8s executor or run
# launcher (deploy/); other executors ignore the tag. The toleration lets them onto GPU nodes that
# carry the usual nvidia.com/gpu taint (a no-op where nodes are untainted).
ACCELERATOR_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}


def ensure_pool_limits(instance: DagsterInstance) -> dict[str, int]:
    """Pool limits for a new instance: one model step per visible GPU (else per CPU core), and one
    DuckDB writer. Limits an operator already set (UI or `dagster instance concurrency set`) stay.
    With several GPUs each step leases its own (forecast_core.device.claim_device), so the limit
    must equal the device count the lease sees: both come from visible_device_count()."""
    import os

    from forecast_core.device import visible_device_count

    wanted = {ACCELERATOR_POOL: visible_device_count() or os.cpu_count() or 1, METRICS_POOL: 1}
    known = set(instance.event_log_storage.get_concurrency_keys())
    for pool, limit in wanted.items():
        if pool not in known:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    return wanted


def reclaim_dead_runs(instance: DagsterInstance) -> list[str]:
    """Fail the in-progress runs whose worker process is gone and free their pool slots.

    A run killed with SIGKILL (or by the OOM killer) stays STARTED and keeps its `accelerator` slot,
    so every later model step would wait for it forever; the local run launcher has no health check
    for run monitoring to use. Only for a local SQLite instance, where every run worker is a process
    on this machine (a pid from another host would mean nothing here). Returns the failed run ids.
    """
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    if type(instance.run_storage).__name__ != "SqliteRunStorage":
        return []
    reclaimed = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        starts = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_START)
        pid = starts[-1].dagster_event.pid if starts and starts[-1].dagster_event else None
        if pid is None or process_alive(pid):
            continue
        instance.report_run_failed(run, f"its worker process {pid} is gone (killed?); its pool slots were freed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reclaimed.append(run.run_id)
    return reclaimed


# What each column of a metadata table means, one entry per column name wherever it appears (sweep
# leaderboards, the selected table, the selection statistics, the forward report), shown in the UI's
# table header. A column missing here is shown without a description.
COLUMN_DESCRIPTIONS = {
    "symbol": "ticker (the asset partition)",
    "model": "forecaster or baseline that produced the scores",
    "kind": "config file: toto, toto2, kronos or best (the winner)",
    "file_model": "the model the config file names (for best: the winner, possibly a baseline)",
    "config": "the config's knobs in short (forecast_core.labels.short_label)",
    "config_name": "full config identity, model[knob=value,...]",
    "val_mae_pct": "MAE in % of the window's mean |price|, mean over validation windows (what selects)",
    "test_mae_pct": "MAE in % of the window's mean |price|, mean over test windows (reported, never used to "
                    "choose)",
    "val_crps_pct": "CRPS in % of the window's mean |price|, mean over validation windows",
    "test_crps_pct": "CRPS in % of the window's mean |price|, mean over test windows",
    "val_windows": "validation windows scored",
    "test_windows": "test windows scored",
    "seconds": "measured seconds for one single-window forecast at this config's sample count",
    "rung_val_mae_pct": "validation MAE% on the search's cheap rung (the last validation windows only)",
    "temperature": "Kronos sampling temperature (0 = greedy)",
    "top_p": "Kronos nucleus sampling mass (1 = off)",
    "top_k": "Kronos top-k sampling (0 = off)",
    "sample_count": "Kronos sampled paths per forecast",
    "max_context": "Kronos context bars",
    "clip": "Kronos input clipping in standard deviations",
    "persistence_test_mae_pct": "persistence (last close) test MAE% on the same windows",
    "test_ratio_to_persistence": "test MAE% / persistence test MAE% (below 1 = better than persistence)",
    "test_windows_out_of_sample": "test windows whose target starts after the model's pretraining cutoff "
                                  "(empty when the cutoff is unknown)",
    "selection_basis": "own (beat the default or the pooled challenger), pooled, cheaper (best not significant, "
                       "cheaper) or default",
    "selection_reason": "why this config was selected, in words",
    "p_value_vs_default": "Hansen's SPA p-value of 'no config beats the default' (empty when untested)",
    "confidence_set_size": "configs the model confidence set (10%) cannot tell from the best; large = flat optimum",
    "winning_model": "model named in hyperparams/best/SYM.json, or the baseline that won",
    "choice_reason": "why this model (or baseline) won, in words",
    "symbols": "tunable symbols pooled",
    "p_value": "SPA p-value of 'no config beats the default' on the pooled windows",
    "outcome": "whether the pooled best beat the default (and so challenges each symbol's choice)",
    "statement": "the pretraining cutoff used and what it means for the test windows",
    "selected_at": "when the config file was written",
    "data_end": "last bar the selection saw; every later window is forward (out-of-sample)",
    "forward_windows": "complete non-overlapping horizon-long windows scored since the selection",
    "first_origin": "origin of the first forward window",
    "last_origin": "origin of the last forward window",
    "mae_pct": "stored config's forward MAE%, mean over forward windows",
    "crps_pct": "stored config's forward CRPS%, mean over forward windows",
    "persistence_mae_pct": "persistence forward MAE% on the same windows",
    "default_mae_pct": "the model's default config, forward MAE% on the same windows",
    "default_crps_pct": "the model's default config, forward CRPS% on the same windows",
    "random_walk_crps_pct": "random walk forward CRPS% on the same windows (the probabilistic reference)",
    "ratio_to_persistence": "forward MAE% / persistence forward MAE% (below 1 = better than persistence)",
    "diff_vs_persistence": "mean per-window MAE% difference, stored config - persistence (negative = better)",
    "ci_low_vs_persistence": "block-bootstrap 95% interval of diff_vs_persistence, low end (null below 3 windows)",
    "ci_high_vs_persistence": "block-bootstrap 95% interval of diff_vs_persistence, high end (null below 3 windows)",
    "diff_vs_default": "mean per-window MAE% difference, stored config - default (negative = better)",
    "ci_low_vs_default": "block-bootstrap 95% interval of diff_vs_default, low end (null below 3 windows)",
    "ci_high_vs_default": "block-bootstrap 95% interval of diff_vs_default, high end (null below 3 windows)",
    "worse_than_persistence_in_a_row": "latest forward windows in a row where the config lost to persistence",
    "date": "first bar of the suspected split (prices divided by the ratio from here on)",
    "ratio": "split ratio the price gap matches",
    "gap": "previous close / open at the date",
    "volume_change": "median volume after / before the date (empty without volume)",
    "adjusted": "whether earlier bars were back-adjusted",
    "note": "why (not) adjusted",
}

_TABLE_TYPES = {"integer": "int", "floating": "float", "mixed-integer-float": "float", "decimal": "float",
                "boolean": "bool"}  # pandas' inferred kind -> Dagster column type; anything else is text


def table(frame: pd.DataFrame, significant: int = 5) -> TableMetadataValue:
    """A DataFrame as a sortable UI table: column types from the values, floats to ``significant``
    digits, null for NaN/None, datetimes as ISO text, descriptions from :data:`COLUMN_DESCRIPTIONS`."""
    kinds = {name: _TABLE_TYPES.get(pd.api.types.infer_dtype(frame[name], skipna=True), "string")
             for name in frame.columns}

    def cell(value, kind: str):
        if pd.isna(value) or (kind == "float" and not math.isfinite(float(value))):
            return None
        if kind == "float":
            return float(f"{float(value):.{significant}g}")
        if kind == "int":
            return int(value)
        if kind == "bool":
            return bool(value)
        return value.isoformat() if hasattr(value, "isoformat") else str(value)

    records = [TableRecord(data={name: cell(value, kinds[name]) for name, value in row.items()})
               for row in frame.astype(object).to_dict("records")]
    schema = TableSchema(columns=[TableColumn(name, kinds[name], COLUMN_DESCRIPTIONS.get(name))
                                  for name in frame.columns])
    return MetadataValue.table(records=records, schema=schema)


def numbers(values: Mapping[str, float | int | None]) -> dict[str, float | int]:
    """Numeric metadata the Plots tab charts across materialisations: ints stay ints, floats are
    rounded to 5 significant digits. None, NaN and inf are left out (Dagster's float metadata must be
    finite; a missing point is a gap in the plot, where a text value would end the series)."""
    out: dict[str, float | int] = {}
    for name, value in values.items():
        if isinstance(value, bool) or pd.isna(value):
            continue
        if isinstance(value, (int, np.integer)):
            out[name] = int(value)
        elif math.isfinite(float(value)):
            out[name] = float(f"{float(value):.5g}")
    return out


def plot_png(fig, title: str) -> MetadataValue:
    """A matplotlib figure as an inline PNG in Markdown metadata (closes the figure)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def plot_forecasts(history: pd.DataFrame, actual: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
                   title: str) -> MetadataValue:
    """Context tail, actuals and each forecast (with its 10-90% band when present) as an inline PNG."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    ax.plot(history["timestamp"], history["close"], color="0.6", lw=1, label="context")
    ax.plot(actual["timestamp"], actual["actual"], color="black", lw=1.5, label="actual")
    for name, frame in forecasts.items():
        line, = ax.plot(frame["timestamp"], frame["forecast"], lw=1.2, label=name)
        if "p10" in frame and (frame["p90"] > frame["p10"]).any():
            ax.fill_between(frame["timestamp"], frame["p10"], frame["p90"], color=line.get_color(), alpha=0.15)
    ax.set_title(title)
    # beside the axes, so long config labels never cover the lines (the saved PNG grows to fit)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.autofmt_xdate()
    return plot_png(fig, title)


def legend_label(model: str, knobs: Mapping) -> str:
    """A config in a plot legend: the model and its knobs in short (a knob-less baseline: its name)."""
    label = short_label(model, knobs)
    return label if label == model else f"{model} {label}"
