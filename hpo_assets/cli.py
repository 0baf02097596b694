"""The ``hpo`` command: run the pipeline from a terminal into the same instance and stores the UI shows.

``hpo demo`` is the main job: register the embedded symbols, tune each one (prices, baseline, Toto,
Toto 2.0 and Kronos sweeps), build the dbt marts, write the selected configs, print the per-symbol table.
``hpo compare`` scores given configs (defaults, stored ones, TOTO_*/TOTO2_*/KRONOS_* overrides) side by side;
``hpo tune`` runs the Dagster tuning path for some symbols; ``hpo forward`` prints the forward scorecard. Runs land in ``$DAGSTER_HOME`` (default
``./.dagster_home``) and trials in ``$HPO_STORAGE_DIR`` (default ``./storage``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from forecast_core.budgets import DEMO_KRONOS, DEMO_TOTO, DEMO_TOTO2
from forecast_core.configs import ConfigFileError
from forecast_core.data import InvalidSymbolError, PriceDataError, validate_symbol
from forecast_core.store import StoreError

# Small enough for a CPU with the bundled tiny checkpoints; the assets' defaults are the full spaces.
DEMO_TUNE_CONFIG = {"ops": {"toto_sweep": {"config": DEMO_TOTO.run_config()},
                            "toto2_sweep": {"config": DEMO_TOTO2.run_config()},
                            "kronos_sweep": {"config": DEMO_KRONOS.run_config()}}}


def _instance():
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():  # no network here: keep telemetry off in the instance this command creates
        config.write_text("telemetry:\n  enabled: false\n")
    from dagster import DagsterInstance

    from .lib import ensure_pool_limits, reclaim_dead_runs

    instance = DagsterInstance.get()
    ensure_pool_limits(instance)
    for run_id in reclaim_dead_runs(instance):
        print(f"run {run_id} had been killed: marked failed, its pool slots freed", flush=True)
    return instance


def _quiet(run_config: dict | None = None) -> dict:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **(run_config or {})}


def _run(job_name: str, instance, partition: str | None = None, run_config: dict | None = None) -> bool:
    from tqdm import tqdm

    from .definitions import defs

    result = defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False, run_config=_quiet(run_config))
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip().splitlines()[-1] if failure else "see the UI"
        tqdm.write(f"{partition or job_name}: {job_name} FAILED (run {result.run_id}): {reason}")
    return result.success


def tune(symbols: list[str], tune_config: dict | None = None) -> list[str]:
    """The Dagster tuning path per symbol, then the marts and the config files; returns failures."""
    from tqdm import tqdm

    from .lib import register_symbols

    instance = _instance()
    register_symbols(instance, symbols)
    failed = [s for s in tqdm(symbols, desc="prices + sweeps", unit="symbol", file=sys.stdout)
              if not _run("tune_symbol", instance, s, tune_config)]
    print("building dbt marts (dbt build) ...", flush=True)
    if not _run("build_metrics", instance):
        raise SystemExit("dbt build failed; open the build_metrics run in `dagster dev` for the dbt log")
    failed += [s for s in tqdm([s for s in symbols if s not in failed], desc="selected configs", unit="symbol",
                               file=sys.stdout) if not _run("select_configs", instance, s)]
    return failed


def _storage():
    from resources.storage import StorageResource

    return StorageResource()


def selected_table() -> pd.DataFrame:
    """Per symbol: persistence, the random walk and each model's selected config; * marks the winner.

    p: SPA p-value of "no config beats the default"; mcs: configs in the model confidence set;
    oos: test windows after the model's pretraining cutoff (blank when the cutoff is unknown).
    """
    from forecast_core.selection import open_marts

    with open_marts(_storage().storage().duckdb_path) as con:
        return con.execute("""
            with winners as (select symbol, winning_model from model_choice)
            select b.symbol, b.model || case when w.winning_model = b.model then ' *' else '' end as model,
                   b.config_name as config, b.val_mae_pct, b.test_mae_pct,
                   b.test_mae_pct / nullif(p.test_mae_pct, 0) as test_vs_persistence,
                   b.seconds_per_forecast as seconds, b.selection_basis as basis,
                   b.p_value_vs_default as p, b.confidence_set_size as mcs,
                   b.val_windows || '/' || b.test_windows as "val/test windows",
                   b.test_windows_out_of_sample as oos
            from best_configs b
            left join leaderboard p on p.symbol = b.symbol and p.model = 'persistence'
            left join winners w on w.symbol = b.symbol
            union all
            select l.symbol, l.model || case when w.winning_model = l.model then ' *' else '' end, l.config_name,
                   l.val_mae_pct, l.test_mae_pct, l.test_mae_pct / nullif(p.test_mae_pct, 0), l.seconds_per_forecast,
                   null, null, null, l.val_windows || '/' || l.test_windows, null
            from leaderboard l
            left join leaderboard p on p.symbol = l.symbol and p.model = 'persistence'
            left join winners w on w.symbol = l.symbol
            where l.model in ('persistence', 'random_walk')
            order by 1, 2
        """).df()


def choice_notes() -> pd.DataFrame:
    """Per symbol: why the winner won, and what the models' test windows can show (pretraining)."""
    from forecast_core.selection import open_marts

    with open_marts(_storage().storage().duckdb_path) as con:
        return con.execute("""
            select m.symbol, m.winning_model as winner, m.choice_reason as why,
                   string_agg(b.model || ': ' || b.pretraining_statement, chr(10) order by b.model) as pretraining
            from model_choice m left join best_configs b on b.symbol = m.symbol
            group by all order by m.symbol
        """).df()


