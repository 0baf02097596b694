"""How far the same seeded sample paths move when batched differently or run on other CPU kernels.

The engines promise bitwise-equal paths only for the same call repeated; across batch shapes and
kernel families they promise agreement within ``BATCH_RTOL`` of the window's price level
(forecast_core/forecasters.py). This script measures the real gaps behind that bound, with the
bundled tiny checkpoints, in one child process per ``ATEN_CPU_CAPABILITY`` setting:

- within one setting: a window alone vs inside the batch, another ``samples_per_batch`` (Toto) or
  ``max_rows`` (Kronos), and a prefix of fewer samples;
- across settings: the same call on the CPU's own kernels vs ``avx2`` and ``default``;
- for scale: how far a wrong seed moves the paths (what a real bug looks like).

    .venv/bin/python benchmarks/bench_rounding.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("", "avx2", "default")  # "" = the CPU's own (AVX-512 where it has it)


def _relative(a: np.ndarray, b: np.ndarray, level: np.ndarray) -> float:
    return float((np.abs(a - b) / level).max())


def child(out: Path) -> None:
    """Forecast once per batching variant under this process's kernels; save paths and gaps."""
    sys.path.insert(0, str(ROOT))
    from forecast_core.forecasters import ContextBatch
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, load_kronos
    from forecast_core.toto import TotoForecaster, load_toto
    from forecast_core.windows import WindowSpec, build_windows
    from forecast_core.synthetic import make_prices

    windows = build_windows(make_prices(1000, seed=11), WindowSpec(horizon=64, n_val=4, n_test=4, context=448), "X")
    batch, level = windows.batch, np.abs(windows.batch.column("close")).max(axis=1)[:, None, None]
    alone = [windows.select(np.arange(len(windows)) == i).batch for i in range(len(windows))]
    reseeded = ContextBatch(batch.values, batch.timestamps, batch.future_timestamps, batch.seeds + 1)
    toto = TotoForecaster(load_toto(), samples_per_batch=256)
    kronos = KronosForecaster(*load_kronos(), KronosSamplingConfig(temperature=0.8, top_p=0.95, max_context=512))
    gaps, paths = {}, {}
    for name, forecaster, other, samples in (
        ("toto", toto, TotoForecaster(toto.model, samples_per_batch=37), 256),
        ("kronos", kronos, KronosForecaster(kronos.model, kronos.tokenizer, kronos.config, max_rows=7), 16),
    ):
        ref = forecaster.sample_paths(batch, samples)
        paths[name] = ref
        gaps[f"{name} window alone vs batched"] = _relative(
            np.concatenate([forecaster.sample_paths(b, samples) for b in alone]), ref, level)
        gaps[f"{name} other chunk / row count"] = _relative(other.sample_paths(batch, samples), ref, level)
        gaps[f"{name} prefix of 5 samples"] = _relative(forecaster.sample_paths(batch, 5), ref[:, :5], level)
        gaps[f"{name} wrong seed (a bug)"] = _relative(forecaster.sample_paths(reseeded, samples), ref, level)
    np.savez(out, level=level, **paths, **{f"gap:{k}": v for k, v in gaps.items()})


def main() -> None:
    from forecast_core.forecasters import BATCH_RTOL

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in SETTINGS:
            out = Path(tmp) / f"{setting or 'native'}.npz"
            env = {**os.environ, "ATEN_CPU_CAPABILITY": setting} if setting else dict(os.environ)
            subprocess.run([sys.executable, __file__, "--child", str(out)], env=env, check=True, cwd=ROOT)
            results[setting or "native"] = dict(np.load(out))
    native = results["native"]
    print(f"max |difference| / price level, tiny checkpoints, 8 windows, context 448, H 64; bound BATCH_RTOL = {BATCH_RTOL:g}")
    rows = sorted({k for r in results.values() for k in r if k.startswith("gap:")})
    print(f"{'comparison':<42}" + "".join(f"{s:>12}" for s in results))
    for key in rows:
        print(f"{key[4:]:<42}" + "".join(f"{float(r[key]):>12.3g}" for r in results.values()))
    for setting, r in results.items():
        if setting != "native":
            for model in ("toto", "kronos"):
                gap = _relative(r[model], native[model], native["level"])
                print(f"{model} {setting} kernels vs native{'':<20}{gap:>12.3g}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]))
    else:
        main()
