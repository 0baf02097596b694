"""The weekly re-tune: every symbol partition, Sunday night UTC."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from resources import TuneBudgetResource

from .instance import BUDGET_TAG, symbols_partitions
from .jobs import tune_symbol_job


@schedule(job=tune_symbol_job, cron_schedule="0 2 * * 0", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def weekly_retune(context: ScheduleEvaluationContext, budget: TuneBudgetResource):
    """One tune run per symbol partition, at the deployment's tune budget; the marts and config files
    follow by automation (sensor ``marts_and_config_files``)."""
    symbols = context.instance.get_dynamic_partitions(symbols_partitions.name)
    if not symbols:
        return SkipReason("no symbol partitions yet: run `hpo add-symbols` or enable price_source_sensor")
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return [RunRequest(run_key=f"{symbol}:{week}", partition_key=symbol, tags={BUDGET_TAG: budget.name})
            for symbol in sorted(symbols)]
