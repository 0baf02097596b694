"""Per-symbol sweeps: score configs on the validation and test windows and store every trial."""

from dataclasses import asdict, replace
from typing import Mapping

import pandas as pd
from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from forecast_core.backtest import Trial
from forecast_core.forecasters import BASELINES
from forecast_core.forward import Forecast, forecast_with
from forecast_core.selection import BASELINE_WINNERS
from forecast_core.store import StoreError
from forecast_core.sweep.budgets import BASELINE_TRIALS, kronos_promoted, kronos_sweep_plans, toto_trials
from forecast_core.sweep.plans import toto_plans
from forecast_core.sweep.runner import SingleDraw, SweepResult
from forecast_core.sweep.symbol import SymbolSweep, best_trial, default_reference
from resources import BacktestSettings, StorageResource, TuneBudgetResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .compiled_models import kronos_model, toto_model
from .fixes import in_dagster, prices_fix
from .instance import ACCELERATOR_OP_TAGS, ACCELERATOR_POOL, symbols_partitions
from .metadata import numbers, plot_png, table
from .prices import price_history


def _load(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings,
          model_revision: str = "") -> SymbolSweep:
    """The partition's sweep on its stored prices; a Failure naming the asset to run when there are none."""
    symbol = context.partition_key
    try:
        return SymbolSweep.load(storage.storage(), symbol, backtest.spec(), backtest.base_seed, model_revision,
                                context.run.run_id, context.log.info)
    except StoreError as exc:
        raise in_dagster(exc, prices_fix(symbol)) from None


def _layout_metadata(sweep: SymbolSweep) -> dict:
    """The layout, its reason and evidence: numeric entries so the UI can chart them over time."""
    values = sweep.layout_values()
    return {"layout": MetadataValue.json(values.layout), "layout_reason": values.reason, "tunable": values.tunable,
            **numbers(values.figures)}


def _metadata(sweep: SymbolSweep, result: SweepResult, summary: pd.DataFrame, references: Mapping[str, Trial]) -> dict:
    """The leaderboard table and the headline numbers the Plots tab tracks across runs (a reference
    config the sweep did not score is left out)."""
    board = sweep.leaderboard(result, summary, references)
    return {"leaderboard": table(board.table), **numbers(board.figures), "best_config": board.best_config,
            **_layout_metadata(sweep), "data_version": sweep.ctx.data_version,
            "model_revision": sweep.ctx.model_revision}


def _plot(sweep: SymbolSweep, trials: list[Trial], forecast: Forecast, title: str) -> MetadataValue:
    return plot_png(sweep.figure(trials, forecast, title), f"{sweep.ctx.symbol}: {title}")


def _nothing_to_score(context: AssetExecutionContext, sweep: SymbolSweep) -> MaterializeResult:
    """Too short for any window: a normal outcome (the config files keep the defaults), not a failure."""
    context.log.warning(f"{context.partition_key}: {sweep.layout.reason}; nothing scored")
    return MaterializeResult(metadata={**_layout_metadata(sweep), "trials_computed": 0, "trials_skipped": 0})


def _budget(context: AssetExecutionContext, deployment: TuneBudgetResource, family: str, config: Config):
    """This sweep's part of the deployment's tune budget, with the fields the run config sets on top;
    (budget, what to show in the metadata)."""
    overrides = {k: v for k, v in config.model_dump().items() if v is not None}
    try:
        budget = replace(getattr(deployment.budget(), family), **overrides)
    except ValueError as exc:
        raise Failure(description=f"{context.partition_key}: {family} sweep not started: {exc}") from None
    shown = deployment.name + (f" with run-config overrides {overrides}" if overrides else "")
    context.log.info(f"{family} sweep budget: {shown}")
    return budget, shown


def _from_budget(text: str) -> Field:
    return Field(default=None, description=f"{text} (default: the deployment's tune budget, resource `budget`)")


@asset(partitions_def=symbols_partitions, deps=[price_history], group_name="sweeps", kinds={"parquet"})
def baseline_sweep(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings):
    """Baselines on the models' windows: persistence, seasonal naive, drift, random walk.

    The references every model config is measured against (persistence for MAE%, the zero-drift
    random walk for CRPS% and coverage).
    """
    sweep = _load(context, storage, backtest)
    if sweep.windows is None:
        return _nothing_to_score(context, sweep)
    plans = [SingleDraw(BASELINES[name], [trial]) for name, trial in BASELINE_TRIALS.items()]
    result = sweep.run("baseline", plans)
    summary = sweep.summary("baseline", list(BASELINE_TRIALS.values()))
    plot = _plot(sweep, list(BASELINE_TRIALS.values()), forecast_with(), "baselines, last test window")
    references = {name: BASELINE_TRIALS[name] for name in BASELINE_WINNERS}
    return MaterializeResult(metadata={**_metadata(sweep, result, summary, references), "last_test_window": plot})


class TotoSweepConfig(Config):
    sample_counts: list[int] | None = _from_budget("num_samples grid")
    aggregations: list[str] | None = _from_budget("aggregation grid")


