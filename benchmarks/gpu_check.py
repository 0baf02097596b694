"""One command that checks both engines on a GPU, writes one JSON and prints one table.

On a lent H200 (device tool; nothing outside that machine can be reached, and its image already has
torch, numpy, pandas, pyarrow, scipy, einops, jaxtyping, toolz, wadler-lindig, safetensors and
huggingface-hub, see /work/.library/device/KINDS.md). Here, once (pip works here; about 30 MiB of
Python 3.12 x86-64 wheels: duckdb, optuna, colorlog, pydantic for gluonts, toto-ts, gluonts,
rotary-embedding-torch, kronos-model-arch, at the versions this checkout is tested with)::

    echo /.whl/ >> .git/info/exclude
    .venv/bin/python benchmarks/gpu_check.py --download-wheels .whl

then one device-tool call (``carry: [".whl"]``, ``timeout_s: 600``)::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --wheels .whl --out $OUT/gpu_check.json

``--wheels`` installs the carried wheels with ``pip --no-index --no-deps`` (site packages into a temp
folder put on the path, upstream toto-ts / kronos-model-arch into ``.upstream/`` where
benchmarks/upstream/*.py import them) and then runs every section. The whole run is planned to end
within 8 minutes: each section has a time budget (``SECTIONS``), enforced by an alarm; a section
that runs out keeps the rows it measured and says ``timeout``. Progress is printed as rows land.

Sections (each appends rows ``section, name, metric, value, unit``, kept if its budget runs out; a
line that cannot run, such as no upstream package or no CUDA for a GPU-only line, is a row whose
value is ``skipped: <reason>``):

- ``toto``: random full-size Toto 1.0 config (151M), 16 windows, context 512, H 64. 8192-sample
  forecasts in float32 and bfloat16: seconds, samples/s, peak GPU memory; ours vs upstream toto-ts
  at 256 samples (and the mean forecast's agreement with upstream).
- ``kronos``: random Kronos-base config (102M, Kronos-Tokenizer-base shapes), context 448, H 64:
  upstream ``KronosPredictor`` vs ours at 8 samples (same tokens under one seed?), then 16 sampling
  configs x 64 samples in one batch from one prefill vs 16 calls, with the cost model (seconds per
  call + per row, from 1- and 64-row calls) that bounds that ratio.
- ``agreement``: the same seeded forecasts on the CPU and on the GPU (float32): Toto's mean
  forecast and sample paths, Kronos paths; max relative difference against a stated bound.
- ``tune``: one per-symbol tune of NVDA (embedded data, 16 windows) at the sweep assets' default
  budgets through the project's code path (``forecast_core.sweep.budgets.tune_symbol``, as
  benchmarks/bench_tune.py runs it), with the full-size random models on the GPU: seconds per phase,
  share in model calls, symbols per GPU-hour and GPUs needed to re-tune 3,000 symbols weekly within
  one 8-hour night.
- ``compile``: forecast_core/compiled/ on the GPU (toto-full, kronos-base), each in fresh child
  processes with empty inductor caches: eager vs compiled seconds, cold compile, warm start, parity.

``--quick`` runs every section on tiny configs on the CPU in well under a minute (the test suite runs
it, so this script never rots): the same code paths, tiny random models, the bundled tiny checkpoints
and the demo budgets for the tune on a short window layout, compile with dynamo's ``eager`` backend
(no inductor code generation, which costs minutes on a CPU; Kronos at H 1, its heads only), one torch
thread (tiny ops only stall on a second thread of a shared CPU), and the agreement section compares
the CPU with itself at two threads and other chunk sizes (a consistency check, labelled so), since
there is no GPU to compare with. Quick numbers check plumbing, not speed.

    .venv/bin/python benchmarks/gpu_check.py --quick --out /tmp/gpu_check.json
    python3 benchmarks/gpu_check.py [--device cuda] [--sections toto kronos ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOTAL_BUDGET_S = 450.0  # the sections' budgets add up to this; wheel install and imports come on top
# (name, budget seconds on the GPU, budget seconds in --quick); run in this order, most important first.
SECTIONS = (("toto", 60, 20), ("kronos", 75, 20), ("agreement", 35, 15), ("tune", 200, 30), ("compile", 80, 40))
QUICK_TOTAL_BUDGET_S = 55.0
AGREEMENT_BOUND = 1e-3  # max |a - b| / mean |b|: the compiled-vs-eager parity tolerance of the model assets
RETUNE_SYMBOLS, NIGHT_HOURS = 3000, 8

# Kronos-base (NeoQuasar/Kronos-base, 102.3M parameters) and Kronos-Tokenizer-base shapes.
BASE_MODEL = dict(s1_bits=10, s2_bits=10, n_layers=12, d_model=832, n_heads=16, ff_dim=2048, ffn_dropout_p=0.0,
                  attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)
# Packages the device image lacks that these sections import (duckdb/optuna: the tune; pydantic & co:
# gluonts, imported by toto-ts). Versions are taken from this checkout's environment when downloading.
DEVICE_SITE_WHEELS = ("duckdb", "optuna", "colorlog", "pydantic", "pydantic-core", "typing-inspection",
                      "annotated-types")
ON_DEVICE_IMAGE = {"scipy", "jaxtyping", "wadler-lindig", "toolz", "einops"}  # KINDS.md's package list
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                   "manylinux2014_x86_64", "manylinux1_x86_64")


# ----------------------------------------------------------------------------------------------
# Rows, sections, time budgets


@dataclass
class Row:
    section: str
    name: str
    metric: str
    value: object  # a number, or "skipped: <reason>" / another short text
    unit: str = ""


class SectionTimeout(Exception):
    """The section's time budget ran out (raised by SIGALRM in the main thread)."""


