"""Helpers shared by the asset modules: partitions, metadata tables and plots."""

from __future__ import annotations

import base64
import io

import matplotlib
import pandas as pd
from dagster import DagsterInstance, DynamicPartitionsDefinition, MetadataValue

from forecast_core.data import validate_symbol
from forecast_core.files import process_alive

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


def md_table(frame: pd.DataFrame, digits: int = 3) -> MetadataValue:
    rounded = frame.round({column: digits for column in frame.select_dtypes("number").columns})
    return MetadataValue.md(rounded.to_markdown(index=False) if not frame.empty else "_no rows_")


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
