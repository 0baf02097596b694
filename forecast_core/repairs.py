"""Explicit repairs of a normalised price frame: missing bars and unadjusted splits.

Nothing here runs unless the price source's policy asks for it; every change is recorded in a
:class:`RepairReport` so the stored history says how it differs from the source.

Telling a split from a crash. Prices alone cannot: a stock that opens exactly 50% down is a 2:1 split
or a disaster. A split takes effect between two sessions and changes the share count, so a bar is
taken for a split with ratio ``r`` (prices divided by ``r`` from that bar on) only when

1. the overnight gap ``previous close / open`` is within ``SPLIT_GAP_TOLERANCE`` (log) of a ratio in
   ``SPLIT_RATIOS``: an exact ratio plus an ordinary overnight move; an intraday crash fails here;
2. the jump persists: ``previous close / close`` is within ``SPLIT_CLOSE_TOLERANCE`` (log) of ``r``;
3. where the source records volume, shares traded change by about ``r``: the median volume of the
   ``SPLIT_VOLUME_BARS`` bars from the jump over that of the bars before is within a factor
   ``SPLIT_VOLUME_TOLERANCE`` of ``r``. Crashes trade several times the usual volume (META 2022-02-03:
   x4, NFLX 2022-04-20: x9 in the embedded data), splits about ``r`` times it.

Without volume (all zero) only 1 and 2 decide. A crash that gaps to within 3% of an exact ratio on
ordinary volume is indistinguishable from a split: that is why ``adjust`` is opt-in and every
adjustment (and every rejected candidate, with the reason) is listed in the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np
import pandas as pd

from .forecasters import derived_amount

MISSING_POLICIES = ("reject", "drop", "ffill")
SPLIT_POLICIES = ("warn", "adjust")
PRICE_FIELDS = ("close", "adj_close")
POLICY_ENV = {"missing": "HPO_MISSING_POLICY", "splits": "HPO_SPLITS", "price_field": "HPO_PRICE_FIELD"}
_ALLOWED = {"missing": MISSING_POLICIES, "splits": SPLIT_POLICIES, "price_field": PRICE_FIELDS}

_FORWARD = (Fraction(2), Fraction(3), Fraction(3, 2), Fraction(4), Fraction(5), Fraction(8), Fraction(10),
            Fraction(20))
SPLIT_RATIOS = _FORWARD + tuple(1 / r for r in _FORWARD)  # 2 = 2-for-1, 1/10 = 1-for-10 reverse split
SPLIT_GAP_TOLERANCE = 0.03  # log distance of the overnight gap from the ratio (ratios are >= 0.22 apart)
SPLIT_CLOSE_TOLERANCE = 0.10  # log distance of the close-to-close move from the ratio
SPLIT_VOLUME_BARS = 5  # bars each side whose median volume is compared
SPLIT_VOLUME_TOLERANCE = 2.0  # allowed factor between the volume change and the ratio
OHLC = ["open", "high", "low", "close"]
FIRST_DATES = 10  # dates listed in metadata


def check_choice(name: str, value: object) -> str:
    """Return ``value`` if allowed for policy field ``name``; otherwise a ValueError saying how to fix it."""
    allowed = _ALLOWED[name]
    if value not in allowed:
        raise ValueError(f"price source field {name!r} is {value!r}; use one of {', '.join(allowed)} "
                         f"(in the prices resource config, or ${POLICY_ENV[name]} for the CLI)")
    return str(value)


def policy_default(name: str) -> str:
    """The default of a policy field: its environment variable, else the first allowed value."""
    return os.environ.get(POLICY_ENV[name], "").strip() or _ALLOWED[name][0]


@dataclass(frozen=True)
class PricePolicy:
    """How a source treats missing bars, unadjusted splits and which close it scores on."""

    missing: str = "reject"
    splits: str = "warn"
    price_field: str = "close"

    def __post_init__(self):
        for name in _ALLOWED:
            check_choice(name, getattr(self, name))

    @classmethod
    def from_env(cls) -> PricePolicy:
        return cls(**{name: policy_default(name) for name in _ALLOWED})


@dataclass(frozen=True)
class SplitEvent:
    """A bar whose gap matched a split ratio; ``adjusted`` says whether earlier bars were rescaled."""

    date: pd.Timestamp
    ratio: Fraction  # prices divided by this from ``date`` on
    gap: float  # observed previous close / open
    volume_change: float | None  # median volume after / before; None without volume
    adjusted: bool
    note: str

    @property
    def label(self) -> str:
        return f"{self.ratio.numerator}:{self.ratio.denominator}"


@dataclass(frozen=True)
class RepairReport:
    """Every bar a policy changed, and every split candidate.

    ``filled``: rebuilt from the last close (ffill); ``dropped``: removed (drop, or leading bars ffill
    has no close for); ``volume_zeroed``: complete OHLC, missing volume set to 0 (missing amount derived).
    """

    policy: PricePolicy = field(default_factory=PricePolicy)
    filled: tuple[pd.Timestamp, ...] = ()
    dropped: tuple[pd.Timestamp, ...] = ()
    volume_zeroed: tuple[pd.Timestamp, ...] = ()
    splits: tuple[SplitEvent, ...] = ()

    @property
    def changed(self) -> list[pd.Timestamp]:
        return sorted(set(self.filled) | set(self.dropped) | set(self.volume_zeroed))

    @property
    def adjustments(self) -> list[SplitEvent]:
        return [s for s in self.splits if s.adjusted]

    def splits_markdown(self) -> str:
        rows = [f"| {s.date.date()} | {s.label} | {s.gap:.4f} | "
                f"{'-' if s.volume_change is None else f'{s.volume_change:.2f}'} | "
                f"{'yes' if s.adjusted else 'no'} | {s.note} |" for s in self.splits]
        return "\n".join(["| date | ratio | gap | volume change | adjusted | note |",
                          "| --- | --- | --- | --- | --- | --- |", *rows])

    def metadata(self) -> dict[str, int | str]:
        """Plain values for asset metadata (the markdown table under ``split_table``)."""
        changed = self.changed
        listed = ", ".join(str(d.date()) for d in changed[:FIRST_DATES])
        more = f" (+{len(changed) - FIRST_DATES} more)" if len(changed) > FIRST_DATES else ""
        meta: dict[str, int | str] = {
            "price_field": self.policy.price_field, "missing_policy": self.policy.missing,
            "split_policy": self.policy.splits, "repaired_bars": len(changed),
            "repaired_first_dates": listed + more, "filled_bars": len(self.filled),
            "dropped_bars": len(self.dropped), "volume_zeroed_bars": len(self.volume_zeroed),
            "split_adjustments": len(self.adjustments),
        }
        if self.splits:
            meta["split_table"] = self.splits_markdown()
        return meta


def repair_prices(frame: pd.DataFrame, policy: PricePolicy) -> tuple[pd.DataFrame, RepairReport]:
    """Apply ``policy`` to a normalised frame; return the new frame and what changed.

    ``reject`` changes nothing (the ``no_missing_prices`` check then blocks). Splits are looked for
    after missing bars are repaired, so a filled bar never hides a gap.
    """
    out = frame.reset_index(drop=True).copy()
    filled, dropped, zeroed = [], [], []
    if policy.missing != "reject":
        out, filled, dropped, zeroed = _repair_missing(out, policy.missing)
    found = find_splits(out)
    if policy.splits == "adjust":
        out = _back_adjust(out, [(row, e.ratio) for row, e in found if e.adjusted])
        events = [e for _, e in found]
    else:
        events = [replace(e, adjusted=False, note="not adjusted (splits: warn)" if e.adjusted else e.note)
                  for _, e in found]
    return out, RepairReport(policy, tuple(filled), tuple(dropped), tuple(zeroed), tuple(events))


def _repair_missing(frame: pd.DataFrame, how: str):
    ts = frame["timestamp"]
    bad = ~np.isfinite(frame[OHLC].to_numpy()).all(axis=1)
    filled: list = []
    if how == "ffill":
        last_close = frame["close"].where(~bad).ffill()
        fillable = bad & last_close.notna().to_numpy()
        filled = list(ts[fillable])
        for col in OHLC:
            frame.loc[fillable, col] = last_close[fillable]
        frame.loc[fillable, ["volume", "amount"]] = 0.0
        bad = bad & ~fillable  # leading bars: no close to carry
    dropped = list(ts[bad])
    frame = frame.loc[~bad].reset_index(drop=True)
    no_volume = ~np.isfinite(frame["volume"].to_numpy())
    zeroed = list(frame.loc[no_volume, "timestamp"])
    frame.loc[no_volume, "volume"] = 0.0
    no_amount = ~np.isfinite(frame["amount"].to_numpy())
    frame.loc[no_amount, "amount"] = derived_amount(frame.loc[no_amount])
    zeroed = sorted(set(zeroed) | set(frame.loc[no_amount, "timestamp"]))
    return frame, filled, dropped, zeroed


def _nearest_ratio(jump: float) -> Fraction | None:
    if not (np.isfinite(jump) and jump > 0):
        return None
    best = min(SPLIT_RATIOS, key=lambda r: abs(np.log(jump / float(r))))
    return best if abs(np.log(jump / float(best))) <= SPLIT_GAP_TOLERANCE else None


def split_gaps(frame: pd.DataFrame) -> list[tuple[int, Fraction]]:
    """Rows whose overnight gap and close-to-close move both match a split ratio (rules 1 and 2)."""
    prev = frame["close"].shift().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.log(prev / frame["open"].to_numpy())
        moves = np.log(prev / frame["close"].to_numpy())
    found = []
    for i in np.flatnonzero(np.abs(gaps) >= np.log(1.5) - SPLIT_GAP_TOLERANCE):  # NaN compares False
        ratio = _nearest_ratio(float(np.exp(gaps[i])))
        if ratio is not None and abs(moves[i] - np.log(float(ratio))) <= SPLIT_CLOSE_TOLERANCE:
            found.append((int(i), ratio))
    return found


def find_splits(frame: pd.DataFrame) -> list[tuple[int, SplitEvent]]:
    """Split candidates (row, event) with the volume evidence (rule 3); ``adjusted`` marks those that pass."""
    volume = frame["volume"].to_numpy()
    events = []
    for i, ratio in split_gaps(frame):
        date = frame["timestamp"].iloc[i]
        gap = float(frame["close"].iloc[i - 1] / frame["open"].iloc[i])
        before = float(np.median(volume[max(0, i - SPLIT_VOLUME_BARS):i]))
        after = float(np.median(volume[i:i + SPLIT_VOLUME_BARS]))
        if not (before > 0 and after > 0):
            events.append((i, SplitEvent(date, ratio, gap, None, True, "gap only (no volume)")))
            continue
        change = after / before
        ok = bool(abs(np.log(change / float(ratio))) <= np.log(SPLIT_VOLUME_TOLERANCE))
        note = "gap and volume" if ok else f"volume x{change:.2f}, a split gives x{float(ratio):.2f}: crash?"
        events.append((i, SplitEvent(date, ratio, gap, change, ok, note)))
    return events


def _back_adjust(frame: pd.DataFrame, splits: list[tuple[int, Fraction]]) -> pd.DataFrame:
    """Divide OHLC before each split by the product of the later ratios; multiply volume by it.

    ``amount`` (traded value) does not change in a split. Each value is multiplied and divided once by
    small integers, so powers of two are exact and other ratios differ from adjusted data by rounding.
    """
    out = frame.copy()
    factor, end = Fraction(1), len(frame)
    for start, ratio in [*sorted(splits, reverse=True), (0, Fraction(1))]:
        if factor != 1:
            rows = out.index[start:end]
            out.loc[rows, OHLC] = frame.loc[rows, OHLC] * factor.denominator / factor.numerator
            out.loc[rows, "volume"] = frame.loc[rows, "volume"] * factor.numerator / factor.denominator
        factor, end = factor * ratio, start
    return out