def _alarm(signum, frame):
    raise SectionTimeout()


@dataclass
class Context:
    args: argparse.Namespace
    device: str
    quick: bool
    began: float = field(default_factory=time.perf_counter)
    cache: dict = field(default_factory=dict)
    section: str = ""
    deadline: float = math.inf  # perf_counter time at which the running section's budget ends

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def add(self, rows: list, name: str, metric: str, value, unit: str = "") -> None:
        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.6g}")
        rows.append(Row(self.section, name, metric, value, unit))
        shown = f"{value:.6g}" if isinstance(value, float) else value
        print(f"[{time.perf_counter() - self.began:6.1f}s] {self.section:<9} {name:<34} {metric:<28} "
              f"{shown} {unit}", flush=True)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def remember(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


def run_sections(ctx: Context, wanted: list[str]) -> dict:
    report = {}
    total = QUICK_TOTAL_BUDGET_S if ctx.quick else TOTAL_BUDGET_S
    signal.signal(signal.SIGALRM, _alarm)
    for name, gpu_budget, quick_budget in SECTIONS:
        if name not in wanted:
            continue
        spent = time.perf_counter() - ctx.began
        budget = max(1.0, min(quick_budget if ctx.quick else gpu_budget, total - spent))
        ctx.section, ctx.deadline = name, time.perf_counter() + budget
        print(f"[{spent:6.1f}s] == {name}: budget {budget:.0f}s", flush=True)
        rows: list[Row] = []
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, budget + 2.0)  # the compile section's children stop first
        try:
            SECTION_FUNCTIONS[name](ctx, rows)
            status = "ok"
        except SectionTimeout:
            status = f"timeout: budget {budget:.0f}s spent, later lines not measured"
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            traceback.print_exc()
            status = f"error: {exc!r}"[:500]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        report[name] = {"status": status, "seconds": round(time.perf_counter() - start, 3), "budget_s": budget,
                        "rows": [dataclasses.asdict(r) for r in rows]}
        print(f"[{time.perf_counter() - ctx.began:6.1f}s] == {name}: {status} "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
    return report


# ----------------------------------------------------------------------------------------------
# Helpers shared by the sections


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1):
    """Best-of-``repeats`` wall seconds of ``fn()`` with the device synchronised around it, and its result."""
    best, out = math.inf, None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def measure_peak(fn, device: str):
    """(seconds, peak GPU MiB or None, result) of one call."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds, out = timed(fn, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return seconds, peak, out


def add_peak(ctx: Context, rows: list, name: str, peak) -> None:
    if peak is None:
        ctx.add(rows, name, "peak GPU memory", f"skipped: device {ctx.device} is not a GPU")
    else:
        ctx.add(rows, name, "peak GPU memory", peak, "MiB allocated, weights included")


def rel_diff(a, b) -> float:
    """max |a - b| / mean |b| (inf when shapes differ or a value is not finite)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.inf
    return float(np.abs(a - b).max() / max(np.abs(b).mean(), 1e-12))


def upstream_state() -> dict:
    """Which upstream packages import here, and why not."""
    from benchmarks.upstream import kronos as upstream_kronos, toto as upstream_toto

    state = {}
    if not upstream_toto.available():
        state["toto"] = upstream_toto.INSTALL_HINT
    else:
        try:
            upstream_toto.import_upstream()
            state["toto"] = None
        except Exception as exc:  # noqa: BLE001 - e.g. a missing dependency on a bare machine
            state["toto"] = f"upstream toto-ts does not import: {exc!r}"
    try:
        state["kronos"] = None if upstream_kronos.upstream_module() is not None else upstream_kronos.SKIP_REASON
    except Exception as exc:  # noqa: BLE001
        state["kronos"] = f"upstream kronos-model-arch does not import: {exc!r}"
    return state


def toto_cpu_model(ctx: Context):
    """The random Toto (seed 0) on the CPU in float32; full size = bench_toto.full_model()."""
    import torch

    from benchmarks import bench_toto
    from forecast_core.toto import TotoConfig, TotoModel

    def make():
        if not ctx.quick:
            return bench_toto.full_model()
        torch.manual_seed(bench_toto.SEED)
        return TotoModel(TotoConfig(embed_dim=32, num_layers=2, num_heads=2, mlp_hidden_dim=64,
                                    spacewise_every_n_layers=2, k_components=4, spacewise_first=False)).eval()

    return ctx.remember("toto_cpu", make)


def kronos_shapes(quick: bool) -> tuple[dict, dict]:
    from benchmarks import bench_kronos
    from benchmarks.upstream import kronos as upstream_kronos

    if quick:
        return upstream_kronos.MODEL_KWARGS, upstream_kronos.TOKENIZER_KWARGS
    return BASE_MODEL, bench_kronos.MINI_TOKENIZER  # Kronos-Tokenizer-base has the mini shapes


