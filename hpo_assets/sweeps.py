"""Per-symbol sweeps: score configs on the validation and test windows and store every trial."""

from dataclasses import asdict, dataclass
from typing import Mapping

import pandas as pd
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from forecast_core.backtest import Trial
from forecast_core.sweep.budgets import (
    BASELINE_TRIALS,
    KronosBudget,
    Toto2Budget,
    TotoBudget,
    kronos_promoted,
    kronos_sweep_plans,
    toto_trials,
)
from forecast_core.forecasters import BASELINES
from forecast_core.forward import Forecast, forecast_with
from forecast_core.labels import short_label
from forecast_core.plots import last_test_window_figure
from forecast_core.sweep.spaces import search_seed
from forecast_core.selection import BASELINE_WINNERS
from forecast_core.store import Storage, TrialContext, trial_context
from forecast_core.sweep.runner import DrawPlan, SingleDraw, SweepResult, run_sweep, summarize
from forecast_core.sweep.plans import toto_plans
from forecast_core.windows import Layout, Windows, build_windows, plan_layout
from resources import BacktestSettings, StorageResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .instance import ACCELERATOR_OP_TAGS, ACCELERATOR_POOL, symbols_partitions

from .metadata import numbers, plot_png, table
from .compiled_models import kronos_model, toto_model
from .prices import price_history


@dataclass
class SymbolSweep:
    """What every sweep asset needs for one partition: prices, the layout its history allows, its
    windows and trial identity (None when not even a comparison window fits), storage."""

    store: Storage
    prices: pd.DataFrame
    layout: Layout
    windows: Windows | None
    ctx: TrialContext | None

    @classmethod
    def load(cls, context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings,
             model_revision: str = "") -> "SymbolSweep":
        symbol = context.partition_key
        store = storage.storage()
        prices = store.read_prices(symbol)
        layout = plan_layout(len(prices), backtest.spec())
        context.log.info(f"{symbol}: {layout.reason}")
        if layout.spec is None:
            return cls(store, prices, layout, None, None)
        windows = build_windows(prices, layout.spec, symbol, backtest.base_seed)
        ctx = trial_context(symbol, prices, layout, model_revision=model_revision, base_seed=backtest.base_seed,
                            run_id=context.run.run_id)
        return cls(store, prices, layout, windows, ctx)

    @property
    def tunable(self) -> bool:
        return self.layout.tunable

    def run(self, context: AssetExecutionContext, sweep: str, plans: list[DrawPlan]) -> SweepResult:
        context.log.info(f"{self.ctx.symbol}: {sum(len(g) for p in plans for g in p.trials)} trials in "
                         f"{len(plans)} draws over {len(self.windows)} windows (data {self.ctx.data_version})")
        return run_sweep(self.store, sweep, self.ctx, self.windows, plans, progress=context.log.info)

    def summary(self, sweep: str, trials: list[Trial]) -> pd.DataFrame:
        """Means per config, best on validation first, with each config's short label."""
        rows = self.store.read_trials(sweep, self.ctx.symbol)
        summary = summarize(rows[rows["trial_key"].isin([self.ctx.key(t) for t in trials])])
        labels = {t.name: short_label(t.model, t.knobs) for t in trials}
        summary.insert(1, "config", summary["config_name"].map(labels))
        return summary

    def plot(self, trials: list[Trial], forecast: Forecast, title: str) -> MetadataValue:
        """Forecast (with 10-90% band) vs actual on the last test window, one line per config."""
        title = f"{self.ctx.symbol}: {title}"
        return plot_png(last_test_window_figure(self.prices, self.windows, trials, forecast, title), title)

    def layout_metadata(self) -> dict:
        """The layout, its reason and evidence: numeric entries so the UI can chart them over time."""
        evidence = self.layout.evidence()
        return {
            "layout": MetadataValue.json({**self.layout.as_dict(), "requested": self.layout.requested.as_dict()}),
            "layout_reason": self.layout.reason,
            "tunable": self.layout.tunable,
            **numbers({"history_bars": self.layout.bars, "val_windows": evidence["n_val"],
                       "test_windows": evidence["n_test"], "effective_val_windows": evidence["effective_val_windows"]}),
        }

    def metadata(self, result: SweepResult, summary: pd.DataFrame, references: Mapping[str, Trial]) -> dict:
        """The leaderboard table and the headline numbers the Plots tab tracks across runs: trials
        computed/skipped, the best config (on validation) and each reference config's MAE%
        (``{name}_val_mae_pct``, ``{name}_test_mae_pct``; a config not scored is left out)."""
        best = summary.iloc[0]
        figures = {"trials_computed": len(result.computed), "trials_skipped": len(result.skipped),
                   "draw_seconds": result.seconds, "best_val_mae_pct": best["val_mae_pct"],
                   "best_test_mae_pct": best["test_mae_pct"], "best_seconds": best["seconds"]}
        for name, trial in references.items():
            row = summary[summary["config_name"] == trial.name]
            for split in ("val", "test"):
                figures[f"{name}_{split}_mae_pct"] = row[f"{split}_mae_pct"].iloc[0] if len(row) else None
        return {
            # the full config name last: the short label says the same and keeps the figures on screen
            "leaderboard": table(summary.head(25)[[*summary.columns.drop("config_name"), "config_name"]]),
            **numbers(figures),
            "best_config": best["config"],
            **self.layout_metadata(),
            "data_version": self.ctx.data_version,
            "model_revision": self.ctx.model_revision,
        }

    def nothing_to_score(self, context: AssetExecutionContext) -> MaterializeResult:
        """Too short for any window: a normal outcome (the config files keep the defaults), not a failure."""
        context.log.warning(f"{context.partition_key}: {self.layout.reason}; nothing scored")
        return MaterializeResult(metadata={**self.layout_metadata(), "trials_computed": 0, "trials_skipped": 0})


