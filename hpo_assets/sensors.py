"""Sensors: new symbols and bars in the price source, configs gone stale, and the automation that carries
every tune on to the marts and the config files.

Each sensor's interval may be set per deployment (an hourly feed needs no 5-minute polling) through
the environment variable named in :data:`INTERVALS`.
"""

import json
import os
from pathlib import Path

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from forecast_core.configs import retune_reason
from forecast_core.forward import ForwardStore, drift_reason
from forecast_core.store import StoreError
from resources import PriceSourceResource, RetuneSettings, StorageResource, TuneBudgetResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .instance import BUDGET_TAG, symbols_partitions
from .jobs import refresh_prices_job, tune_symbol_job

# sensor -> (environment variable, default seconds between evaluations)
INTERVALS = {"price_source_sensor": ("HPO_PRICE_SENSOR_SECONDS", 300),
             "stale_config_sensor": ("HPO_RETUNE_SENSOR_SECONDS", 600),
             "marts_and_config_files": ("HPO_AUTOMATION_SECONDS", 30)}


def interval_seconds(name: str) -> int:
    """Seconds between evaluations of sensor ``name``: its environment variable, else the default."""
    variable, default = INTERVALS[name]
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${variable}={text!r}: expected a whole number of seconds >= 1 between evaluations of "
                         f"{name} (default {default})")
    return int(text)


@sensor(job=refresh_prices_job, minimum_interval_seconds=interval_seconds("price_source_sensor"),
        default_status=DefaultSensorStatus.STOPPED)
def price_source_sensor(context: SensorEvaluationContext, prices: PriceSourceResource):
    """Add a partition per new symbol and request a price refresh when a symbol's source changes.

    The cursor holds the last fingerprint seen per symbol, so an unchanged source requests nothing.
    """
    source = prices.source()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(context.instance.get_dynamic_partitions(symbols_partitions.name))
    current = {symbol: source.fingerprint(symbol) for symbol in source.symbols()}
    new_symbols = sorted(set(current) - known)
    changed = sorted(s for s, fp in current.items() if seen.get(s) != fp)
    if not new_symbols and not changed:
        return SkipReason(f"no new symbols or bars in the {source.name} source ({len(current)} symbols)")
    requests = [RunRequest(run_key=f"{s}:{current[s]}", partition_key=s) for s in changed]
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[symbols_partitions.build_add_request(new_symbols)] if new_symbols else [],
        cursor=json.dumps(current, sort_keys=True),
    )


@sensor(job=tune_symbol_job, minimum_interval_seconds=interval_seconds("stale_config_sensor"),
        default_status=DefaultSensorStatus.STOPPED)
def stale_config_sensor(context: SensorEvaluationContext, storage: StorageResource, toto: TotoRuntime,
                        toto2: Toto2Runtime, kronos: KronosRuntime, retune: RetuneSettings,
                        budget: TuneBudgetResource):
    """The one place deciding re-tunes: a symbol whose configs are missing or from other weights, whose
    forward scorecard shows its stored config falling behind persistence or its default (``retune``:
    margin with the paired test's evidence, or K forward windows in a row worse than persistence), or,
    when ``retune.after_new_bars`` is set, whose prices advanced that many bars since selection.
    Run keys (symbol, last bar, revisions) make repeated evaluations idempotent while a tune is
    pending; the reason is in the run's ``retune_reason`` tag, the deployment's budget in ``hpo/budget``."""
    store, forward = storage.storage(), ForwardStore(storage.root)
    revisions = {name: runtime.pinned_revision() for name, runtime in (("toto", toto), ("toto2", toto2),
                                                                        ("kronos", kronos))}
    requests = []
    for symbol in sorted(context.instance.get_dynamic_partitions(symbols_partitions.name)):
        try:
            prices = store.read_prices(symbol)
        except StoreError:
            continue  # prices not materialised yet: price_source_sensor / a tune run will do it
        reason = retune_reason(Path(storage.hyperparams_dir), symbol, list(prices["timestamp"]), revisions,
                               retune.after_new_bars)
        trigger = "stale"
        if reason is None:
            report = forward.read_report(symbol, storage.hyperparams_dir)
            reason, trigger = drift_reason(report, retune.drift_policy()), "forward evidence"
        if reason:
            context.log.info(f"{symbol}: {reason}")
            last = prices["timestamp"].iloc[-1].date()
            requests.append(RunRequest(run_key=f"{symbol}:{last}:" + ":".join(revisions.values()),
                                       partition_key=symbol, tags={"retune_reason": reason[:200],
                                                                        "retune_trigger": trigger,
                                                                        BUDGET_TAG: budget.name}))
    return requests or SkipReason("every symbol's configs are current")


marts_and_config_files = AutomationConditionSensorDefinition(
    "marts_and_config_files", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=interval_seconds("marts_and_config_files"),
    description="Carries every tune on by itself: the dbt marts, the selection statistics and the selection marts "
                "once no sweep is in flight, then the config files of each symbol whose sweeps ran "
                "(hpo_assets/automation.py). Runs by default, so a scheduled or sensor-requested re-tune ends in "
                "new config files.")