def kronos_cpu_models(ctx: Context):
    """Our random Kronos + tokenizer (seed 0, the weights tests/upstream_kronos.random_pair shares)."""
    from benchmarks.upstream.kronos import random_ours

    return ctx.remember("kronos_cpu", lambda: random_ours(0, *kronos_shapes(ctx.quick)))


def on_device(module, device: str, dtype=None):
    """A copy of a CPU module on ``device`` (the CPU original stays for the agreement section)."""
    moved = copy.deepcopy(module)
    return moved.to(device=device, dtype=dtype) if dtype is not None else moved.to(device)


# ----------------------------------------------------------------------------------------------
# Section: Toto


def section_toto(ctx: Context, rows: list) -> None:
    import numpy as np
    import torch

    from forecast_core.compiled.parity import ProbeShape, probe_batch
    from forecast_core.toto import TotoForecaster
    from benchmarks.upstream import toto as upstream_toto

    windows, context, horizon = (2, 128, 64) if ctx.quick else (16, 512, 64)
    samples, upstream_samples = (256, 16) if ctx.quick else (8192, 256)
    cpu_model = toto_cpu_model(ctx)
    params = sum(p.numel() for p in cpu_model.parameters())
    size = "tiny random" if ctx.quick else "full-size random"
    ctx.add(rows, f"toto {size}", "parameters", params)
    batch = probe_batch(ProbeShape(windows, context, horizon, samples))
    series = torch.as_tensor(batch.column("close"), dtype=torch.float32)[:, None]
    upstream_problem = upstream_state()["toto"]

    for dtype in (torch.float32, torch.bfloat16):
        label = f"toto {str(dtype).removeprefix('torch.')} {windows}w"
        model = on_device(cpu_model, ctx.device, dtype)
        ours = TotoForecaster(model)  # samples_per_batch 512: TotoRuntime's default
        ours.sample_paths(batch, 4)  # warm-up (kernels, handles)
        seconds, peak, paths = measure_peak(lambda: ours.sample_paths(batch, samples), ctx.device)
        ctx.add(rows, f"{label} x{samples} H{horizon}", "seconds", seconds, "s")
        ctx.add(rows, f"{label} x{samples} H{horizon}", "samples/s", windows * samples / seconds, "paths/s")
        add_peak(ctx, rows, f"{label} x{samples} H{horizon}", peak)
        if paths.shape != (windows, samples, horizon) or not np.isfinite(paths).all():
            raise RuntimeError(f"{label}: paths of shape {paths.shape} or not finite")

        our_s, _ = timed(lambda: ours.sample_paths(batch, upstream_samples), ctx.device)
        ctx.add(rows, f"{label} x{upstream_samples} ours", "seconds", our_s, "s")
        if upstream_problem:
            ctx.add(rows, f"{label} x{upstream_samples} upstream", "seconds", f"skipped: {upstream_problem}")
            continue
        _, UpstreamForecaster, _ = upstream_toto.import_upstream()
        try:
            theirs = upstream_toto.upstream_twin(model).to(ctx.device)
            inputs = upstream_toto.masked_series(series.to(ctx.device, dtype))
            forecaster = UpstreamForecaster(theirs.model)
            with torch.no_grad():
                forecaster.forecast(inputs, prediction_length=horizon, num_samples=2, samples_per_batch=2)
                up_s, _ = timed(lambda: forecaster.forecast(inputs, prediction_length=horizon,
                                                            num_samples=upstream_samples,
                                                            samples_per_batch=upstream_samples), ctx.device)
                up_mean = forecaster.forecast(inputs, prediction_length=horizon, num_samples=None).mean
            ctx.add(rows, f"{label} x{upstream_samples} upstream", "seconds", up_s, "s")
            ctx.add(rows, f"{label} x{upstream_samples}", "speed-up ours vs upstream", up_s / our_s, "x")
            diff = rel_diff(ours.mean_paths(batch)[:, 0], up_mean[:, 0].float().cpu().numpy())
            ctx.add(rows, f"{label} mean forecast", "max rel diff vs upstream", diff, "of mean price")
        except Exception as exc:  # noqa: BLE001 - e.g. upstream refusing bfloat16 inputs
            if dtype == torch.float32:
                raise
            ctx.add(rows, f"{label} x{upstream_samples} upstream", "seconds",
                    f"skipped: upstream failed: {exc!r}"[:300])
        finally:
            del model
            if ctx.cuda:
                torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# Section: Kronos


