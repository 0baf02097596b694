"""The hpo command: run the tuning pipeline from a terminal, into the Dagster instance and stores the UI shows.

hpo demo tunes the embedded symbols end to end (prices, baselines, the Toto, Toto 2.0 and Kronos
sweeps, the dbt marts, the config files) and prints a table per symbol; hpo tune does the same for
given symbols with the full search spaces. hpo compare scores given configs side by side, hpo forward
prints the forward scorecard, hpo show what is stored for a symbol, hpo status what the instance holds
and which symbols need a re-tune.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from forecast_core.configs import ConfigFileError
from forecast_core.data import InvalidSymbolError, PriceDataError, validate_symbol
from forecast_core.store import StoreError

from . import terminal


def budget_run_config(name: str | None) -> dict | None:
    """The tune job's run config for tune budget ``name`` (None: the deployment's, resource ``budget``).

    The name is checked first, so a typo fails before any run starts. Imported here: the budgets pull in
    torch and the engines, which `hpo --help`, `show` and `status` never need."""
    from resources import TuneBudgetResource

    (TuneBudgetResource(name=name) if name else TuneBudgetResource()).budget()  # ValueError naming the known ones
    return {"resources": {"budget": {"config": {"name": name}}}} if name else None


FAILED_RUNS_SHOWN = 10  # hpo status lists this many most recent failed runs

EPILOG = """\
exit codes: 0 done (also when nothing is stored yet), 1 some symbol failed (a run, a comparison or an
unreadable config file; the errors are on stderr), 2 bad input (an invalid symbol or option).
Runs land in $DAGSTER_HOME (default ./.dagster_home), trials and marts in $HPO_STORAGE_DIR (default
./storage), config files in $HPO_HYPERPARAMS_DIR (default ./hyperparams). Results go to stdout (with
--json: one JSON document, nothing else); progress, logs and errors go to stderr."""


def _dagster_home() -> Path:
    return Path(os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))).resolve()


def _instance():
    home = _dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():  # no network here: keep telemetry off in the instance this command creates
        config.write_text("telemetry:\n  enabled: false\n")
    from dagster import DagsterInstance

    from .instance import ensure_pool_limits, reclaim_dead_runs

    instance = DagsterInstance.get()
    ensure_pool_limits(instance)
    for run_id in reclaim_dead_runs(instance):
        terminal.stderr_console().print(f"run {run_id} had been killed: marked failed, its pool slots freed")
    return instance


def _quiet(run_config: dict | None = None) -> dict:
    return {"loggers": {"console": {"config": {"log_level": "WARNING"}}}, **(run_config or {})}


def _failure_reason(events) -> str:
    """The first failed step's error (last line), else the run failure's message."""
    failure = next((e for e in events if e.is_step_failure), None)
    if failure:
        error = failure.step_failure_data.error
        last_line = error.message.strip().splitlines()[-1]
        message = last_line.removeprefix(f"dagster._core.definitions.events.{error.cls_name}: ")
        return f"{failure.step_key}: {message}"
    run_failure = next((e for e in events if e.is_run_failure), None)
    return run_failure.message if run_failure and run_failure.message else "see the run in the UI"


def _run(job_name: str, instance, log, partition: str | None = None, run_config: dict | None = None) -> bool:
    """Run a job in this process; what it prints (the dbt log) reaches stderr only when it fails."""
    from .dbt_project import prepare_manifest

    prepare_manifest()  # an edited dbt project is parsed before the definitions load, never at import
    from .definitions import defs

    job, printed = defs.resolve_job_def(job_name), io.StringIO()
    with contextlib.redirect_stdout(printed):  # the run names its assets, as the daemon's runs do: the automation
        result = job.execute_in_process(  # then knows what this run built (hpo_assets/automation.py)
            partition_key=partition, instance=instance, raise_on_error=False, run_config=_quiet(run_config),
            asset_selection=sorted(job.asset_layer.executable_asset_keys))
    if not result.success:
        if printed.getvalue().strip():
            log.print(printed.getvalue()[-5000:])
        log.print(f"{partition or job_name}: {job_name} FAILED (run {result.run_id}): "
                  f"{_failure_reason(result.all_events)}")
    return result.success


def _each(bar, step: str, symbols: list[str], run_one) -> list[str]:
    """``run_one`` per symbol under a progress bar, a line per symbol; returns the symbols that failed."""
    task, failed = bar.add_task(step, total=len(symbols)), []
    for symbol in symbols:
        bar.update(task, description=f"{step}: {symbol}")
        start = time.perf_counter()
        ok = run_one(symbol)
        bar.console.print(f"{symbol}: {step} {'done' if ok else 'FAILED'} in {time.perf_counter() - start:.0f}s")
        failed += [] if ok else [symbol]
        bar.advance(task)
    return failed


def tune(symbols: list[str], budget: str | None = None) -> list[str]:
    """The Dagster tuning path per symbol at tune budget ``budget`` (None: the deployment's), then the
    marts and the config files; returns failures."""
    from .instance import register_symbols

    tune_config = budget_run_config(budget)
    instance = _instance()
    register_symbols(instance, symbols)
    with terminal.progress() as bar:
        log = bar.console
        failed = _each(bar, "prices + sweeps", symbols, lambda s: _run("tune_symbol", instance, log, s, tune_config))
        trials = _storage().storage().trials_glob()
        if next(glob.iglob(trials), None) is None:
            raise SystemExit(f"nothing to build: no trials are stored ({trials} matches no file), so there are no "
                             "marts or configs to make; fix the errors above and run again")
        log.print("building the dbt marts (dbt build) ...")
        if not _run("build_metrics", instance, log):
            raise SystemExit("dbt build failed; open the build_metrics run in `dagster dev` for the dbt log")
        failed += _each(bar, "selected configs", [s for s in symbols if s not in failed],
                        lambda s: _run("select_configs", instance, log, s))
    return failed


def _storage():
    from resources.storage import StorageResource

    return StorageResource()


def print_tuned(args: argparse.Namespace, symbols: list[str], failed: list[str], seconds: float) -> int:
    """The selection per symbol, where the files are, and the exit code (1 if a symbol failed)."""
    from forecast_core.reports import read_selection_report

    report = read_selection_report(_storage().storage().duckdb_path, symbols)
    root = Path(_storage().hyperparams_dir).resolve()
    if args.json:
        terminal.print_json({"symbols": report, "failed": failed, "seconds": round(seconds, 1),
                             "hyperparams_dir": str(root), "dagster_home": os.environ["DAGSTER_HOME"]})
    else:
        console = terminal.stdout_console()
        console.print(f"selected configs, {seconds:.0f}s:")
        terminal.print_selection(console, report)
        console.print(f"\nconfig files: {root}/KIND/SYMBOL.json (KIND: toto, toto2, kronos, best)")
        console.print(f"Dagster instance: {os.environ['DAGSTER_HOME']} (run `make dev` to browse the runs)")
        if failed:
            console.print(f"failed: {', '.join(failed)} (the errors are above, on stderr)")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from forecast_core.sources import EmbeddedSource

    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else EmbeddedSource().symbols()
    start = time.perf_counter()
    failed = tune(symbols, "demo")
    return print_tuned(args, symbols, failed, time.perf_counter() - start)


def cmd_tune(args: argparse.Namespace) -> int:
    symbols = [validate_symbol(s) for s in (args.stocks or [args.symbol])]
    start = time.perf_counter()
    failed = tune(symbols, args.budget)
    return print_tuned(args, symbols, failed, time.perf_counter() - start)


def _describe(layout) -> str:
    """One line: windows, context, stride and the layout's reason (its evidence)."""
    if layout.spec is None:
        return f"{layout.bars} bars; {layout.reason}"
    spec, evidence = layout.spec, layout.evidence()
    return (f"{layout.bars} bars, {spec.n_val} validation + {spec.n_test} test windows "
            f"(spanning {evidence['effective_val_windows']:g} + {evidence['effective_test_windows']:g} horizons), "
            f"context {spec.context}, stride {spec.step}; {layout.reason}")


def _compare(symbol: str, horizon: int, use_stored: bool, log):
    """One symbol's `hpo compare`: the prices, store, models and overrides the resources configure, then
    the core comparison on them."""
    from forecast_core.data import validate_prices
    from forecast_core.overrides import env_overrides
    from forecast_core.sweep.compare import Models, compare_symbol
    from resources import BacktestSettings, PriceSourceResource
    from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

    overrides = env_overrides(os.environ)
    storage, settings = _storage(), BacktestSettings(horizon=horizon)
    store = storage.storage()
    prices = validate_prices(PriceSourceResource().source().load(symbol), symbol)
    store.write_prices(symbol, prices)
    batch = {k: v for k, v in overrides.toto.items() if k == "samples_per_batch"}  # a runtime knob
    runtimes = {"toto": TotoRuntime(**batch), "toto2": Toto2Runtime(), "kronos": KronosRuntime()}
    models = Models(toto=lambda: runtimes["toto"].forecaster, kronos=lambda: runtimes["kronos"].forecaster,
                    toto2=runtimes["toto2"].model, toto2_checkpoints=lambda: runtimes["toto2"].labels,
                    revision=lambda model: runtimes[model].model_revision)
    return compare_symbol(store, symbol, prices, settings.spec(), models, overrides, settings.base_seed,
                          Path(storage.hyperparams_dir) if use_stored else None, log)


def cmd_compare(args: argparse.Namespace) -> int:
    from forecast_core.reports import frame_records

    symbols = [validate_symbol(s) for s in (args.stocks or [args.symbol])]
    console, log = terminal.stdout_console(), terminal.stderr_console()
    results, failed = [], []
    for symbol in symbols:
        try:
            comparison = _compare(symbol, args.forecast_horizon, args.use_stored_hyperparams, log.print)
        except (PriceDataError, ConfigFileError, StoreError, ValueError) as exc:
            log.print(f"error: {exc}", soft_wrap=True)
            failed.append(symbol)
            continue
        rows = frame_records(comparison.table)
        results.append({"symbol": symbol, "horizon": args.forecast_horizon, "overrides": comparison.overrides,
                        "layout": _describe(comparison.layout), "rows": rows})
        if args.json:
            continue
        console.print(f"\n{symbol}, horizon {args.forecast_horizon} (ranked on validation; test held out)",
                      style="bold")
        console.print(comparison.overrides)
        console.print(f"layout: {_describe(comparison.layout)}")
        console.print(terminal.comparison_table(rows) if rows else
                      "no windows to score: each model keeps its default config")
    if args.json:
        terminal.print_json({"symbols": results, "failed": failed})
    return 1 if failed else 0


def cmd_forward(args: argparse.Namespace) -> int:
    """The forward scorecard: each stored config on the windows after its selection, and drift."""
    from forecast_core.forward import ForwardStore, drift_reason
    from forecast_core.reports import frame_records
    from resources import RetuneSettings

    storage = _storage()
    store = ForwardStore(storage.root)
    symbols = [validate_symbol(s) for s in args.symbols] if args.symbols else sorted(
        p.stem.removeprefix("symbol=") for p in (store.dir / "report").glob("symbol=*.parquet"))
    policy = RetuneSettings().drift_policy()
    results = []
    for symbol in symbols:
        report = store.read_report(symbol, storage.hyperparams_dir)
        shown = report if args.history else report[report["current"]]
        results.append({"symbol": symbol, "scorecards": frame_records(shown), "retune": drift_reason(report, policy)})
    if args.json:
        terminal.print_json({"symbols": results, "policy": vars(policy)})
        return 0
    console = terminal.stdout_console()
    if not symbols:
        console.print(f"no forward scorecards under {store.dir} yet: tune and select configs, then let new bars "
                      "arrive (refresh_prices scores each newly completed window)")
        return 0
    for entry in results:
        console.print(f"\n{entry['symbol']}: forward windows after each selection (MAE%; diff = stored - "
                      "persistence, 95% interval)", style="bold")
        if not entry["scorecards"]:
            console.print("  no scorecard yet")
            continue
        console.print(terminal.forward_table(entry["scorecards"]))
        console.print(f"  re-tune: {entry['retune']}" if entry["retune"] else "  no drift under the default policy "
                      f"(margin {policy.margin:.0%}, {policy.consecutive} in a row, {policy.min_windows}+ windows)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Each stored config file of the symbols: config, provenance, evidence, forward line."""
    from forecast_core.forward import ForwardStore
    from forecast_core.reports import stored_configs

    storage = _storage()
    root, forward = Path(storage.hyperparams_dir), ForwardStore(storage.root)
    results = [{"symbol": s, "files": stored_configs(root, s, forward.read_report(s, root))}
               for s in (validate_symbol(s) for s in args.symbols)]
    unreadable = [entry["symbol"] for entry in results if any("error" in f for f in entry["files"])]
    if args.json:
        terminal.print_json({"hyperparams_dir": str(root.resolve()), "symbols": results})
        return 1 if unreadable else 0
    console = terminal.stdout_console()
    for entry in results:
        console.print(f"\n{entry['symbol']}", style="bold")
        if not entry["files"]:
            console.print(f"nothing stored for {entry['symbol']} under {root.resolve()}: run "
                          f"`hpo tune --symbol {entry['symbol']}` (or `hpo demo`) to tune it")
        for stored in entry["files"]:
            console.print(terminal.stored_file_table(stored))
            console.print()
    return 1 if unreadable else 0


def _definitions():
    from .dbt_project import prepare_manifest

    prepare_manifest()  # as in _run: the definitions need a current manifest
    from .definitions import defs

    return defs


def _runtime_revisions(defs) -> tuple[dict[str, str], list[str]]:
    """The weights revision each model runtime of the code location would use now, found the way
    stale_config_sensor finds it (no weights loaded); a runtime whose weights cannot be found is
    left out (its configs are then not judged on weights) and named in the notes."""
    from forecast_core.checkpoints import CheckpointError
    from forecast_core.configs import MODELS

    runtimes = defs.resources
    revisions, notes = {}, []
    for model in MODELS:
        try:
            revisions[model] = runtimes[model].pinned_revision()
        except CheckpointError as exc:
            notes.append(f"{model}: weights not found, so its configs are not checked against them ({exc})")
    return revisions, notes


def _stamp(seconds: float | None) -> tuple[str | None, float | None]:
    """A run time as ISO text (UTC) and its age in days."""
    if seconds is None:
        return None, None
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="seconds"), round((datetime.now(timezone.utc) - moment).total_seconds() / 86400, 1)


def _instance_runs(instance, symbols: list[str]) -> tuple[dict[str, float | None], list[dict]]:
    """Per symbol the end of its last successful tune_symbol run; the most recent failed runs."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    last = {}
    for symbol in symbols:
        records = instance.get_run_records(RunsFilter(job_name="tune_symbol", statuses=[DagsterRunStatus.SUCCESS],
                                                      tags={"dagster/partition": symbol}), limit=1)
        last[symbol] = (records[0].end_time or records[0].update_timestamp.timestamp()) if records else None
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.FAILURE]), limit=FAILED_RUNS_SHOWN):
        run = record.dagster_run
        events = [e.dagster_event for e in instance.all_logs(
            run.run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}) if e.dagster_event]
        failed.append({"time": _stamp(record.end_time or record.update_timestamp.timestamp())[0],
                       "job": run.job_name, "partition": run.tags.get("dagster/partition"), "run_id": run.run_id,
                       "message": _failure_reason(events)})
    return last, failed


def _automation_notes(automation: dict) -> list[str]:
    """What of the automation is off, and a missing daemon, in a line each."""
    off = [part["name"] for part in automation["parts"] if not part["on"]]
    notes = [f"off: {', '.join(off)}: nothing they start happens by itself until they are on (`make automation` "
             "turns on all of them; one by one: the commands in the table, run in the repository with this "
             "DAGSTER_HOME, or the UI's Automation page)"] if off else []
    if not automation["daemon_running"]:
        notes.append("no dagster-daemon is running on this instance: schedules, sensors and the automation that builds "
                     "the marts and config files do nothing until one runs (`make daemon`, or `make dev`, which "
                     "runs one beside the UI)")
    return notes


def cmd_status(args: argparse.Namespace) -> int:
    """Partitions, last tune per symbol, stale or drifting configs, recent failed runs."""
    home = _dagster_home()
    empty = {"dagster_home": str(home), "symbols": [], "failed_runs": [], "notes": []}
    if not home.is_dir():
        message = f"no Dagster instance at {home} yet: run `hpo demo` (or `hpo add-symbols SYM`) to start one"
        terminal.print_json({**empty, "notes": [message]}) if args.json else terminal.stdout_console().print(
            message)
        return 0
    from forecast_core.configs import retune_reason
    from forecast_core.forward import ForwardStore
    from forecast_core.reports import symbol_state
    from resources import RetuneSettings

    from .instance import automation_state, symbols_partitions

    instance = _instance()
    symbols = sorted(instance.get_dynamic_partitions(symbols_partitions.name))
    last, failed_runs = _instance_runs(instance, symbols)
    storage, settings = _storage(), RetuneSettings()
    root, forward, store = Path(storage.hyperparams_dir), ForwardStore(storage.root), storage.storage()
    defs = _definitions()
    revisions, notes = _runtime_revisions(defs) if symbols else ({}, [])
    automation = automation_state(instance, defs)
    notes += _automation_notes(automation)
    rows = []
    for symbol in symbols:
        try:
            bars = list(store.read_prices(symbol)["timestamp"])
        except StoreError:
            bars = []  # never tuned here: the missing config files say so
        stale = retune_reason(root, symbol, bars, revisions, settings.after_new_bars)
        when, age = _stamp(last[symbol])
        rows.append({"symbol": symbol, "last_tune": when, "last_tune_age_days": age,
                     **symbol_state(root, symbol, stale, forward.read_report(symbol, root), settings.drift_policy())})
    if args.json:
        terminal.print_json({**empty, "symbols": rows, "failed_runs": failed_runs, "automation": automation,
                             "notes": notes})
        return 0
    console = terminal.stdout_console()
    console.print(f"Dagster instance {home}: {len(symbols)} symbol partition(s)")
    if not symbols:
        console.print("no symbols registered yet: run `hpo demo`, `hpo tune --symbol SYM` or `hpo add-symbols SYM`")
    else:
        console.print(terminal.status_table(rows))
    console.print(terminal.automation_table(automation["parts"]))
    for note in notes:
        console.print(note, style="yellow")
    if failed_runs:
        console.print(f"\nthe {len(failed_runs)} most recent failed runs (open them in `make dev`):")
        console.print(terminal.failed_runs_table(failed_runs))
    else:
        console.print("\nno failed runs")
    return 0


def cmd_add_symbols(args: argparse.Namespace) -> int:
    from .instance import register_symbols

    symbols = [validate_symbol(s) for s in args.symbols]  # before the instance is opened (or created)
    new = register_symbols(_instance(), symbols)
    if args.json:
        terminal.print_json({"added": new})
    else:
        terminal.stdout_console().print(f"added partitions: {', '.join(new) if new else 'none (all known)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpo", description=__doc__.split("\n", 1)[1].strip(), epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('toto-kronos-hpo')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str, func) -> argparse.ArgumentParser:
        made = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        made.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of tables")
        made.set_defaults(func=func)
        return made

    demo = command("demo", "tune the embedded symbols end to end with small CPU budgets (the main job)", cmd_demo)
    demo.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="a subset of the embedded symbols (default: all)")
    for name, func, text in (("compare", cmd_compare, "score the default, stored or overridden configs side by side"),
                             ("tune", cmd_tune, "run the tuning jobs, the dbt marts and the config selection")):
        which = command(name, text, func).add_mutually_exclusive_group(required=True)
        which.add_argument("--symbol", help="one symbol")
        which.add_argument("--stocks", nargs="+", metavar="SYMBOL", help="several symbols")
    sub.choices["tune"].add_argument("--budget", metavar="NAME",
                                     help="tune budget: full (the whole search spaces), demo (the small CPU budgets "
                                          "of hpo demo) or a name from $HPO_TUNE_BUDGETS_FILE (default: the "
                                          "deployment's, $HPO_TUNE_BUDGET or full)")
    compare = sub.choices["compare"]
    compare.add_argument("--forecast-horizon", type=int, default=64, help="bars to forecast (default 64)")
    compare.add_argument("--use-stored-hyperparams", action="store_true",
                         help="score hyperparams/{toto,toto2,kronos}/SYMBOL.json instead of the defaults")
    forward = command("forward", "print the forward scorecard: stored configs on the bars after selection",
                      cmd_forward)
    forward.add_argument("symbols", nargs="*", metavar="SYMBOL", help="symbols (default: every one with a scorecard)")
    forward.add_argument("--history", action="store_true", help="also the scorecards of configs since re-tuned")
    show = command("show", "print each stored config of the symbols with its provenance, evidence, file and age",
                   cmd_show)
    show.add_argument("symbols", nargs="+", metavar="SYMBOL")
    command("status", "print the symbol partitions, each one's last tune, stale or drifting configs and failed runs",
            cmd_status)
    add = command("add-symbols", "add symbols as partitions (the price source sensor also adds new CSV files)",
                  cmd_add_symbols)
    add.add_argument("symbols", nargs="+", metavar="SYMBOL")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InvalidSymbolError, ValueError) as exc:
        terminal.stderr_console().print(f"error: {exc}", soft_wrap=True)
        return 2
