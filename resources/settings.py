"""Backtest settings shared by the data checks and every sweep, so they always agree."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from forecast_core.windows import WindowSpec


class BacktestSettings(ConfigurableResource):
    """Window layout (brief §2) and the base seed of every (symbol, window) seed."""

    horizon: int = Field(default=64, description="forecast horizon H in bars")
    n_val: int = Field(default=8, description="validation windows (used for selection)")
    n_test: int = Field(default=8, description="held-out test windows (reported only)")
    stride: int = Field(default=0, description="bars between window origins; 0 means H")
    context: int = Field(default=512, description="context bars before each origin")
    base_seed: int = Field(default=0, description="mixed into every per-window seed")

    def spec(self) -> WindowSpec:
        return WindowSpec(self.horizon, self.n_val, self.n_test, self.stride or None, self.context)
