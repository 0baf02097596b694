"""Per-symbol sweeps: score configs on the validation and test windows and store every trial."""

import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, asset

from forecast_core.backtest import Trial, draw, last_window_forecast
from forecast_core.forecasters import BASELINES
from forecast_core.store import trial_context
from forecast_core.sweep import run_sweep, summarize
from forecast_core.windows import TEST, build_windows
from resources import BacktestSettings, StorageResource

from .lib import md_table, plot_forecasts, symbols_partitions
from .prices import price_history

BASELINE_TRIALS = {
    "persistence": Trial("persistence"),
    "seasonal_naive": Trial("seasonal_naive", {"period": BASELINES["seasonal_naive"].period}),
    "drift": Trial("drift"),
}


@asset(partitions_def=symbols_partitions, deps=[price_history], group_name="sweeps", kinds={"parquet"})
def baseline_sweep(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings):
    """Persistence, seasonal-naive and drift on the same windows the models are scored on."""
    symbol = context.partition_key
    store = storage.storage()
    prices = store.read_prices(symbol)
    spec = backtest.spec()
    windows = build_windows(prices, spec, symbol, backtest.base_seed)
    ctx = trial_context(symbol, prices, spec, base_seed=backtest.base_seed, run_id=context.run_id)
    groups = [(BASELINES[name], [trial]) for name, trial in BASELINE_TRIALS.items()]
    result = run_sweep(store, "baseline", ctx, windows, groups, progress=context.log.info)
    rows = store.read_trials("baseline", symbol)
    summary = summarize(rows[rows["trial_key"].isin([ctx.key(t) for t in BASELINE_TRIALS.values()])])

    last = windows.select(np.flatnonzero(windows.splits == TEST)[-1:])
    forecasts = {name: last_window_forecast(last, draw(BASELINES[name], last, 1), trial)
                 for name, trial in BASELINE_TRIALS.items()}
    history = prices.iloc[int(last.origins[0]) - 3 * spec.horizon : int(last.origins[0])]
    actual = next(iter(forecasts.values()))
    return MaterializeResult(metadata={
        "leaderboard": md_table(summary),
        "trials_computed": len(result.computed),
        "trials_skipped": len(result.skipped),
        "windows": {"val": int((windows.splits != TEST).sum()), "test": int((windows.splits == TEST).sum())},
        "data_version": ctx.data_version,
        "last_test_window": plot_forecasts(history, actual, forecasts, f"{symbol}: baselines, last test window"),
    })
