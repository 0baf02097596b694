"""Kronos as a :class:`~forecast_core.forecasters.Forecaster`: normalise, tokenise, decode, de-normalise.

Per window and sampling-config group (configs sharing ``max_context`` and ``clip``):

1. Lookback: the last ``min(context, max_context)`` bars. Each of the 6 columns (open, high, low,
   close, volume, amount) is z-scored over the lookback only, ``(x - mean) / (std + 1e-5)`` in float32
   as upstream does, then clipped to +-``clip`` (input clipping, not return clipping). Nothing at or
   after the window origin is looked at; the future calendar comes from ``batch.future_timestamps``.
   ``amount`` is always present in a :class:`ContextBatch`: :mod:`forecast_core.data` derives it as
   ``volume * mean(open, high, low, close)`` when the source lacks it, the rule upstream's predictor
   uses (:func:`frame_to_batch` applies the same rule to a bare frame). Upstream z-scores and
   tokenises every bar it is handed; given at most ``max_context`` bars, both agree.
2. The tokenizer encodes the lookback once per window (not once per sample, as upstream does).
3. Decoding: the model prefills the lookback once per window; every sample of every config is a row
   that continues it with its own KV cache suffix (:mod:`forecast_core.kronos.layers`). Tokens are
   drawn per row (:mod:`forecast_core.kronos.sampling`).
4. The tokenizer decodes the last ``max_context`` tokens of each row (shared context part once) and
   the generated steps are de-normalised; volume and amount are floored at 0.

Reproducibility. Tokens are drawn by inverse CDF from per-row uniforms that depend only on the
window seed and the sample index (:class:`~forecast_core.kronos.sampling.RowUniforms`), so a row gets
the same random numbers however windows are batched or chunked (``max_rows``), whatever other configs
decode alongside, and for any ``sample_count`` above its index. What that buys, exactly:

- Bitwise: the same call again (same windows batched the same way, same configs in the same order,
  same ``max_rows``) on the same machine, torch build and thread and dispatch settings; and a
  window's paths whatever the *values* of the other windows in a batch of the same shape.
- Same tokens, and close paths within :data:`forecast_core.forecasters.BATCH_RTOL` of the window's price level (largest
  ``|close|`` of its context), not bitwise: another window batching or ``max_rows``, fewer samples
  (a prefix of more), or the config decoded alone instead of with others. These change the rows
  per pass, and BLAS/ATen kernels round by shape (differently per CPU). With the same tokens the
  paths differ only by the float32 rounding of the tokenizer decoder and de-normalisation: measured
  <= 2.2e-7 of the level (AVX-512 vs ``default`` kernels, 1,024 paths of 32 steps, random and tiny
  models). Tokens are discrete: they stay the same unless a logit rounding difference moves a
  sampling boundary (cumulative probability, top-p nucleus, top-k, greedy arg-max, tokenizer bit
  sign) across a draw, which changes the rest of that row. Measured: logits differ by <= 8.3e-7
  between kernel families; the draw closest to a boundary in test_kronos_model's batching test is
  3.7e-5 away (relative CDF distance); 0 of 131,072 draws flipped between AVX-512 and ``default``.

Window slide. Upstream re-runs the whole window at every step, keeping the last ``max_context``
tokens. While ``lookback + horizon - 1 <= max_context`` the window never slides and the KV cache is
exact (same tokens as upstream under the same random numbers). Past that, the cache cannot be reused
(RoPE positions and every hidden state change when the window moves). Strategy: when the window is
full, drop the oldest ``refresh_every`` tokens at once and re-prefill (the shared context part once
per window, each row's generated part against it), then decode with the cache until it is full again.
The model then sees between ``max_context - refresh_every + 1`` and ``max_context`` tokens instead of
exactly ``max_context``. ``refresh_every=1`` is the exact (slower) path. The README's Kronos section has the default's
measured effect on test MAE% and speed (``benchmarks/bench_kronos.py`` section 3).

API::

    model, tokenizer = load_kronos()                      # tiny shipped checkpoint, offline
    model, tokenizer = load_kronos("NeoQuasar/Kronos-base", "NeoQuasar/Kronos-Tokenizer-base",
                                   revision=..., tokenizer_revision=...)
    forecaster = KronosForecaster(model, tokenizer, KronosSamplingConfig(temperature=0.6, top_p=0.9))
    paths = forecaster.sample_paths(batch, num_samples)   # [W, S, H] close (num_samples overrides
                                                          # config.sample_count; seeds: batch.seeds)
    many = forecaster.sample_configs(batch, configs)      # list of [W, S_i, H], one prefill per
                                                          # (max_context, clip) group
    bars = forecaster.sample_bars(batch, configs)         # list of [W, S_i, H, 6] (all columns)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoints import checkpoint_revision, load_strict, read_config, resolve_checkpoint
from ..forecasters import LIFTED_COLUMNS, PRICE_COLUMNS, ContextBatch, derived_amount
from ..knobs import KRONOS_BOUNDS, MIN_KRONOS_CONTEXT
from ..knobs import problems as knob_problems
from ..windows import future_calendar
from .model import Kronos, KronosConfig
from .sampling import RowUniforms, draw_inverse_cdf, filter_probs
from .tokenizer import KronosTokenizer, TokenizerConfig

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "kronos-tiny"
DEFAULT_TINY = str(WEIGHTS / "model")
DEFAULT_TINY_TOKENIZER = str(WEIGHTS / "tokenizer")
MIN_LOOKBACK = MIN_KRONOS_CONTEXT
DEFAULT_REFRESH_EVERY = 8
DECODE_ROWS = 256  # rows per tokenizer-decoder pass
CLOSE, VOLUME, AMOUNT = (PRICE_COLUMNS.index(c) for c in ("close", "volume", "amount"))


@dataclass(frozen=True)
class KronosSamplingConfig:
    """Kronos inference knobs. Defaults are upstream's predictor defaults."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 0.9  # 1.0 = off
    top_k: int = 0  # 0 = off
    sample_count: int = 1
    max_context: int = 512
    clip: float = 5.0

    def __post_init__(self) -> None:
        found = knob_problems(KRONOS_BOUNDS, asdict(self))
        if found:
            raise ValueError("invalid Kronos sampling config: " + "; ".join(found))


