"""Backtest windows and their validation/test split, and the layout a history allows.

A window with origin ``t`` has context bars ``[t - context, t)`` and target bars ``[t, t + horizon)``.
Origins are laid from the end of the series backwards by ``stride``: the last ``n_test`` windows are
test (held out, never used to choose), the ``n_val`` before them are validation.

A history shorter than the configured layout gets the richest layout it allows (:func:`plan_layout`),
and a history too short for even the floors gets a comparison-only layout (defaults vs persistence on
test windows) or none: "too short to tune" is an answer, not a failure.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace

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
        for field in ("horizon", "n_test", "context"):
            if getattr(self, field) < 1:
                raise ValueError(f"window spec: {field} must be >= 1, got {getattr(self, field)}")
        if self.n_val < 0:  # 0 only in comparison-only layouts (too short to tune)
            raise ValueError(f"window spec: n_val must be >= 0, got {self.n_val}")
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
            f"(needs {spec.min_bars}); use plan_layout() for the layout this history allows, or provide more history"
        )
    count = spec.n_val + spec.n_test
    origins = np.array([n - spec.horizon - k * spec.step for k in range(count)][::-1], dtype=np.int64)
    splits = np.array([VALIDATION] * spec.n_val + [TEST] * spec.n_test)
    return windows_at(frame, origins, splits, spec, symbol, base_seed)


def windows_at(frame: pd.DataFrame, origins: np.ndarray, splits: np.ndarray, spec: WindowSpec, symbol: str,
               base_seed: int = 0) -> Windows:
    """Windows at given origins (ascending bar indices), each with ``spec.context`` bars before it and
    ``spec.horizon`` target bars, seeded as every backtest window (also the forward scorecard's)."""
    origins = np.asarray(origins, dtype=np.int64)
    if len(origins) and (origins[0] < spec.context or origins[-1] + spec.horizon > len(frame)):
        raise ValueError(f"{symbol}: origins {origins[0]}..{origins[-1]} need {spec.context} context bars before "
                         f"and {spec.horizon} target bars after them within {len(frame)} bars")
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


# -- the layout a history allows ---------------------------------------------------------------------
CONTEXT_STEP = 64  # Toto's patch size: a context of whole patches wastes no bars (Toto drops partial ones)
MIN_CONTEXT = 128  # two Toto patches; also the lower end of Kronos's max_context range
MIN_COMPARE_CONTEXT = 64  # one Toto patch: the least context a default-vs-persistence comparison uses
MIN_VAL_WINDOWS = 4
MIN_TEST_WINDOWS = 2
MIN_STRIDE_FRACTION = 4  # stride may fall to horizon / 4 (consecutive targets then share 3/4 of their bars)
# What a layout adds to the config files' windows block; stored on every trial row and read back from them.
LAYOUT_FIELDS = ("history_bars", "tunable", "layout_reason", "effective_val_windows", "effective_test_windows")


@dataclass(frozen=True)
class Layout:
    """The windows one symbol's history gets, why, and how much evidence they carry.

    ``spec`` is None when not even one comparison window fits. ``tunable`` is False for
    comparison-only layouts (``n_val == 0``): each model keeps its default config.
    """

    requested: WindowSpec
    bars: int
    spec: WindowSpec | None
    tunable: bool
    reason: str

    @classmethod
    def as_requested(cls, spec: WindowSpec, bars: int) -> "Layout":
        """``spec`` used as it is (a history long enough for it, or a layout chosen by hand)."""
        return cls(spec, bars, spec, spec.n_val > 0, "requested layout")

    @property
    def needed_to_tune(self) -> int:
        return tuning_floor(self.requested).min_bars

    def evidence(self) -> dict:
        """Window counts, and the span of their targets in horizons: overlapping windows (stride < H)
        carry less independent evidence than their count suggests."""
        if self.spec is None:
            return {"n_val": 0, "n_test": 0, "effective_val_windows": 0.0, "effective_test_windows": 0.0}
        spec = self.spec

        def span(count: int) -> float:
            return round(((count - 1) * spec.step + spec.horizon) / spec.horizon, 3) if count else 0.0

        return {"n_val": spec.n_val, "n_test": spec.n_test, "effective_val_windows": span(spec.n_val),
                "effective_test_windows": span(spec.n_test)}

    def as_dict(self) -> dict:
        """The config files' ``windows`` block: the window fields, then the layout's reason and evidence."""
        spec, evidence = self.spec, self.evidence()
        return {
            "n_val": evidence["n_val"],
            "n_test": evidence["n_test"],
            "forecast_horizon": self.requested.horizon,
            "stride": spec.step if spec else self.requested.step,
            "context": spec.context if spec else 0,
            "history_bars": self.bars,
            "tunable": self.tunable,
            "layout_reason": self.reason,
            "effective_val_windows": evidence["effective_val_windows"],
            "effective_test_windows": evidence["effective_test_windows"],
        }


def tuning_floor(requested: WindowSpec) -> WindowSpec:
    """The smallest layout still worth tuning on: every knob of ``requested`` at its floor."""
    return WindowSpec(requested.horizon, min(requested.n_val, MIN_VAL_WINDOWS),
                      min(requested.n_test, MIN_TEST_WINDOWS), _min_stride(requested),
                      min(requested.context, MIN_CONTEXT))


def _min_stride(spec: WindowSpec) -> int:
    return min(spec.step, max(1, spec.horizon // MIN_STRIDE_FRACTION))


def _largest_context(bars: int, spec: WindowSpec, floor: int) -> int | None:
    """The longest context (whole CONTEXT_STEPs unless below one, never above the request) that fits."""
    room = bars - (spec.min_bars - spec.context)
    if room >= spec.context:
        return spec.context
    context = room // CONTEXT_STEP * CONTEXT_STEP if room >= CONTEXT_STEP else room
    return context if context >= floor else None


def plan_layout(bars: int, requested: WindowSpec) -> Layout:
    """The richest layout ``bars`` allow, by one rule, each step taken only if the previous cannot fit:

    1. the requested layout;
    2. a shorter context, in whole Toto patches, down to ``MIN_CONTEXT``;
    3. fewer windows (the larger of n_val and n_test first, test first on ties) down to
       ``MIN_VAL_WINDOWS`` / ``MIN_TEST_WINDOWS``;
    4. overlapping windows: the largest stride that fits, down to horizon / ``MIN_STRIDE_FRACTION``.
    Below that the history is too short to tune: a comparison-only layout (test windows of each
    model's default config and persistence, context down to ``MIN_COMPARE_CONTEXT``), or none.
    Floors never exceed what was requested (a requested context of 64 stays 64).
    """
    floor = tuning_floor(requested)
    if bars >= requested.min_bars:
        return Layout.as_requested(requested, bars)
    context = _largest_context(bars, requested, floor.context)
    if context is not None:
        spec = replace(requested, context=context)
        return Layout(requested, bars, spec, True, _shortened(bars, requested, spec))
    spec = replace(requested, context=floor.context)
    while spec.n_val > floor.n_val or spec.n_test > floor.n_test:
        shrink_test = spec.n_test >= spec.n_val and spec.n_test > floor.n_test or spec.n_val <= floor.n_val
        spec = replace(spec, n_test=spec.n_test - 1) if shrink_test else replace(spec, n_val=spec.n_val - 1)
        if bars >= spec.min_bars:
            return Layout(requested, bars, spec, True, _shortened(bars, requested, spec))
    room = bars - spec.context - spec.horizon
    windows = spec.n_val + spec.n_test - 1
    stride = room // windows if windows else spec.step
    if stride >= floor.step:
        spec = replace(spec, stride=min(stride, spec.step))
        return Layout(requested, bars, spec, True, _shortened(bars, requested, spec))
    reason = f"insufficient history: {bars} bars, tuning needs {floor.min_bars}"
    compare = _comparison_layout(bars, requested)
    if compare is None:
        return Layout(requested, bars, None, False, f"{reason}; too short for any comparison window "
                                                    f"(needs {MIN_COMPARE_CONTEXT + requested.horizon})")
    return Layout(requested, bars, compare, False, f"{reason}; defaults compared with persistence on "
                                                   f"{compare.n_test} test window(s)")


def _comparison_layout(bars: int, requested: WindowSpec) -> WindowSpec | None:
    """Test windows only, at the least stride, by the same order: context first (down to
    ``MIN_COMPARE_CONTEXT``), then fewer windows (from the tuning floor's count down to one)."""
    floor = tuning_floor(requested)
    for count in range(floor.n_test, 0, -1):
        spec = WindowSpec(requested.horizon, 0, count, floor.step, floor.context)
        context = _largest_context(bars, spec, min(MIN_COMPARE_CONTEXT, requested.context))
        if context is not None:
            return replace(spec, context=context)
    return None


def _shortened(bars: int, requested: WindowSpec, spec: WindowSpec) -> str:
    changed = [f"{name} {getattr(requested, name)}->{getattr(spec, name)}" for name in ("context", "n_val", "n_test")
               if getattr(requested, name) != getattr(spec, name)]
    if spec.step != requested.step:
        changed.append(f"stride {requested.step}->{spec.step} (windows overlap)")
    return f"shortened for {bars} bars (requested layout needs {requested.min_bars}): {', '.join(changed)}"
