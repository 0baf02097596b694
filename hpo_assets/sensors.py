"""Sensors: new symbols in the price source become partitions, changed data triggers a refresh."""

import json

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from resources import PriceSourceResource

from .jobs import refresh_symbol_job
from .lib import symbols_partitions


@sensor(job=refresh_symbol_job, minimum_interval_seconds=300, default_status=DefaultSensorStatus.STOPPED)
def price_source_sensor(context: SensorEvaluationContext, prices: PriceSourceResource):
    """Add a partition per new symbol and request a refresh when a symbol's source fingerprint changes.

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
