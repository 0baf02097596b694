"""One symbol's sweep: its prices, the layout its history allows, its windows and trial identity.

Runs draw plans into the store and summarises them as plain values (a leaderboard frame, headline
figures, the layout's evidence, a matplotlib figure), so the Dagster sweep assets and
:func:`~forecast_core.sweep.budgets.tune_symbol` drive the same code; the assets turn the values into
metadata. Progress goes to ``log``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import pandas as pd
from matplotlib.figure import Figure

from ..backtest import Draw, Trial
from ..labels import short_label
from ..plots import last_test_window_figure
from ..store import Storage, TrialContext, trial_context
from ..windows import Layout, WindowSpec, Windows, build_windows, plan_layout
from .runner import DrawPlan, SweepResult, run_sweep, summarize
from .spaces import search_seed

Log = Callable[[str], None]
LEADERBOARD_ROWS = 25  # configs shown on a sweep's leaderboard, best on validation first


def _silent(_: str) -> None:
    """The default ``log``: progress nobody asked for."""


@dataclass(frozen=True)
class LayoutValues:
    """The layout a history allows, its reason and evidence (numeric, so they can be charted over runs)."""

    layout: dict  # the chosen layout, with the requested one under "requested"
    reason: str
    tunable: bool
    figures: dict[str, float | int]  # history_bars, val_windows, test_windows, effective_val_windows


@dataclass(frozen=True)
class Leaderboard:
    """A sweep's outcome: its best configs and the headline figures tracked across runs."""

    table: pd.DataFrame  # up to LEADERBOARD_ROWS configs, the short label first and the full name last
    figures: dict[str, float | int | None]  # None: not scored
    best_config: str  # the best config on validation, in short


@dataclass(frozen=True)
class SymbolSweep:
    """Prices, layout, windows and trial identity of one symbol (windows and ctx are None when not even
    a comparison window fits), and the store its trials go to."""

    store: Storage
    prices: pd.DataFrame
    layout: Layout
    windows: Windows | None
    ctx: TrialContext | None
    log: Log = _silent

    @classmethod
    def of(cls, store: Storage, symbol: str, prices: pd.DataFrame, spec: WindowSpec, base_seed: int = 0,
           model_revision: str = "", run_id: str = "", log: Log = _silent) -> "SymbolSweep":
        """The sweep of ``prices`` on the layout their length allows for the requested ``spec``."""
        layout = plan_layout(len(prices), spec)
        log(f"{symbol}: {layout.reason}")
        if layout.spec is None:
            return cls(store, prices, layout, None, None, log)
        windows = build_windows(prices, layout.spec, symbol, base_seed)
        ctx = trial_context(symbol, prices, layout, model_revision=model_revision, base_seed=base_seed, run_id=run_id)
        return cls(store, prices, layout, windows, ctx, log)

    @classmethod
    def load(cls, store: Storage, symbol: str, spec: WindowSpec, base_seed: int = 0, model_revision: str = "",
             run_id: str = "", log: Log = _silent) -> "SymbolSweep":
        """The sweep of ``symbol``'s stored prices (a :class:`~forecast_core.store.StoreError` when there are none)."""
        return cls.of(store, symbol, store.read_prices(symbol), spec, base_seed, model_revision, run_id, log)

    def with_revision(self, model_revision: str) -> "SymbolSweep":
        """The same windows, for trials of other weights (the baselines have none)."""
        return replace(self, ctx=replace(self.ctx, model_revision=model_revision))

    @property
    def tunable(self) -> bool:
        return self.layout.tunable

    @property
    def search_seed(self) -> int:
        """The seed of a search over this symbol's data (the same data, the same proposals)."""
        return search_seed(self.ctx.symbol, self.ctx.data_version, self.ctx.base_seed)

    def run(self, sweep: str, plans: list[DrawPlan]) -> SweepResult:
        self.log(f"{self.ctx.symbol}: {sum(len(g) for p in plans for g in p.trials)} trials in {len(plans)} draws "
                 f"over {len(self.windows)} windows (data {self.ctx.data_version})")
        return run_sweep(self.store, sweep, self.ctx, self.windows, plans, progress=self.log)

    def summary(self, sweep: str, trials: list[Trial]) -> pd.DataFrame:
        """Means per config, best on validation first, with each config's short label."""
        rows = self.store.read_trials(sweep, self.ctx.symbol)
        summary = summarize(rows[rows["trial_key"].isin([self.ctx.key(t) for t in trials])])
        labels = {t.name: short_label(t.model, t.knobs) for t in trials}
        summary.insert(1, "config", summary["config_name"].map(labels))
        return summary

    def figure(self, trials: list[Trial], forecast: Callable[[Trial, Windows], Draw], title: str) -> Figure:
        """Forecast (with 10-90% band) vs actual on the last test window, one line per config."""
        return last_test_window_figure(self.prices, self.windows, trials, forecast, f"{self.ctx.symbol}: {title}")

    def layout_values(self) -> LayoutValues:
        evidence = self.layout.evidence()
        return LayoutValues(
            {**self.layout.as_dict(), "requested": self.layout.requested.as_dict()}, self.layout.reason,
            self.layout.tunable,
            {"history_bars": self.layout.bars, "val_windows": evidence["n_val"], "test_windows": evidence["n_test"],
             "effective_val_windows": evidence["effective_val_windows"]})

    def leaderboard(self, result: SweepResult, summary: pd.DataFrame, references: Mapping[str, Trial]) -> Leaderboard:
        """Trials computed/skipped, draw seconds, the best config's scores and each reference config's
        MAE% (``{name}_val_mae_pct``, ``{name}_test_mae_pct``; None when not scored)."""
        best = summary.iloc[0]
        figures = {"trials_computed": len(result.computed), "trials_skipped": len(result.skipped),
                   "draw_seconds": result.seconds, "best_val_mae_pct": best["val_mae_pct"],
                   "best_test_mae_pct": best["test_mae_pct"], "best_seconds": best["seconds"]}
        for name, trial in references.items():
            row = summary[summary["config_name"] == trial.name]
            for split in ("val", "test"):
                figures[f"{name}_{split}_mae_pct"] = row[f"{split}_mae_pct"].iloc[0] if len(row) else None
        # the full config name last: the short label says the same and keeps the figures on screen
        shown = summary.head(LEADERBOARD_ROWS)[[*summary.columns.drop("config_name"), "config_name"]]
        return Leaderboard(shown, figures, best["config"])


def best_trial(summary: pd.DataFrame, trials: list[Trial]) -> Trial:
    """The trial a :meth:`SymbolSweep.summary` ranks first on validation."""
    return {t.name: t for t in trials}[summary.iloc[0]["config_name"]]


def default_reference(trials: list[Trial]) -> dict[str, Trial]:
    """The model's default config as the sweep's reference, when the sweep scored it."""
    return {"default": t for t in trials if t.is_default}
