"""Backtest settings shared by the data checks and every sweep, so they always agree; re-tune policy and
the deployment's tune budget."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from dagster import ConfigurableResource
from pydantic import Field, field_validator

from forecast_core.forward import DriftPolicy
from forecast_core.windows import WindowSpec

if TYPE_CHECKING:
    from forecast_core.sweep.budgets import TuneBudget

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


class TuneBudgetResource(ConfigurableResource):
    """How much every tune searches, set once per deployment: the weekly schedule's, the re-tune sensor's,
    a backfill's and ``hpo tune``'s tunes all run it. A sweep's run config may still override a field."""

    name: str = Field(default_factory=lambda: os.environ.get("HPO_TUNE_BUDGET", "full"),
                      description="full (the whole search spaces, sized for a GPU) | demo (small CPU budgets) | a name "
                                  "from budgets_file (default: $HPO_TUNE_BUDGET or full)")
    budgets_file: str = Field(default_factory=lambda: os.environ.get("HPO_TUNE_BUDGETS_FILE", ""),
                              description="YAML file of named budgets, {name: {toto: {...}, toto2: {...}, kronos: "
                                          "{...}}}; fields left out keep full's (default: $HPO_TUNE_BUDGETS_FILE)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError(f"tune budget name {value!r}: use 1-64 letters, digits, '_', '.' or '-'")
        return value

    def budget(self) -> TuneBudget:
        """The named budget (the file is read here, not at load, so a bad file fails the tune that needs it)."""
        from forecast_core.sweep.budgets import named_budget

        return named_budget(self.name, self.budgets_file or None)
