"""The forecaster interface every model plugs into, and the baselines behind it.

A forecaster sees only a :class:`ContextBatch` (bars strictly before each window's origin plus the
calendar of the future steps extrapolated from them), so a forecast cannot depend on the target.
It returns sample paths of the close, shaped ``[windows, samples, horizon]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "amount")


def derived_amount(frame):
    """``amount`` (traded value) where a source has none: volume times the bar's mean of open, high, low, close."""
    return frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)


@dataclass(frozen=True)
class ContextBatch:
    """Contexts of several windows (possibly of several symbols), all of the same length.

    values: ``[windows, context, len(PRICE_COLUMNS)]`` float64, oldest bar first.
    timestamps: ``[windows, context]`` datetime64[ns] of the context bars.
    future_timestamps: ``[windows, horizon]`` datetime64[ns], extrapolated from the context calendar.
    seeds: ``[windows]`` int64; one fixed seed per (symbol, window), shared by every config.
    """

    values: np.ndarray
    timestamps: np.ndarray
    future_timestamps: np.ndarray
    seeds: np.ndarray

    def __post_init__(self) -> None:
        w, length, f = self.values.shape
        if f != len(PRICE_COLUMNS):
            raise ValueError(f"context values need {len(PRICE_COLUMNS)} columns {PRICE_COLUMNS}, got {f}")
        if self.timestamps.shape != (w, length):
            raise ValueError(f"timestamps shape {self.timestamps.shape} != {(w, length)}")
        if self.future_timestamps.shape[0] != w or self.seeds.shape != (w,):
            raise ValueError("future_timestamps and seeds need one row per window")

    @property
    def num_windows(self) -> int:
        return self.values.shape[0]

    @property
    def context_length(self) -> int:
        return self.values.shape[1]

    @property
    def horizon(self) -> int:
        return self.future_timestamps.shape[1]

    def column(self, name: str) -> np.ndarray:
        """One price column, ``[windows, context]``."""
        return self.values[:, :, PRICE_COLUMNS.index(name)]

    def last(self, length: int) -> "ContextBatch":
        """The most recent ``length`` bars of every context (models with a shorter window)."""
        if not 0 < length <= self.context_length:
            raise ValueError(f"cannot take the last {length} bars of a {self.context_length}-bar context")
        return ContextBatch(
            self.values[:, -length:], self.timestamps[:, -length:], self.future_timestamps, self.seeds
        )

    def lifted(self) -> tuple["ContextBatch", np.ndarray]:
        """Contexts whose mean |close| is below :data:`MIN_PRICE_LEVEL`, multiplied by the smallest
        power of two that lifts them to it, and the factor per window ``[windows]`` (1 elsewhere).

        Both models' scalers have absolute floors (Toto ``sqrt(var + 0.1)``, Kronos ``std + 1e-5``)
        that swamp sub-unit prices such as 1e-4 crypto quotes; a power of two is exact in floating
        point, so contexts at or above the level are untouched (bitwise) and divided-back paths lose
        nothing. Volume is left as it is; ``amount`` (volume x price) is lifted with the prices.
        """
        level = np.abs(self.column("close")).mean(axis=1)
        with np.errstate(divide="ignore"):
            exponent = np.where(level > 0, np.ceil(np.log2(MIN_PRICE_LEVEL / level)), 0.0)
        factor = np.exp2(np.clip(exponent, 0.0, None))
        if (factor == 1.0).all():
            return self, factor
        values = self.values.copy()
        values[..., LIFTED_COLUMNS] *= factor[:, None, None]
        return ContextBatch(values, self.timestamps, self.future_timestamps, self.seeds), factor


MIN_PRICE_LEVEL = 1.0
# Largest |difference| between two computations of the same sample paths that batch them differently
# (chunk sizes, sample-count prefixes, windows alone vs batched, configs decoded together), relative
# to the window's price level (largest |close| of its context), for float32 weights: kernels round
# differently per shape and per CPU. Measured and explained in the Toto and Kronos forecaster modules.
BATCH_RTOL = 1e-5
LIFTED_COLUMNS = [PRICE_COLUMNS.index(c) for c in ("open", "high", "low", "close", "amount")]


