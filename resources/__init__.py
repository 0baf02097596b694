"""Dagster resources: price sources, storage (prices, trial metrics, DuckDB), backtest settings, device."""

from .prices import PriceSourceResource
from .settings import BacktestSettings
from .storage import StorageResource

__all__ = ["BacktestSettings", "PriceSourceResource", "StorageResource"]
