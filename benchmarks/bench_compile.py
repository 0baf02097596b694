"""Eager vs torch.compile for Toto and Kronos on this machine, through forecast_core/compiled/.

For each model, two fresh child processes (each with its own empty TORCHINDUCTOR_CACHE_DIR, so
nothing is reused from this machine's default inductor cache or from the other process):

1. cold: ``build`` (forecast_core/compiled/policy.py) compiles from nothing into
   ``<compiled dir>/<kind>/<slug>/<key>/``, times one probe forecast eager vs compiled (best of
   ``--repeats``) and the parity error;
2. warm: ``reverify`` (what the model asset runs on an existing cache) warm-starts from
   that directory and times everything again.

"first call" seconds are the first compiled run of the probe set (the probe batch and its
1-window variant), compile included. Models: the bundled tiny checkpoints, a random full-size
Toto (Toto-Open-Base-1.0's config, 151M parameters) and a random mini-size Kronos (Kronos-mini
shapes, as benchmarks/bench_kronos.py), all on the CPU in float32. Every number printed is
measured in this run.

    .venv/bin/python benchmarks/bench_compile.py [--threads 2] [--cases toto-tiny kronos-tiny ...]
        [--toto-probe 4,512,64,256] [--kronos-probe 2,512,64,8] [--compiled-dir DIR]

By default the caches go to a new temp directory, so benchmarking never changes what the project's
``compiled_models/`` makes the resources do; pass ``--compiled-dir compiled_models`` to keep them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("toto-tiny", "kronos-tiny", "toto-full", "kronos-mini")
MINI_TOKENIZER = dict(d_in=6, d_model=256, n_heads=4, ff_dim=512, n_enc_layers=4, n_dec_layers=4,
                      ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=10, s2_bits=10,
                      beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4)
MINI_MODEL = dict(s1_bits=10, s2_bits=10, n_layers=4, d_model=256, n_heads=4, ff_dim=512, ffn_dropout_p=0.0,
                  attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)


def load_case(case: str):
    """(kind, forecaster, model_id, revision, parameter count) for one benchmark case."""
    import torch

    from forecast_core.checkpoints import checkpoint_revision
    from forecast_core.compiled.cache import model_id_for
    from forecast_core.kronos import Kronos, KronosConfig, KronosForecaster, KronosTokenizer, TokenizerConfig
    from forecast_core.kronos.forecaster import DEFAULT_TINY, DEFAULT_TINY_TOKENIZER, load_kronos
    from forecast_core.toto import DEFAULT_TINY_DIR, TotoConfig, TotoForecaster, TotoModel, load_toto

    if case == "toto-tiny":
        model = load_toto(DEFAULT_TINY_DIR)
        forecaster = TotoForecaster(model)
        ident, revision = model_id_for(DEFAULT_TINY_DIR), checkpoint_revision(DEFAULT_TINY_DIR)
    elif case == "toto-full":
        torch.manual_seed(0)
        model = TotoModel(TotoConfig(spacewise_first=False)).eval()
        forecaster, ident, revision = TotoForecaster(model), "random:toto-open-base-shape", "random-seed-0"
    elif case == "kronos-tiny":
        model, tokenizer = load_kronos()
        forecaster = KronosForecaster(model, tokenizer)
        ident = f"{model_id_for(DEFAULT_TINY)}+{model_id_for(DEFAULT_TINY_TOKENIZER)}"
        revision = f"{checkpoint_revision(Path(DEFAULT_TINY))}+{checkpoint_revision(Path(DEFAULT_TINY_TOKENIZER))}"
    elif case == "kronos-mini":
        torch.manual_seed(0)
        model = Kronos(KronosConfig(**MINI_MODEL)).eval()
        tokenizer = KronosTokenizer(TokenizerConfig(**MINI_TOKENIZER)).eval()
        forecaster, ident, revision = KronosForecaster(model, tokenizer), "random:kronos-mini-shape", "random-seed-0"
    else:
        raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    params = sum(p.numel() for p in forecaster.model.parameters())
    if case.startswith("kronos"):
        params += sum(p.numel() for p in forecaster.tokenizer.parameters())
    return case.split("-")[0], forecaster, ident, revision, params


def child(args) -> None:
    """One phase of one case in this (fresh) process; prints its measurements as JSON."""
    import torch

    from forecast_core.compiled.cache import CacheKey
    from forecast_core.compiled.parity import ProbeShape
    from forecast_core.compiled.policy import CompileSettings, build, reverify

    if args.threads:
        torch.set_num_threads(args.threads)
    kind, forecaster, ident, revision, params = load_case(args.child)
    shape = ProbeShape(*(int(x) for x in args.probe.split(",")))
    key = CacheKey.current(kind, ident, revision, "cpu", "float32", "default", shape)
    settings = CompileSettings("auto", args.root, repeats=args.repeats)
    began = time.perf_counter()
    if args.phase == "cold":
        import shutil

        shutil.rmtree(key.directory(args.root), ignore_errors=True)
        outcome = build(kind, forecaster, key, settings)
    else:
        outcome = reverify(kind, forecaster, key, settings)
    report = outcome.metadata()
    report.update(params=params, phase_seconds=time.perf_counter() - began, threads=torch.get_num_threads(),
                  decision=(outcome.manifest or {}).get("decision"), measured=outcome.measured, digest=key.digest)
    print(json.dumps(report, default=str))


def run_child(case: str, phase: str, probe: str, args) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-inductor-") as inductor:
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor  # nothing from earlier runs on this machine
        cmd = [sys.executable, __file__, "--child", case, "--phase", phase, "--probe", probe, "--root",
               str(args.compiled_dir), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{case} {phase} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed probe forecasts per side (best kept)")
    parser.add_argument("--toto-probe", default="4,512,64,256", help="windows,context,horizon,samples")
    parser.add_argument("--kronos-probe", default="2,512,64,8", help="windows,context,horizon,samples")
    parser.add_argument("--compiled-dir", type=Path, default=None, help="cache root (default: a new temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=("cold", "warm"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        return child(args)
    args.compiled_dir = (args.compiled_dir or Path(tempfile.mkdtemp(prefix="bench-compiled-"))).resolve()
    import torch

    from forecast_core.compiled.policy import MIN_SPEEDUP, PARITY_TOLERANCE

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads or 'default'}, "
          f"repeats {args.repeats}; caches in {args.compiled_dir}")
    head = (f"{'case':<12} {'params':>12} {'probe W,L,H,S':>15} {'eager s':>9} {'compiled s':>11} {'speed-up':>9} "
            f"{'cold 1st call s':>16} {'warm 1st call s':>16} {'warm eager s':>13} {'warm compiled s':>16} "
            f"{'parity err':>11} {'auto':>9}")
    print(head, flush=True)
    for case in args.cases:
        probe = args.toto_probe if case.startswith("toto") else args.kronos_probe
        cold = run_child(case, "cold", probe, args)
        warm = run_child(case, "warm", probe, args)
        if warm["digest"] != cold["digest"]:  # e.g. forecast_core/<kind>/ edited meanwhile: new code hash
            print(f"{case:<12} key changed between the cold and warm runs ({cold['digest']} -> {warm['digest']}): "
                  "the engine's code changed meanwhile; run again", flush=True)
            continue
        c, w = cold["measured"], warm["measured"]
        print(f"{case:<12} {cold['params']:>12,} {probe:>15} {c['eager_seconds']:>9.4f} "
              f"{c['compiled_seconds']:>11.4f} {c['speedup']:>8.2f}x {c['cold_compile_seconds']:>16.2f} "
              f"{w['warm_start_seconds']:>16.2f} {w['eager_seconds']:>13.4f} {w['compiled_seconds']:>16.4f} "
              f"{max(cold['parity_error'], warm['parity_error']):>11.2e} {warm['decision']:>9}   "
              f"[phases: cold {cold['phase_seconds']:.0f}s, warm {warm['phase_seconds']:.0f}s]", flush=True)
    print("eager/compiled s: one probe forecast (best of repeats); speed-up from the cold run; 1st call: the probe "
          "set's first compiled run, compile included; parity err: max |compiled - eager| / mean |eager| over "
          f"every probe path (worst of both runs); auto: the manifest's decision (min speed-up {MIN_SPEEDUP}x, "
          f"tolerance {PARITY_TOLERANCE:g})")


if __name__ == "__main__":
    main()
