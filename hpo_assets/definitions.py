"""The code location: every asset, check, job, schedule, sensor and resource of the project."""

from dagster import Definitions, multiprocess_executor

from resources import BacktestSettings, PriceSourceResource, RetuneSettings, StorageResource, TuneBudgetResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .compiled_models import kronos_model, toto_model
from .dbt_marts import dbt_metrics, dbt_selection_marts
from .dbt_project import dbt_resource
from .jobs import metrics_job, refresh_prices_job, select_configs_job, tune_symbol_job
from .prices import price_history
from .schedules import weekly_retune
from .scorecard import forward_scores
from .selected_configs import selected_configs
from .sensors import marts_and_config_files, price_source_sensor, stale_config_sensor
from .statistics import selection_statistics
from .sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep


def default_resources() -> dict:
    return {
        "prices": PriceSourceResource(),
        "storage": StorageResource(),
        "backtest": BacktestSettings(),
        "retune": RetuneSettings(),
        "budget": TuneBudgetResource(),
        "toto": TotoRuntime(),
        "toto2": Toto2Runtime(),
        "kronos": KronosRuntime(),
        "dbt": dbt_resource(),
    }


# Step processes fork from a server that has already imported this code location (dbt and torch
# imports cost seconds), instead of each step re-importing it from scratch.
executor = multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["hpo_assets.definitions"]}}}
)

defs = Definitions(
    assets=[price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep, dbt_metrics, selection_statistics,
            dbt_selection_marts, selected_configs, forward_scores, toto_model, kronos_model],
    jobs=[refresh_prices_job, tune_symbol_job, metrics_job, select_configs_job],
    schedules=[weekly_retune],
    sensors=[price_source_sensor, stale_config_sensor, marts_and_config_files],
    resources=default_resources(),
    executor=executor,
)
