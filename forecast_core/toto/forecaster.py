"""Toto as a :class:`~forecast_core.forecasters.Forecaster`, built for tuning.

API::

    model = load_toto(source=DEFAULT_TINY_DIR, revision=None, device="cpu", dtype=torch.float32)
    toto = TotoForecaster(model, samples_per_batch=512, context_length=None)
    paths = toto.sample_paths(batch, num_samples)          # [windows, samples, horizon] closes
    grid = toto.sample_grid(batch, [256, 1024], ["mean", "median"])  # paths once, every point forecast
    mean = toto.mean_paths(batch)                           # [windows, 1, horizon], no sampling
    toto.last_run                                           # RunInfo: chunk size actually used

How: each window's context (its close, univariate) is encoded once; every sample path shares
that cache. The first future patch needs no further network pass (its mixture comes from the
last context position); later patches decode one patch per path in chunks of
``samples_per_batch``. Draws come from per-block ``torch.Generator`` streams keyed by the
window seed (see :mod:`.sampling`): sample path ``i`` of a window gets the same random numbers
whatever ``samples_per_batch`` is, however windows are batched, and for any ``num_samples > i``.

What is reproducible, exactly:

- Bitwise: the same call again (same windows batched the same way, same ``num_samples``,
  ``samples_per_batch`` and ``context_length``) on the same machine, torch build and thread and
  dispatch settings (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``); and a window's paths
  whatever the *values* of the other windows in a batch of the same shape (what the no-leakage
  test relies on). Every tensor then has the same shape, so the same kernels run in the same order.
- Within :data:`forecast_core.forecasters.BATCH_RTOL` of the window's price level (the largest ``|close|`` of its context),
  not bitwise: the same paths with another ``samples_per_batch`` (including chunks halved after
  running out of memory), with fewer samples (a prefix of more), or with the window forecast alone
  instead of inside a batch. These change the number of rows each network pass sees, and BLAS
  and ATen's vectorised kernels choose blocking, vector-body/tail splits and thread partitions
  by shape, and do so differently per CPU (measured: bitwise on one AVX-512 Xeon for chunking
  but not for window batching, through ``softplus``'s scalar tail; bitwise with
  ``ATEN_CPU_CAPABILITY=avx2`` or ``default``). Padding rows to ``MIN_ROWS`` keeps small calls on
  the large-call kernels, which makes such differences rarer; it guarantees nothing. Those
  float32 rounding differences feed back through later patches and grow with the size of a
  heavy-tailed draw. Measured (float32 weights, relative to the price level): window batching
  <= 2.5e-7 (16 windows x 512 paths x 40 steps, small random model); AVX-512 vs ``default``
  kernels, the same forecasts <= 2.3e-6 (8 x 256 x 192, shipped tiny model); the issue's EPYC
  report 6.8e-6 on prices near 140 (4.9e-8). A wrong seed or sample index moves every path by
  more than 7e-2 of the level. The bound is measured, not proven: a path can also leave it when a
  mixture-component uniform lies within rounding (~1e-7) of a cumulative-weight boundary, which
  then picks another component for that step. The bound is for float32 weights; bfloat16 rounds
  65,536 times coarser and no bound is claimed for it.

``num_samples`` is never changed: if a chunk runs out of memory the chunk is halved (paths
unchanged within :data:`forecast_core.forecasters.BATCH_RTOL`) and ``last_run`` records it; at chunk size 1 the error is
raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from forecast_core.aggregate import aggregate, parse_aggregation
from forecast_core.forecasters import ContextBatch

from . import sampling
from .model import MIN_ROWS, Encoded, Mixture, Rows, TotoModel

DEFAULT_TINY_DIR = Path(__file__).resolve().parents[1] / "weights" / "toto-tiny"
TOTO_BASE_REPO = "Datadog/Toto-Open-Base-1.0"
DEFAULT_SAMPLES_PER_BATCH = 512  # sample chunk size: memory/speed only, never results


def load_toto(source: str | Path = DEFAULT_TINY_DIR, revision: str | None = None, device: str = "cpu",
              dtype: torch.dtype = torch.float32) -> TotoModel:
    """Load a Toto checkpoint: a local directory, or a Hugging Face repo id at ``revision``."""
    return TotoModel.from_checkpoint(source, revision, device=device, dtype=dtype)


@dataclass
class RunInfo:
    """What the last call really did; log it next to results."""

    samples_per_batch: int
    used_samples_per_batch: int
    reductions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GridForecast:
    """All paths of the largest count, and the point forecast of every (count, aggregation)."""

    paths: np.ndarray  # [windows, max(sample_counts), horizon]
    points: dict  # (num_samples, aggregation name) -> [windows, horizon]


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


class TotoForecaster:
    def __init__(self, model: TotoModel, samples_per_batch: int = DEFAULT_SAMPLES_PER_BATCH,
                 context_length: int | None = None, name: str = "toto"):
        patch = model.config.patch_size
        if samples_per_batch < 1:
            raise ValueError(f"samples_per_batch must be >= 1, got {samples_per_batch}")
        if context_length is not None and (context_length < patch or context_length % patch):
            raise ValueError(
                f"context_length {context_length} must be a positive multiple of Toto's patch size {patch}: "
                "shorter contexts would need zero left-padding, which leaks into attention"
            )
        self.model = model.eval()
        self.samples_per_batch = samples_per_batch
        self.context_length = context_length
        self.name = name
        self.last_run: RunInfo | None = None
        self.reductions: list[str] = []  # every chunk reduction since load, for a sweep's metadata

    # -- public API ------------------------------------------------------------------------------

    def sample_paths(self, batch: ContextBatch, num_samples: int) -> np.ndarray:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        batch, factor = batch.lifted()
        encoded = self.model.encode(self._context(batch))
        patches = math.ceil(batch.horizon / self.model.config.patch_size)
        seeds = [int(s) for s in batch.seeds]
        out = np.empty((batch.num_windows, num_samples, patches * self.model.config.patch_size))
        info = RunInfo(self.samples_per_batch, self.samples_per_batch)
        self.last_run = info
        start = 0
        while start < num_samples:
            stop = min(num_samples, start + info.used_samples_per_batch)
            try:
                out[:, start:stop] = self._sample_chunk(encoded, seeds, start, stop, patches)
            except (MemoryError, RuntimeError) as exc:
                if not _is_out_of_memory(exc):
                    raise
                if info.used_samples_per_batch == 1:
                    raise RuntimeError(
                        f"{self.name}: out of memory even with samples_per_batch=1 for {batch.num_windows} "
                        f"windows; forecast fewer windows per call or use a smaller model/context"
                    ) from exc
                info.used_samples_per_batch //= 2
                info.reductions.append(f"out of memory at samples {start}-{stop}: chunk lowered to "
                                       f"{info.used_samples_per_batch} (paths unchanged)")
                continue
            start = stop
        self.reductions.extend(info.reductions)
        return out[:, :, : batch.horizon] / factor[:, None, None]

    def sample_grid(self, batch: ContextBatch, sample_counts, aggregations) -> GridForecast:
        """Sample the largest count once; every smaller count is a prefix, every aggregation a reduction."""
        counts = sorted({int(n) for n in sample_counts})
        if not counts or counts[0] < 1:
            raise ValueError(f"sample_counts must be positive integers, got {list(sample_counts)}")
        parsed = [parse_aggregation(a) for a in aggregations]
        paths = self.sample_paths(batch, counts[-1])
        points = {(n, a.name): aggregate(paths[:, :n], a, sample_axis=1) for n in counts for a in parsed}
        return GridForecast(paths, points)

    def mean_paths(self, batch: ContextBatch) -> np.ndarray:
        """The mixture mean fed back autoregressively (deterministic; what upstream's mean forecast does)."""
        batch, factor = batch.lifted()
        encoded = self.model.encode(self._context(batch))
        patches = math.ceil(batch.horizon / self.model.config.patch_size)
        paths = self._rollout(encoded, batch.num_windows, 1, patches, lambda step, mix: mix.mean().double())
        return paths[:, :, : batch.horizon] / factor[:, None, None]

    # -- internals -------------------------------------------------------------------------------

    def _context(self, batch: ContextBatch) -> torch.Tensor:
        patch = self.model.config.patch_size
        length = self.context_length or (batch.context_length // patch) * patch
        if length < patch or length > batch.context_length:
            raise ValueError(
                f"{self.name}: needs a context of {self.context_length or f'at least {patch}'} bars "
                f"(a multiple of the patch size {patch}), the batch has {batch.context_length}"
            )
        close = batch.column("close")[:, -length:]
        if not np.isfinite(close).all():
            raise ValueError(f"{self.name}: context close prices contain NaN or inf; clean the data first")
        return torch.as_tensor(close, dtype=torch.float64, device=self.model.device)[:, None, :]

    def _sample_chunk(self, encoded: Encoded, seeds: list[int], start: int, stop: int, patches: int):
        shape = (1, self.model.config.patch_size)  # (variates, steps) of one patch

        def draw(step: int, mixture: Mixture) -> torch.Tensor:
            rand = sampling.stack([sampling.uniforms(s, step, start, stop, shape) for s in seeds])
            return sampling.draw(mixture, rand)

        return self._rollout(encoded, len(seeds), stop - start, patches, draw)

    def _rollout(self, encoded: Encoded, windows: int, samples: int, patches: int, draw) -> np.ndarray:
        """Generate ``patches`` patches for ``samples`` paths per window; ``draw`` gives scaled values.

        Rows (window-major) are padded to ``MIN_ROWS``: very small matrices select other BLAS kernels
        (measured: one row rounds differently from two or more on AVX-512 MKL). This keeps small
        chunks on the kernels large ones use; it does not make rows independent of the row count
        (see :data:`forecast_core.forecasters.BATCH_RTOL`). Sampling runs on the CPU in float64 whatever the model's device and dtype.
        """
        device = self.model.device
        rows_needed = windows * samples
        padded = max(rows_needed, MIN_ROWS)
        window_of_row = torch.arange(windows, device=device).repeat_interleave(samples)
        window_of_row = torch.cat([window_of_row, window_of_row.new_zeros(padded - rows_needed)])

        def per_window(t: torch.Tensor) -> torch.Tensor:  # decoded rows -> [W, samples, ...] on the CPU
            return t[:rows_needed].unflatten(0, (windows, samples)).cpu()

        mixture = encoded.next.map(lambda t: t[:, None].cpu())  # [W, 1, V, P, K]: shared by all paths
        loc, scale = encoded.loc[:, None, :, None].cpu(), encoded.scale[:, None, :, None].cpu()
        rows, out = Rows.start(encoded, window_of_row), []
        for step in range(patches):
            prices = draw(step, mixture) * scale + loc  # [W, samples, V, P]
            out.append(prices[:, :, 0])
            if step + 1 == patches:
                break
            flat = prices.reshape(rows_needed, *prices.shape[2:])
            flat = torch.cat([flat, flat[:1].expand(padded - rows_needed, *flat.shape[1:])]).to(device)
            mixture, loc, scale, rows = self.model.decode(encoded, rows, flat)
            mixture, loc, scale = mixture.map(per_window), per_window(loc)[..., None], per_window(scale)[..., None]
        return torch.cat(out, -1).numpy()
