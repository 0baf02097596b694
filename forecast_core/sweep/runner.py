"""Run a sweep: draw sample paths once per plan, score every trial, store each trial atomically.

Resumable and idempotent: a trial already stored for the same data version, windows, model
revision and config is skipped, and a plan draws only what its pending trials need; a killed run
loses at most the draw in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from ..backtest import Draw, Trial, check_paths, score_trials
from ..forecasters import ContextBatch, Forecaster
from ..store import Storage, TrialContext
from ..windows import Windows

Progress = Callable[[str], None]


class DrawPlan(Protocol):
    """One model call that yields the paths of several groups of trials.

    ``trials[i]`` are scored from the i-th paths array; they differ only in sample-count prefix and
    aggregation. ``draw(batch, needs)`` gets ``{group index: samples needed}`` for the groups with
    pending trials and returns ``{group index: paths [W, S, H]}``. A plan whose model returns a
    quantile forecast sets ``quantile_levels`` (its arrays are then ``[W, levels, H]``); else None.
    """

    label: str
    trials: Sequence[Sequence[Trial]]
    quantile_levels: tuple[float, ...] | None

    def draw(self, batch: ContextBatch, needs: Mapping[int, int]) -> Mapping[int, np.ndarray]: ...


@dataclass(frozen=True)
class SingleDraw:
    """The common plan: one forecaster, one paths array, scored by every trial."""

    forecaster: Forecaster
    group: Sequence[Trial]
    quantile_levels = None  # sample paths

    @property
    def label(self) -> str:
        return self.forecaster.name

    @property
    def trials(self) -> Sequence[Sequence[Trial]]:
        return [self.group]

    def draw(self, batch: ContextBatch, needs: Mapping[int, int]) -> Mapping[int, np.ndarray]:
        return {0: self.forecaster.sample_paths(batch, needs[0])}


@dataclass
class SweepResult:
    computed: list[Trial] = field(default_factory=list)
    skipped: list[Trial] = field(default_factory=list)
    seconds: float = 0.0  # wall time spent drawing sample paths

    @property
    def total(self) -> int:
        return len(self.computed) + len(self.skipped)


def run_sweep(
    storage: Storage,
    sweep: str,
    ctx: TrialContext,
    windows: Windows,
    plans: Sequence[DrawPlan],
    progress: Progress | None = None,
    probe_latency: bool = True,
) -> SweepResult:
    """Draw, score and store every pending trial of every plan.

    With ``probe_latency`` each (config, sample count) is also timed on one window alone, so a
    trial's ``seconds`` is what one forecast with that config costs, not a share of a batched draw.
    """
    result = SweepResult()
    probe = windows.select(np.arange(len(windows)) == len(windows) - 1)
    for stale in storage.remove_stale_temp_files(sweep, ctx.symbol):
        if progress:
            progress(f"removed {stale.name}, left by a write killed mid-way")
    for i, plan in enumerate(plans, start=1):
        pending = {g: [t for t in group if not storage.has_trial(sweep, ctx, t)] for g, group in enumerate(plan.trials)}
        damaged = [storage.trial_path(sweep, ctx, t) for trials in pending.values() for t in trials
                   if storage.trial_path(sweep, ctx, t).exists()]
        if damaged and progress:
            progress(f"[{i}/{len(plans)}] {plan.label}: recomputing {len(damaged)} unreadable trial file(s) "
                     f"({', '.join(p.name for p in damaged)})")
        pending = {g: trials for g, trials in pending.items() if trials}
        result.skipped.extend(t for g, group in enumerate(plan.trials) for t in group if t not in pending.get(g, []))
        if not pending:
            if progress:
                progress(f"[{i}/{len(plans)}] {plan.label}: all trials already stored, skipped")
            continue
        start = time.perf_counter()
        drawn = plan.draw(windows.batch, {g: max(t.num_samples for t in trials) for g, trials in pending.items()})
        elapsed = time.perf_counter() - start
        result.seconds += elapsed
        # The call's wall time per window, shared equally by the groups it drew.
        per_window = elapsed / len(windows) / len(pending)
        for g, trials in pending.items():
            paths = check_paths(drawn[g], windows, plan.label)
            latency = _probe(plan, g, probe, {t.num_samples for t in trials}) if probe_latency else None
            rows = score_trials(windows, Draw(paths, per_window, plan.quantile_levels), trials, latency)
            for trial in trials:
                storage.write_trial(sweep, ctx, trial, rows[rows["config_hash"] == trial.config_hash])
            result.computed.extend(trials)
        if progress:
            count = sum(len(t) for t in pending.values())
            progress(f"[{i}/{len(plans)}] {plan.label}: scored {count} trials on {len(windows)} windows "
                     f"in {elapsed:.2f}s")
    return result


def _probe(plan: DrawPlan, group: int, window: Windows, sample_counts: set[int]) -> dict[int, float]:
    """Wall seconds of one single-window forecast per sample count."""
    seconds = {}
    for n in sorted(sample_counts):
        start = time.perf_counter()
        plan.draw(window.batch, {group: n})
        seconds[n] = time.perf_counter() - start
    return seconds


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean metrics per config and split, best validation MAE% first (for metadata and the CLI).

    Every column is present even when a split has no rows (comparison-only layouts have no
    validation windows: their validation columns are NaN and their window count 0).
    """
    if rows.empty:
        return rows
    keys = ["model", "config_name"]
    table = rows.pivot_table(index=keys, columns="split", values=["mae_pct", "crps_pct"], aggfunc="mean")
    table.columns = [f"{split}_{metric}" for metric, split in table.columns]
    counts = rows.groupby([*keys, "split"]).size().unstack("split").add_suffix("_windows")
    seconds = rows.groupby(keys)["seconds"].mean().rename("seconds")
    table = table.join(counts).join(seconds).reset_index()
    wanted = [*keys, "val_mae_pct", "test_mae_pct", "val_crps_pct", "test_crps_pct", "val_windows", "test_windows",
              "seconds"]
    table = table.reindex(columns=wanted)
    table[["val_windows", "test_windows"]] = table[["val_windows", "test_windows"]].fillna(0).astype(int)
    return table.sort_values("val_mae_pct", na_position="last", kind="stable").reset_index(drop=True)