def section_kronos(ctx: Context, rows: list) -> None:
    import numpy as np
    import pandas as pd
    import torch

    import forecast_core.kronos.forecaster as kf
    from benchmarks import bench_kronos
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, frame_to_batch
    from forecast_core.windows import future_calendar
    from benchmarks.upstream import kronos as upstream_kronos
    from forecast_core.synthetic import make_prices

    context, horizon, samples = (64, 8, 4) if ctx.quick else (bench_kronos.CONTEXT, bench_kronos.HORIZON,
                                                              bench_kronos.SAMPLES)
    per_config = 8 if ctx.quick else 64
    configs = [replace(c, sample_count=per_config) for c in bench_kronos.sweep_configs()]
    configs = configs[::4] if ctx.quick else configs
    cpu_model, cpu_tok = kronos_cpu_models(ctx)
    model, tok = on_device(cpu_model, ctx.device), on_device(cpu_tok, ctx.device)
    size = "tiny random" if ctx.quick else "base-size random"
    ctx.add(rows, f"kronos {size}", "parameters", sum(p.numel() for p in model.parameters()))
    ctx.add(rows, f"kronos {size}", "tokenizer parameters", sum(p.numel() for p in tok.parameters()))
    frame = make_prices(context, seed=1)  # bench_kronos._frame() at this context length
    batch = frame_to_batch(frame, horizon, seed=42)
    config = KronosSamplingConfig(temperature=1.0, top_p=0.9, sample_count=samples, max_context=512)
    ours = KronosForecaster(model, tok, config)
    ours.sample_configs(frame_to_batch(frame, 2, seed=0), [replace(config, sample_count=1)])  # warm-up
    name = f"kronos ctx{context} H{horizon} x{samples}"
    tokens = samples * horizon
    our_s, _ = timed(lambda: ours.sample_configs(batch, [config]), ctx.device)
    ctx.add(rows, f"{name} ours", "seconds", our_s, "s")
    ctx.add(rows, f"{name} ours", "tokens/s", tokens / our_s, "tok/s")

    problem = upstream_state()["kronos"]
    if problem:
        ctx.add(rows, f"{name} upstream", "seconds", f"skipped: {problem}")
    else:
        up = upstream_kronos.upstream_module()
        torch.manual_seed(0)
        up_tok = up.KronosTokenizer(**kronos_shapes(ctx.quick)[1]).eval()
        up_model = up.Kronos(**kronos_shapes(ctx.quick)[0]).eval()
        up_tok.load_state_dict(cpu_tok.state_dict(), strict=True)  # random_pair's weights, without rebuilding ours
        up_model.load_state_dict(cpu_model.state_dict(), strict=True)
        predictor = up.KronosPredictor(up_model, up_tok, device=ctx.device, max_context=512, clip=5)
        future = pd.Series(pd.DatetimeIndex(future_calendar(frame["timestamp"].to_numpy("datetime64[ns]"), horizon)))
        seen_up, seen_ours = [], []
        decode, decode_tokens = up_tok.decode, kf.decode_tokens
        up_tok.decode = lambda t, half=False: seen_up.append(t) or decode(t, half)

        def predict():
            torch.manual_seed(42)
            return predictor.predict(frame.drop(columns="timestamp"), frame["timestamp"], future, horizon, T=1.0,
                                     top_k=0, top_p=0.9, sample_count=samples, verbose=False)

        try:
            predictor.predict(frame.drop(columns="timestamp"), frame["timestamp"], future[:2], 2, sample_count=1,
                              verbose=False)  # warm-up
            up_s, _ = timed(predict, ctx.device)
            kf.decode_tokens = lambda *a, **k: seen_ours.append(decode_tokens(*a, **k)) or seen_ours[-1]
            generator = torch.Generator(device=ctx.device).manual_seed(42)
            compat_s, _ = timed(lambda: ours.sample_configs(batch, [config], generator=generator), ctx.device)
        finally:
            up_tok.decode, kf.decode_tokens = decode, decode_tokens
        ctx.add(rows, f"{name} upstream", "seconds", up_s, "s")
        ctx.add(rows, f"{name} upstream", "tokens/s", tokens / up_s, "tok/s")
        ctx.add(rows, f"{name}", "speed-up ours vs upstream", up_s / our_s, "x")
        ctx.add(rows, f"{name} ours, upstream RNG order", "seconds", compat_s, "s")
        theirs = [t[:, -horizon:].cpu().numpy() for t in seen_up[-1]]
        mine = [t.cpu().numpy() for t in seen_ours[-1]]
        same = float(np.mean([np.mean(a == b) for a, b in zip(theirs, mine)]))
        ctx.add(rows, f"{name} ours, upstream RNG order", "tokens equal to upstream", same, "share")

    rows_total = sum(c.sample_count for c in configs)
    label = f"kronos {len(configs)} configs x{per_config}"
    many = KronosForecaster(model, tok, max_rows=4096)  # bench_kronos.run_configs' setting
    many.sample_configs(batch, configs[:2])  # warm-up at a batched shape
    together_s, together = timed(lambda: many.sample_configs(batch, configs), ctx.device)
    separate_s, separate = timed(lambda: [many.sample_configs(batch, [c])[0] for c in configs], ctx.device)
    ctx.add(rows, f"{label} one batch", "seconds", together_s, "s")
    ctx.add(rows, f"{label} one batch", "tokens/s", rows_total * horizon / together_s, "tok/s")
    ctx.add(rows, f"{label} {len(configs)} calls", "seconds", separate_s, "s")
    ctx.add(rows, f"{label}", "speed-up batch vs calls", separate_s / together_s, "x (target 2x)")
    ctx.add(rows, f"{label}", "identical paths", float(np.array_equal(np.concatenate(together, axis=1),
                                                                      np.concatenate(separate, axis=1))), "1 = yes")
    one = replace(configs[0], sample_count=1)
    one_s, _ = timed(lambda: many.sample_configs(batch, [one]), ctx.device)
    full_s, _ = timed(lambda: many.sample_configs(batch, [replace(one, sample_count=per_config)]), ctx.device)
    per_row = (full_s - one_s) / (per_config - 1)
    fixed = one_s - per_row
    bound = len(configs) * (fixed + per_config * per_row) / (fixed + rows_total * per_row)
    ctx.add(rows, "kronos cost model", "seconds per call", fixed, "s (encode, prefill, per-step dispatch)")
    ctx.add(rows, "kronos cost model", "seconds per sample row", per_row, "s")
    ctx.add(rows, "kronos cost model", "predicted speed-up bound", bound, "x (sharing saves the per-call part)")


