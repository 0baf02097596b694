"""Upstream toto-2 2.0.0 vs our Toto 2.0, side by side on random models of the published sizes (CPU).

For each context length and decoding mode, one row: seconds per forecast call (best of
``--repeats``, upstream and ours interleaved in the same process with the same torch threads), the
ratio upstream / ours, the peak resident memory each call adds, and the largest |ours - upstream|
over every quantile, step and window divided by that window's price level (largest |close| of its
context): equal outputs read ~1e-7. Nothing is asserted; the numbers are printed.

Calls, both on the same ``--windows`` windows of one random-walk close series each (univariate):

- ours: ``Toto2Forecaster(model, decode_block_size=B, quantile_cap_k=1e4).quantiles(batch)``, all
  windows in one ``ContextBatch`` (our engine's only entry point; includes the numpy round trip).
- upstream: ``Toto2Model.forecast({"target", "target_mask", "series_ids"}, horizon, decode_block_size=B,
  has_missing_values=False, quantile_real_cap_k=1e4)`` on the ``[windows, 1, context]`` batch: how its
  own GluonTS predictor calls it (a batch of windows per call, cap 1e4), with the README's
  ``has_missing_values=False`` for gap-free contexts (the flash/causal SDPA path).

Modes: single pass (``decode_block_size=None``), block decoding at ``--block`` rounded to the nearest
patch multiple, and one patch per block when that differs (with H64 and 32-bar patches a 64-bar block
covers the whole horizon in one block, i.e. the same computation as single pass; one patch per block
is what exercises both key/value caches).

Shapes: the Toto-2.0 ``config.json`` files are not shipped in the ``toto-2`` wheel (its METADATA only
lists the sizes: 4M, 22M, 313M, 1B, 2.5B), and nothing here reaches the Hub, so ``22m`` / ``313m``
below are STAND-INS of the advertised parameter counts (d_model, layers and heads chosen to land
there; patch 32 as third-party docs state for Toto 2.0; alternating time/variate layers), not the
published shapes. Pass ``--config path/to/config.json`` to benchmark a real one. Weights are random
unit-scale draws (as in tests/parity/test_toto2_parity.py) so every block moves the output.

Peak memory: tracemalloc does not see torch's allocations, so each (implementation, context, mode)
call runs once more in a fresh child process (same threads): the model is built, one warm-up call
on a tiny input (1 window, 2 patches: pages in the kernels' code and the thread pools without
leaving a large heap behind for the measured call to reuse), the inputs made, the kernel's
high-water mark reset to the current RSS (``/proc/self/clear_refs``, Linux), one call, and the
column is ``VmHWM - VmRSS before`` in MiB: every page that call touched beyond model + inputs
(both key/value caches included; upstream's is allocated per input shape). Resolution ~1 MiB; a
few MiB of it can be allocator or lazily loaded code, so small shapes read as a near-constant floor.

    .venv/bin/python benchmarks/bench_toto2.py [--threads 2] [--with-313m] [--quick]

``--quick``: a tiny shape, 2 windows, context 512 only, 1 repeat, single pass and one-patch blocks
(a smoke test, < 60 s).
Needs upstream in ``.upstream/toto2`` (benchmarks/upstream/toto2.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.upstream import toto2 as upstream_toto2  # noqa: E402
from forecast_core.forecasters import PRICE_COLUMNS, ContextBatch  # noqa: E402
from forecast_core.toto2 import Toto2Config, Toto2Forecaster, Toto2Model  # noqa: E402

SEED = 0
CAP_K = 1e4  # upstream GluonTS predictor's default quantile_real_cap_k; our forecaster's default


def _ratio(context: int, patch: int) -> float:
    """Upstream's documented rule ``Toto2ModelConfig.compute_residual_attn_ratio``: sqrt(S / ln S)."""
    s = context / patch
    return float(np.sqrt(s / np.log(s)))


