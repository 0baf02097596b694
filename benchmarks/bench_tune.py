"""Cost of a full per-symbol tune, and the share of it spent in model compute.

Runs what the sweep assets run (baseline, Toto grid, Kronos presets + TPE + promotion) for one
embedded symbol into a temporary store, with the bundled tiny checkpoints, and times every call
into a model (Toto sample_paths, Kronos sample_configs) against the whole wall time.

    .venv/bin/python benchmarks/bench_tune.py                 # the assets' default budgets
    .venv/bin/python benchmarks/bench_tune.py --budget demo   # the budgets `hpo demo` uses
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

import torch

from forecast_core.forecasters import BASELINES
from forecast_core.kronos.forecaster import KronosForecaster, load_kronos
from forecast_core.search import KRONOS_DEFAULT, KRONOS_PRESETS, search_seed, toto_grid
from forecast_core.sources import EmbeddedSource
from forecast_core.store import Storage, trial_context
from forecast_core.sweep import SingleDraw, run_sweep
from forecast_core.toto import TotoForecaster, load_toto
from forecast_core.tuning import kronos_plans, kronos_search, toto_plans
from forecast_core.windows import WindowSpec, build_windows
from hpo_assets.cli import DEMO_TUNE_CONFIG
from hpo_assets.sweeps import BASELINE_TRIALS, KronosSweepConfig, TotoSweepConfig


@dataclass
class Timer:
    seconds: float = 0.0
    calls: int = 0

    def wrap(self, obj, method: str) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        setattr(obj, method, timed)


def budgets(kind: str) -> tuple[TotoSweepConfig, KronosSweepConfig]:
    """The sweep assets' own configs: their defaults, or with the demo's run config applied."""
    ops = DEMO_TUNE_CONFIG["ops"] if kind == "demo" else {}
    return (TotoSweepConfig(**ops.get("toto_sweep", {}).get("config", {})),
            KronosSweepConfig(**ops.get("kronos_sweep", {}).get("config", {})))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="NVDA")
    parser.add_argument("--budget", choices=["default", "demo"], default="default")
    args = parser.parse_args()
    toto_budget, kronos_budget = budgets(args.budget)

    start = time.perf_counter()
    toto = TotoForecaster(load_toto())
    model, tokenizer = load_kronos()
    kronos = KronosForecaster(model, tokenizer)
    load_seconds = time.perf_counter() - start
    timers = {"toto": Timer(), "kronos": Timer()}
    timers["toto"].wrap(toto, "sample_paths")
    timers["kronos"].wrap(kronos, "sample_configs")

    with tempfile.TemporaryDirectory() as tmp:
        store = Storage(tmp)
        start = time.perf_counter()
        prices = EmbeddedSource().load(args.symbol)
        spec = WindowSpec()
        windows = build_windows(prices, spec, args.symbol)
        phases = {}

        def run(sweep: str, plans, revision: str = "") -> None:
            begin = time.perf_counter()
            ctx = trial_context(args.symbol, prices, spec, model_revision=revision)
            result = run_sweep(store, sweep, ctx, windows, plans)
            phases[sweep] = (time.perf_counter() - begin, len(result.computed))

        run("baseline", [SingleDraw(BASELINES[n], [t]) for n, t in BASELINE_TRIALS.items()])
        run("toto", toto_plans(toto, toto_grid(toto_budget.sample_counts, toto_budget.aggregations)), "tiny")
        begin = time.perf_counter()
        cap = kronos_budget.max_sample_count or None
        promoted, _ = kronos_search(kronos, windows, kronos_budget.search_budget,
                                    min(kronos_budget.search_sample_count, cap or kronos_budget.search_sample_count),
                                    kronos_budget.aggregations, kronos_budget.rung_windows, kronos_budget.keep_fraction,
                                    seed=search_seed(args.symbol, "bench"))
        phases["kronos search"] = (time.perf_counter() - begin, 0)
        configs = [KRONOS_DEFAULT, *(KRONOS_PRESETS[p] for p in kronos_budget.presets), *promoted]
        run("kronos", kronos_plans(kronos, configs, kronos_budget.sample_counts, kronos_budget.aggregations, cap),
            "tiny")
        total = time.perf_counter() - start

    model_seconds = sum(t.seconds for t in timers.values())
    print(f"per-symbol tune of {args.symbol}, budget {args.budget}, tiny checkpoints, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(windows)} windows, H {spec.horizon}")
    print(f"model load (not counted below): {load_seconds:.2f}s")
    for name, (seconds, computed) in phases.items():
        print(f"  {name:<14} {seconds:8.2f}s  trials stored {computed}")
    for name, timer in timers.items():
        print(f"  {name} model calls: {timer.calls}, {timer.seconds:.2f}s")
    print(f"total {total:.2f}s; model compute {model_seconds:.2f}s = {100 * model_seconds / total:.1f}% "
          f"(target >= 80%); everything else {total - model_seconds:.2f}s")


if __name__ == "__main__":
    main()
