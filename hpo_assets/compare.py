"""`hpo compare`: persistence, Toto, Toto 2.0 and Kronos configs scored side by side on one symbol's windows.

The configs are each model's default, or its stored file (--use-stored-hyperparams), with the
TOTO_*/TOTO2_*/KRONOS_* environment overrides applied on top. Trials land in the same store as the assets'.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd

from forecast_core.backtest import Trial
from forecast_core.configs import config_path, read_config
from forecast_core.data import validate_prices
from forecast_core.forecasters import BASELINES
from forecast_core.overrides import env_overrides
from forecast_core.forward import document_trial
from forecast_core.labels import short_label
from forecast_core.sweep.spaces import (
    KRONOS_DEFAULT,
    KRONOS_DEFAULT_AGGREGATE,
    TOTO2_DEFAULT,
    TOTO_DEFAULT,
    kronos_knobs,
    toto2_trial,
    toto_trial,
)
from forecast_core.store import trial_context
from forecast_core.sweep.runner import SingleDraw, run_sweep, summarize
from forecast_core.sweep.plans import KronosDraw, Toto2Draw
from forecast_core.windows import Layout, build_windows, plan_layout
from resources import BacktestSettings, PriceSourceResource, StorageResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime


@dataclass(frozen=True)
class Comparison:
    """One symbol's comparison: a row per config (``COLUMNS``), the window layout, the overrides applied."""

    table: pd.DataFrame
    layout: Layout
    overrides: str


COLUMNS = ["model", "config", "label", "val_mae_pct", "test_mae_pct", "test_vs_persistence", "seconds",
           "val_windows", "test_windows"]


def compare_symbol(symbol: str, horizon: int, use_stored: bool, environ: Mapping[str, str],
                   log: Callable[[str], None] = print) -> Comparison:
    """The comparison on the windows ``symbol``'s history allows (``log``: the sweeps' progress lines).

    A history too short for any window gives an empty table (the layout's reason says why).
    """
    overrides = env_overrides(environ)
    storage = StorageResource()
    store = storage.storage()
    settings = BacktestSettings(horizon=horizon)
    prices = validate_prices(PriceSourceResource().source().load(symbol), symbol)
    store.write_prices(symbol, prices)
    layout = plan_layout(len(prices), settings.spec())
    if layout.spec is None:
        return Comparison(pd.DataFrame(columns=COLUMNS), layout, overrides.describe())
    spec = layout.spec
    windows = build_windows(prices, spec, symbol, settings.base_seed)

    toto2 = Toto2Runtime()
    toto_knobs = dict(TOTO_DEFAULT)
    toto2_knobs = {**TOTO2_DEFAULT, "checkpoint": toto2.labels[0]}
    kronos_cfg = kronos_knobs(KRONOS_DEFAULT, KRONOS_DEFAULT.sample_count, KRONOS_DEFAULT_AGGREGATE)
    if use_stored:
        root = Path(storage.hyperparams_dir)
        toto_knobs = {k: read_config(config_path(root, "toto", symbol), "toto")["config"][k]
                      for k in ("num_samples", "aggregate")}
        stored = read_config(config_path(root, "kronos", symbol), "kronos")["config"]
        kronos_cfg = {k: stored[k] for k in kronos_cfg}
        stored = read_config(config_path(root, "toto2", symbol), "toto2")["config"]
        toto2_knobs = document_trial("toto2", stored).knobs
    toto_knobs.update({k: v for k, v in overrides.toto.items() if k != "samples_per_batch"})
    kronos_cfg.update(overrides.kronos)
    toto2_knobs = {**toto2_knobs, **overrides.toto2}

    toto = TotoRuntime(**({"samples_per_batch": overrides.toto["samples_per_batch"]}
                          if "samples_per_batch" in overrides.toto else {}))
    kronos = KronosRuntime()
    toto_t = toto_trial(toto_knobs["num_samples"], toto_knobs["aggregate"])
    aggregate = kronos_cfg.pop("aggregate")
    sampling = replace(KRONOS_DEFAULT, **kronos_cfg)
    kronos_t = Trial("kronos", kronos_knobs(sampling, sampling.sample_count, aggregate), sampling.sample_count,
                     aggregate, is_default=sampling == KRONOS_DEFAULT and aggregate == KRONOS_DEFAULT_AGGREGATE)
    toto2_t = toto2_trial(default_checkpoint=toto2.labels[0], **toto2_knobs)
    persistence = Trial("persistence")
    for sweep, revision, plans in (
        ("baseline", "", [SingleDraw(BASELINES["persistence"], [persistence])]),
        ("toto", toto.model_revision, [SingleDraw(toto.forecaster, [toto_t])]),
        ("toto2", toto2.model_revision, [Toto2Draw(lambda: toto2.model(toto2_t.knobs["checkpoint"]), **{
            k: toto2_t.knobs[k] for k in ("checkpoint", "context_length", "decode_block_size", "variates")},
            group=[toto2_t])]),
        ("kronos", kronos.model_revision, [KronosDraw(kronos.forecaster, [sampling], [[kronos_t]])]),
    ):
        ctx = trial_context(symbol, prices, layout, model_revision=revision, base_seed=settings.base_seed,
                            run_id="cli-compare")
        run_sweep(store, sweep, ctx, windows, plans, progress=log)
    compared = ((persistence, ""), (toto_t, toto.model_revision), (toto2_t, toto2.model_revision),
                (kronos_t, kronos.model_revision))
    keys = {trial_context(symbol, prices, layout, model_revision=r, base_seed=settings.base_seed).key(t)
            for t, r in compared}
    rows = store.read_trials(symbol=symbol)
    table = summarize(rows[rows["trial_key"].isin(keys)])
    reference = table.loc[table["model"] == "persistence", "test_mae_pct"].iloc[0]
    table["test_vs_persistence"] = table["test_mae_pct"] / reference
    labels = {t.name: short_label(t.model, t.knobs) for t, _ in compared}
    table["label"] = table["config_name"].map(labels)
    return Comparison(table.rename(columns={"config_name": "config"}).reindex(columns=COLUMNS), layout,
                      overrides.describe())

