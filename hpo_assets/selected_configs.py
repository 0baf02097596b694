"""Selected configs per symbol: the dbt marts' choice written to hyperparams/{toto,toto2,kronos,best}/SYM.json."""

from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)

from forecast_core.configs import write_config
from forecast_core.forward import document_trial, forecast_with
from forecast_core.labels import short_label
from forecast_core.plots import last_test_window_figure
from forecast_core.pretraining import bundled_model_id
from forecast_core.selection import default_document, selection_from_marts
from forecast_core.store import StoreError
from forecast_core.sweep.spaces import default_trials
from forecast_core.windows import build_windows, plan_layout
from resources import BacktestSettings, StorageResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .automation import SELECTION_MART_KEYS, SWEEP_KEYS, config_files
from .fixes import SELECTION_FIX, in_dagster, prices_fix
from .instance import ACCELERATOR_OP_TAGS, ACCELERATOR_POOL, symbols_partitions
from .metadata import numbers, plot_png, table


def _error_vs_config(board: pd.DataFrame, chosen: dict[str, str], symbol: str) -> MetadataValue:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=90)
    for model, rows in board.groupby("model"):
        ax.scatter(rows["seconds_per_forecast"], rows["val_mae_pct"], s=14, alpha=0.6, label=model)
        pick = rows[rows["config_hash"] == chosen.get(model)]
        ax.scatter(pick["seconds_per_forecast"], pick["val_mae_pct"], s=120, marker="*", edgecolor="black",
                   label=f"{model} selected")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per forecast (one window)")
    ax.set_ylabel("validation MAE %")
    ax.set_title(f"{symbol}: validation error vs cost, every config scored")
    ax.legend(fontsize=8)
    return plot_png(fig, f"{symbol} error vs config")


@asset(partitions_def=symbols_partitions, deps=[*SELECTION_MART_KEYS, *SWEEP_KEYS], group_name="selection",
       kinds={"json"}, automation_condition=config_files(), pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS)
def selected_configs(context: AssetExecutionContext, storage: StorageResource, backtest: BacktestSettings,
                     toto: TotoRuntime, toto2: Toto2Runtime, kronos: KronosRuntime):
    """Config files per symbol: each model's selected config and the winner.

    Writes hyperparams/{toto,toto2,kronos,best}/SYM.json atomically from the selection marts; the
    winner is a model only when it beats persistence. A previous file that fails validation is moved
    aside (``.invalid-<time>``), never lost.
    """
    symbol = context.partition_key
    root = Path(storage.hyperparams_dir)
    store = storage.storage()
    try:
        prices = store.read_prices(symbol)
    except StoreError as exc:
        raise in_dagster(f"{symbol}: no config files written: {exc}", prices_fix(symbol)) from None
    layout = plan_layout(len(prices), backtest.spec())
    model_ids = {"toto": bundled_model_id(toto.source), "toto2": toto2.labels[0], "kronos": bundled_model_id(kronos.source)}
    runtime_knobs = {"toto": {"samples_per_batch": toto.samples_per_batch}}
    if layout.spec is None:  # nothing could be scored: each model keeps its default, the files say why
        revisions = {"toto": toto.model_revision, "toto2": toto2.model_revision, "kronos": kronos.model_revision}
        documents = {model: default_document(symbol, trial, runtime_knobs.get(model, {}), layout, prices,
                                             model_ids[model], revisions[model], backtest.base_seed)
                     for model, trial in default_trials(toto2.labels[0]).items()}
        best, board = None, pd.DataFrame()
    else:
        try:
            documents, best, board = selection_from_marts(store, symbol, model_ids, runtime_knobs, backtest.base_seed)
        except StoreError as exc:
            raise in_dagster(f"{symbol}: no config files written: {exc}", SELECTION_FIX) from None
    written, set_aside = {}, []
    for kind, document in [*documents.items(), ("best", best)]:
        if document is None:
            continue
        path, aside = write_config(root, kind, symbol, document)
        written[kind] = str(path)
        if aside:
            set_aside.append(str(aside))
            context.log.warning(f"{symbol}: previous {kind} config failed validation; kept it as {aside}")
    if not layout.tunable:
        context.log.warning(f"{symbol}: {layout.reason}; each model keeps its default config")

    selected = pd.DataFrame([_summary(m, d) for m, d in documents.items()])
    metadata = {
        "winner": best["model"] if best else "none",
        "winner_reason": MetadataValue.md(best["metadata"]["reason"] if best else
                                          "no windows to compare the models on"),
        # the figures first, so they are on screen; the long names and reasons below the table
        "selected": table(selected.drop(columns=["config_name", "selection_reason"])),
        "selection_reasons": MetadataValue.md("\n".join(
            f"- **{row.model}** `{row.config_name}`: {row.selection_reason}" for row in selected.itertuples())),
        "tuned": layout.tunable,
        "layout_reason": layout.reason,
        **numbers({"val_windows": layout.evidence()["n_val"], "test_windows": layout.evidence()["n_test"],
                   **_figures(selected, best)}),
        "files": MetadataValue.json(written),
        "invalid_files_set_aside": MetadataValue.json(set_aside),
    }
    for model, document in documents.items():
        pretraining = document["metadata"].get("pretraining")
        if pretraining:
            context.log.info(f"{symbol} {model}: {pretraining['statement']}")
            if pretraining["test_windows_out_of_sample"] is not None:
                metadata[f"{model}_out_of_sample_test_windows"] = int(pretraining["test_windows_out_of_sample"])
    if layout.tunable and not board.empty:  # comparison-only layouts have no validation errors to plot
        metadata["error_vs_config"] = _error_vs_config(board, {m: _hash_of(board, d) for m, d in documents.items()},
                                                       symbol)
    if layout.spec is not None:
        metadata["forecast_fan_last_test_window"] = _forecast_fan(symbol, prices, layout, documents, backtest,
                                                                  toto, toto2, kronos)
    return MaterializeResult(metadata=metadata)


