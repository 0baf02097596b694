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

from forecast_core.kronos.forecaster import KronosForecaster, load_kronos
from forecast_core.sources import EmbeddedSource
from forecast_core.store import Storage
from forecast_core.sweep.budgets import DEMO_KRONOS, DEMO_TOTO, KronosBudget, TotoBudget, tune_symbol
from forecast_core.toto import TotoForecaster, load_toto
from forecast_core.windows import WindowSpec, plan_layout

BUDGETS = {"default": (TotoBudget(), KronosBudget()), "demo": (DEMO_TOTO, DEMO_KRONOS)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbol", default="NVDA")
    parser.add_argument("--budget", choices=list(BUDGETS), default="default")
    args = parser.parse_args()
    toto_budget, kronos_budget = BUDGETS[args.budget]

    start = time.perf_counter()
    toto = TotoForecaster(load_toto())
    kronos = KronosForecaster(*load_kronos())
    load_seconds = time.perf_counter() - start
    timers = {"toto": Timer(), "kronos": Timer()}
    timers["toto"].wrap(toto, "sample_paths")
    timers["kronos"].wrap(kronos, "sample_configs")

    prices = EmbeddedSource().load(args.symbol)
    spec = WindowSpec()
    layout = plan_layout(len(prices), spec)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        phases = tune_symbol(Storage(tmp), args.symbol, prices, toto, kronos, spec, toto_budget, kronos_budget,
                             model_revision="tiny")
        total = time.perf_counter() - start

    model_seconds = sum(t.seconds for t in timers.values())
    print(f"per-symbol tune of {args.symbol}, budget {args.budget}, tiny checkpoints, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {layout.spec.n_val + layout.spec.n_test} windows, H {spec.horizon}")
    print(f"model load (not counted below): {load_seconds:.2f}s")
    for name, phase in phases.items():
        print(f"  {name:<14} {phase.seconds:8.2f}s  trials stored {phase.trials}")
    for name, timer in timers.items():
        print(f"  {name} model calls: {timer.calls}, {timer.seconds:.2f}s")
    print(f"total {total:.2f}s; model compute {model_seconds:.2f}s = {100 * model_seconds / total:.1f}% "
          f"(target >= 80%); everything else {total - model_seconds:.2f}s")


if __name__ == "__main__":
    main()