# ----------------------------------------------------------------------------------------------
# Section: CPU vs GPU agreement


def section_agreement(ctx: Context, rows: list) -> None:
    import numpy as np
    import torch

    from forecast_core.compiled.parity import ProbeShape, probe_batch
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig
    from forecast_core.toto import TotoForecaster

    toto_cpu = toto_cpu_model(ctx)
    kronos_cpu, tok_cpu = kronos_cpu_models(ctx)
    toto_shape = ProbeShape(2, 128, 64, 64) if ctx.quick else ProbeShape(4, 512, 64, 256)
    kronos_shape = ProbeShape(2, 64, 8, 8) if ctx.quick else ProbeShape(1, 448, 64, 8)
    kronos_configs = [KronosSamplingConfig(temperature=0.0, sample_count=1),
                      KronosSamplingConfig(sample_count=kronos_shape.samples)]
    toto_batch = probe_batch(toto_shape)
    kronos_batch = probe_batch(kronos_shape)
    if ctx.cuda:
        kind = f"cpu vs {ctx.device}"
        other_toto = TotoForecaster(on_device(toto_cpu, ctx.device))
        other_kronos = KronosForecaster(on_device(kronos_cpu, ctx.device), on_device(tok_cpu, ctx.device))
        threads = torch.get_num_threads()
    else:  # no GPU: the engines promise identical paths whatever the threads and chunk sizes; check that
        threads = 2 if torch.get_num_threads() == 1 else 1
        kind = f"cpu vs cpu {threads} thread(s), other chunks"
        other_toto = TotoForecaster(toto_cpu, samples_per_batch=7)
        other_kronos = KronosForecaster(kronos_cpu, tok_cpu, max_rows=5)
        ctx.add(rows, "cpu vs gpu", "max rel diff", f"skipped: device {ctx.device} is not a GPU; "
                "compared the CPU with itself at other threads/chunks instead")
    ref_toto, ref_kronos = TotoForecaster(toto_cpu), KronosForecaster(kronos_cpu, tok_cpu)
    ctx.add(rows, kind, "bound (max |a-b| / mean |b|)", AGREEMENT_BOUND)

    saved = torch.get_num_threads()
    results = {}
    for side, toto, kronos in (("ref", ref_toto, ref_kronos), ("other", other_toto, other_kronos)):
        torch.set_num_threads(saved if side == "ref" else threads)
        try:
            results[side] = (toto.mean_paths(toto_batch), toto.sample_paths(toto_batch, toto_shape.samples),
                             kronos.sample_configs(kronos_batch, kronos_configs))
        finally:
            torch.set_num_threads(saved)
    (mean_a, paths_a, kron_a), (mean_b, paths_b, kron_b) = results["other"], results["ref"]
    mean_diff = rel_diff(mean_a, mean_b)
    ctx.add(rows, f"toto mean forecast {kind}", "max rel diff", mean_diff)
    ctx.add(rows, f"toto mean forecast {kind}", "within bound", float(mean_diff <= AGREEMENT_BOUND), "1 = yes")
    level = np.abs(paths_b).mean()
    over = np.abs(paths_a - paths_b) / level > AGREEMENT_BOUND
    ctx.add(rows, f"toto {toto_shape.samples} paths {kind}", "max rel diff", rel_diff(paths_a, paths_b))
    ctx.add(rows, f"toto {toto_shape.samples} paths {kind}", "share of values over bound", float(over.mean()),
            "(mixture-component flips)")
    for config, a, b in zip(kronos_configs, kron_a, kron_b):
        label = f"kronos {'greedy' if config.temperature == 0 else f'T{config.temperature}'} x{config.sample_count}"
        per_path = np.abs(a - b).reshape(-1, a.shape[-1]).max(-1) / max(np.abs(b).mean(), 1e-12)
        ctx.add(rows, f"{label} {kind}", "max rel diff", rel_diff(a, b))
        ctx.add(rows, f"{label} {kind}", "share of paths within bound", float((per_path <= AGREEMENT_BOUND).mean()),
                "(others: a token flipped)")


# ----------------------------------------------------------------------------------------------
# Section: one real per-symbol tune


