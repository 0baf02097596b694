"""Jobs: refresh one symbol (prices and sweeps), then rebuild the metrics marts."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from .metrics import dbt_metrics
from .prices import price_history
from .sweeps import baseline_sweep

refresh_symbol_job = define_asset_job(
    "refresh_symbol",
    selection=AssetSelection.assets(price_history, baseline_sweep),
    description="Load, check and store one symbol's prices, then run its sweeps.",
)

metrics_job = define_asset_job(
    "build_metrics",
    selection=AssetSelection.assets(dbt_metrics),
    description="dbt build of the staging views and leaderboard marts over every stored trial.",
)
