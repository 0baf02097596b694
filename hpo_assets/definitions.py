"""The code location: every asset, check, job, sensor and resource of the project."""

from __future__ import annotations

from dagster import Definitions, multiprocess_executor

from resources import BacktestSettings, PriceSourceResource, StorageResource

from .jobs import metrics_job, refresh_symbol_job
from .metrics import dbt_metrics, dbt_resource
from .prices import price_history
from .sensors import price_source_sensor
from .sweeps import baseline_sweep


def default_resources() -> dict:
    return {
        "prices": PriceSourceResource(),
        "storage": StorageResource(),
        "backtest": BacktestSettings(),
        "dbt": dbt_resource(),
    }


# Step processes fork from a server that has already imported this code location (dbt and torch
# imports cost seconds), instead of each step re-importing it from scratch.
executor = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["hpo_assets.definitions"]}}}
)

defs = Definitions(
    assets=[price_history, baseline_sweep, dbt_metrics],
    jobs=[refresh_symbol_job, metrics_job],
    sensors=[price_source_sensor],
    resources=default_resources(),
    executor=executor,
)
