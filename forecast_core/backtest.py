"""Score forecasters on backtest windows: one row per (trial, window).

Sample once, score many: a forecaster draws the largest sample count once per window; every trial
that differs only in sample count (a prefix) or aggregation is scored from those same paths. A
quantile forecast (Toto 2.0) is one array of levels instead of samples; every point rule is scored
from that one forward pass.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .aggregate import aggregate, parse_aggregation, quantile_point
from .forecasters import Forecaster
from .metrics import score_quantile_windows, score_windows
from .windows import Windows


@dataclass(frozen=True)
class Trial:
    """One inference config of one model. ``knobs`` is what a config file stores.

    ``is_default`` marks the model's upstream default config, the reference a tuned config must
    beat; it is a label, not part of the config's identity.
    """

    model: str
    knobs: Mapping[str, Any] = field(default_factory=dict)
    num_samples: int = 1
    aggregate: str = "mean"
    is_default: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        parse_aggregation(self.aggregate)
        if self.num_samples < 1:
            raise ValueError(f"{self.model}: num_samples must be >= 1, got {self.num_samples}")

    @property
    def config_json(self) -> str:
        return json.dumps(dict(self.knobs), sort_keys=True, separators=(",", ":"))

    @property
    def config_hash(self) -> str:
        return hashlib.sha256(f"{self.model}|{self.config_json}".encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.knobs.items())]
        return f"{self.model}[{','.join(parts)}]" if parts else self.model


@dataclass(frozen=True)
class Draw:
    """Sample paths (or quantiles) of every window from one forecaster call, and what that call cost.

    ``levels`` set: ``paths`` holds a quantile forecast, axis 1 its levels (no samples).
    """

    paths: np.ndarray  # [windows, samples or levels, horizon]
    seconds_per_window: float
    levels: tuple[float, ...] | None = None

    def point(self, trial: "Trial") -> np.ndarray:
        """The trial's point forecast ``[W, H]``: its aggregation of its sample prefix, or its rule over the levels."""
        if self.levels is not None:
            return quantile_point(self.paths, self.levels, trial.aggregate, level_axis=1)
        return aggregate(self.paths[:, : trial.num_samples], trial.aggregate, sample_axis=1)

    def band(self, trial: "Trial") -> tuple[np.ndarray, np.ndarray]:
        """The 10% and 90% quantiles ``[W, H]`` (of the trial's samples, or the forecast's levels)."""
        if self.levels is not None:
            return self.paths[:, self.levels.index(0.1)], self.paths[:, self.levels.index(0.9)]
        low, high = np.quantile(self.paths[:, : trial.num_samples], [0.1, 0.9], axis=1)
        return low, high


def check_paths(paths: np.ndarray, windows: Windows, label: str) -> np.ndarray:
    """Paths as float64 ``[W, S, H]``, or a clear error naming the model and symbol."""
    paths = np.asarray(paths, dtype=np.float64)
    if paths.ndim != 3 or paths.shape[0] != len(windows) or paths.shape[2] != windows.spec.horizon:
        raise ValueError(f"{label} returned paths of shape {paths.shape} for {windows.symbol}, expected "
                         f"[windows={len(windows)}, samples, horizon={windows.spec.horizon}]")
    if not np.isfinite(paths).all():
        raise ValueError(f"{label} returned non-finite sample paths for {windows.symbol}")
    return paths


def draw(forecaster: Forecaster, windows: Windows, num_samples: int) -> Draw:
    """Sample paths of every window from one forecaster call, timed."""
    start = time.perf_counter()
    paths = forecaster.sample_paths(windows.batch, num_samples)
    elapsed = time.perf_counter() - start
    return Draw(check_paths(paths, windows, forecaster.name), elapsed / max(len(windows), 1))


def score_trials(windows: Windows, drawn: Draw, trials: Sequence[Trial],
                 latency: Mapping[int, float] | None = None) -> pd.DataFrame:
    """Metrics of every trial on every window, from one draw (trials use a prefix of its samples).

    ``seconds`` is the measured wall time of one single-window forecast at the trial's sample count
    when ``latency`` has it, else the draw's time per window; ``draw_seconds`` is always the latter.
    """
    available = drawn.paths.shape[1]
    hashes = [t.config_hash for t in trials]
    if len(set(hashes)) != len(hashes):  # their rows (and stored files) would be mixed up
        twins = sorted({f"{t.name} ({t.num_samples} samples, {t.aggregate})"
                        for t in trials if hashes.count(t.config_hash) > 1})
        raise ValueError(f"trials with the same config hash: {', '.join(twins)}; put every knob that changes "
                         "the numbers (e.g. num_samples, aggregate) in knobs")
    context_close = windows.batch.column("close")
    frames = []
    for trial in trials:
        point = drawn.point(trial)
        if drawn.levels is not None:
            metrics = score_quantile_windows(point, drawn.paths, drawn.levels, windows.targets, context_close)
        elif trial.num_samples > available:
            raise ValueError(f"{trial.name} needs {trial.num_samples} samples but only {available} were drawn")
        else:
            metrics = score_windows(point, drawn.paths[:, : trial.num_samples], windows.targets, context_close)
        frames.append(pd.DataFrame({
            "symbol": windows.symbol,
            "model": trial.model,
            "config_name": trial.name,
            "config_json": trial.config_json,
            "config_hash": trial.config_hash,
            "split": windows.splits,
            "window_origin": pd.to_datetime(windows.origin_timestamps),
            "origin_index": windows.origins,
            "seed": windows.batch.seeds,
            **metrics,
            "seconds": (latency or {}).get(trial.num_samples, drawn.seconds_per_window),
            "draw_seconds": drawn.seconds_per_window,
            "drawn_samples": available,
            "is_default": trial.is_default,
        }))
    return pd.concat(frames, ignore_index=True)


def last_window_forecast(window: Windows, drawn: Draw, trial: Trial) -> pd.DataFrame:
    """Point forecast, 10-90% band and actuals of a single window (for plots); ``drawn`` holds that window."""
    drawn = Draw(check_paths(drawn.paths, window, trial.model), drawn.seconds_per_window, drawn.levels)
    low, high = drawn.band(trial)
    return pd.DataFrame({
        "timestamp": pd.to_datetime(window.target_timestamps[0]),
        "actual": window.targets[0],
        "forecast": drawn.point(trial)[0],
        "p10": low[0],
        "p90": high[0],
    })
