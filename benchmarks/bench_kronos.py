"""Kronos engine benchmark: every number printed is measured in this run.

1. Upstream ``KronosPredictor`` vs ours on a mini-size random config (Kronos-mini shapes: d 256,
   4 layers, ff 512, 10+10 bits), one series, context 448, horizon 64, 8 samples. Also checks that
   both produce the same tokens under the same torch seed (ours in upstream-order sampling mode).
2. 16 sampling configs x 64 samples decoded in one batch from one prefill vs 16 separate calls, and
   the cost model that bounds that ratio (per-call vs per-row seconds, measured).
3. Long horizons (the window slides): test MAE% of the shipped tiny model with the exact path
   (``refresh_every=1``) vs the fast path, on the embedded data.

Each measurement runs in its own process so its peak RSS is its own. Upstream must be installed for
section 1 (see benchmarks/upstream/kronos.py); otherwise that section is skipped.

    .venv/bin/python benchmarks/bench_kronos.py [--threads N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MINI_TOKENIZER = dict(d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)
MINI_MODEL = dict(s1_bits=10, s2_bits=10, n_layers=4, d_model=256, n_heads=4, ff_dim=512, ffn_dropout_p=0.0,
                  attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)
CONTEXT, HORIZON, SAMPLES = 448, 64, 8


def _setup(threads: int):
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(threads)
    return torch


def _frame():
    from forecast_core.synthetic import make_prices

    return make_prices(CONTEXT, seed=1)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_upstream(threads: int, seed: int) -> dict:
    torch = _setup(threads)
    import pandas as pd

    from forecast_core.windows import future_calendar
    from benchmarks.upstream.kronos import random_pair, upstream_module

    up_model, up_tok, _, _ = random_pair(0, MINI_MODEL, MINI_TOKENIZER)
    frame = _frame()
    future = pd.Series(pd.DatetimeIndex(future_calendar(frame["timestamp"].to_numpy("datetime64[ns]"), HORIZON)))
    predictor = upstream_module().KronosPredictor(up_model, up_tok, device="cpu", max_context=512, clip=5)
    seen = []
    decode = up_tok.decode
    up_tok.decode = lambda tokens, half=False: seen.append(tokens) or decode(tokens, half)
    torch.manual_seed(seed)
    start = time.perf_counter()
    predictor.predict(frame.drop(columns="timestamp"), frame["timestamp"], future, HORIZON, T=1.0, top_k=0,
                      top_p=0.9, sample_count=SAMPLES, verbose=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _peak_mb(), "tokens": [t[:, -HORIZON:].numpy() for t in seen[-1]]}


def run_ours(threads: int, seed: int, upstream_order: bool) -> dict:
    torch = _setup(threads)
    import forecast_core.kronos.forecaster as kf
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, frame_to_batch
    from benchmarks.upstream.kronos import random_pair

    _, _, model, tok = random_pair(0, MINI_MODEL, MINI_TOKENIZER)  # the weights run_upstream uses
    seen = []
    decode = kf.decode_tokens
    kf.decode_tokens = lambda *a, **k: seen.append(decode(*a, **k)) or seen[-1]
    config = KronosSamplingConfig(temperature=1.0, top_p=0.9, sample_count=SAMPLES, max_context=512)
    forecaster = KronosForecaster(model, tok, config)
    batch = frame_to_batch(_frame(), HORIZON, seed=seed)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed) if upstream_order else None
    forecaster.sample_configs(batch, [config], generator=generator)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _peak_mb(), "tokens": [t.numpy() for t in seen[-1]]}


def sweep_configs():
    from forecast_core.kronos.forecaster import KronosSamplingConfig

    return [KronosSamplingConfig(temperature=t, top_p=p, top_k=k, sample_count=64, max_context=512)
            for t in (0.3, 0.6, 0.8, 1.0) for p, k in ((0.9, 0), (1.0, 0), (0.95, 20), (0.8, 50))]


def run_configs(threads: int, together: bool) -> dict:
    _setup(threads)
    from forecast_core.kronos.forecaster import KronosForecaster, frame_to_batch
    from benchmarks.upstream.kronos import random_ours

    model, tok = random_ours(0, MINI_MODEL, MINI_TOKENIZER)
    forecaster = KronosForecaster(model, tok, max_rows=4096)
    batch = frame_to_batch(_frame(), HORIZON, seed=7)
    configs = sweep_configs()
    start = time.perf_counter()
    if together:
        paths = forecaster.sample_configs(batch, configs)
    else:
        paths = [forecaster.sample_configs(batch, [c])[0] for c in configs]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": _peak_mb(), "paths": np.concatenate(paths, axis=1)}


def run_call_cost(threads: int) -> dict:
    """Seconds of one call with 1 and with 64 rows: what a call costs whatever its size, and per row."""
    _setup(threads)
    from dataclasses import replace

    from forecast_core.kronos.forecaster import KronosForecaster, frame_to_batch
    from benchmarks.upstream.kronos import random_ours

    model, tok = random_ours(0, MINI_MODEL, MINI_TOKENIZER)
    forecaster = KronosForecaster(model, tok, max_rows=4096)
    batch = frame_to_batch(_frame(), HORIZON, seed=7)
    seconds = {}
    for rows in (1, 64):
        start = time.perf_counter()
        forecaster.sample_configs(batch, [replace(sweep_configs()[0], sample_count=rows)])
        seconds[rows] = time.perf_counter() - start
    per_row = (seconds[64] - seconds[1]) / 63
    return {"fixed": seconds[1] - per_row, "per_row": per_row}


def run_slide(threads: int, refresh_every: int, samples: int) -> dict:
    _setup(threads)
    from forecast_core.aggregate import aggregate
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, load_kronos
    from forecast_core.metrics import mae_pct
    from forecast_core.sources import EmbeddedSource
    from forecast_core.windows import TEST, WindowSpec, build_windows

    model, tok = load_kronos()
    forecaster = KronosForecaster(model, tok, KronosSamplingConfig(sample_count=samples), refresh_every=refresh_every)
    source, spec = EmbeddedSource(), WindowSpec()
    per_window, seconds = [], 0.0
    for symbol in source.symbols():
        windows = build_windows(source.load(symbol), spec, symbol).split(TEST)
        start = time.perf_counter()
        paths = forecaster.sample_paths(windows.batch, samples)
        seconds += time.perf_counter() - start
        per_window.append(mae_pct(aggregate(paths, "mean", sample_axis=1), windows.targets))
    return {"seconds": seconds, "peak_mb": _peak_mb(), "mae_pct": np.concatenate(per_window)}


def isolated(fn, *args) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slide-samples", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.upstream.kronos import SKIP_REASON, upstream_module

    print(f"torch threads {args.threads}; mini-size random config: {MINI_MODEL} / tokenizer d 256, 4+4 layers")
    print(f"\n[1] upstream KronosPredictor vs ours: context {CONTEXT}, H {HORIZON}, {SAMPLES} samples, "
          "T 1.0, top_p 0.9, max_context 512 (KV cache exact)")
    if upstream_module() is None:
        print(f"    skipped: {SKIP_REASON}")
    else:
        up = isolated(run_upstream, args.threads, 42)
        ours_compat = isolated(run_ours, args.threads, 42, True)
        ours = isolated(run_ours, args.threads, 42, False)
        same = all(np.array_equal(a, b) for a, b in zip(up["tokens"], ours_compat["tokens"]))
        tokens = SAMPLES * HORIZON
        print(f"    upstream                  {up['seconds']:8.2f} s  {tokens / up['seconds']:8.1f} tok/s  peak RSS {up['peak_mb']:6.0f} MB")
        print(f"    ours, upstream RNG order  {ours_compat['seconds']:8.2f} s  {tokens / ours_compat['seconds']:8.1f} tok/s  peak RSS {ours_compat['peak_mb']:6.0f} MB")
        print(f"    ours, per-row seeds       {ours['seconds']:8.2f} s  {tokens / ours['seconds']:8.1f} tok/s  peak RSS {ours['peak_mb']:6.0f} MB")
        print(f"    speed-up {up['seconds'] / ours['seconds']:.1f}x (per-row seeds), "
              f"{up['seconds'] / ours_compat['seconds']:.1f}x (upstream order); "
              f"tokens identical to upstream under torch seed 42: {same}")

    configs = sweep_configs()
    rows = sum(c.sample_count for c in configs)
    print(f"\n[2] {len(configs)} sampling configs x 64 samples ({rows} rows), context {CONTEXT}, H {HORIZON}, mini-size")
    together = isolated(run_configs, args.threads, True)
    separate = isolated(run_configs, args.threads, False)
    tokens = rows * HORIZON
    print(f"    one batch, one prefill    {together['seconds']:8.2f} s  {tokens / together['seconds']:8.1f} tok/s  peak RSS {together['peak_mb']:6.0f} MB")
    print(f"    16 separate calls         {separate['seconds']:8.2f} s  {tokens / separate['seconds']:8.1f} tok/s  peak RSS {separate['peak_mb']:6.0f} MB")
    print(f"    speed-up {separate['seconds'] / together['seconds']:.2f}x; identical paths: "
          f"{np.array_equal(together['paths'], separate['paths'])}")
    cost = isolated(run_call_cost, args.threads)
    fixed, per_row, n = cost["fixed"], cost["per_row"], len(configs)
    bound = n * (fixed + 64 * per_row) / (fixed + rows * per_row)
    print(f"    cost model from 1- and 64-row calls: {fixed:.3f} s per call (encode, prefill, per-step "
          f"dispatch) + {per_row * 1e3:.1f} ms per row;\n    one shared prefill can save at most the "
          f"per-call part: expected speed-up {bound:.2f}x on this machine")

    print(f"\n[3] window slide (context 512 + H 64 > max_context 512), shipped tiny model, embedded data, "
          f"6 symbols x 8 test windows, {args.slide_samples} samples, T 1.0, top_p 0.9, mean aggregate")
    exact = isolated(run_slide, args.threads, 1, args.slide_samples)
    print(f"    refresh_every  1 (exact)  MAE% {exact['mae_pct'].mean():6.3f}  {exact['seconds']:7.2f} s")
    for r in (4, 8, 16):
        fast = isolated(run_slide, args.threads, r, args.slide_samples)
        diff = fast["mae_pct"] - exact["mae_pct"]
        print(f"    refresh_every {r:2d}          MAE% {fast['mae_pct'].mean():6.3f}  {fast['seconds']:7.2f} s  "
              f"diff vs exact: mean {diff.mean():+.3f}, mean |diff| per window {np.abs(diff).mean():.3f} (MAE% points)")


if __name__ == "__main__":
    main()