def _load(cls, config_cls, source, revision, device):
    directory = resolve_checkpoint(source, revision)
    module = cls(config_cls.from_dict(read_config(directory), str(directory)))
    load_strict(module, directory)
    return module.to(device).eval()


def kronos_revision(model_dir: Path, tokenizer_dir: Path) -> str:
    """What pins a Kronos runtime's numbers: the model's and the tokenizer's revisions, ``model+tokenizer``."""
    return f"{checkpoint_revision(model_dir)}+{checkpoint_revision(tokenizer_dir)}"


def load_kronos(model_source: str | Path = DEFAULT_TINY, tokenizer_source: str | Path = DEFAULT_TINY_TOKENIZER,
                revision: str | None = None, tokenizer_revision: str | None = None,
                device: str = "cpu") -> tuple[Kronos, KronosTokenizer]:
    """Load a model and its tokenizer from local directories or Hugging Face repo ids (strictly)."""
    return (_load(Kronos, KronosConfig, model_source, revision, device),
            _load(KronosTokenizer, TokenizerConfig, tokenizer_source, tokenizer_revision, device))


def time_features(timestamps: np.ndarray) -> np.ndarray:
    """``[..., T]`` datetime64 -> ``[..., T, 5]`` int64 (minute, hour, weekday, day, month)."""
    index = pd.DatetimeIndex(np.asarray(timestamps, dtype="datetime64[ns]").ravel())
    if index.hasnans:
        raise ValueError("timestamps contain NaT; every bar (and future step) needs a timestamp")
    feats = np.stack([index.minute, index.hour, index.day_of_week, index.day, index.month], axis=-1)
    return feats.astype(np.int64).reshape(*np.shape(timestamps), 5)


