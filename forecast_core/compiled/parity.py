"""The probe: a fixed-seed synthetic batch that is compiled, timed and compared with eager."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..forecasters import ContextBatch
from .wrappers import make_eager

PROBE_SEED = 20240601


@dataclass(frozen=True)
class ProbeShape:
    """The probe batch: what is compiled, timed and compared (windows x context bars, horizon, samples)."""

    windows: int
    context: int
    horizon: int
    samples: int

    def __post_init__(self) -> None:
        bad = {k: v for k, v in dataclasses.asdict(self).items() if not (isinstance(v, int) and v >= 1)}
        if bad:
            raise ValueError(f"probe shape fields must be integers >= 1, got {bad}")


# Sweep-like shapes (context 512, H 64); every probe also runs a 1-window batch, which is what a
# sweep times per config (size-1 dims are specialised by torch.compile, so they need their own graph).
DEFAULT_PROBES = {"toto": ProbeShape(4, 512, 64, 256), "kronos": ProbeShape(2, 512, 64, 8)}


def probe_batch(shape: ProbeShape, windows: int | None = None, seed: int = PROBE_SEED) -> ContextBatch:
    """A fixed synthetic batch (geometric random walks, business days; fixed seeds per window)."""
    w = shape.windows if windows is None else windows
    n = shape.context + shape.horizon
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (w, shape.context)), axis=1))
    spread = np.exp(np.abs(rng.normal(0, 0.005, (w, shape.context))))
    volume = rng.integers(1_000, 100_000, (w, shape.context)).astype(np.float64)
    values = np.stack([close, close * spread, close / spread, close, volume, volume * close], axis=-1)
    stamps = np.tile(pd.bdate_range("2020-01-01", periods=n).to_numpy(dtype="datetime64[ns]")[None], (w, 1))
    return ContextBatch(values, stamps[:, : shape.context], stamps[:, shape.context:],
                        np.arange(w, dtype=np.int64) + seed)


def probes(shape: ProbeShape) -> list[ContextBatch]:
    """The probe batch, plus its single-window variant when the probe has several windows."""
    return [probe_batch(shape)] + ([probe_batch(shape, windows=1)] if shape.windows > 1 else [])


def run_probes(forecaster, shape: ProbeShape) -> list[np.ndarray]:
    return [np.asarray(forecaster.sample_paths(batch, shape.samples)) for batch in probes(shape)]


def parity_error(compiled: list[np.ndarray], eager: list[np.ndarray]) -> float:
    """Largest |compiled - eager| over every probe path, relative to the mean |eager| price (inf on NaN)."""
    worst = 0.0
    for c, e in zip(compiled, eager):
        if c.shape != e.shape or not np.isfinite(c).all():
            return math.inf
        worst = max(worst, float(np.abs(c - e).max() / max(np.abs(e).mean(), 1e-12)))
    return worst


def time_both(forecaster, shape: ProbeShape, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of one probe forecast, eager and compiled, alternating so that both
    see the same machine load (a shared 2-core machine is never quiet). The model must start compiled
    and ends compiled."""
    model, batch = forecaster.model, probe_batch(shape)
    wrappers = make_eager(model)
    if not wrappers:
        raise ValueError(f"{type(model).__name__} is not compiled: compile it (wrappers.compile_in_place) "
                         "before timing it against eager")
    best = [math.inf, math.inf]
    for _ in range(max(1, repeats)):
        for side in (0, 1):
            make_eager(model) if side == 0 else model.__dict__.update(wrappers)
            began = time.perf_counter()
            forecaster.sample_paths(batch, shape.samples)
            best[side] = min(best[side], time.perf_counter() - began)
    return best[0], best[1]
