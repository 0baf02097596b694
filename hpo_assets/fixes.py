"""The Dagster context added to the core's errors: the asset or job that applies each fix.

The core (``forecast_core``) says what is wrong and the fix in its own terms ("re-run the baseline
sweep for AAA"); the assets append the Dagster way to do it, in one form, through these helpers.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Failure

# How Dagster rebuilds what the config selection reads: the partition's sweeps, the marts, then the asset.
SELECTION_FIX = ("materialise the sweeps (job tune_symbol) if any is missing, the dbt assets (job build_metrics), "
                 "then selected_configs")


def dagster_fix(problem: Exception | str, fix: str) -> str:
    """A core error (what is wrong and the core-level fix) with the Dagster asset or job that applies the
    fix: the one way the assets add their Dagster context to the core's messages."""
    return f"{problem} (in Dagster: {fix})"


def in_dagster(problem: Exception | str, fix: str) -> Failure:
    """:func:`dagster_fix` as the step's Failure (its description, without a traceback)."""
    return Failure(description=dagster_fix(problem, fix))


def prices_fix(symbol: str) -> str:
    """How Dagster stores (or replaces) ``symbol``'s price history."""
    return f"materialise price_history for partition {symbol}"


def trials_fix(problems: list[tuple[Path, str]]) -> str:
    """How Dagster recomputes unreadable trial files (from :meth:`Storage.unreadable_trials`): their sweep
    assets, for their symbols' partitions."""
    pairs = sorted({(path.parent.parent.name.removeprefix("sweep="), path.parent.name.removeprefix("symbol="))
                    for path, _ in problems})
    return "; ".join(f"materialise {sweep}_sweep for partition {symbol}" for sweep, symbol in pairs)
