"""On-disk storage: price history and trial rows as Parquet, read together through DuckDB.

Every writer writes its own files atomically (temp + rename), so any number of processes can run
sweeps at once without fighting over a DuckDB writer lock. A trial's file name is a hash of
everything that determines its numbers (symbol, model + revision, config, data version, windows,
seed), so re-running a trial replaces its file instead of duplicating rows, and a sweep can skip
trials already stored. Only dbt writes the DuckDB file, from these Parquet files.

Layout under the storage root::

    prices/SYMBOL.parquet
    trials/sweep=NAME/symbol=SYMBOL/<config_hash>-<key>.parquet
    metrics.duckdb
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from . import code_version
from .backtest import Trial
from .data import FRAME_COLUMNS, data_version, validate_symbol
from .files import atomic_write_parquet
from .windows import WindowSpec

SWEEP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


class StoreError(RuntimeError):
    """Stored data that is missing or unreadable; the message names the file and what to do."""


def _check_sweep(sweep: str) -> str:
    if not sweep or not set(sweep) <= SWEEP_NAME_CHARS:
        raise ValueError(f"invalid sweep name {sweep!r}: use lower-case letters, digits and _")
    return sweep


@dataclass(frozen=True)
class TrialContext:
    """What besides the config determines a trial's numbers, stored on every row."""

    symbol: str
    data_version: str
    data_end: pd.Timestamp
    spec: WindowSpec
    model_revision: str = ""
    base_seed: int = 0
    run_id: str = ""

    def key(self, trial: Trial) -> str:
        parts = [self.symbol, trial.model, trial.config_hash, self.data_version, json.dumps(self.spec.as_dict(),
                 sort_keys=True), self.model_revision, str(self.base_seed)]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
        return f"{trial.config_hash}-{digest}"


class Storage:
    """The storage root shared by the CLI, the Dagster resources and the tests."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    @property
    def duckdb_path(self) -> Path:
        return self.root / "metrics.duckdb"

    @property
    def trials_dir(self) -> Path:
        return self.root / "trials"

    def trials_glob(self, sweep: str = "*") -> str:
        return str(self.trials_dir / f"sweep={sweep}" / "symbol=*" / "*.parquet")

    # -- prices -------------------------------------------------------------------------------
    def prices_path(self, symbol: str) -> Path:
        return self.root / "prices" / f"{validate_symbol(symbol)}.parquet"

    def write_prices(self, symbol: str, frame: pd.DataFrame) -> Path:
        return atomic_write_parquet(self.prices_path(symbol), frame.loc[:, list(FRAME_COLUMNS)])

    def read_prices(self, symbol: str) -> pd.DataFrame:
        path = self.prices_path(symbol)
        if not path.exists():
            raise StoreError(f"{symbol}: no stored price history at {path}; materialise price_history first")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise StoreError(f"{path}: unreadable price history ({exc}); re-materialise price_history") from exc
        frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
        return frame

    # -- trials -------------------------------------------------------------------------------
    def trial_path(self, sweep: str, ctx: TrialContext, trial: Trial) -> Path:
        folder = self.trials_dir / f"sweep={_check_sweep(sweep)}" / f"symbol={validate_symbol(ctx.symbol)}"
        return folder / f"{ctx.key(trial)}.parquet"

    def has_trial(self, sweep: str, ctx: TrialContext, trial: Trial) -> bool:
        return self.trial_path(sweep, ctx, trial).exists()

    def write_trial(self, sweep: str, ctx: TrialContext, trial: Trial, rows: pd.DataFrame) -> Path:
        """Store one trial's per-window rows; re-writing the same trial replaces its file."""
        if rows.empty or (rows["config_hash"] != trial.config_hash).any():
            raise ValueError(f"rows for {trial.name} are empty or belong to another config")
        rows = rows.assign(
            sweep=sweep,
            trial_key=ctx.key(trial),
            data_version=ctx.data_version,
            data_end=pd.Timestamp(ctx.data_end),
            model_revision=ctx.model_revision,
            horizon=ctx.spec.horizon,
            n_val=ctx.spec.n_val,
            n_test=ctx.spec.n_test,
            stride=ctx.spec.step,
            context=ctx.spec.context,
            code_version=code_version(),
            run_id=ctx.run_id,
            written_at=pd.Timestamp(datetime.now(timezone.utc)).tz_convert(None),
        )
        return atomic_write_parquet(self.trial_path(sweep, ctx, trial), rows)

    def read_trials(self, sweep: str = "*", symbol: str | None = None) -> pd.DataFrame:
        """All stored trial rows (optionally one sweep / symbol), as one frame."""
        pattern = self.trials_glob(_check_sweep(sweep) if sweep != "*" else "*")
        if symbol is not None:
            pattern = pattern.replace("symbol=*", f"symbol={validate_symbol(symbol)}")
        with duckdb.connect() as con:
            if not con.execute("select count(*) from glob(?)", [pattern]).fetchone()[0]:
                return pd.DataFrame()
            try:
                # every column is in the files: hive partitioning would turn sweep=2024 / symbol=1234 into ints
                return con.execute("select * from read_parquet(?, union_by_name=true, hive_partitioning=false)",
                                   [pattern]).df()
            except duckdb.Error as exc:
                raise StoreError(f"unreadable trial files under {self.trials_dir}: {exc}") from exc


def trial_context(symbol: str, prices: pd.DataFrame, spec: WindowSpec, **kwargs) -> TrialContext:
    return TrialContext(symbol=validate_symbol(symbol), data_version=data_version(prices),
                        data_end=pd.Timestamp(prices["timestamp"].iloc[-1]), spec=spec, **kwargs)
