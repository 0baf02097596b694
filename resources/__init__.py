"""Dagster resources: price sources, storage (prices, trial metrics, DuckDB), backtest and re-tune settings."""

from .prices import PriceSourceResource
from .settings import BacktestSettings, RetuneSettings
from .storage import StorageResource

__all__ = ["BacktestSettings", "PriceSourceResource", "RetuneSettings", "StorageResource"]
