"""Persistence, Toto, Toto 2.0 and Kronos configs scored side by side on one symbol's windows (`hpo compare`).

The configs are each model's default, or its stored file, with the environment's knob overrides
(:func:`~forecast_core.overrides.env_overrides`) applied on top. Trials land in the given store under
the sweeps' identities, so a comparison reuses what the sweeps scored and the sweeps reuse its trials.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..backtest import Trial
from ..configs import config_path, read_config
from ..forecasters import BASELINES
from ..forward import document_trial
from ..kronos.forecaster import KronosForecaster
from ..labels import short_label
from ..overrides import Overrides
from ..store import Storage
from ..toto import TotoForecaster
from ..toto2 import Toto2Model
from ..windows import Layout, WindowSpec
from .plans import KronosDraw, Toto2Draw
from .runner import SingleDraw, summarize
from .spaces import (
    KRONOS_DEFAULT,
    KRONOS_DEFAULT_AGGREGATE,
    TOTO2_DEFAULT,
    TOTO_DEFAULT,
    kronos_knobs,
    toto2_trial,
    toto_trial,
)
from .symbol import Log, SymbolSweep

COLUMNS = ["model", "config", "label", "val_mae_pct", "test_mae_pct", "test_vs_persistence", "seconds",
           "val_windows", "test_windows"]
RUN_ID = "cli-compare"  # the run id stored on a comparison's trials


@dataclass(frozen=True)
class Models:
    """The compared models, each loaded only once there are windows to score it on."""

    toto: Callable[[], TotoForecaster]
    kronos: Callable[[], KronosForecaster]
    toto2: Callable[[str], Toto2Model]  # a checkpoint label -> its model
    toto2_checkpoints: Callable[[], Sequence[str]]  # the labels, the default config's first
    revision: Callable[[str], str]  # model family -> the weights revision its trials are stored under


@dataclass(frozen=True)
class Comparison:
    """One symbol's comparison: a row per config (``COLUMNS``), the window layout, the overrides applied."""

    table: pd.DataFrame
    layout: Layout
    overrides: str


def _stored_knobs(root: Path, symbol: str) -> tuple[dict, dict, dict]:
    """(Toto, Toto 2.0, Kronos) knobs of ``symbol``'s config files under ``root``."""
    toto = read_config(config_path(root, "toto", symbol), "toto")["config"]
    toto2 = read_config(config_path(root, "toto2", symbol), "toto2")["config"]
    kronos = read_config(config_path(root, "kronos", symbol), "kronos")["config"]
    return ({k: toto[k] for k in ("num_samples", "aggregate")}, document_trial("toto2", toto2).knobs,
            {k: kronos[k] for k in kronos_knobs(KRONOS_DEFAULT, KRONOS_DEFAULT.sample_count, KRONOS_DEFAULT_AGGREGATE)})


def compare_symbol(store: Storage, symbol: str, prices: pd.DataFrame, spec: WindowSpec, models: Models,
                   overrides: Overrides, base_seed: int = 0, stored_configs: Path | None = None,
                   log: Log = print) -> Comparison:
    """The comparison on the windows ``prices`` allow for the requested ``spec``, of each model's default
    config, or of its file under ``stored_configs`` when given (``log``: the sweeps' progress lines).

    A history too short for any window gives an empty table (the layout's reason says why).
    """
    sweep = SymbolSweep.of(store, symbol, prices, spec, base_seed, run_id=RUN_ID, log=log)
    if sweep.windows is None:
        return Comparison(pd.DataFrame(columns=COLUMNS), sweep.layout, overrides.describe())
    default_checkpoint = models.toto2_checkpoints()[0]
    toto_knobs, toto2_knobs = dict(TOTO_DEFAULT), {**TOTO2_DEFAULT, "checkpoint": default_checkpoint}
    kronos_cfg = kronos_knobs(KRONOS_DEFAULT, KRONOS_DEFAULT.sample_count, KRONOS_DEFAULT_AGGREGATE)
    if stored_configs is not None:
        toto_knobs, toto2_knobs, kronos_cfg = _stored_knobs(stored_configs, symbol)
    toto_knobs.update({k: v for k, v in overrides.toto.items() if k != "samples_per_batch"})  # a runtime knob
    kronos_cfg.update(overrides.kronos)
    toto2_knobs = {**toto2_knobs, **overrides.toto2}

    toto_t = toto_trial(toto_knobs["num_samples"], toto_knobs["aggregate"])
    aggregate = kronos_cfg.pop("aggregate")
    sampling = replace(KRONOS_DEFAULT, **kronos_cfg)
    kronos_t = Trial("kronos", kronos_knobs(sampling, sampling.sample_count, aggregate), sampling.sample_count,
                     aggregate, is_default=sampling == KRONOS_DEFAULT and aggregate == KRONOS_DEFAULT_AGGREGATE)
    toto2_t = toto2_trial(default_checkpoint=default_checkpoint, **toto2_knobs)
    persistence = Trial("persistence")
    compared = {"baseline": (persistence, ""), "toto": (toto_t, models.revision("toto")),
                "toto2": (toto2_t, models.revision("toto2")), "kronos": (kronos_t, models.revision("kronos"))}
    plans = {
        "baseline": [SingleDraw(BASELINES["persistence"], [persistence])],
        "toto": [SingleDraw(models.toto(), [toto_t])],
        "toto2": [Toto2Draw(lambda: models.toto2(toto2_t.knobs["checkpoint"]), **{
            k: toto2_t.knobs[k] for k in ("checkpoint", "context_length", "decode_block_size", "variates")},
            group=[toto2_t])],
        "kronos": [KronosDraw(models.kronos(), [sampling], [[kronos_t]])],
    }
    keys = set()
    for name, (trial, revision) in compared.items():
        scored = sweep.with_revision(revision)
        scored.run(name, plans[name])
        keys.add(scored.ctx.key(trial))
    rows = store.read_trials(symbol=symbol)
    table = summarize(rows[rows["trial_key"].isin(keys)])
    reference = table.loc[table["model"] == "persistence", "test_mae_pct"].iloc[0]
    table["test_vs_persistence"] = table["test_mae_pct"] / reference
    labels = {t.name: short_label(t.model, t.knobs) for t, _ in compared.values()}
    table["label"] = table["config_name"].map(labels)
    return Comparison(table.rename(columns={"config_name": "config"}).reindex(columns=COLUMNS), sweep.layout,
                      overrides.describe())
