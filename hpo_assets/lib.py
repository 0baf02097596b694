"""Helpers shared by the asset modules: partitions, metadata tables and plots."""

from __future__ import annotations

import base64
import io

import matplotlib
import pandas as pd
from dagster import DagsterInstance, DynamicPartitionsDefinition, MetadataValue

from forecast_core.data import validate_symbol

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
# launcher (deploy/); other executors ignore the tag.
ACCELERATOR_OP_TAGS = {
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1},
                                                              "requests": {"nvidia.com/gpu": 1}}}},
}


def ensure_pool_limits(instance: DagsterInstance) -> dict[str, int]:
    """Pool limits for a new instance: one model step per visible GPU (else per CPU core), and one
    DuckDB writer. Limits an operator already set (UI or `dagster instance concurrency set`) stay."""
    import os

    import torch

    wanted = {ACCELERATOR_POOL: torch.cuda.device_count() or os.cpu_count() or 1, METRICS_POOL: 1}
    known = set(instance.event_log_storage.get_concurrency_keys())
    for pool, limit in wanted.items():
        if pool not in known:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    return wanted


def md_table(frame: pd.DataFrame, digits: int = 3) -> MetadataValue:
    return MetadataValue.md(frame.round(digits).to_markdown(index=False) if not frame.empty else "_no rows_")


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
    ax.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    return plot_png(fig, title)