def _best(summary: pd.DataFrame, trials: list[Trial]) -> Trial:
    by_name = {t.name: t for t in trials}
    return by_name[summary.iloc[0]["config_name"]]


def _default(trials: list[Trial]) -> dict[str, Trial]:
    """The model's default config as the sweep's reference, when the sweep scored it."""
    return {"default": t for t in trials if t.is_default}


@asset(partitions_def=symbols_partitions, deps=[price_history], group_name="sweeps", kinds={"parquet"})
def baseline_sweep(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings):
    """Baselines on the models' windows: persistence, seasonal naive, drift, random walk.

    The references every model config is measured against (persistence for MAE%, the zero-drift
    random walk for CRPS% and coverage).
    """
    sweep = SymbolSweep.load(context, storage, backtest)
    if sweep.windows is None:
        return sweep.nothing_to_score(context)
    plans = [SingleDraw(BASELINES[name], [trial]) for name, trial in BASELINE_TRIALS.items()]
    result = sweep.run(context, "baseline", plans)
    summary = sweep.summary("baseline", list(BASELINE_TRIALS.values()))
    plot = sweep.plot(list(BASELINE_TRIALS.values()), forecast_with(), "baselines, last test window")
    references = {name: BASELINE_TRIALS[name] for name in BASELINE_WINNERS}
    return MaterializeResult(metadata={**sweep.metadata(result, summary, references), "last_test_window": plot})


_TOTO = TotoBudget()


class TotoSweepConfig(Config):
    sample_counts: list[int] = Field(default=list(_TOTO.sample_counts), description="num_samples grid")
    aggregations: list[str] = Field(default=list(_TOTO.aggregations), description="aggregation grid")