def section_tune(ctx: Context, rows: list) -> None:
    from benchmarks.bench_tune import Timer
    from forecast_core.sweep.budgets import DEMO_KRONOS, DEMO_TOTO, KronosBudget, Phase, TotoBudget, tune_symbol
    from forecast_core.kronos.forecaster import KronosForecaster, load_kronos
    from forecast_core.sources import EmbeddedSource
    from forecast_core.store import Storage
    from forecast_core.toto import TotoForecaster, load_toto
    from forecast_core.windows import WindowSpec, plan_layout

    symbol = "NVDA"
    budget = "demo" if ctx.quick else "default"
    budgets = (DEMO_TOTO, DEMO_KRONOS) if ctx.quick else (TotoBudget(), KronosBudget())
    if ctx.quick:  # the bundled tiny checkpoints, a short window layout
        spec = WindowSpec(horizon=16, n_val=2, n_test=2, context=128)
        toto = TotoForecaster(load_toto(device=ctx.device))
        kronos = KronosForecaster(*load_kronos(device=ctx.device))
        models = "bundled tiny checkpoints"
    else:  # the full-size random models of the toto and kronos sections: real sizes, real speed
        spec = WindowSpec()
        toto = TotoForecaster(on_device(toto_cpu_model(ctx), ctx.device))
        kronos = KronosForecaster(*(on_device(m, ctx.device) for m in kronos_cpu_models(ctx)))
        models = "random full-size Toto + Kronos-base"
    timers = {"toto": Timer(), "kronos": Timer()}
    timers["toto"].wrap(toto, "sample_paths")
    timers["kronos"].wrap(kronos, "sample_configs")
    prices = EmbeddedSource().load(symbol)
    planned = plan_layout(len(prices), spec).spec  # what tune_symbol scores on: the whole layout here
    label = f"tune {symbol} {budget} budget"
    ctx.add(rows, label, "windows", planned.n_val + planned.n_test, f"H {planned.horizon}, context "
            f"{planned.context}, {models}")

    def phase_rows(name: str, phase: Phase) -> None:
        ctx.add(rows, f"{label} {name}", "seconds", phase.seconds, "s")
        if name != "kronos search":  # the search's cheap scores are not stored
            ctx.add(rows, f"{label} {name}", "trials stored", phase.trials)

    unit = "GPU" if ctx.cuda else "CPU"
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-store-") as tmp:
            tune_symbol(Storage(tmp), symbol, prices, toto, kronos, spec, *budgets, model_revision="gpu-check",
                        on_phase=phase_rows)
    except SectionTimeout:
        elapsed = time.perf_counter() - start
        ctx.add(rows, label, "seconds (unfinished)", elapsed, "s: the tune takes longer")
        ctx.add(rows, label, f"symbols per {unit}-hour (upper bound)", 3600 / elapsed, "symbols")
        ctx.add(rows, label, f"{unit}s for {RETUNE_SYMBOLS} symbols in {NIGHT_HOURS} h (lower bound)",
                math.ceil(RETUNE_SYMBOLS * elapsed / (NIGHT_HOURS * 3600)), f"{unit}s")
        raise
    total = time.perf_counter() - start
    model_s = sum(t.seconds for t in timers.values())
    ctx.add(rows, label, "seconds", total, "s")
    ctx.add(rows, label, "share in model calls", 100 * model_s / total, "%")
    for name, timer in timers.items():
        ctx.add(rows, f"{label} {name} model calls", "seconds", timer.seconds, f"s in {timer.calls} calls")
    note = "" if ctx.cuda else " (quick plumbing on the CPU, not a plan)"
    ctx.add(rows, label, f"symbols per {unit}-hour", 3600 / total, f"symbols, one tune at a time per {unit}{note}")
    ctx.add(rows, label, f"{unit}s for {RETUNE_SYMBOLS} symbols in {NIGHT_HOURS} h",
            math.ceil(RETUNE_SYMBOLS * total / (NIGHT_HOURS * 3600)), f"{unit}s, weekly re-tune{note}")


# ----------------------------------------------------------------------------------------------
# Section: compile (children: one cold process, one warm process, each with an empty inductor cache)


def compile_cases(quick: bool) -> list[tuple[str, str]]:
    """(case, probe "windows,context,horizon,samples")."""
    if quick:  # kronos H 1: its two heads only (tracing ``extend`` costs ~5 s more on a loaded CPU)
        return [("toto-tiny", "1,64,64,4"), ("kronos-tiny", "1,16,1,1")]
    return [("toto-full", "4,512,64,256"), ("kronos-base", "2,512,64,8")]


def load_compile_case(case: str, device: str):
    """(kind, forecaster on ``device``, model id, revision); bench_compile.load_case where it has the case."""
    from benchmarks import bench_compile
    from forecast_core.kronos import KronosForecaster
    from benchmarks.upstream.kronos import random_ours

    if case == "kronos-base":  # the random Kronos-base of the other sections (kronos_cpu_models)
        forecaster = KronosForecaster(*random_ours(0, *kronos_shapes(False)))
        ident, revision = "random:kronos-base-shape", "random-seed-0"
    else:
        _, forecaster, ident, revision, _ = bench_compile.load_case(case)
    kind = case.split("-")[0]
    forecaster.model.to(device)
    if kind == "kronos":  # KronosForecaster keeps the device it was built on
        forecaster = KronosForecaster(forecaster.model, forecaster.tokenizer.to(device))
    return kind, forecaster, ident, revision


