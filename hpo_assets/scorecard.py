"""The forward scorecard per symbol: stored configs scored on the bars that arrived after selection."""

import pandas as pd
from dagster import AssetExecutionContext, AssetKey, MaterializeResult, MetadataValue, asset

from forecast_core.forward import ForwardStore, current_scorecards, forecast_with, forward_report, score_forward
from forecast_core.labels import short_label
from forecast_core.store import StoreError
from resources import BacktestSettings, StorageResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .instance import ACCELERATOR_OP_TAGS, ACCELERATOR_POOL, symbols_partitions

from .fixes import dagster_fix, prices_fix
from .metadata import numbers, plot_png, table


@asset(partitions_def=symbols_partitions, deps=[AssetKey("price_history"), AssetKey("selected_configs")],
       group_name="scorecard", kinds={"parquet"}, pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def forward_scores(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings,
                   toto: TotoRuntime, toto2: Toto2Runtime, kronos: KronosRuntime) -> MaterializeResult:
    """Forward scorecard: stored configs on the windows completed after their selection.

    Each stored config (toto, toto2, kronos, best) and its references (persistence, random walk, the
    model's default) on every newly completed window after the config's data end; idempotent. Models
    load only when a new window needs them. A re-tuned config starts a new scorecard; the old one
    stays as history.
    """
    symbol = context.partition_key
    store = ForwardStore(storage.root)
    for stale in store.remove_stale_temp_files(symbol):
        context.log.info(f"removed {stale.name}, left by a write killed mid-way")
    cards, problems = current_scorecards(storage.hyperparams_dir, symbol)
    for problem in problems:
        context.log.warning(problem)
    try:
        prices = storage.storage().read_prices(symbol)
    except StoreError as exc:
        context.log.warning(dagster_fix(exc, prices_fix(symbol)))
        prices = None
    forecast = forecast_with(lambda: toto.forecaster, lambda: kronos.forecaster, toto2.model)
    added = {card.kind: score_forward(store, card, prices, forecast, backtest.base_seed) if prices is not None else 0
             for card in cards}
    report = forward_report(store.read(symbol), {card.id for card in cards})
    if not report.empty:
        store.write_report(symbol, report)
    current = report[report["current"]] if not report.empty else report
    context.log.info(f"{symbol}: {sum(added.values())} new forward window(s) scored "
                     f"({', '.join(f'{k}: {v}' for k, v in added.items()) or 'no stored configs yet'})")
    metadata = {"windows_added": sum(added.values()), "scorecards": len(report), "current_scorecards": len(current),
                "report": _report_table(current, cards) if not current.empty else
                MetadataValue.md("_no stored configs yet: run the tuning and selection first_")}
    for row in current.itertuples(index=False):  # no forward window yet: NaN scores, left out
        metadata.update(numbers({f"{row.kind}_forward_windows": row.forward_windows,
                                 f"{row.kind}_forward_mae_pct": row.mae_pct,
                                 f"{row.kind}_ratio_to_persistence": row.ratio_to_persistence}))
    rows = store.read(symbol)
    if not rows.empty:
        metadata["forward_error_over_time"] = _plot(symbol, rows, report)
    return MaterializeResult(metadata=metadata)


def _report_table(current: pd.DataFrame, cards) -> MetadataValue:
    """The current scorecards as a table, each config also in short (``config``)."""
    labels = {card.id: short_label(card.trials["selected"].model, card.trials["selected"].knobs) for card in cards}
    shown = current.drop(columns=["current"])
    shown.insert(shown.columns.get_loc("config_name"), "config", shown["scorecard"].map(labels))
    return table(shown.drop(columns=["scorecard"]))


def _plot(symbol: str, rows: pd.DataFrame, report: pd.DataFrame) -> MetadataValue:
    """Forward MAE% per window of each file's config vs its default and persistence; re-tunes marked."""
    import matplotlib.pyplot as plt

    kinds = sorted(rows["kind"].unique())
    fig, axes = plt.subplots(len(kinds), 1, figsize=(9, 2.6 * len(kinds)), dpi=90, sharex=True, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        of_kind = rows[rows["kind"] == kind]
        for role, style in (("selected", "-o"), ("default", "--"), ("persistence", ":")):
            series = of_kind[of_kind["role"] == role].sort_values("window_origin")
            if not series.empty:
                ax.plot(series["window_origin"], series["mae_pct"], style, ms=3, lw=1.2,
                        label="stored config" if role == "selected" else role)
        for retuned in pd.to_datetime(report.loc[report["kind"] == kind, "data_end"]).unique():
            ax.axvline(retuned, color="0.5", lw=0.8)
        ax.set_ylabel(f"{kind}\nforward MAE %")
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_title(f"{symbol}: forward windows after each selection (grey lines: data end of a selection)")
    fig.autofmt_xdate()
    return plot_png(fig, f"{symbol} forward error")
