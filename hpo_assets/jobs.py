"""Jobs: refresh prices, tune one symbol, rebuild the marts, write one symbol's selected configs."""

from dagster import AssetSelection, define_asset_job

from .dbt_marts import metrics_assets
from .prices import price_history
from .scorecard import forward_scores
from .selected_configs import selected_configs
from .sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep

refresh_prices_job = define_asset_job(
    "refresh_prices",
    selection=AssetSelection.assets(price_history, forward_scores),
    description="Load, check and store one symbol's prices, then score its stored configs on the newly "
                "completed forward windows (what the price-source sensor requests).",
)

tune_symbol_job = define_asset_job(
    "tune_symbol",
    selection=AssetSelection.assets(price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep),
    description="Refresh one symbol's prices, then run its baseline, Toto, Toto 2.0 and Kronos sweeps.",
)

metrics_job = define_asset_job(
    "build_metrics",
    selection=AssetSelection.assets(*metrics_assets()),
    description="dbt build of the aggregation marts over every stored trial, the selection statistics "
                "(StepM, pooled challengers, model choice, pretraining flags), then the selection marts.",
)

select_configs_job = define_asset_job(
    "select_configs",
    selection=AssetSelection.assets(selected_configs),
    description="Write hyperparams/{toto,toto2,kronos,best}/SYM.json from the marts for one symbol.",
)
