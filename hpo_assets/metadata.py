"""Asset metadata: typed, described tables, numeric figures for the Plots tab, figures as inline PNGs."""

from __future__ import annotations

import base64
import io
import math
from typing import Mapping

import matplotlib
import numpy as np
import pandas as pd
from dagster import MetadataValue, TableColumn, TableMetadataValue, TableRecord, TableSchema

matplotlib.use("Agg")  # plots are rendered to PNG for asset metadata; no display here


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
