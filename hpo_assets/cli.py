"""The ``hpo`` command: run the pipeline from a terminal into the same instance the UI shows.

``hpo demo`` is the main job: register the embedded symbols as partitions, materialise prices and
sweeps per symbol, build the dbt marts, print the leaderboard. Runs land in ``$DAGSTER_HOME``
(default ``./.dagster_home``), so ``dagster dev`` shows them afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd

from forecast_core.data import InvalidSymbolError, validate_symbol


def _instance():
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():  # no network here: keep telemetry off in the instance this command creates
        config.write_text("telemetry:\n  enabled: false\n")
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _quiet_run_config() -> dict:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _materialize(symbols: list[str], instance) -> list[str]:
    """Refresh every symbol, one run each (so one bad symbol fails alone), then build the marts."""
    from tqdm import tqdm

    from .definitions import defs
    from .lib import register_symbols

    register_symbols(instance, symbols)
    refresh = defs.resolve_job_def("refresh_symbol")
    failed = []
    with tqdm(symbols, desc="refresh prices + sweeps", unit="symbol", file=sys.stdout) as bar:
        for symbol in bar:
            bar.set_postfix_str(symbol)
            result = refresh.execute_in_process(partition_key=symbol, instance=instance, raise_on_error=False,
                                                run_config=_quiet_run_config())
            if not result.success:
                failed.append(symbol)
                failure = next((e for e in result.all_events if e.is_step_failure), None)
                reason = failure.step_failure_data.error.message.strip() if failure else "see the run in the UI"
                tqdm.write(f"{symbol}: FAILED (run {result.run_id}): {reason.splitlines()[-1]}")
    print("building dbt marts (dbt build) ...", flush=True)
    built = defs.resolve_job_def("build_metrics").execute_in_process(instance=instance, raise_on_error=False,
                                                                run_config=_quiet_run_config())
    if not built.success:
        raise SystemExit(f"dbt build failed (run {built.run_id}); open it in `dagster dev` for the dbt log")
    return failed


def leaderboard(storage_root: str | None = None) -> pd.DataFrame:
    from resources.storage import StorageResource

    path = StorageResource(**({"root": storage_root} if storage_root else {})).storage().duckdb_path
    if not path.exists():
        raise SystemExit(f"no metrics database at {path}: run `hpo demo` (or materialise the dbt assets) first")
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "select symbol, model, config_name, val_mae_pct, test_mae_pct, test_vs_persistence, val_windows, "
            "test_windows, val_rank from leaderboard order by symbol, val_rank, model"
        ).df()


def _print_table(frame: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", 500, "display.width", 160, "display.max_colwidth", 60):
        print(frame.round(3).to_string(index=False))


def cmd_demo(args: argparse.Namespace) -> int:
    from forecast_core.sources import EmbeddedSource

    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else EmbeddedSource().symbols()
    instance = _instance()
    start = time.perf_counter()
    failed = _materialize(symbols, instance)
    print(f"\nleaderboard (ranked on validation MAE%; test is held out), {time.perf_counter() - start:.0f}s:")
    _print_table(leaderboard())
    print(f"\nDagster instance: {os.environ['DAGSTER_HOME']} (run `dagster dev` with this DAGSTER_HOME to browse)")
    return 1 if failed else 0


def cmd_add_symbols(args: argparse.Namespace) -> int:
    from .lib import register_symbols

    new = register_symbols(_instance(), args.symbols)
    print(f"added partitions: {', '.join(new) if new else 'none (all known)'}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    _print_table(leaderboard())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="register the embedded symbols and run the whole pipeline for them")
    demo.add_argument("--symbols", nargs="+", help="a subset of the embedded symbols (default: all)")
    demo.set_defaults(func=cmd_demo)
    add = sub.add_parser("add-symbols", help="add symbols as partitions (the sensor also adds new CSV files)")
    add.add_argument("symbols", nargs="+")
    add.set_defaults(func=cmd_add_symbols)
    board = sub.add_parser("leaderboard", help="print the leaderboard mart")
    board.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InvalidSymbolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
