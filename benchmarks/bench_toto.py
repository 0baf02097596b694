"""Upstream toto-ts 0.2.0 vs our Toto, side by side on one random full-size model (CPU).

Prints measured seconds (best of ``--repeats`` for ours, one run for upstream: it is slow),
the grid-vs-single-forecast cost, and the peak resident memory of an 8192-sample forecast
(measured in a fresh child process). Needs upstream in ``.upstream/toto`` (benchmarks/upstream/toto.py).

    .venv/bin/python benchmarks/bench_toto.py [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.upstream import toto as upstream_toto  # noqa: E402
from forecast_core.forecasters import PRICE_COLUMNS, ContextBatch  # noqa: E402
from forecast_core.toto import TotoConfig, TotoForecaster, TotoModel  # noqa: E402

FULL = TotoConfig(spacewise_first=False)  # Toto-Open-Base-1.0's published config
CONTEXT, SAMPLES, SEED = 512, 256, 0
GRID_COUNTS = [256, 512, 1024, 2048, 4096, 8192]
GRID_AGGREGATIONS = ["mean", "median", "trimmed_mean_10", "quantile_0.9", "mean_minus_std_0.5",
                     "mean_plus_std_0.5"]


def full_model() -> TotoModel:
    torch.manual_seed(SEED)
    return TotoModel(FULL).eval()


def closes() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.02, CONTEXT)))


def batch_for(close: np.ndarray, horizon: int) -> ContextBatch:
    values = np.repeat(close[None, :, None], len(PRICE_COLUMNS), axis=2)
    stamps = pd.bdate_range("2020-01-01", periods=len(close)).to_numpy()[None]
    future = np.zeros((1, horizon), dtype="datetime64[ns]")
    return ContextBatch(values, stamps, future, np.array([SEED]))


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        began = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - began)
    return best, out


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_child() -> None:
    """Run one 8192-sample H64 forecast; print resident MiB before it and its peak (Linux /proc)."""
    model, close = full_model(), closes()
    toto = TotoForecaster(model, samples_per_batch=8192)
    toto.sample_paths(batch_for(close, 64), 16)  # warm up
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    toto.sample_paths(batch_for(close, 64), 8192)
    print(f"{before:.0f} {_status_mib('VmHWM'):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch default)")
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_child:
        return peak_child()
    if not upstream_toto.available():
        sys.exit(upstream_toto.INSTALL_HINT)
    _, UpstreamForecaster, _ = upstream_toto.import_upstream()
    ours = full_model()
    theirs = upstream_toto.upstream_twin(ours)
    close = closes()
    series = torch.as_tensor(close, dtype=torch.float32)[None, None]
    params = sum(p.numel() for p in ours.parameters())
    print(f"random full-size Toto: {params:,} parameters; context {CONTEXT}; {SAMPLES} samples; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    toto = TotoForecaster(ours, samples_per_batch=SAMPLES)
    toto.sample_paths(batch_for(close, 64), 4)  # warm up both code paths once
    UpstreamForecaster(theirs.model).forecast(upstream_toto.masked_series(series), prediction_length=64,
                                              num_samples=2, samples_per_batch=2)
    print(f"{'horizon':>8} {'upstream s':>11} {'ours s':>8} {'speed-up':>9}   (upstream: samples_per_batch={SAMPLES})")
    for horizon in (64, 256):
        up_s, _ = timed(lambda: UpstreamForecaster(theirs.model).forecast(
            upstream_toto.masked_series(series), prediction_length=horizon, num_samples=SAMPLES,
            samples_per_batch=SAMPLES))
        our_s, _ = timed(lambda: toto.sample_paths(batch_for(close, horizon), SAMPLES), args.repeats)
        print(f"{horizon:>8} {up_s:>11.2f} {our_s:>8.2f} {up_s / our_s:>8.1f}x")

    up_mean = UpstreamForecaster(theirs.model).forecast(upstream_toto.masked_series(series), prediction_length=256,
                                                        num_samples=None).mean[0, 0].double().numpy()
    our_mean = toto.mean_paths(batch_for(close, 256))[0, 0]
    print(f"mean forecast H256, max |ours - upstream| = {np.abs(our_mean - up_mean).max():.2e} "
          f"(prices ~{close[-1]:.0f})")

    big = TotoForecaster(ours, samples_per_batch=8192)
    single_s, _ = timed(lambda: big.sample_paths(batch_for(close, 64), 8192), args.repeats)
    grid_s, grid = timed(lambda: big.sample_grid(batch_for(close, 64), GRID_COUNTS, GRID_AGGREGATIONS), args.repeats)
    print(f"H64 one window: single 8192-sample forecast {single_s:.3f}s; whole {len(GRID_COUNTS)}x"
          f"{len(GRID_AGGREGATIONS)} grid ({len(grid.points)} point forecasts) {grid_s:.3f}s "
          f"= {grid_s / single_s:.2f}x")

    child = subprocess.run([sys.executable, __file__, "--peak-child", "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
    before, peak = (float(x) for x in child.stdout.split())
    print(f"8192-sample H64 forecast, fresh process: resident {before:.0f} MiB before (model + warm-up), "
          f"peak {peak:.0f} MiB during it (+{peak - before:.0f} MiB)")


if __name__ == "__main__":
    main()