# Stand-ins (see the module docstring): parameter counts ~23M and ~312M with these shapes.
SHAPES = {
    "tiny": dict(patch_size=8, d_model=32, num_heads=4, num_layers=2, layer_group_size=2,
                 num_variate_layers_per_group=1, variate_layer_first=False, residual_attn_ratio=_ratio(512, 8)),
    "22m": dict(patch_size=32, d_model=384, num_heads=6, num_layers=12, layer_group_size=2,
                num_variate_layers_per_group=1, variate_layer_first=False, residual_attn_ratio=_ratio(2048, 32)),
    "313m": dict(patch_size=32, d_model=1024, num_heads=16, num_layers=24, layer_group_size=2,
                 num_variate_layers_per_group=1, variate_layer_first=False, residual_attn_ratio=_ratio(2048, 32)),
}


def config_for(shape: str) -> Toto2Config:
    if shape in SHAPES:
        return Toto2Config(**SHAPES[shape])
    config, _ = Toto2Config.from_dict(json.loads(Path(shape).read_text()))
    return config


def random_model(config: Toto2Config, seed: int = SEED) -> Toto2Model:
    torch.manual_seed(seed)
    model = Toto2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # unit-scale weights (u-muP), as tests/parity/test_toto2_parity.py
            p.normal_(0.0, 1.0 if p.dim() > 1 else 0.3)
    return model


def closes(windows: int, context: int, seed: int = SEED) -> np.ndarray:
    """``[windows, context]`` geometric random walks around 100 (one independent series per window)."""
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (windows, context)), axis=1))


def batch_for(close: np.ndarray, horizon: int) -> ContextBatch:
    w, length = close.shape
    values = np.repeat(close[:, :, None], len(PRICE_COLUMNS), axis=2)
    stamps = np.broadcast_to(pd.bdate_range("2020-01-01", periods=length).to_numpy(), (w, length)).copy()
    return ContextBatch(values, stamps, np.zeros((w, horizon), dtype="datetime64[ns]"), np.arange(w))


def upstream_inputs(close: np.ndarray) -> dict:
    target = torch.as_tensor(close[:, None, :]).to(torch.float32)  # same rounding as our forecaster
    return {"target": target, "target_mask": torch.ones_like(target, dtype=torch.bool),
            "series_ids": torch.zeros(target.shape[:-1], dtype=torch.long)}


def callers(ours: Toto2Model, theirs, close: np.ndarray, horizon: int, block: int | None):
    toto2 = Toto2Forecaster(ours, decode_block_size=block, quantile_cap_k=CAP_K)
    batch = batch_for(close, horizon)

    def run_ours() -> np.ndarray:
        return toto2.quantiles(batch)  # [windows, 9, horizon] float64

    def run_upstream() -> np.ndarray:
        q = theirs.forecast(upstream_inputs(close), horizon, decode_block_size=block, has_missing_values=False,
                            quantile_real_cap_k=CAP_K)  # [9, windows, 1, horizon]
        return q[:, :, 0].permute(1, 0, 2).double().numpy()

    return run_upstream, run_ours


def modes(patch: int, block: int) -> list[tuple[str, int | None]]:
    nearest = max(patch, round(block / patch) * patch)
    out = [("single", None), (f"block {nearest}", nearest)]
    if nearest != patch:
        out.append((f"block {patch}", patch))
    return out


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_child(spec: dict) -> None:
    """Build model + inputs, warm up on a tiny input, reset the RSS high-water mark, one call; print the
    MiB it added."""
    ours = random_model(config_for(spec["shape"]))
    horizon, block = spec["horizon"], spec["block"]
    if spec["impl"] == "upstream":
        theirs = upstream_toto2.upstream_twin(ours)
        del ours  # the upstream process holds upstream's model only

        def call_for(close: np.ndarray):
            inputs = upstream_inputs(close)
            return lambda: theirs.forecast(inputs, horizon, decode_block_size=block, has_missing_values=False,
                                           quantile_real_cap_k=CAP_K)
    else:
        toto2 = Toto2Forecaster(ours, decode_block_size=block, quantile_cap_k=CAP_K)

        def call_for(close: np.ndarray):
            batch = batch_for(close, horizon)
            return lambda: toto2.quantiles(batch)
    call_for(closes(1, 2 * config_for(spec["shape"]).patch_size))()  # page in code and thread pools
    call = call_for(closes(spec["windows"], spec["context"]))
    before = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    call()
    print(f"{_status_mib('VmHWM') - before:.1f}")