@asset(partitions_def=symbols_partitions, deps=[price_history, toto_model], group_name="sweeps",
       kinds={"pytorch", "parquet"}, pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def toto_sweep(context: AssetExecutionContext, config: TotoSweepConfig, toto: TotoRuntime,
               storage: StorageResource, backtest: BacktestSettings):
    """Toto 1.0: num_samples x aggregation grid, scored from one draw per window.

    The grid plus the default and the users' guide presets. A history too short to tune scores only
    the default config (compared with persistence).
    """
    sweep = SymbolSweep.load(context, storage, backtest, toto.model_revision)
    if sweep.windows is None:
        return sweep.nothing_to_score(context)
    trials = toto_trials(TotoBudget(**config.model_dump()), sweep.tunable)
    seen_reductions = len(toto.forecaster.reductions)
    result = sweep.run(context, "toto", toto_plans(toto.forecaster, trials))
    reductions = toto.forecaster.reductions[seen_reductions:]
    summary = sweep.summary("toto", trials)
    plot = sweep.plot([_best(summary, trials)], forecast_with(toto=lambda: toto.forecaster),
                      "Toto's best config on validation, last test window")
    meta = sweep.metadata(result, summary, _default(trials))
    if reductions:
        meta["chunk_size_reductions"] = "; ".join(reductions)
    return MaterializeResult(metadata={**meta, "last_test_window": plot})


_TOTO2 = Toto2Budget()


class Toto2SweepConfig(Config):
    context_lengths: list[int] = Field(default=list(_TOTO2.context_lengths),
                                       description="context bars (0 = all of the window's context); longer than "
                                                   "the windows' context is skipped")
    decode_block_sizes: list[int] = Field(default=list(_TOTO2.decode_block_sizes),
                                          description="0 = one forward pass, else block decoding (bars per block)")
    variates: list[str] = Field(default=list(_TOTO2.variates), description="input series: close | ohlc | ohlcv")
    aggregations: list[str] = Field(default=list(_TOTO2.aggregations),
                                    description="point rules over the quantile levels: median, mean, quantile_Q")


@asset(partitions_def=symbols_partitions, deps=[price_history], group_name="sweeps", kinds={"pytorch", "parquet"},
       pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def toto2_sweep(context: AssetExecutionContext, config: Toto2SweepConfig, toto2: Toto2Runtime,
                storage: StorageResource, backtest: BacktestSettings):
    """Toto 2.0: checkpoint x context x decoding x variates, one forward pass each.

    Every listed checkpoint, context length, decoding and input variates, scoring every point rule
    over the 9 quantile levels. A history too short to tune scores only the default config (first
    checkpoint, all the context, one pass, close only, median), compared with persistence.
    """
    budget = Toto2Budget(**config.model_dump())  # refuses unknown variates
    sweep = SymbolSweep.load(context, storage, backtest, toto2.model_revision)
    if sweep.windows is None:
        return sweep.nothing_to_score(context)
    plans = budget.plans(toto2.loaders(), sweep.windows.spec.context, sweep.tunable)
    trials = [t for plan in plans for group in plan.trials for t in group]
    result = sweep.run(context, "toto2", plans)
    summary = sweep.summary("toto2", trials)
    plot = sweep.plot([_best(summary, trials)], forecast_with(toto2=toto2.model),
                      "Toto 2.0's best config on validation, last test window")
    return MaterializeResult(metadata={**sweep.metadata(result, summary, _default(trials)),
                                       "checkpoints": MetadataValue.json(toto2.labels), "last_test_window": plot})


_KRONOS = KronosBudget()


class KronosSweepConfig(Config):
    presets: list[str] = Field(default=list(_KRONOS.presets), description="users' guide presets to score")
    sample_counts: list[int] = Field(default=list(_KRONOS.sample_counts), description="sample_count prefixes")
    aggregations: list[str] = Field(default=list(_KRONOS.aggregations))
    search_budget: int = Field(default=_KRONOS.search_budget,
                               description="TPE proposals scored on the cheap rung (0 = presets only)")
    search_sample_count: int = Field(default=_KRONOS.search_sample_count,
                                     description="samples per proposal on the cheap rung")
    rung_windows: int = Field(default=_KRONOS.rung_windows, description="validation windows of the cheap rung")
    keep_fraction: float = Field(default=_KRONOS.keep_fraction,
                                 description="share of proposals promoted to all windows")
    max_sample_count: int = Field(default=_KRONOS.max_sample_count, description="cap on every config's "
                                  "sample_count, e.g. for CPU demos (0 = none); stored configs carry the capped "
                                  "count they were scored with")


@asset(partitions_def=symbols_partitions, deps=[price_history, kronos_model], group_name="sweeps",
       kinds={"pytorch", "parquet"}, pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def kronos_sweep(context: AssetExecutionContext, config: KronosSweepConfig, kronos: KronosRuntime,
                 storage: StorageResource, backtest: BacktestSettings):
    """Kronos: default, guide presets and TPE proposals promoted by successive halving.

    A history too short to tune scores only the default config (compared with persistence).
    """
    budget = KronosBudget(**config.model_dump())  # refuses unknown presets
    sweep = SymbolSweep.load(context, storage, backtest, kronos.model_revision)
    if sweep.windows is None:
        return sweep.nothing_to_score(context)
    forecaster = kronos.forecaster
    promoted, trace = [], []
    if sweep.tunable:
        seed = search_seed(sweep.ctx.symbol, sweep.ctx.data_version, sweep.ctx.base_seed)
        promoted, trace = kronos_promoted(forecaster, sweep.windows, budget, seed)
        context.log.info(f"TPE: {len(trace)} proposals on {budget.rung_windows} validation windows, "
                         f"{len(promoted)} promoted to every window")
    plans = kronos_sweep_plans(forecaster, budget, sweep.tunable, promoted)
    trials = [t for plan in plans for group in plan.trials for t in group]
    result = sweep.run(context, "kronos", plans)
    summary = sweep.summary("kronos", trials)
    best = _best(summary, trials)
    plot = sweep.plot([best], forecast_with(kronos=lambda: forecaster),
                      "Kronos's best config on validation, last test window")
    search = pd.DataFrame([{**asdict(c), "rung_val_mae_pct": s} for c, s in trace])
    return MaterializeResult(metadata={**sweep.metadata(result, summary, _default(trials)),
                                       "search_trace": table(search), "last_test_window": plot})
