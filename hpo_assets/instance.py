"""The project's state on the Dagster instance: symbol partitions, pools and their limits, dead runs."""

from __future__ import annotations

from dagster import DagsterInstance, DynamicPartitionsDefinition

from forecast_core.data import validate_symbol
from forecast_core.files import process_alive

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
BUDGET_TAG = "hpo/budget"  # the tune budget a run's sweeps read (resource `budget`), shown in the runs list

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


# The daemon threads that evaluate each kind of automation (automation-condition sensors run in the asset daemon).
_DAEMONS = {"schedule": "SCHEDULER", "sensor": "SENSOR", "automation": "ASSET"}


def automation_state(instance: DagsterInstance, defs) -> dict:
    """Each schedule and sensor of ``defs`` on ``instance``: on or off (as toggled here, else its default),
    and whether the daemon that evaluates it is running. Read-only.

    Returns {"parts": [{name, kind, on, default_on, daemon_running, how_to_start}], "daemon_running": bool}.
    """
    from dagster import AutomationConditionSensorDefinition, DefaultScheduleStatus, DefaultSensorStatus

    toggled: dict[str, set[str]] = {}  # name -> RUNNING / STOPPED (toggled) or DECLARED_IN_CODE (default)
    for state in instance.all_instigator_state():
        toggled.setdefault(state.instigator_name, set()).add(state.status.value)
    daemons = {name: status.healthy for name, status in instance.get_daemon_statuses(list(_DAEMONS.values())).items()
               if status.required}
    repository = defs.get_repository_def()
    found = [(s.name, "schedule", s.default_status == DefaultScheduleStatus.RUNNING) for s in repository.schedule_defs]
    found += [(s.name, "automation" if isinstance(s, AutomationConditionSensorDefinition) else "sensor",
               s.default_status == DefaultSensorStatus.RUNNING) for s in repository.sensor_defs]
    parts = []
    for name, kind, default_on in found:
        statuses = toggled.get(name, set())
        on = "RUNNING" in statuses or ("STOPPED" not in statuses and default_on)
        command = "schedule" if kind == "schedule" else "sensor"
        parts.append({"name": name, "kind": kind, "on": on, "default_on": default_on,
                      "daemon_running": bool(daemons.get(_DAEMONS[kind], False)),
                      "how_to_start": f"dagster {command} start {name} -w workspace.yaml"})
    return {"parts": parts, "daemon_running": bool(daemons) and all(daemons.values())}
