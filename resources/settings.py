"""Backtest settings shared by the data checks and every sweep, so they always agree; re-tune policy."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from forecast_core.forward import DriftPolicy
from forecast_core.windows import WindowSpec

_SPEC = WindowSpec()  # the window layout's defaults have one owner
_DRIFT = DriftPolicy()  # and the drift policy's


class BacktestSettings(ConfigurableResource):
    """Window layout and the base seed of every (symbol, window) seed."""

    horizon: int = Field(default=_SPEC.horizon, description="forecast horizon H in bars")
    n_val: int = Field(default=_SPEC.n_val, description="validation windows (used for selection)")
    n_test: int = Field(default=_SPEC.n_test, description="held-out test windows (reported only)")
    stride: int = Field(default=_SPEC.stride or 0, description="bars between window origins; 0 means H")
    context: int = Field(default=_SPEC.context, description="context bars before each origin")
    base_seed: int = Field(default=0, description="mixed into every per-window seed")

    def spec(self) -> WindowSpec:
        return WindowSpec(self.horizon, self.n_val, self.n_test, self.stride or None, self.context)


class RetuneSettings(ConfigurableResource):
    """When the stale-config sensor requests a re-tune besides missing or other-weights configs."""

    after_new_bars: int = Field(default=0, ge=0, description="re-tune once this many bars arrived since selection "
                                "(0: off; the forward scorecard decides on evidence instead)")
    drift_margin: float = Field(default=_DRIFT.margin, ge=0, description="re-tune when the stored config's forward MAE% "
                                "exceeds persistence's or its default's by this fraction, with the paired test's "
                                "95% interval above zero")
    drift_consecutive_windows: int = Field(default=_DRIFT.consecutive, ge=1, description="re-tune after this many forward windows "
                                           "in a row worse than persistence")
    drift_min_windows: int = Field(default=_DRIFT.min_windows, ge=1, description="forward windows needed before drift is judged")

    def drift_policy(self) -> DriftPolicy:
        return DriftPolicy(self.drift_margin, self.drift_consecutive_windows, self.drift_min_windows)
