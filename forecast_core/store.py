"""On-disk storage: price history and trial rows as Parquet, read together through DuckDB.

Every writer writes its own files atomically (temp + rename), so any number of processes can run
sweeps at once without fighting over a DuckDB writer lock. A trial's file name is a hash of
everything that determines its numbers (symbol, model + revision, config, data version, windows,
seed), so re-running a trial replaces its file instead of duplicating rows, and a sweep can skip
trials already stored. Only dbt writes the DuckDB file, from these Parquet files.

Layout under the storage root::

    prices/SYMBOL.parquet
    trials/sweep=NAME/symbol=SYMBOL/<config_hash>-<key>.parquet
    selection/TABLE.parquet   (the selection statistics, read by dbt as sources)
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
import pyarrow.parquet as pq

from . import code_version
from .backtest import Trial
from .data import FRAME_COLUMNS, data_version, validate_symbol
from .files import atomic_write_parquet, remove_stale_temp_files
from .windows import LAYOUT_FIELDS, Layout, WindowSpec

# Every column of a stored trial row and its DuckDB type: the one list the writer keeps to and the dbt
# macro read_trials.sql types its empty relation with (tests/core/test_store.py keeps the two in step).
TRIAL_COLUMNS = {
    "symbol": "varchar", "model": "varchar", "config_name": "varchar", "config_json": "varchar",
    "config_hash": "varchar", "split": "varchar", "window_origin": "timestamp", "origin_index": "bigint",
    "seed": "bigint", "mae": "double", "mae_pct": "double", "mase": "double", "crps_pct": "double",
    "coverage_10_90": "double", "seconds": "double", "draw_seconds": "double", "drawn_samples": "bigint",
    "is_default": "boolean", "sweep": "varchar", "trial_key": "varchar", "data_version": "varchar",
    "data_end": "timestamp", "model_revision": "varchar", "horizon": "bigint", "n_val": "bigint", "n_test": "bigint",
    "stride": "bigint", "context": "bigint", "history_bars": "bigint", "tunable": "boolean",
    "layout_reason": "varchar", "effective_val_windows": "double", "effective_test_windows": "double",
    "code_version": "varchar", "run_id": "varchar", "written_at": "timestamp",
}
SWEEP_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


class StoreError(RuntimeError):
    """Stored data that is missing or unreadable; the message names the file and what to do."""


def parquet_problem(path: Path, full: bool = False) -> str | None:
    """Why ``path`` is not a readable Parquet file (None when it is).

    By default only the footer is read (cheap: what a truncated or overwritten file breaks);
    ``full`` decodes every page too.
    """
    try:
        if full:
            pq.read_table(path)
        else:
            pq.read_metadata(path)
    except FileNotFoundError:
        return "the file is missing"
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def unreadable_trials_message(problems: list[tuple[Path, str]]) -> str:
    """What is broken and how to repair it, for damaged trial files (from :meth:`Storage.unreadable_trials`)."""
    lines = []
    for path, reason in problems[:10]:
        sweep = path.parent.parent.name.removeprefix("sweep=")
        symbol = path.parent.name.removeprefix("symbol=")
        lines.append(f"{path} ({reason}): re-run the {sweep} sweep for {symbol}, which recomputes and replaces "
                     "unreadable trials of the current data; a file of older data: delete it")
    more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    return f"{len(problems)} unreadable trial file(s): " + "; ".join(lines) + more


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
    layout: Layout | None = None  # how ``spec`` was chosen for this history (None: requested as is)

    def key(self, trial: Trial) -> str:
        parts = [self.symbol, trial.model, trial.config_hash, self.data_version, json.dumps(self.spec.as_dict(),
                 sort_keys=True), self.model_revision, str(self.base_seed)]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
        return f"{trial.config_hash}-{digest}"

    def layout_columns(self) -> dict:
        """The layout's reason and evidence, stored on every row so marts and files can show them."""
        described = (self.layout or Layout.as_requested(self.spec, 0)).as_dict()
        if self.layout is None:
            described["history_bars"] = None  # not known here
        return {name: described[name] for name in LAYOUT_FIELDS}


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

    @property
    def selection_dir(self) -> Path:
        return self.root / "selection"

    def write_selection_tables(self, tables: dict[str, pd.DataFrame]) -> list[Path]:
        """Each table as ``selection/NAME.parquet``, each file atomically (readers never see half a file)."""
        return [atomic_write_parquet(self.selection_dir / f"{name}.parquet", frame) for name, frame in tables.items()]

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
            raise StoreError(f"{symbol}: no stored price history at {path}; load and store its prices first")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise StoreError(f"{path}: unreadable price history ({exc}); load and store its prices again to "
                             "replace it") from exc
        frame["timestamp"] = frame["timestamp"].astype("datetime64[ns]")
        return frame

    # -- trials -------------------------------------------------------------------------------
    def trial_path(self, sweep: str, ctx: TrialContext, trial: Trial) -> Path:
        folder = self.trials_dir / f"sweep={_check_sweep(sweep)}" / f"symbol={validate_symbol(ctx.symbol)}"
        return folder / f"{ctx.key(trial)}.parquet"

    def has_trial(self, sweep: str, ctx: TrialContext, trial: Trial) -> bool:
        """Stored and readable: a damaged file (truncated, overwritten) counts as missing, so the
        sweep recomputes the trial and atomically replaces the file instead of skipping it forever."""
        path = self.trial_path(sweep, ctx, trial)
        return path.exists() and parquet_problem(path) is None

    def remove_stale_temp_files(self, sweep: str, symbol: str) -> list[Path]:
        """Temp files of trial writes killed mid-write (invisible to readers), once their writer is gone."""
        folder = self.trials_dir / f"sweep={_check_sweep(sweep)}" / f"symbol={validate_symbol(symbol)}"
        return remove_stale_temp_files(folder)

    def unreadable_trials(self, sweep: str = "*", symbol: str | None = None,
                          full: bool = False) -> list[tuple[Path, str]]:
        """(path, reason) of every trial file that cannot be read (see :func:`parquet_problem`)."""
        pattern = self.trials_glob(_check_sweep(sweep) if sweep != "*" else "*")
        if symbol is not None:
            pattern = pattern.replace("symbol=*", f"symbol={validate_symbol(symbol)}")
        relative = Path(pattern).relative_to(self.trials_dir)
        problems = []
        for path in sorted(self.trials_dir.glob(str(relative))):
            reason = parquet_problem(path, full=full)
            if reason:
                problems.append((path, reason))
        return problems

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
            **ctx.layout_columns(),
            code_version=code_version(),
            run_id=ctx.run_id,
            written_at=pd.Timestamp(datetime.now(timezone.utc)).tz_convert(None),
        )
        if list(rows.columns) != list(TRIAL_COLUMNS):
            raise ValueError(f"trial rows of {trial.name} have columns {sorted(set(rows.columns) ^ set(TRIAL_COLUMNS))} "
                             "beyond or missing from store.TRIAL_COLUMNS; add them there and in read_trials.sql")
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
                problems = self.unreadable_trials(sweep, symbol, full=True)
                if problems:
                    raise StoreError(unreadable_trials_message(problems)) from None
                raise StoreError(f"unreadable trial files under {self.trials_dir}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None

    # -- metrics database ------------------------------------------------------------------------
    def check_metrics_db(self) -> None:
        """Raise :class:`StoreError` naming ``metrics.duckdb`` and the fix when it cannot be read.

        Opens it read-only and scans every table (DuckDB verifies block checksums as it reads), so
        a damaged file is reported before dbt or a reader trips over it. A missing file is fine
        (dbt creates it); a file locked by another writer is reported as such, not as damage.
        """
        path = self.duckdb_path
        if not path.exists():
            return
        try:
            with duckdb.connect(str(path), read_only=True) as con:
                tables = con.execute("select schema_name, table_name from duckdb_tables() "
                                     "where database_name = current_database()").fetchall()
                for schema, table in tables:
                    con.execute(f'select count(*), sum(hash(t)) from "{schema}"."{table}" as t').fetchall()
        except duckdb.Error as exc:
            reason = str(exc).strip().splitlines()[0]
            if "could not set lock" in reason.lower() or "conflicting lock" in reason.lower():
                raise StoreError(f"{path}: in use by another process ({reason}); DuckDB allows one writer at a "
                                 "time: wait for it to finish or stop it, then retry") from None
            raise StoreError(f"{path}: damaged metrics database ({reason}). It only holds what dbt builds from "
                             "the trial Parquet files: delete it (or move it aside) and rebuild it "
                             "(dbt build)") from None


def trial_context(symbol: str, prices: pd.DataFrame, spec: WindowSpec | Layout, **kwargs) -> TrialContext:
    """The context of trials on ``prices``; given a :class:`Layout`, its spec and evidence."""
    layout = spec if isinstance(spec, Layout) else Layout.as_requested(spec, len(prices))
    if layout.spec is None:
        raise ValueError(f"{layout.reason}; there are no windows to score trials on")
    return TrialContext(symbol=validate_symbol(symbol), data_version=data_version(prices),
                        data_end=pd.Timestamp(prices["timestamp"].iloc[-1]), spec=layout.spec, layout=layout,
                        **kwargs)
