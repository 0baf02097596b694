"""Backtest windows and their validation/test split (brief §2).

A window with origin ``t`` has context bars ``[t - context, t)`` and target bars ``[t, t + horizon)``.
Origins are laid from the end of the series backwards by ``stride``: the last ``n_test`` windows are
test (held out, never used to choose), the ``n_val`` before them are validation.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .forecasters import PRICE_COLUMNS, ContextBatch

VALIDATION, TEST = "val", "test"


@dataclass(frozen=True)
class WindowSpec:
    horizon: int = 64
    n_val: int = 8
    n_test: int = 8
    stride: int | None = None  # None means ``horizon``: targets do not overlap
    context: int = 512

    def __post_init__(self) -> None:
        for field in ("horizon", "n_val", "n_test", "context"):
            if getattr(self, field) < 1:
                raise ValueError(f"window spec: {field} must be >= 1, got {getattr(self, field)}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"window spec: stride must be >= 1, got {self.stride}")

    @property
    def step(self) -> int:
        return self.stride or self.horizon

    @property
    def min_bars(self) -> int:
        """Bars needed so that every window has a full context and a full target."""
        return self.context + (self.n_val + self.n_test - 1) * self.step + self.horizon

    def as_dict(self) -> dict:
        return {**asdict(self), "stride": self.step}


@dataclass(frozen=True)
class Windows:
    """All windows of one symbol: contexts for the forecaster, targets kept apart for scoring."""

    symbol: str
    spec: WindowSpec
    origins: np.ndarray  # [W] integer index of the first target bar, ascending
    splits: np.ndarray  # [W] "val" or "test"
    origin_timestamps: np.ndarray  # [W] datetime64[ns]
    batch: ContextBatch
    targets: np.ndarray  # [W, horizon] close
    target_timestamps: np.ndarray  # [W, horizon]

    def select(self, mask: np.ndarray) -> "Windows":
        b = self.batch
        return Windows(
            self.symbol,
            self.spec,
            self.origins[mask],
            self.splits[mask],
            self.origin_timestamps[mask],
            ContextBatch(b.values[mask], b.timestamps[mask], b.future_timestamps[mask], b.seeds[mask]),
            self.targets[mask],
            self.target_timestamps[mask],
        )

    def split(self, name: str) -> "Windows":
        return self.select(self.splits == name)

    def __len__(self) -> int:
        return len(self.origins)


def window_seed(symbol: str, last_context_bar: np.datetime64, base_seed: int = 0) -> int:
    """A fixed seed per (symbol, window), keyed by the date of the last context bar.

    Stable when new bars are appended, and derived from the context only (never the target).
    """
    day = np.datetime_as_string(np.datetime64(last_context_bar, "D"))
    digest = hashlib.blake2b(f"{base_seed}:{symbol}:{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def future_calendar(timestamps: np.ndarray, horizon: int) -> np.ndarray:
    """Timestamps of the next ``horizon`` bars, inferred from the context alone.

    Business days when the context has no weekend bars (stocks), otherwise the median spacing
    (crypto trades every day). The real target timestamps are never looked at.
    """
    ts = pd.DatetimeIndex(timestamps)
    last = ts[-1]
    step = pd.Series(ts).diff().median() if len(ts) > 1 else pd.Timedelta(days=1)
    if step >= pd.Timedelta(hours=23) and step <= pd.Timedelta(days=4) and (ts.day_of_week < 5).all():
        future = pd.bdate_range(last + pd.offsets.BDay(1), periods=horizon) + (last - last.normalize())
    else:
        future = pd.DatetimeIndex([last + step * (i + 1) for i in range(horizon)])
    return future.to_numpy(dtype="datetime64[ns]")


def build_windows(frame: pd.DataFrame, spec: WindowSpec, symbol: str, base_seed: int = 0) -> Windows:
    """Cut a validated price frame (see :mod:`forecast_core.data`) into val/test windows."""
    n = len(frame)
    if n < spec.min_bars:
        raise ValueError(
            f"{symbol}: {n} bars is too short for {spec.n_val} validation + {spec.n_test} test windows "
            f"of horizon {spec.horizon}, stride {spec.step} and context {spec.context} "
            f"(needs {spec.min_bars}); lower n_val/n_test/context or provide more history"
        )
    count = spec.n_val + spec.n_test
    origins = np.array([n - spec.horizon - k * spec.step for k in range(count)][::-1], dtype=np.int64)
    splits = np.array([VALIDATION] * spec.n_val + [TEST] * spec.n_test)
    values = frame.loc[:, list(PRICE_COLUMNS)].to_numpy(dtype=np.float64)
    stamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]")
    ctx_idx = origins[:, None] + np.arange(-spec.context, 0)[None, :]
    tgt_idx = origins[:, None] + np.arange(spec.horizon)[None, :]
    ctx_stamps = stamps[ctx_idx]
    batch = ContextBatch(
        values=values[ctx_idx],
        timestamps=ctx_stamps,
        future_timestamps=np.stack([future_calendar(row, spec.horizon) for row in ctx_stamps]),
        seeds=np.array([window_seed(symbol, stamps[o - 1], base_seed) for o in origins], dtype=np.int64),
    )
    close = values[:, PRICE_COLUMNS.index("close")]
    return Windows(symbol, spec, origins, splits, stamps[origins], batch, close[tgt_idx], stamps[tgt_idx])
