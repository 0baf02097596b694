"""Choosing tokens from logits, with per-row temperature / top-k / top-p.

Every row of a decoding batch may use its own sampling config, so many configs decode together from
one shared prefill. Filtering per row: divide by the temperature, keep the ``top_k`` largest logits
(0 = off, ties with the k-th kept), then keep the smallest set of the remaining tokens whose
probability reaches ``top_p`` (1.0 = off). Unlike upstream, top-k and top-p both apply when both are
set (upstream silently ignores top_p when top_k > 0). Temperature 0 means greedy: the distribution
becomes one-hot on the arg-max logit, so no division by zero and no NaN.

Two ways to draw a token from the filtered distribution (see :class:`RowUniforms`):

* ``torch.multinomial`` with an explicit ``torch.Generator`` over the whole batch at once. This is
  exactly what upstream does (same generator state -> same tokens), so the parity tests use it, but
  the numbers a row gets depend on every other row in the batch.
* inverse-CDF sampling with one uniform per (row, step, s1/s2) taken from :class:`RowUniforms`, which
  derives them from the row's window seed and sample index only. A row's random numbers then do not
  depend on how windows are batched, on the other configs decoded alongside, or on ``sample_count``
  (smaller counts are prefixes of larger ones), and sample ``j`` of every config uses the same numbers
  (common random numbers make config comparisons less noisy). This is the default. Its tokens are the
  same too unless the logits' rounding, which does depend on the batch shape, moves a boundary across
  a draw; see "Reproducibility" in :mod:`forecast_core.kronos.forecaster`.
"""

from __future__ import annotations

import numpy as np
import torch


def filter_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
                 top_p: torch.Tensor) -> torch.Tensor:
    """``logits`` ``[R, V]`` and per-row ``[R]`` settings -> probabilities ``[R, V]`` (float32).

    Each filter becomes a per-row threshold on the scaled logits (the k-th largest; the value of the
    token whose cumulative probability crosses ``top_p``), so only sorted *values* are needed and
    only for rows that filter. The kept sets, and hence the probabilities, equal upstream's
    ``sample_from_logits`` for the settings it supports, bitwise, except that a token exactly tied
    with the crossing token is kept (as ties with the k-th are).
    """
    vocab = logits.shape[-1]
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    use_k, use_p = (top_k > 0) & ~greedy, (top_p < 1.0) & ~greedy
    rows = torch.nonzero(use_k | use_p)[:, 0]
    if len(rows):
        chosen = scaled[rows]
        ordered = sorted_descending(chosen)
        kth = ordered.gather(1, (top_k[rows].clamp(1, vocab) - 1)[:, None])
        k_rows = use_k[rows][:, None]
        ordered = ordered.masked_fill(k_rows & (ordered < kth), float("-inf"))
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        crossing = (cumulative <= top_p[rows][:, None]).sum(-1).clamp_max(vocab - 1)  # first index > top_p
        nucleus = ordered.gather(1, crossing[:, None])
        drop = (k_rows & (chosen < kth)) | (use_p[rows][:, None] & (chosen < nucleus))
        scaled = scaled.index_put((rows,), chosen.masked_fill(drop, float("-inf")))
    probs = torch.softmax(scaled, dim=-1)
    if bool(greedy.any()):
        best = torch.nn.functional.one_hot(logits.argmax(-1), vocab).to(probs.dtype)
        probs = torch.where(greedy[:, None], best, probs)
    return probs


def sorted_descending(values: torch.Tensor) -> torch.Tensor:
    """Each row sorted, largest first. On the CPU NumPy's vectorised sort, since ``torch.sort`` also
    computes the indices this needs not and is slower at vocabulary size 1024."""
    if values.device.type != "cpu":
        return torch.sort(values, dim=-1, descending=True).values
    return torch.from_numpy(np.ascontiguousarray(np.sort(values.numpy(), axis=-1)[:, ::-1]))


def draw_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row from ``uniforms`` ``[R]`` in [0, 1); never a zero-probability token."""
    cdf = probs.double().cumsum(-1)
    target = uniforms.to(cdf.dtype) * cdf[:, -1]
    return torch.searchsorted(cdf, target[:, None], right=True)[:, 0].clamp_max(probs.shape[-1] - 1)


class RowUniforms:
    """Uniforms per (row, step, stage) drawn from each row's window seed and sample index only.

    Window ``w`` draws ``default_rng(seed_w).random((max_samples, horizon, 2))`` once; row ``r`` reads
    the block of its sample index. ``Generator.random`` fills in order, so the first ``n`` samples
    are the same for any ``max_samples >= n``.
    """

    def __init__(self, seeds: np.ndarray, sample_index: np.ndarray, horizon: int, device: torch.device):
        """``seeds`` ``[W]``; ``sample_index`` ``[rows_per_window]`` (same layout for every window)."""
        count = int(sample_index.max()) + 1
        per_window = [np.random.default_rng(int(s)).random((count, horizon, 2)) for s in seeds]
        table = np.stack(per_window)[:, sample_index]  # [W, rows_per_window, H, 2]
        self.table = torch.from_numpy(table.reshape(-1, horizon, 2)).to(device)

    def __call__(self, step: int, stage: int) -> torch.Tensor:
        return self.table[:, step, stage]
