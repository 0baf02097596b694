"""Sweep plans for Toto, Toto 2.0 and Kronos, shared by the Dagster assets and the CLI.

Toto: one draw of the largest sample count scores the whole grid. Toto 2.0: one forward pass per
(checkpoint, context length, decoding, variates) scores every point rule. Kronos: sampling configs that
share (max_context, clip) decode in one batch from one prefill; each config's sample-count prefixes
and aggregations are scored from its paths. The Kronos search scores TPE proposals on the last few
validation windows only, then promotes the best to a full plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from ..aggregate import aggregate
from ..backtest import Trial
from ..forecasters import ContextBatch
from ..kronos.forecaster import KronosForecaster, KronosSamplingConfig
from ..metrics import mae_pct
from ..toto import TotoForecaster
from ..toto2 import QUANTILE_LEVELS, Toto2Forecaster, Toto2Model
from ..windows import VALIDATION, Windows
from .runner import DrawPlan, SingleDraw
from .spaces import TOTO2_VARIATES, kronos_trials, toto2_grid, tpe_then_halving


def toto_plans(forecaster: TotoForecaster, trials: Sequence[Trial]) -> list[DrawPlan]:
    return [SingleDraw(forecaster, list(trials))]


@dataclass(frozen=True)
class Toto2Draw:
    """One Toto 2.0 forward pass (checkpoint, context length, decoding, variates): every point rule of
    ``group`` is scored from its quantiles. ``model`` loads the checkpoint on first use."""

    model: Callable[[], Toto2Model]
    checkpoint: str
    context_length: int  # 0: all of the window's context
    decode_block_size: int  # 0: one forward pass
    variates: str
    group: Sequence[Trial]
    quantile_levels = QUANTILE_LEVELS

    @property
    def label(self) -> str:
        return (f"toto2 {self.checkpoint} context={self.context_length or 'all'} "
                f"decode={'block ' + str(self.decode_block_size) if self.decode_block_size else 'single pass'} "
                f"variates={self.variates}")

    @property
    def trials(self) -> Sequence[Sequence[Trial]]:
        return [self.group]

    def forecaster(self) -> Toto2Forecaster:
        return toto2_forecaster(self.model(), self.group[0])

    def draw(self, batch: ContextBatch, needs: Mapping[int, int]) -> Mapping[int, np.ndarray]:
        return {0: self.forecaster().quantiles(batch)}


def toto2_forecaster(model: Toto2Model, trial: Trial) -> Toto2Forecaster:
    """The forecaster a Toto 2.0 trial's knobs describe (its point rule is applied when scoring)."""
    k = trial.knobs
    return Toto2Forecaster(model, TOTO2_VARIATES[k["variates"]], k["context_length"] or None,
                           k["decode_block_size"] or None, name=f"toto2 {k['checkpoint']}")


def toto2_plans(models: Mapping[str, Callable[[], Toto2Model]], context: int, context_lengths: Sequence[int],
                decode_block_sizes: Sequence[int], variates: Sequence[str], aggregations: Sequence[str]) -> list[DrawPlan]:
    """One plan per forward pass over ``models`` ({checkpoint label: loader}, the first is the default's);
    context lengths not shorter than the windows' ``context`` are left out (0, all of it, always stays)."""
    fitting = [n for n in context_lengths if n < context or n == 0]
    grid = toto2_grid(list(models), fitting, decode_block_sizes, variates, aggregations)
    return [Toto2Draw(models[c], c, n, b, v, trials) for (c, n, b, v), trials in grid.items()]


@dataclass(frozen=True)
class KronosDraw:
    """Several Kronos sampling configs sharing (max_context, clip): one prefill, one batched decode."""

    forecaster: KronosForecaster
    configs: Sequence[KronosSamplingConfig]
    groups: Sequence[Sequence[Trial]]
    quantile_levels = None  # sample paths

    @property
    def label(self) -> str:
        c = self.configs[0]
        return f"kronos max_context={c.max_context} clip={c.clip} ({len(self.configs)} sampling configs)"

    @property
    def trials(self) -> Sequence[Sequence[Trial]]:
        return self.groups

    def draw(self, batch: ContextBatch, needs: Mapping[int, int]) -> Mapping[int, np.ndarray]:
        wanted = list(needs)
        configs = [replace(self.configs[g], sample_count=needs[g]) for g in wanted]
        return dict(zip(wanted, self.forecaster.sample_configs(batch, configs)))


def with_config(forecaster: KronosForecaster, config: KronosSamplingConfig) -> KronosForecaster:
    """The same resident model and tokenizer, another sampling config."""
    return KronosForecaster(forecaster.model, forecaster.tokenizer, config, refresh_every=forecaster.refresh_every,
                            max_rows=forecaster.max_rows, name=forecaster.name)


def kronos_plans(forecaster: KronosForecaster, configs: Sequence[KronosSamplingConfig],
                 sample_counts: Sequence[int], aggregations: Sequence[str],
                 max_sample_count: int | None = None) -> list[DrawPlan]:
    """One plan per (max_context, clip); each sampling config scored at its own and the sweep's counts.

    Configs that differ only in sample_count are one draw (the smaller counts are prefixes).
    ``max_sample_count`` caps every count (trials then carry the capped count they were scored with).
    """
    cap = max_sample_count or max([*sample_counts, *(c.sample_count for c in configs)])
    counts: dict[KronosSamplingConfig, set[int]] = {}
    for config in configs:
        wanted = {min(n, cap) for n in (*sample_counts, config.sample_count)}
        counts.setdefault(replace(config, sample_count=1), set()).update(wanted)
    by_key: dict[tuple[int, float], list[KronosSamplingConfig]] = {}
    for base in counts:
        by_key.setdefault((base.max_context, base.clip), []).append(base)
    return [KronosDraw(forecaster, members, [kronos_trials(b, counts[b], aggregations) for b in members])
            for members in by_key.values()]


def kronos_search(forecaster: KronosForecaster, windows: Windows, budget: int, sample_count: int,
                  aggregations: Sequence[str], rung_windows: int, keep_fraction: float, seed: int):
    """TPE over sampling configs scored on the last ``rung_windows`` validation windows (the sizes'
    defaults: :class:`~forecast_core.sweep.budgets.KronosBudget`).

    A proposal's cheap score is its best validation MAE% over sample-count prefixes and
    aggregations on those windows. Returns (promoted configs, [(config, cheap score)]).
    """
    val = np.flatnonzero(windows.splits == VALIDATION)
    rung = windows.select(val[-rung_windows:])

    def evaluate(configs: list[KronosSamplingConfig]) -> list[float]:
        paths = forecaster.sample_configs(rung.batch, configs)
        scores = []
        for p in paths:
            points = [aggregate(p, a, sample_axis=1) for a in aggregations]
            scores.append(float(min(mae_pct(point, rung.targets).mean() for point in points)))
        return scores

    return tpe_then_halving(evaluate, budget, sample_count, keep_fraction=keep_fraction, seed=seed)
