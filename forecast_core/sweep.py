"""Run a sweep: draw once per forecaster, score every trial, store each trial atomically.

Resumable and idempotent: a trial already stored for the same data version, windows, model
revision and config is skipped; a killed run loses at most the draw in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd

from .backtest import Trial, draw, score_trials
from .forecasters import Forecaster
from .store import Storage, TrialContext
from .windows import Windows

# (forecaster, trials it can score from one draw: configs that differ only in sample prefix/aggregation)
SweepGroup = tuple[Forecaster, Sequence[Trial]]
Progress = Callable[[str], None]


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
    groups: Sequence[SweepGroup],
    progress: Progress | None = None,
) -> SweepResult:
    result = SweepResult()
    for i, (forecaster, trials) in enumerate(groups, start=1):
        pending = [t for t in trials if not storage.has_trial(sweep, ctx, t)]
        result.skipped.extend(t for t in trials if t not in pending)
        if not pending:
            if progress:
                progress(f"[{i}/{len(groups)}] {forecaster.name}: {len(trials)} trials already stored, skipped")
            continue
        drawn = draw(forecaster, windows, max(t.num_samples for t in pending))
        rows = score_trials(windows, drawn, pending)
        for trial in pending:
            storage.write_trial(sweep, ctx, trial, rows[rows["config_hash"] == trial.config_hash])
        result.computed.extend(pending)
        result.seconds += drawn.seconds_per_window * len(windows)
        if progress:
            progress(
                f"[{i}/{len(groups)}] {forecaster.name}: scored {len(pending)} trials on {len(windows)} windows "
                f"in {drawn.seconds_per_window * len(windows):.2f}s"
            )
    return result


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean metrics per config and split, best validation MAE% first (for metadata and the CLI)."""
    if rows.empty:
        return rows
    table = rows.pivot_table(index=["model", "config_name"], columns="split",
                             values=["mae_pct", "crps_pct", "seconds"], aggfunc="mean")
    table.columns = [f"{split}_{metric}" for metric, split in table.columns]
    counts = rows.groupby(["model", "config_name", "split"]).size().unstack("split").add_suffix("_windows")
    table = table.join(counts).reset_index()
    wanted = ["model", "config_name", "val_mae_pct", "test_mae_pct", "val_crps_pct", "test_crps_pct",
              "val_windows", "test_windows", "val_seconds"]
    return table.loc[:, [c for c in wanted if c in table]].sort_values("val_mae_pct").reset_index(drop=True)
