"""Synthetic price frames for tests and benchmarks: geometric random walks with consistent OHLCV."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import FRAME_COLUMNS


def make_prices(n: int = 400, seed: int = 0, start: str = "2020-01-01", price: float = 100.0,
                volatility: float = 0.02, calendar: str = "B") -> pd.DataFrame:
    """A normalised frame of ``n`` bars (business days by default, ``calendar="D"`` for crypto)."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0.0003, volatility, n)))
    open_ = np.concatenate([[price], close[:-1]]) * np.exp(rng.normal(0, volatility / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, volatility / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, volatility / 2, n)))
    volume = rng.integers(1_000, 100_000, n).astype(np.float64)
    frame = pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq=calendar).astype("datetime64[ns]"),
        "open": open_, "high": high, "low": low, "close": close, "volume": volume,
        "amount": volume * (open_ + high + low + close) / 4,
    })
    return frame.loc[:, list(FRAME_COLUMNS)]