def compile_child(args) -> None:
    """Phases of every case in this fresh process (``cold``, ``warm``, or ``both`` in --quick); one JSON
    line per case and phase, printed as soon as it is measured."""
    import torch

    from forecast_core.compiled.cache import CacheKey
    from forecast_core.compiled.parity import ProbeShape
    from forecast_core.compiled.policy import CompileSettings, build, reverify

    if args.quick:  # dynamo only: inductor's C++ code generation costs minutes on a CPU
        import functools

        torch.set_num_threads(1)
        torch.compile = functools.partial(torch.compile, backend="eager")
    phases = ("cold", "warm") if args.phase == "both" else (args.phase,)
    repeats = 2 if args.quick else 3
    for case_probe in args.compile_child:
        case, probe = case_probe.split("=")
        began = time.perf_counter()
        kind, forecaster, ident, revision = load_compile_case(case, args.device)
        shape = ProbeShape(*(int(x) for x in probe.split(",")))
        key = CacheKey.current(kind, ident, revision, args.device, "float32", "default", shape)
        settings = CompileSettings("auto", args.root, repeats=repeats)
        for phase in phases:
            if phase == "cold":
                shutil.rmtree(key.directory(args.root), ignore_errors=True)
                outcome = build(kind, forecaster, key, settings)
            else:
                torch.compiler.reset()  # in-process (--quick): forget what the cold phase compiled
                outcome = reverify(kind, forecaster, key, settings)
            print(json.dumps({"case": case, "phase": phase, "measured": outcome.measured,
                              "parity_error": outcome.parity_error,
                              "decision": (outcome.manifest or {}).get("decision"), "reason": outcome.reason,
                              "digest": key.digest, "phase_seconds": time.perf_counter() - began},
                             default=str), flush=True)
            began = time.perf_counter()


def section_compile(ctx: Context, rows: list) -> None:
    cases = compile_cases(ctx.quick)
    if ctx.quick:
        ctx.add(rows, "compile", "backend", "dynamo 'eager' (quick: no inductor codegen; cold and warm in one "
                "process, so 'warm' is not a warm start from disk)")
    else:
        ctx.add(rows, "compile", "backend", "inductor; cold and warm phases each in a fresh process")
    root = Path(tempfile.mkdtemp(prefix="gpu-check-compiled-"))
    done: dict[tuple[str, str], dict] = {}
    problems = []
    # --quick: one child, both phases of both cases. GPU: per case (toto first), a cold child then a warm
    # child, so a case whose compile outlasts the budget does not cost the other case its warm start.
    runs = [("both", cases)] if ctx.quick else [(phase, [case]) for case in cases for phase in ("cold", "warm")]
    try:
        for phase, todo in runs:
            todo = [(c, p) for c, p in todo if phase != "warm" or (c, "cold") in done]
            if not todo or ctx.left() < 5:
                continue
            with tempfile.TemporaryDirectory(prefix="gpu-check-inductor-") as inductor:
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=inductor)  # nothing from earlier runs
                cmd = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--device", ctx.device,
                       "--compile-child", *(f"{c}={p}" for c, p in todo)] + (["--quick"] if ctx.quick else [])
                try:
                    child = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT,
                                           timeout=max(1.0, ctx.left() - 1.0))
                    out, err, code = child.stdout, child.stderr, child.returncode
                except subprocess.TimeoutExpired as exc:
                    out, err, code = exc.stdout or "", exc.stderr or "", "timeout"
                    out = out.decode() if isinstance(out, bytes) else out
                    err = err.decode() if isinstance(err, bytes) else err
            for line in out.splitlines():
                if line.startswith("{"):
                    report = json.loads(line)
                    done[(report["case"], report["phase"])] = report
            if code == "timeout":
                problems.append(f"{phase} child of {', '.join(c for c, _ in todo)} ran out of the section's time")
            elif code != 0:
                print(err[-4000:], file=sys.stderr)
                problems.append(f"{phase} child exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    why_not = f"skipped: {'; '.join(problems) or 'not run: the section time was spent'}"[:300]
    for case, _ in cases:
        cold, warm = done.get((case, "cold")), done.get((case, "warm"))
        if not cold:
            ctx.add(rows, f"{case} cold", "status", why_not)
            continue
        m = cold["measured"]
        for metric, key in (("eager seconds", "eager_seconds"), ("compiled seconds", "compiled_seconds"),
                            ("cold compile seconds", "cold_compile_seconds")):
            if key in m:
                ctx.add(rows, f"{case} cold", metric, float(m[key]), "s")
        if "speedup" in m:
            ctx.add(rows, f"{case} cold", "speed-up", float(m["speedup"]), "x")
        if cold["parity_error"] is None:
            ctx.add(rows, f"{case} cold", "parity error", f"skipped: {cold['reason']}"[:300])
        else:
            ctx.add(rows, f"{case} cold", "parity error", float(cold["parity_error"]), "max |c-e| / mean |e|")
        ctx.add(rows, f"{case} cold", "decision", str(cold["decision"]))
        if not warm:
            ctx.add(rows, f"{case} warm", "status", why_not)
        elif warm["digest"] != cold["digest"]:
            ctx.add(rows, f"{case} warm", "status", "skipped: the engine's code changed between cold and warm")
        else:
            m = warm["measured"]
            for metric, key in (("warm start seconds", "warm_start_seconds"), ("eager seconds", "eager_seconds"),
                                ("compiled seconds", "compiled_seconds")):
                if key in m:
                    ctx.add(rows, f"{case} warm", metric, float(m[key]), "s")
            if warm["parity_error"] is not None:
                ctx.add(rows, f"{case} warm", "parity error", float(warm["parity_error"]), "max |c-e| / mean |e|")
    errors = [p for p in problems if "ran out" not in p]
    if errors:
        raise RuntimeError("; ".join(errors))
    if any((c, ph) not in done for c, _ in cases for ph in ("cold", "warm")):
        raise SectionTimeout()


SECTION_FUNCTIONS = {"toto": section_toto, "kronos": section_kronos, "agreement": section_agreement,
                     "tune": section_tune, "compile": section_compile}


# ----------------------------------------------------------------------------------------------
# Wheels for a bare machine


def makefile_pins(variable: str) -> list[str]:
    """The ``name==version`` pins of a Makefile variable (UPSTREAM_TOTO, UPSTREAM_KRONOS)."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    match = re.search(rf"^{variable}\s*:=\s*(.+)$", text, re.MULTILINE)
    if not match:
        raise SystemExit(f"Makefile defines no {variable}")
    return match.group(1).split()


def wheel_groups() -> dict[str, list[str]]:
    """Folder under the wheel dir -> pins: ``site`` (this environment's versions), ``toto``, ``kronos``."""
    site = [f"{name}=={importlib.metadata.version(name)}" for name in DEVICE_SITE_WHEELS]
    keep = lambda pins: [p for p in pins if p.split("==")[0] not in ON_DEVICE_IMAGE]  # noqa: E731
    return {"site": site, "toto": keep(makefile_pins("UPSTREAM_TOTO")),
            "kronos": keep(makefile_pins("UPSTREAM_KRONOS"))}


def download_wheels(dest: Path) -> None:
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    for group, pins in wheel_groups().items():
        folder = dest / group
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(folder), *pins],
                       check=True)
    size = sum(f.stat().st_size for f in dest.rglob("*.whl"))
    print(f"{len(list(dest.rglob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {dest}; carry it (the device "
          f"tool's limit is 64 MiB with the working tree)")