def layout_notes() -> pd.DataFrame:
    """Per symbol whose layout is not the requested one: its windows and why (from the marts)."""
    from forecast_core.selection import open_marts

    with open_marts(_storage().storage().duckdb_path) as con:
        return con.execute("""
            select symbol, any_value(history_bars) as bars, any_value(context) as context,
                   any_value(stride) as stride, any_value(layout_reason) as layout
            from leaderboard where layout_reason <> 'requested layout'
            group by symbol order by symbol
        """).df()


def _print_table(frame: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", 500, "display.width", 200, "display.max_colwidth", 70):
        print(frame.round(3).to_string(index=False))


def _print_selected(table: pd.DataFrame, notes: pd.DataFrame, choices: pd.DataFrame) -> None:
    _print_table(table)
    for row in choices.itertuples(index=False):
        print(f"\n{row.symbol}: {row.winner} wins: {row.why}")
        for statement in (row.pretraining or "").splitlines():
            if statement:
                print(f"  {statement}")
    if not notes.empty:
        print("\nwindow layouts shortened for short histories (tuned = False: too short, defaults kept):")
        _print_table(notes)


def cmd_demo(args: argparse.Namespace) -> int:
    from forecast_core.sources import EmbeddedSource

    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else EmbeddedSource().symbols()
    start = time.perf_counter()
    failed = tune(symbols, DEMO_TUNE_CONFIG)
    print(f"\nselected configs (* = winner: a model only where it beats persistence on validation under StepM; "
          f"p = SPA p-value vs the default, mcs = configs in the 10% model confidence set, oos = out-of-sample "
          f"test windows), "
          f"{time.perf_counter() - start:.0f}s:")
    _print_selected(selected_table(), layout_notes(), choice_notes())
    print(f"\nconfig files: {Path(_storage().hyperparams_dir).resolve()}/{{toto,toto2,kronos,best}}/SYMBOL.json")
    print(f"Dagster instance: {os.environ['DAGSTER_HOME']} (run `make dev` to browse the runs)")
    return 1 if failed else 0


def cmd_tune(args: argparse.Namespace) -> int:
    symbols = [validate_symbol(s) for s in (args.stocks or [args.symbol])]
    failed = tune(symbols, DEMO_TUNE_CONFIG if args.budget == "demo" else None)
    _print_selected(selected_table().query("symbol in @symbols"), layout_notes().query("symbol in @symbols"),
                    choice_notes().query("symbol in @symbols"))
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_symbol

    symbols = [validate_symbol(s) for s in (args.stocks or [args.symbol])]
    failed = []
    for symbol in symbols:
        try:
            table, layout = compare_symbol(symbol, args.forecast_horizon, args.use_stored_hyperparams, os.environ)
        except (PriceDataError, ConfigFileError, StoreError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(symbol)
            continue
        print(f"\n{symbol}, horizon {args.forecast_horizon} (ranked on validation; test held out):")
        print(f"layout: {_describe(layout)}")
        if table.empty:
            print("no windows to score: each model keeps its default config")
        else:
            _print_table(table)
    return 1 if failed else 0


def _describe(layout) -> str:
    """One line: windows, context, stride and the layout's reason (its evidence)."""
    if layout.spec is None:
        return f"{layout.bars} bars; {layout.reason}"
    spec, evidence = layout.spec, layout.evidence()
    return (f"{layout.bars} bars, {spec.n_val} validation + {spec.n_test} test windows "
            f"(spanning {evidence['effective_val_windows']:g} + {evidence['effective_test_windows']:g} horizons), "
            f"context {spec.context}, stride {spec.step}; {layout.reason}")


def cmd_forward(args: argparse.Namespace) -> int:
    """The forward scorecard: each stored config on the windows after its selection, and drift."""
    from forecast_core.forward import ForwardStore, drift_reason
    from resources import RetuneSettings

    store = ForwardStore(_storage().root)
    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else sorted(
        p.stem.removeprefix("symbol=") for p in (store.dir / "report").glob("symbol=*.parquet"))
    if not symbols:
        print(f"no forward scorecards under {store.dir} yet: tune and select configs, then let new bars arrive "
              "(refresh_prices scores each newly completed window)")
        return 0
    policy = RetuneSettings().drift_policy()
    columns = ["kind", "config_name", "selected_at", "forward_windows", "mae_pct", "persistence_mae_pct",
               "ratio_to_persistence", "diff_vs_persistence", "ci_low_vs_persistence", "ci_high_vs_persistence",
               "default_mae_pct", "worse_than_persistence_in_a_row"]
    for symbol in symbols:
        report = store.read_report(symbol)
        shown = report if args.history else report[report["current"]]
        print(f"\n{symbol}: forward windows after each selection (MAE%; diff = stored - persistence, 95% interval)")
        if shown.empty:
            print("  no scorecard yet")
            continue
        _print_table(shown[columns].rename(columns={"config_name": "config", "worse_than_persistence_in_a_row":
                                                    "worse_in_a_row", "forward_windows": "windows"}))
        reason = drift_reason(report, policy)
        print(f"  re-tune: {reason}" if reason else "  no drift under the default policy "
              f"(margin {policy.margin:.0%}, {policy.consecutive} in a row, {policy.min_windows}+ windows)")
    return 0


def cmd_add_symbols(args: argparse.Namespace) -> int:
    from .lib import register_symbols

    new = register_symbols(_instance(), args.symbols)
    print(f"added partitions: {', '.join(new) if new else 'none (all known)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="tune the embedded symbols end to end (the main job)")
    demo.add_argument("--symbols", nargs="+", help="a subset of the embedded symbols (default: all)")
    demo.set_defaults(func=cmd_demo)
    for name, func, text in (("compare", cmd_compare, "score default/stored/overridden configs side by side"),
                             ("tune", cmd_tune, "run the tuning assets, dbt and config selection")):
        command = sub.add_parser(name, help=text)
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument("--symbol")
        which.add_argument("--stocks", nargs="+")
        command.set_defaults(func=func)
    sub.choices["tune"].add_argument("--budget", choices=["full", "demo"], default="full",
                                     help="full: the assets' search spaces; demo: the small CPU budgets of `hpo demo`")
    compare = sub.choices["compare"]
    compare.add_argument("--forecast-horizon", type=int, default=64)
    compare.add_argument("--use-stored-hyperparams", action="store_true",
                         help="score hyperparams/{toto,toto2,kronos}/SYMBOL.json instead of the defaults")
    forward = sub.add_parser("forward", help="print the forward scorecard: stored configs on the bars after selection")
    forward.add_argument("symbols", nargs="*", help="symbols (default: every symbol with a scorecard)")
    forward.add_argument("--history", action="store_true", help="also the scorecards of configs since re-tuned")
    forward.set_defaults(func=cmd_forward)
    add = sub.add_parser("add-symbols", help="add symbols as partitions (the sensor also adds new CSV files)")
    add.add_argument("symbols", nargs="+")
    add.set_defaults(func=cmd_add_symbols)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InvalidSymbolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