def _summary(model: str, document: dict) -> dict:
    """One row of the metadata table: scores, evidence and the selection's outcome."""
    selection, meta = document["metadata"]["selection"], document["metadata"]
    pretraining = meta.get("pretraining") or {}
    test, persistence = document["test"]["mae_pct"], meta["baselines_on_test"]["persistence_mae_pct"]
    return {"model": model, "config": short_label(model, document["config"]), "config_name": document["config"]["name"],
            "val_mae_pct": document["validation"]["mae_pct"], "test_mae_pct": test,
            "persistence_test_mae_pct": persistence,
            "test_ratio_to_persistence": test / persistence if test is not None and persistence else None,
            "val_windows": document["windows"]["n_val"], "test_windows": document["windows"]["n_test"],
            "test_windows_out_of_sample": pretraining.get("test_windows_out_of_sample"),
            "selection_basis": selection.get("basis"), "p_value_vs_default": selection.get("p_value_vs_default"),
            "confidence_set_size": selection.get("confidence_set_size"), "selection_reason": selection["reason"]}


FIGURES = ("val_mae_pct", "test_mae_pct", "test_ratio_to_persistence", "val_windows", "test_windows")


def _figures(selected: pd.DataFrame, best: dict | None) -> dict:
    """Per model ``{model}_{figure}`` for the Plots tab, and ``winner_is_model`` (1 when a model, not
    a baseline, won; 0 when a baseline did; absent when nothing could be compared)."""
    figures = {f"{row['model']}_{name}": row[name] for row in selected.to_dict("records") for name in FIGURES}
    if best is not None:
        figures["winner_is_model"] = 0 if best["metadata"].get("baseline") else 1
    return figures


def _forecast_fan(symbol: str, prices: pd.DataFrame, layout, documents: dict, backtest: BacktestSettings,
                  toto: TotoRuntime, toto2: Toto2Runtime, kronos: KronosRuntime) -> MetadataValue:
    """Each selected config's forecast fan vs the actuals on the last test window."""
    windows = build_windows(prices, layout.spec, symbol, backtest.base_seed)
    forecast = forecast_with(lambda: toto.forecaster, lambda: kronos.forecaster, toto2.model)
    trials = [document_trial(model, document["config"]) for model, document in documents.items()]
    title = f"{symbol}: selected configs, last test window"
    return plot_png(last_test_window_figure(prices, windows, trials, forecast, title), title)


def _hash_of(board: pd.DataFrame, document: dict) -> str | None:
    match = board[board["config_name"] == document["config"]["name"]]
    return match["config_hash"].iloc[0] if len(match) else None