def install_wheels(source: Path) -> None:
    """On the device: site wheels into a temp folder on the path (children too), upstream into .upstream/."""
    site = Path(tempfile.gettempdir()) / "gpu-check-site"
    targets = {"site": site, "toto": ROOT / ".upstream" / "toto", "kronos": ROOT / ".upstream" / "kronos"}
    for group, target in targets.items():
        wheels = sorted(str(p) for p in (source / group).glob("*.whl"))
        if not wheels:
            print(f"no wheels in {source / group}: skipped", flush=True)
            continue
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(target), *wheels], check=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()


# ----------------------------------------------------------------------------------------------
# Report


def jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite: {value}"
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def print_table(report: dict) -> None:
    lines = [(r["section"], r["name"], r["metric"], f"{r['value']:.4g}" if isinstance(r["value"], float)
              else str(r["value"]), r["unit"]) for s in report.values() for r in s["rows"]]
    lines += [(name, "(section)", "status", f"{s['status']} in {s['seconds']:.1f}s of {s['budget_s']:.0f}s", "")
              for name, s in report.items()]
    widths = [max(len(x[i]) for x in lines) for i in range(4)]
    widths = [min(w, c) for w, c in zip(widths, (10, 44, 40, 60))]
    for line in lines:
        print("  ".join(f"{c[:w]:<{w}}" for c, w in zip(line, widths)) + "  " + line[4])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configs on the CPU (what the test suite runs)")
    parser.add_argument("--device", default=None, help="cuda (default when available) | cpu | cuda:N")
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    parser.add_argument("--sections", nargs="+", default=[s[0] for s in SECTIONS], choices=[s[0] for s in SECTIONS])
    parser.add_argument("--wheels", type=Path, default=None, help="install the carried wheels first (bare machine)")
    parser.add_argument("--download-wheels", type=Path, default=None, metavar="DIR",
                        help="download the wheels a bare GPU machine needs into DIR, then exit")
    parser.add_argument("--compile-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("cold", "warm", "both"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.download_wheels:
        download_wheels(args.download_wheels.resolve())
        return 0
    if args.compile_child:
        compile_child(args)
        return 0
    began = time.perf_counter()
    if args.wheels:
        install_wheels(args.wheels.resolve())
    import torch

    if args.quick:  # tiny ops: a second thread only adds OpenMP stalls on a shared CPU (measured 6x slower)
        torch.set_num_threads(1)
    device = args.device or ("cpu" if args.quick else "cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: this torch build ({torch.__version__}) sees no CUDA device")
    ctx = Context(args, device, args.quick, began=began)
    gpu = torch.cuda.get_device_name(torch.device(device)) if ctx.cuda else None
    print(f"gpu_check: torch {torch.__version__}, device {device}{f' ({gpu})' if gpu else ''}, "
          f"{torch.get_num_threads()} CPU threads, {'quick (tiny configs)' if args.quick else 'full'}", flush=True)
    if not ctx.cuda and not args.quick:
        print("no GPU: full-size configs on the CPU take far longer than the budgets; lines will time out",
              flush=True)
    report = run_sections(ctx, args.sections)
    total = time.perf_counter() - began
    meta = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device, "gpu": gpu,
            "quick": args.quick, "cpu_threads": torch.get_num_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(), "python": sys.version.split()[0],
            "total_seconds": round(total, 2), "total_budget_s": QUICK_TOTAL_BUDGET_S if args.quick else TOTAL_BUDGET_S,
            "upstream": upstream_state(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print()
    print_table(report)
    print(f"total {total:.1f}s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(jsonable({"meta": meta, "sections": report}), indent=1, default=str) + "\n")
        print(f"wrote {args.out}")
    failed = [n for n, s in report.items() if s["status"].startswith("error")
              or (args.quick and not s["status"].startswith("ok"))]
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