@runtime_checkable
class Forecaster(Protocol):
    """Anything that turns contexts into close-price sample paths ``[windows, samples, horizon]``.

    Implementations must draw from generators seeded by ``batch.seeds`` so that the same seed gives
    the same paths, and a smaller ``num_samples`` must give a prefix of a larger one's paths.
    """

    name: str

    def sample_paths(self, batch: ContextBatch, num_samples: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Persistence:
    """The last close, repeated over the horizon (one deterministic path)."""

    name: str = "persistence"

    def sample_paths(self, batch: ContextBatch, num_samples: int = 1) -> np.ndarray:
        last = batch.column("close")[:, -1]
        return np.repeat(last[:, None, None], batch.horizon, axis=2)


@dataclass(frozen=True)
class SeasonalNaive:
    """Repeat the last ``period`` closes (period 5 = one trading week)."""

    period: int = 5
    name: str = "seasonal_naive"

    def sample_paths(self, batch: ContextBatch, num_samples: int = 1) -> np.ndarray:
        if self.period > batch.context_length:
            raise ValueError(f"seasonal period {self.period} exceeds context length {batch.context_length}")
        season = batch.column("close")[:, -self.period :]
        reps = -(-batch.horizon // self.period)
        return np.tile(season, (1, reps))[:, None, : batch.horizon]


@dataclass(frozen=True)
class Drift:
    """Random walk with drift: the straight line through the first and last close of the context."""

    name: str = "drift"

    def sample_paths(self, batch: ContextBatch, num_samples: int = 1) -> np.ndarray:
        close = batch.column("close")
        slope = (close[:, -1] - close[:, 0]) / max(batch.context_length - 1, 1)
        steps = np.arange(1, batch.horizon + 1, dtype=np.float64)
        return (close[:, -1, None] + slope[:, None] * steps)[:, None, :]


@dataclass(frozen=True)
class RandomWalk:
    """Zero-drift Gaussian random walk in log price: the probabilistic twin of persistence.

    Paths are ``last_close * exp(cumsum(sigma * z))`` with ``z ~ N(0, 1)`` i.i.d. per step. Gaussian
    log steps are the documented choice: the textbook geometric random walk, fully described by one
    scale, with no tail parameter to fit on a single context. ``sigma`` is the standard deviation of
    the context's own one-bar log returns of the close about zero (the model has no drift, so no mean
    is estimated: sqrt(mean(r^2)) is its maximum-likelihood sigma, and a trending context's drift is
    counted as spread rather than forecast), over the last ``lookback`` returns, or all of a shorter
    context. A flat context (a halted symbol) has sigma 0 and gives persistence's single path repeated.

    The median of ``exp(X)`` is ``exp(median X)`` and ``X`` is symmetric about 0, so the median path is
    the last close up to Monte Carlo noise: with the median aggregation its point forecast is ~
    persistence. It exists to give CRPS% and 10-90% coverage an honest reference: persistence has no
    spread (its CRPS is its MAE and its coverage only counts exact hits).

    Each window draws from ``np.random.default_rng(seed)`` of its own seed, ``[samples, horizon]`` in
    sample order, so a smaller ``num_samples`` gives exactly a prefix of a larger one's paths and a
    window's paths do not depend on the other windows in the batch. Only the context is read.
    """

    # 256 bars ~ one trading year: sigma's sampling error ~ 1/sqrt(2 * 256) ~ 4%, and long enough that
    # a 64-bar horizon (over which volatility mean-reverts) is not driven by the last few weeks' regime.
    lookback: int = 256
    name: str = "random_walk"

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ValueError(f"random_walk: lookback must be >= 1 return, got {self.lookback}")

    def sigma(self, batch: ContextBatch) -> np.ndarray:
        """Per-window sigma of the one-bar log returns of the close, ``[windows]``.

        A context needs at least 2 bars (one return) and finite, positive closes over the bars used.
        """
        if batch.context_length < 2:
            raise ValueError(f"random_walk needs a context of at least 2 bars (one return), got "
                             f"{batch.context_length}")
        close = batch.column("close")[:, -(min(self.lookback, batch.context_length - 1) + 1):]
        bad = ~(np.isfinite(close) & (close > 0)).all(axis=1)
        if bad.any():
            raise ValueError(f"random_walk needs finite, positive closes in its last {close.shape[1]} context "
                             f"bars; window(s) {np.flatnonzero(bad).tolist()} of the batch have others")
        returns = np.diff(np.log(close), axis=1)
        return np.sqrt(np.mean(returns * returns, axis=1))

    def sample_paths(self, batch: ContextBatch, num_samples: int = 1) -> np.ndarray:
        if num_samples < 1:
            raise ValueError(f"random_walk: num_samples must be >= 1, got {num_samples}")
        sigma = self.sigma(batch)
        last = batch.column("close")[:, -1]
        shape = (num_samples, batch.horizon)
        steps = np.stack([np.random.default_rng(int(seed)).standard_normal(shape) for seed in batch.seeds]
                         ) if batch.num_windows else np.empty((0, *shape))
        return last[:, None, None] * np.exp(np.cumsum(sigma[:, None, None] * steps, axis=2))


BASELINES: dict[str, Forecaster] = {f.name: f for f in (Persistence(), SeasonalNaive(), Drift(), RandomWalk())}
