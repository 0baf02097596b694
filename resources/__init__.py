"""Dagster resources: price sources, storage (prices, trial metrics, DuckDB), backtest and re-tune settings,
the tune budget."""

from .prices import PriceSourceResource
from .settings import BacktestSettings, RetuneSettings, TuneBudgetResource
from .storage import StorageResource

__all__ = ["BacktestSettings", "PriceSourceResource", "RetuneSettings", "StorageResource", "TuneBudgetResource"]