def child_peak(spec: dict, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--child", json.dumps(spec)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def relative_gap(ours: np.ndarray, theirs: np.ndarray, close: np.ndarray) -> float:
    level = np.abs(close).max(axis=1)[:, None, None]
    return float((np.abs(ours - theirs) / level).max())


def bench_shape(shape: str, args) -> None:
    config = config_for(shape)
    ours = random_model(config)
    theirs = upstream_toto2.upstream_twin(ours)
    params = sum(p.numel() for p in ours.parameters())
    c = config
    print(f"\n{shape}: {params:,} parameters (patch {c.patch_size}, d_model {c.d_model}, {c.num_layers} layers, "
          f"{c.num_heads} heads); {args.windows} windows; H{args.horizon}")
    print(f"{'context':>7} {'mode':>9} {'upstream s':>11} {'ours s':>9} {'up/ours':>8} "
          f"{'up +MiB':>8} {'ours +MiB':>9} {'max|d|/level':>13}")
    for context in args.contexts:
        close = closes(args.windows, context)
        for name, block in modes(c.patch_size, args.block):
            run_upstream, run_ours = callers(ours, theirs, close, args.horizon, block)
            gap = relative_gap(run_ours(), run_upstream(), close)  # also the warm-up of both
            up_s = our_s = float("inf")
            for _ in range(args.repeats):  # interleaved: load drifts hit both sides alike
                up_s = min(up_s, timed(run_upstream))
                our_s = min(our_s, timed(run_ours))
            if args.no_memory:
                up_mib = our_mib = "-"
            else:
                spec = dict(shape=shape, windows=args.windows, context=context, horizon=args.horizon, block=block)
                up_mib = f"{child_peak(dict(spec, impl='upstream'), args.threads):.0f}"
                our_mib = f"{child_peak(dict(spec, impl='ours'), args.threads):.0f}"
            print(f"{context:>7} {name:>9} {up_s:>11.3f} {our_s:>9.3f} {up_s / our_s:>7.2f}x "
                  f"{up_mib:>8} {our_mib:>9} {gap:>13.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both sides (0: torch default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--block", type=int, default=64, help="block decoding size (rounded to a patch multiple)")
    parser.add_argument("--with-313m", action="store_true", help="also the 313m stand-in (slow on CPU)")
    parser.add_argument("--config", help="a Toto 2.0 config.json, or a stand-in name (tiny, 22m, 313m), instead of the default")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny shape, 2 windows, context 512, 1 repeat")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    if args.child:
        return peak_child(json.loads(args.child))
    if not upstream_toto2.available():
        sys.exit(upstream_toto2.INSTALL_HINT)
    if args.quick:
        args.windows, args.contexts, args.repeats = 2, [512], 1
        args.block = SHAPES["tiny"]["patch_size"]  # single pass + one patch per block: both code paths
        shapes = ["tiny"]
    else:
        shapes = [args.config] if args.config else ["22m"] + (["313m"] if args.with_313m else [])
    print(f"torch {torch.__version__}, {args.threads} threads (both sides); best of {args.repeats} calls; "
          f"quantile cap K={CAP_K:g} on both; shapes other than --config are stand-ins (see --help)")
    for shape in shapes:
        bench_shape(shape, args)


if __name__ == "__main__":
    main()