@asset(partitions_def=symbols_partitions, deps=[price_history, toto_model], group_name="sweeps",
       kinds={"pytorch", "parquet"}, pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def toto_sweep(context: AssetExecutionContext, config: TotoSweepConfig, toto: TotoRuntime,
               storage: StorageResource, backtest: BacktestSettings, budget: TuneBudgetResource):
    """Toto 1.0: num_samples x aggregation grid, scored from one draw per window.

    The grid plus the default and the users' guide presets. A history too short to tune scores only
    the default config (compared with persistence).
    """
    toto_budget, shown = _budget(context, budget, "toto", config)
    sweep = _load(context, storage, backtest, toto.model_revision)
    if sweep.windows is None:
        return _nothing_to_score(context, sweep)
    trials = toto_trials(toto_budget, sweep.tunable)
    seen_reductions = len(toto.forecaster.reductions)
    result = sweep.run("toto", toto_plans(toto.forecaster, trials))
    reductions = toto.forecaster.reductions[seen_reductions:]
    summary = sweep.summary("toto", trials)
    plot = _plot(sweep, [best_trial(summary, trials)], forecast_with(toto=lambda: toto.forecaster),
                 "Toto's best config on validation, last test window")
    meta = {**_metadata(sweep, result, summary, default_reference(trials)), "budget": shown}
    if reductions:
        meta["chunk_size_reductions"] = "; ".join(reductions)
    return MaterializeResult(metadata={**meta, "last_test_window": plot})


class Toto2SweepConfig(Config):
    context_lengths: list[int] | None = _from_budget("context bars (0 = all of the window's context); longer than "
                                                     "the windows' context is skipped")
    decode_block_sizes: list[int] | None = _from_budget("0 = one forward pass, else block decoding (bars per block)")
    variates: list[str] | None = _from_budget("input series: close | ohlc | ohlcv")
    aggregations: list[str] | None = _from_budget("point rules over the quantile levels: median, mean, quantile_Q")


@asset(partitions_def=symbols_partitions, deps=[price_history], group_name="sweeps", kinds={"pytorch", "parquet"},
       pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def toto2_sweep(context: AssetExecutionContext, config: Toto2SweepConfig, toto2: Toto2Runtime,
                storage: StorageResource, backtest: BacktestSettings, budget: TuneBudgetResource):
    """Toto 2.0: checkpoint x context x decoding x variates, one forward pass each.

    Every listed checkpoint, context length, decoding and input variates, scoring every point rule
    over the 9 quantile levels. A history too short to tune scores only the default config (first
    checkpoint, all the context, one pass, close only, median), compared with persistence.
    """
    toto2_budget, shown = _budget(context, budget, "toto2", config)  # refuses unknown variates
    sweep = _load(context, storage, backtest, toto2.model_revision)
    if sweep.windows is None:
        return _nothing_to_score(context, sweep)
    plans = toto2_budget.plans(toto2.loaders(), sweep.windows.spec.context, sweep.tunable)
    trials = [t for plan in plans for group in plan.trials for t in group]
    result = sweep.run("toto2", plans)
    summary = sweep.summary("toto2", trials)
    plot = _plot(sweep, [best_trial(summary, trials)], forecast_with(toto2=toto2.model),
                 "Toto 2.0's best config on validation, last test window")
    return MaterializeResult(metadata={**_metadata(sweep, result, summary, default_reference(trials)), "budget": shown,
                                       "checkpoints": MetadataValue.json(toto2.labels), "last_test_window": plot})


class KronosSweepConfig(Config):
    presets: list[str] | None = _from_budget("users' guide presets to score")
    sample_counts: list[int] | None = _from_budget("sample_count prefixes")
    aggregations: list[str] | None = _from_budget("aggregations of the sample paths")
    search_budget: int | None = _from_budget("TPE proposals scored on the cheap rung (0 = presets only)")
    search_sample_count: int | None = _from_budget("samples per proposal on the cheap rung")
    rung_windows: int | None = _from_budget("validation windows of the cheap rung")
    keep_fraction: float | None = _from_budget("share of proposals promoted to all windows")
    max_sample_count: int | None = _from_budget("cap on every config's sample_count, e.g. for CPU demos (0 = none); "
                                                "stored configs carry the capped count they were scored with")


@asset(partitions_def=symbols_partitions, deps=[price_history, kronos_model], group_name="sweeps",
       kinds={"pytorch", "parquet"}, pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def kronos_sweep(context: AssetExecutionContext, config: KronosSweepConfig, kronos: KronosRuntime,
                 storage: StorageResource, backtest: BacktestSettings, budget: TuneBudgetResource):
    """Kronos: default, guide presets and TPE proposals promoted by successive halving.

    A history too short to tune scores only the default config (compared with persistence).
    """
    kronos_budget, shown = _budget(context, budget, "kronos", config)  # refuses unknown presets
    sweep = _load(context, storage, backtest, kronos.model_revision)
    if sweep.windows is None:
        return _nothing_to_score(context, sweep)
    forecaster = kronos.forecaster
    promoted, trace = [], []
    if sweep.tunable:
        promoted, trace = kronos_promoted(forecaster, sweep.windows, kronos_budget, sweep.search_seed)
        context.log.info(f"TPE: {len(trace)} proposals on {kronos_budget.rung_windows} validation windows, "
                         f"{len(promoted)} promoted to every window")
    plans = kronos_sweep_plans(forecaster, kronos_budget, sweep.tunable, promoted)
    trials = [t for plan in plans for group in plan.trials for t in group]
    result = sweep.run("kronos", plans)
    summary = sweep.summary("kronos", trials)
    best = best_trial(summary, trials)
    plot = _plot(sweep, [best], forecast_with(kronos=lambda: forecaster),
                 "Kronos's best config on validation, last test window")
    search = pd.DataFrame([{**asdict(c), "rung_val_mae_pct": s} for c, s in trace])
    return MaterializeResult(metadata={**_metadata(sweep, result, summary, default_reference(trials)), "budget": shown,
                                       "search_trace": table(search), "last_test_window": plot})
