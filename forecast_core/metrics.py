"""Per-window forecast metrics. All take a leading window axis.

MAE% and CRPS% divide by mean |y| over the target window, so they are scale-free across symbols
priced at 1e-4 or 1e5. MASE divides by the mean absolute one-step change of the context; a context
without a single price change (a halted or untraded symbol) has none, so that denominator is floored
at a price-relative 1e-8 of the context level: finite and still scale-free, never a division by zero.

Probabilistic metrics come in two forms, by what a model returns. From sample paths (Toto 1.0,
Kronos, the random walk): the sample CRPS and the share of targets inside the 10%-90% sample quantiles.
From a quantile forecast (Toto 2.0: levels 0.1 ... 0.9, no samples): CRPS by the quantile (pinball)
approximation ``CRPS ~ 2/K * sum_k pinball_tau_k(q_k, y)`` over the K levels, and coverage as the share of
targets inside ``[q_0.1, q_0.9]`` read directly. The approximation integrates the quantile score over
the 9 levels with equal weights, leaving out the tails below 0.1 and above 0.9, whose pinball losses are
the smallest, so it reads higher than the exact CRPS of the same distribution (about 1.09x for a
calibrated Gaussian forecast; tests/core/test_metrics.py checks that ratio): compare CRPS% within one kind,
MAE% across all.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
_MASE_FLOOR = 1e-8  # of the context's mean |close|; far below one tick of any traded price
METRIC_COLUMNS = ("mae", "mae_pct", "mase", "crps_pct", "coverage_10_90")


def _scale(targets: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(targets).mean(axis=1), _EPS)


def mae(point: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.abs(point - targets).mean(axis=1)


def mae_pct(point: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return 100.0 * mae(point, targets) / _scale(targets)


def mase(point: np.ndarray, targets: np.ndarray, context_close: np.ndarray) -> np.ndarray:
    naive = np.abs(np.diff(context_close, axis=1)).mean(axis=1)
    floor = _MASE_FLOOR * np.maximum(np.abs(context_close).mean(axis=1), _EPS)
    return mae(point, targets) / np.maximum(naive, floor)


def crps(paths: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sample CRPS averaged over the horizon: E|X - y| - E|X - X'| / 2, per window.

    ``paths`` is ``[windows, samples, horizon]``. Uses the sorted-sample identity
    E|X - X'| = 2 / n^2 * sum_i (2i - n - 1) x_(i), which is O(n log n) instead of O(n^2).
    """
    n = paths.shape[1]
    spread = np.abs(paths - targets[:, None, :]).mean(axis=1)
    ordered = np.sort(paths, axis=1)
    weights = (2.0 * np.arange(1, n + 1) - n - 1)[None, :, None]
    pairwise = 2.0 * (weights * ordered).sum(axis=1) / (n * n)
    return (spread - 0.5 * pairwise).mean(axis=1)


def crps_pct(paths: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return 100.0 * crps(paths, targets) / _scale(targets)


def coverage(paths: np.ndarray, targets: np.ndarray, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """Share of target steps inside the [low, high] sample quantile band, per window."""
    lo, hi = np.quantile(paths, [low, high], axis=1)
    return ((targets >= lo) & (targets <= hi)).mean(axis=1)


def score_windows(
    point: np.ndarray, paths: np.ndarray, targets: np.ndarray, context_close: np.ndarray
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRIC_COLUMNS` for each window."""
    return {
        "mae": mae(point, targets),
        "mae_pct": mae_pct(point, targets),
        "mase": mase(point, targets, context_close),
        "crps_pct": crps_pct(paths, targets),
        "coverage_10_90": coverage(paths, targets),
    }


def crps_from_quantiles(quantiles: np.ndarray, levels: tuple[float, ...], targets: np.ndarray) -> np.ndarray:
    """Quantile (pinball) approximation of CRPS averaged over the horizon, per window.

    ``quantiles`` is ``[windows, levels, horizon]``: 2 / K * sum_k pinball_k, pinball_k =
    max(tau_k * (y - q_k), (tau_k - 1) * (y - q_k)).
    """
    tau = np.asarray(levels, dtype=np.float64)[None, :, None]
    error = targets[:, None, :] - quantiles
    pinball = np.maximum(tau * error, (tau - 1.0) * error)
    return (2.0 * pinball.mean(axis=1)).mean(axis=1)


def score_quantile_windows(point: np.ndarray, quantiles: np.ndarray, levels: tuple[float, ...], targets: np.ndarray,
                           context_close: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRIC_COLUMNS` for each window of a quantile forecast ``[W, levels, H]``.

    Coverage needs the 0.1 and 0.9 levels among ``levels``.
    """
    try:
        low, high = quantiles[:, list(levels).index(0.1)], quantiles[:, list(levels).index(0.9)]
    except ValueError:
        raise ValueError(f"coverage_10_90 needs the levels 0.1 and 0.9 in the quantile forecast, got {levels}") from None
    return {
        "mae": mae(point, targets),
        "mae_pct": mae_pct(point, targets),
        "mase": mase(point, targets, context_close),
        "crps_pct": 100.0 * crps_from_quantiles(quantiles, levels, targets) / _scale(targets),
        "coverage_10_90": ((targets >= low) & (targets <= high)).mean(axis=1),
    }
