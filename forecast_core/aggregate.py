"""Point forecasts from sample paths, or from a quantile forecast's levels.

Every aggregation reduces an explicit sample axis. The axis is never guessed from array shapes:
the original system did that and broke whenever the number of samples was <= the horizon.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

_PATTERN = re.compile(
    r"^(?:(?P<simple>mean|median)"
    r"|trimmed_mean_(?P<trim>\d+(?:\.\d+)?)"
    r"|quantile_(?P<q>0(?:\.\d+)?|1(?:\.0+)?)"
    r"|mean_(?P<sign>minus|plus)_std_(?P<k>\d+(?:\.\d+)?))$"
)

AGGREGATION_HELP = (
    "mean, median, trimmed_mean_X (drop X% of samples from each side, 0 <= X < 50), "
    "quantile_Q (0 <= Q <= 1), mean_minus_std_K, mean_plus_std_K (K >= 0)"
)


@dataclass(frozen=True)
class Aggregation:
    """A parsed aggregation name such as ``trimmed_mean_5`` or ``quantile_0.4``."""

    name: str
    kind: str
    param: float = 0.0

    def __call__(self, paths: np.ndarray, sample_axis: int) -> np.ndarray:
        return aggregate(paths, self, sample_axis=sample_axis)


def parse_aggregation(name: str) -> Aggregation:
    """Parse and validate an aggregation name; the error lists what is accepted."""
    match = _PATTERN.match(str(name).strip())
    if match is None:
        raise ValueError(f"unknown aggregation {name!r}; expected one of: {AGGREGATION_HELP}")
    if match["simple"]:
        return Aggregation(name, match["simple"])
    if match["trim"] is not None:
        trim = float(match["trim"])
        if trim >= 50:
            raise ValueError(f"aggregation {name!r}: trim percentage must be < 50, got {trim:g}")
        return Aggregation(name, "trimmed_mean", trim)
    if match["q"] is not None:
        return Aggregation(name, "quantile", float(match["q"]))
    sign = -1.0 if match["sign"] == "minus" else 1.0
    return Aggregation(name, "mean_std", sign * float(match["k"]))


def aggregate(paths: np.ndarray, aggregation: str | Aggregation, *, sample_axis: int) -> np.ndarray:
    """Reduce ``paths`` over ``sample_axis`` (required, keyword-only) with the named aggregation.

    ``trimmed_mean_X`` drops ``floor(n * X / 100)`` samples from each side of each horizon step, so
    with one sample (or few) it degrades to the plain mean instead of failing.
    """
    agg = aggregation if isinstance(aggregation, Aggregation) else parse_aggregation(aggregation)
    paths = np.asarray(paths, dtype=np.float64)
    if not -paths.ndim <= sample_axis < paths.ndim:  # never wrap: a wrong axis must fail, not guess
        raise ValueError(f"sample_axis {sample_axis} is out of range for paths of shape {paths.shape}")
    axis = sample_axis % paths.ndim
    n = paths.shape[axis]
    if n == 0:
        raise ValueError("cannot aggregate zero sample paths")
    if agg.kind == "mean":
        return paths.mean(axis=axis)
    if agg.kind == "median":
        return np.median(paths, axis=axis)
    if agg.kind == "quantile":
        return np.quantile(paths, agg.param, axis=axis)
    if agg.kind == "trimmed_mean":
        cut = math.floor(n * agg.param / 100.0)
        if cut == 0:
            return paths.mean(axis=axis)
        ordered = np.sort(paths, axis=axis)
        kept = np.take(ordered, np.arange(cut, n - cut), axis=axis)
        return kept.mean(axis=axis)
    # mean_std: mean + k * std (population std; zero for a single sample)
    return paths.mean(axis=axis) + agg.param * paths.std(axis=axis)


def quantile_rule(name: str, levels: tuple[float, ...]) -> str:
    """``name`` when it is a point rule over quantile ``levels`` (see :func:`quantile_point`), else a ValueError."""
    quantile_point(np.zeros((1, len(levels))), levels, name, level_axis=1)
    return parse_aggregation(name).name


def quantile_point(quantiles: np.ndarray, levels: tuple[float, ...], aggregation: str | Aggregation, *,
                   level_axis: int) -> np.ndarray:
    """The point forecast a rule picks from a quantile forecast (Toto 2.0's 9 levels), not from samples.

    ``median``: the 0.5 level; ``quantile_Q``: level Q, linearly interpolated between neighbouring
    levels inside ``[min(levels), max(levels)]``; ``mean``: the mean over the levels (equally spaced
    levels make it a midpoint-rule estimate of the distribution's mean). Trimmed means and mean +- k
    std are sample statistics and are refused here.
    """
    agg = aggregation if isinstance(aggregation, Aggregation) else parse_aggregation(aggregation)
    quantiles = np.moveaxis(np.asarray(quantiles, dtype=np.float64), level_axis, -1)
    grid = np.asarray(levels, dtype=np.float64)
    if quantiles.shape[-1] != len(grid) or np.any(np.diff(grid) <= 0):
        raise ValueError(f"quantile forecast: {quantiles.shape[-1]} values per step for levels {levels} "
                         "(levels must match and increase)")
    if agg.kind == "mean":
        return quantiles.mean(axis=-1)
    if agg.kind not in ("median", "quantile"):
        raise ValueError(f"aggregation {agg.name!r} needs sample paths; a quantile forecast takes median, mean "
                         f"or quantile_Q with {grid[0]:g} <= Q <= {grid[-1]:g}")
    q = 0.5 if agg.kind == "median" else agg.param
    if not grid[0] - 1e-12 <= q <= grid[-1] + 1e-12:
        raise ValueError(f"aggregation {agg.name!r}: the forecast has levels {grid[0]:g}..{grid[-1]:g}; "
                         f"use quantile_Q with Q in that range")
    upper = int(np.clip(np.searchsorted(grid, q), 1, len(grid) - 1))
    weight = (q - grid[upper - 1]) / (grid[upper] - grid[upper - 1])
    if abs(weight) < 1e-9 or abs(weight - 1) < 1e-9:  # an exact level: that level's value, bitwise
        return quantiles[..., upper if weight > 0.5 else upper - 1].copy()
    return (1 - weight) * quantiles[..., upper - 1] + weight * quantiles[..., upper]
