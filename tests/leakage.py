"""The no-leakage property every forecaster must satisfy.

Overwriting every bar at or after a window's origin with garbage (prices and timestamps alike) must
leave that window's sample paths, and so its metrics, unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast_core.forecasters import Forecaster
from forecast_core.windows import WindowSpec, build_windows


def garbage_after(frame: pd.DataFrame, origin: int, seed: int = 123) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spoiled = frame.copy()
    rows = slice(origin, None)
    n = len(frame) - origin
    for col in ("open", "high", "low", "close", "volume", "amount"):
        spoiled.loc[spoiled.index[rows], col] = rng.uniform(1e3, 1e6, n)
    # Later timestamps shift too (still sorted), so calendar features cannot leak either.
    spoiled.loc[spoiled.index[rows], "timestamp"] = (
        frame["timestamp"].iloc[origin - 1] + pd.to_timedelta(np.arange(1, n + 1) * 3, unit="D")
    )
    return spoiled


def assert_no_leakage(forecaster: Forecaster, frame: pd.DataFrame, spec: WindowSpec, num_samples: int = 4,
                      symbol: str = "LEAK") -> None:
    """For every window: forecast on clean data vs data spoiled from its origin on; paths must match.

    The spoiled batch has the same shape as the clean one, so any difference is leakage (through the
    window's own context, its calendar, its seed, or statistics shared across the batch).
    """
    clean = build_windows(frame, spec, symbol)
    clean_paths = forecaster.sample_paths(clean.batch, num_samples)
    assert np.isfinite(clean_paths).all(), f"{forecaster.name}: non-finite sample paths"
    for i, origin in enumerate(clean.origins):
        spoiled = build_windows(garbage_after(frame, int(origin)), spec, symbol)
        assert spoiled.origins[i] == origin
        paths = forecaster.sample_paths(spoiled.batch, num_samples)
        np.testing.assert_array_equal(
            paths[i], clean_paths[i], err_msg=f"{forecaster.name}: window at bar {origin} saw the future"
        )
