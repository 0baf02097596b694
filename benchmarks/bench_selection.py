"""False-positive rate and power of config selection: the percentile rule vs StepM/SPA (BRIEF §11).

Simulated validation losses (MAE%) for many symbols, both rules on the *same* losses:

* W windows per symbol; a per-window level shared by every config (log-normal, heavy right tail:
  some windows are much harder than others), times (1 + noise * eps) with eps ~ N(0, 1) per
  (window, config). Configs are highly correlated within a window (~0.9 at the defaults), as with
  common random numbers. Column 0 is the default; N further configs (N = configs besides it).
* H0: all N configs equal the default in expectation. A "false positive" is a significant pick.
* H1: config 1 is better by ``effect`` standard deviations of a per-window difference (config -
  default): its loss is level * (1 + noise * (eps - effect * sqrt(2))). "Power" counts symbols
  where the rule picks config 1 and calls it significant.

The README carries the rates this script printed. The new rule skips the model confidence set here
(it does not change the pick).

    .venv/bin/python benchmarks/bench_selection.py [--symbols 1000] [--reps 500] [--block 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forecast_core.significance import percentile_bootstrap_rule, selection_test  # noqa: E402

WINDOWS, LEVEL, LEVEL_SIGMA, NOISE = 8, 5.0, 0.5, 0.15
CONFIG_COUNTS = [1, 5, 12, 36, 124]
EFFECTS = [0.5, 1.0, 1.5]
POWER_COUNTS = [5, 36, 124]


def simulate_losses(rng: np.random.Generator, symbols: int, configs: int, effect: float = 0.0,
                    windows: int = WINDOWS, level_sigma: float = LEVEL_SIGMA,
                    noise: float = NOISE) -> np.ndarray:
    """[symbols, windows, configs + 1] losses; column 0 the default, column 1 better by ``effect``."""
    level = LEVEL * np.exp(level_sigma * rng.standard_normal((symbols, windows, 1)))
    relative = noise * rng.standard_normal((symbols, windows, configs + 1))
    if effect:
        relative[:, :, 1] -= effect * noise * np.sqrt(2.0)
    return level * (1.0 + relative)


def within_window_correlation(level_sigma: float = LEVEL_SIGMA, noise: float = NOISE) -> float:
    """Correlation of two configs' losses in the same window (log-normal level, independent noise)."""
    second_moment = np.exp(level_sigma ** 2)  # E[level^2] / E[level]^2
    return float((second_moment - 1.0) / (second_moment * (1.0 + noise ** 2) - 1.0))


def rates(losses: np.ndarray, block: int, reps: int,
          target: int | None = None) -> tuple[float, float, float]:
    """Shares of symbols where (old rule, new rule) make a significant pick (of ``target`` if given),
    and the new rule's milliseconds per symbol."""
    old = new = 0
    seconds = 0.0
    for s, symbol in enumerate(losses):
        a = percentile_bootstrap_rule(symbol, 0, block, seed=s)
        start = time.perf_counter()
        b = selection_test(symbol, 0, block, seed=s, reps=reps, confidence_set=False)
        seconds += time.perf_counter() - start
        old += a.significant and (target is None or a.best == target)
        new += b.significant and (target is None or b.best == target)
    return old / len(losses), new / len(losses), 1000 * seconds / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=500, help="bootstrap replications of the new rule")
    parser.add_argument("--block", type=int, default=1, help="block length (1 = i.i.d. windows)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{args.symbols} symbols x {WINDOWS} windows; level log-normal(sigma={LEVEL_SIGMA}), config noise "
          f"{NOISE:.0%} of the level (within-window correlation {within_window_correlation():.2f}); "
          f"block {args.block}; old rule 2000 resamples, 95% percentile CI high < 0; new rule StepM/SPA "
          f"at 5%, {args.reps} reps")
    print("\nH0 (every config equal to the default): share of symbols with a 'significant' pick")
    print(f"{'N configs':>10} {'old rule':>9} {'new rule':>9} {'ms/symbol (new)':>16}")
    for n in CONFIG_COUNTS:
        losses = simulate_losses(rng, args.symbols, n)
        old, new, ms = rates(losses, args.block, args.reps)
        print(f"{n:>10} {old:>9.1%} {new:>9.1%} {ms:>16.1f}", flush=True)
    print("\nH1 (config 1 better by `effect` SDs of a per-window difference): share picking it as significant")
    print(f"{'N configs':>10} {'effect':>7} {'old rule':>9} {'new rule':>9}")
    for n in POWER_COUNTS:
        for effect in EFFECTS:
            losses = simulate_losses(rng, args.symbols, n, effect=effect)
            old, new, _ = rates(losses, args.block, args.reps, target=1)
            print(f"{n:>10} {effect:>7.1f} {old:>9.1%} {new:>9.1%}", flush=True)


if __name__ == "__main__":
    main()