def normalize(values: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window and column z-score over the given bars (float32, +1e-5 like upstream), clipped."""
    x = values.astype(np.float32)
    mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
    return np.clip((x - mean) / (std + 1e-5), -clip, clip), mean, std


def frame_to_batch(frame: pd.DataFrame, horizon: int, seed: int = 0) -> ContextBatch:
    """One context from a bare OHLC(V) frame (column ``timestamp`` or a DatetimeIndex).

    ``volume`` defaults to 0 and ``amount`` to ``volume * mean(open, high, low, close)`` when absent.
    """
    table = frame.reset_index() if isinstance(frame.index, pd.DatetimeIndex) else frame
    table = table.rename(columns={table.columns[0]: "timestamp"}) if "timestamp" not in table else table
    missing = [c for c in ("open", "high", "low", "close") if c not in table]
    if missing:
        raise ValueError(f"Kronos needs columns open, high, low, close; missing {missing} "
                         f"(found {list(map(str, frame.columns))})")
    table = table.copy()
    if "volume" not in table:
        table["volume"] = 0.0
    if "amount" not in table:
        table["amount"] = derived_amount(table)
    stamps = pd.to_datetime(table["timestamp"]).to_numpy(dtype="datetime64[ns]")
    return ContextBatch(table.loc[:, list(PRICE_COLUMNS)].to_numpy(np.float64)[None], stamps[None],
                        future_calendar(stamps, horizon)[None], np.array([seed], dtype=np.int64))


def check_batch(batch: ContextBatch, max_context: int) -> None:
    """Reject inputs Kronos cannot forecast, saying what is wrong and what to change."""
    if batch.horizon < 1:
        raise ValueError("horizon must be >= 1")
    if batch.horizon > max_context:
        raise ValueError(f"horizon {batch.horizon} exceeds max_context {max_context}: the tokenizer decodes "
                         "at most max_context steps; raise max_context or shorten the horizon")
    if batch.context_length < MIN_LOOKBACK:
        raise ValueError(f"Kronos needs at least {MIN_LOOKBACK} context bars, got {batch.context_length}")
    bad = ~np.isfinite(batch.values)
    if bad.any():
        windows, _, cols = np.nonzero(bad)
        names = sorted({PRICE_COLUMNS[c] for c in cols})
        raise ValueError(f"context has NaN/inf values in columns {names} (windows {sorted(set(windows.tolist()))[:5]}); "
                         "fill or drop those bars before forecasting")


def decode_tokens(model: Kronos, s1: torch.Tensor, s2: torch.Tensor, stamps: torch.Tensor, horizon: int,
                  rows_per_window: int, max_context: int, refresh_every: int, choose) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``horizon`` tokens for ``W * rows_per_window`` rows continuing contexts ``[W, L]``.

    ``stamps`` ``[W, L + horizon, 5]``; ``choose(logits, step, stage)`` picks tokens (stage 0 = s1).
    """
    windows, length = s1.shape
    rows = windows * rows_per_window
    gen1 = s1.new_empty(rows, horizon)
    gen2 = s2.new_empty(rows, horizon)
    per_row = lambda t: t.repeat_interleave(rows_per_window, dim=0)  # noqa: E731
    refresh_every = min(refresh_every, max_context)
    start = 0  # absolute position of the window's first token
    state = model.prefill(s1, s2, stamps[:, :length], rows_per_window, horizon)
    for i in range(horizon):
        known = length + i  # tokens so far; the newest (generated i - 1) is not fed yet
        if i > 0 and known - start > max_context:
            start = known - (max_context - refresh_every + 1)
            mine = slice(max(start - length, 0), i)
            own = (gen1[:, mine], gen2[:, mine], per_row(stamps[:, max(start, length):known]))
            state = model.prefill(s1[:, start:], s2[:, start:], stamps[:, start:length], rows_per_window,
                                  horizon, rows=own)
        elif i > 0:
            model.extend(state, gen1[:, i - 1:i], gen2[:, i - 1:i], per_row(stamps[:, known - 1:known]))
        gen1[:, i] = choose(model.s1_logits(state), i, 0)
        gen2[:, i] = choose(model.s2_logits(state, gen1[:, i]), i, 1)
    return gen1, gen2


class KronosForecaster:
    """Kronos behind the :class:`~forecast_core.forecasters.Forecaster` protocol; returns all paths.

    ``refresh_every``: tokens dropped per window slide (see the module docstring; 1 = exact).
    ``max_rows``: rows (window x sample x config) decoded together; windows are chunked to stay
    under it. Results do not depend on it beyond rounding (per-row random numbers; see
    "Reproducibility" in the module docstring).
    """

    def __init__(self, model: Kronos, tokenizer: KronosTokenizer,
                 config: KronosSamplingConfig = KronosSamplingConfig(), refresh_every: int = DEFAULT_REFRESH_EVERY,
                 max_rows: int = 2048, name: str = "kronos"):
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1 (1 = exact window slide), got {refresh_every}")
        self.model, self.tokenizer, self.config = model.eval(), tokenizer.eval(), config
        self.refresh_every, self.max_rows, self.name = refresh_every, max_rows, name
        self.device = next(model.parameters()).device

    def sample_paths(self, batch: ContextBatch, num_samples: int) -> np.ndarray:
        """``[W, num_samples, H]`` close paths with this forecaster's config."""
        return self.sample_configs(batch, [replace(self.config, sample_count=num_samples)])[0]

    def sample_configs(self, batch: ContextBatch, configs: list[KronosSamplingConfig],
                       generator: torch.Generator | None = None) -> list[np.ndarray]:
        """Close paths ``[W, S_i, H]`` for each config, decoded together per (max_context, clip)."""
        return [bars[..., CLOSE] for bars in self.sample_bars(batch, configs, generator)]

    def sample_bars(self, batch: ContextBatch, configs: list[KronosSamplingConfig],
                    generator: torch.Generator | None = None) -> list[np.ndarray]:
        """All 6 columns, ``[W, S_i, H, 6]`` per config.

        ``generator``: draw with ``torch.multinomial`` over the whole batch in upstream's order
        (rows: window, then config, then sample) instead of per-row seeds; for parity tests. Windows
        are then not chunked.
        """
        if not configs:
            return []
        groups: dict[tuple[int, float], list[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault((c.max_context, c.clip), []).append(i)
        out: list[np.ndarray | None] = [None] * len(configs)
        for (max_context, clip), members in groups.items():
            check_batch(batch, max_context)
            group = [configs[i] for i in members]
            per = sum(c.sample_count for c in group)
            step = batch.num_windows if generator is not None else max(1, self.max_rows // per)
            chunks = [self._decode_group(self._slice(batch, lo, lo + step), group, generator)
                      for lo in range(0, batch.num_windows, step)]
            for j, i in enumerate(members):
                out[i] = np.concatenate([chunk[j] for chunk in chunks], axis=0)
        return out

    @staticmethod
    def _slice(batch: ContextBatch, lo: int, hi: int) -> ContextBatch:
        return ContextBatch(batch.values[lo:hi], batch.timestamps[lo:hi], batch.future_timestamps[lo:hi],
                            batch.seeds[lo:hi])

    @torch.no_grad()
    def _decode_group(self, batch: ContextBatch, configs: list[KronosSamplingConfig],
                      generator: torch.Generator | None) -> list[np.ndarray]:
        max_context, clip = configs[0].max_context, configs[0].clip
        batch, factor = batch.lifted()  # sub-unit prices: see ContextBatch.lifted
        lookback = min(batch.context_length, max_context)
        horizon, windows, dev = batch.horizon, batch.num_windows, self.device
        x, mean, std = normalize(batch.values[:, -lookback:], clip)
        s1, s2 = self.tokenizer.encode(torch.from_numpy(x).to(dev))
        stamps = np.concatenate([batch.timestamps[:, -lookback:], batch.future_timestamps], axis=1)
        stamps = torch.from_numpy(time_features(stamps)).to(dev)

        counts = [c.sample_count for c in configs]
        per = sum(counts)
        setting = lambda f, dtype: torch.tensor(  # noqa: E731
            np.tile(np.repeat([getattr(c, f) for c in configs], counts), windows), dtype=dtype, device=dev)
        temperature, top_k, top_p = setting("temperature", torch.float32), setting("top_k", torch.long), \
            setting("top_p", torch.float32)
        if generator is None:
            uniforms = RowUniforms(batch.seeds, np.concatenate([np.arange(n) for n in counts]), horizon, dev)
            choose = lambda logits, step, stage: draw_inverse_cdf(  # noqa: E731
                filter_probs(logits, temperature, top_k, top_p), uniforms(step, stage))
        else:
            choose = lambda logits, step, stage: torch.multinomial(  # noqa: E731
                filter_probs(logits, temperature, top_k, top_p), 1, generator=generator)[:, 0]
        gen1, gen2 = decode_tokens(self.model, s1, s2, stamps, horizon, per, max_context,
                                   self.refresh_every, choose)

        first = max(0, lookback + horizon - max_context)  # upstream decodes the last max_context tokens
        prefix = (s1[:, first:], s2[:, first:])
        gen1, gen2 = gen1.view(windows, per, horizon), gen2.view(windows, per, horizon)
        chunk = max(1, DECODE_ROWS // windows)  # bounds the decoder's attention scores in memory
        bars = torch.cat([self.tokenizer.decode_rows(
            prefix, (gen1[:, j:j + chunk].reshape(-1, horizon), gen2[:, j:j + chunk].reshape(-1, horizon))
        ).view(windows, -1, horizon, len(PRICE_COLUMNS)) for j in range(0, per, chunk)], dim=1)
        bars = bars.cpu().numpy()
        bars = bars * (std[:, None] + 1e-5) + mean[:, None]
        bars = bars.astype(np.float64)
        bars[..., LIFTED_COLUMNS] /= factor[:, None, None, None]
        bars[..., [VOLUME, AMOUNT]] = np.maximum(bars[..., [VOLUME, AMOUNT]], 0.0)
        bounds = np.cumsum([0] + counts)
        return [bars[:, lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
