"""Price frames: symbol validation, column normalisation and data-quality checks.

A normalised frame has columns ``timestamp, open, high, low, close, volume, amount`` with one row per
bar, ascending unique timestamps (tz-naive UTC). ``amount`` (traded value, used by Kronos) is derived
as ``volume * mean(open, high, low, close)`` when the source has none; ``volume`` defaults to 0.
A source *with* a volume column must fill it: a missing (NaN) volume or amount on any bar is a
blocking failure of ``no_missing_prices``, because Kronos reads both and would be fed a made-up
number (0 would read as "no trades"). Fill those bars in the source (0 where nothing traded), drop
them, or let the source's missing policy do either (:mod:`forecast_core.repairs`).

With ``price_field="adj_close"`` the adjusted close (``Adj Close``, ``adjusted``) becomes the close and
open/high/low are scaled by the same per-bar factor ``adj_close / close``; volume is divided by it so
that ``amount`` (traded value) is unchanged: the standard inverse adjustment for the split part of the
factor, and within a few percent of the raw volume for the dividend part.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .forecasters import PRICE_COLUMNS, derived_amount
from .repairs import check_choice, split_gaps

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._=^-]{0,31}$")
FRAME_COLUMNS = ("timestamp", *PRICE_COLUMNS)
_TIMESTAMP_NAMES = ("timestamp", "date", "datetime", "time", "timestamps")
_ALIASES = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "price"),
    "volume": ("volume", "vol", "v"),
    "amount": ("amount", "turnover", "value"),
}
_ADJ_CLOSE = ("adj_close", "adjclose", "adj._close", "adjusted_close", "adjusted")


class InvalidSymbolError(ValueError):
    """A symbol that could be unsafe in a path or query, or is not a ticker at all."""


class PriceDataError(ValueError):
    """Price data that cannot be used; the message names the symbol/file and what is wrong."""


def validate_symbol(symbol: object) -> str:
    """Return the canonical (upper-case) symbol, or raise before it reaches any path or SQL."""
    text = str(symbol).strip().upper() if isinstance(symbol, str) else ""
    if not SYMBOL_PATTERN.match(text):
        raise InvalidSymbolError(
            f"invalid symbol {symbol!r}: use 1-32 characters from A-Z, 0-9 and . _ - = ^, "
            "starting with a letter or digit (e.g. NVDA, BRK.B, BTC-USD)"
        )
    return text


def _pick(columns: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in columns:
            return columns[name]
    return None


def normalize_prices(raw: pd.DataFrame, source: str, price_field: str = "close") -> pd.DataFrame:
    """Map a raw OHLCV table (any common layout) to the normalised frame.

    Accepts ``timestamp|date|Date|Datetime`` (as a column or the index), upper/lower-case OHLCV,
    optional ``amount``; ``Adj Close`` is used only with ``price_field="adj_close"`` (see the module
    docstring), extra index columns are ignored. Structural problems raise :class:`PriceDataError`;
    value problems are left to :func:`quality_checks`.
    """
    check_choice("price_field", price_field)
    if raw is None or raw.empty:
        raise PriceDataError(f"{source}: no rows (empty file or empty download)")
    table = raw.copy()
    if isinstance(table.columns, pd.MultiIndex):  # yfinance: (field, ticker)
        table.columns = [str(c[0]) for c in table.columns]
    lowered = {str(c).strip().lower().replace(" ", "_"): c for c in table.columns}
    ts_col = _pick(lowered, _TIMESTAMP_NAMES)
    if ts_col is None:
        index_name = str(table.index.name or "").strip().lower()
        if index_name in _TIMESTAMP_NAMES or isinstance(table.index, pd.DatetimeIndex):
            table = table.reset_index()
            ts_col = table.columns[0]
        else:
            raise PriceDataError(
                f"{source}: no timestamp column; expected one of {', '.join(_TIMESTAMP_NAMES)} "
                f"(case-insensitive), found {list(map(str, raw.columns))}"
            )
    out = pd.DataFrame(index=range(len(table)))
    try:
        stamps = pd.to_datetime(table[ts_col].to_numpy(), utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise PriceDataError(f"{source}: column {ts_col!r} has values that are not dates ({exc})") from None
    if stamps.isna().any():
        raise PriceDataError(f"{source}: column {ts_col!r} has a missing date at row {int(stamps.isna().argmax())}")
    out["timestamp"] = stamps.tz_convert(None).astype("datetime64[ns]")
    for name, aliases in _ALIASES.items():
        col = _pick(lowered, aliases)
        if col is None:
            if name in ("open", "high", "low", "close"):
                raise PriceDataError(
                    f"{source}: missing required column {name!r}; found {list(map(str, raw.columns))}"
                )
            continue
        values = pd.to_numeric(table[col].to_numpy(), errors="coerce")
        bad = pd.isna(values) & table[col].notna().to_numpy()
        if bad.any():
            example = table[col].to_numpy()[bad.argmax()]
            raise PriceDataError(
                f"{source}: column {name!r} has non-numeric values, e.g. {example!r} "
                f"at row {int(bad.argmax())}"
            )
        out[name] = np.asarray(values, dtype=np.float64)
    if "volume" not in out:
        out["volume"] = 0.0
    if "amount" not in out:
        out["amount"] = derived_amount(out)
    if price_field == "adj_close":
        _use_adjusted_close(out, table, lowered, source)
    return out.loc[:, list(FRAME_COLUMNS)]


def _use_adjusted_close(out: pd.DataFrame, table: pd.DataFrame, lowered: dict[str, str], source: str) -> None:
    col = _pick(lowered, _ADJ_CLOSE)
    if col is None:
        raise PriceDataError(
            f"{source}: price_field is adj_close but there is no adjusted close column (one of "
            f"{', '.join(_ADJ_CLOSE)}, any case); found {list(map(str, table.columns))}; use price_field close"
        )
    adjusted = pd.to_numeric(table[col].to_numpy(), errors="coerce").astype(np.float64)
    bad = pd.isna(adjusted) & table[col].notna().to_numpy()
    if bad.any():
        raise PriceDataError(f"{source}: column {str(col)!r} has non-numeric values, e.g. "
                             f"{table[col].to_numpy()[bad.argmax()]!r} at row {int(bad.argmax())}")
    factor = adjusted / out["close"].to_numpy()
    out[["open", "high", "low"]] = out[["open", "high", "low"]].mul(factor, axis=0)
    out["close"] = adjusted
    out["volume"] = out["volume"] / factor


@dataclass(frozen=True)
class CheckOutcome:
    """One data-quality check. ``blocking`` failures mean the data must not be stored or used."""

    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict = field(default_factory=dict)
    problem: str = ""  # the failure without the symbol, to join several into one message


def rejection_message(symbol: str, failures: list[CheckOutcome], what: str = "") -> str:
    """One message for all blocking failures, naming the symbol once."""
    return f"{symbol}: {what}" + "; ".join(c.problem or c.description for c in failures)


def quality_checks(
    frame: pd.DataFrame, symbol: str, split_threshold: float = 0.45, max_gap_days: int = 5
) -> list[CheckOutcome]:
    """All data-quality checks of a normalised frame, blocking and warning ones alike.

    History length is not among them: a short history is not bad data, it gets a smaller window
    layout or "too short to tune" (:func:`forecast_core.windows.plan_layout`).
    """
    ts = frame["timestamp"]
    ohlc = frame[["open", "high", "low", "close"]]
    diffs = ts.diff().dropna()
    checks: list[CheckOutcome] = []

    def add(name: str, passed: bool, blocking: bool, ok: str, bad: str, **metadata) -> None:
        checks.append(CheckOutcome(name, bool(passed), blocking, ok if passed else f"{symbol}: {bad}", metadata,
                                   "" if passed else bad))

    dup = int(ts.duplicated().sum())
    unsorted = int((diffs < pd.Timedelta(0)).sum())
    add("sorted_unique_timestamps", dup == 0 and unsorted == 0, True, "timestamps ascending and unique",
        f"{dup} duplicate and {unsorted} out-of-order timestamps; sort and de-duplicate the source",
        duplicates=dup, out_of_order=unsorted)
    nan_close = int((~np.isfinite(frame["close"])).sum())  # NaN or +-inf
    nan_other = int((~np.isfinite(frame[["open", "high", "low"]])).sum().sum())
    bad_bars = ~np.isfinite(ohlc).all(axis=1)
    bad_volume = ~np.isfinite(frame[["volume", "amount"]]).all(axis=1)  # Kronos reads both
    nan_bars, nan_volume = int(bad_bars.sum()), int(bad_volume.sum())
    first_bar = f", first on {ts[bad_bars].iloc[0].date()}" if nan_bars else ""
    first_volume = f", first on {ts[bad_volume].iloc[0].date()}" if nan_volume else ""
    missing = [text for count, text in (
        (nan_bars, f"{nan_bars} bars with missing (NaN or infinite) OHLC{first_bar} ({nan_close} missing close "
                   f"values, {nan_other} missing open/high/low values)"),
        (nan_volume, f"{nan_volume} bars with missing (NaN or infinite) volume/amount{first_volume}")) if count]
    add("no_missing_prices", not missing, True, "no missing OHLC, volume or amount values",
        f"{', '.join(missing)}; fill them in the source (volume 0 where nothing traded), "
        "or set the price source's missing policy to drop or ffill (HPO_MISSING_POLICY for the CLI)",
        missing_bars=nan_bars, missing_close=nan_close, missing_open_high_low=nan_other,
        missing_volume_bars=nan_volume)
    nonpositive = int((ohlc <= 0).sum().sum())
    negative_volume = int((frame["volume"] < 0).sum())
    add("positive_prices", nonpositive == 0 and negative_volume == 0, True, "prices > 0 and volume >= 0",
        f"{nonpositive} non-positive prices and {negative_volume} negative volumes",
        non_positive_prices=nonpositive, negative_volumes=negative_volume)
    tol = 1e-6 * ohlc.abs().max(axis=1)
    inconsistent = int(
        ((frame["high"] + tol < ohlc[["open", "close", "low"]].max(axis=1))
         | (frame["low"] - tol > ohlc[["open", "close", "high"]].min(axis=1))).sum()
    )
    add("high_low_consistent", inconsistent == 0, True, "low <= open, close <= high on every bar",
        f"{inconsistent} bars where high < max(open, close, low) or low > min(open, close, high)",
        inconsistent_bars=inconsistent)
    gaps = diffs[diffs > pd.Timedelta(days=max_gap_days)]
    add("no_large_gaps", gaps.empty, False, f"no gaps over {max_gap_days} days",
        f"{len(gaps)} gaps over {max_gap_days} days, largest {gaps.max() if len(gaps) else 0}",
        gaps=len(gaps))
    moves = np.abs(np.log(frame["close"].where(frame["close"] > 0)).diff()).to_numpy()
    flagged = moves > np.log1p(split_threshold)
    flagged[[row for row, _ in split_gaps(frame)]] = True  # a 3:2 split moves only 33%
    jumps = frame.loc[flagged, "timestamp"]
    add("no_suspected_splits", jumps.empty, False,
        f"no single-bar move over {split_threshold:.0%} and no gap matching a split ratio",
        f"{len(jumps)} single-bar moves over {split_threshold:.0%} or gaps matching a split ratio "
        f"first on {jumps.iloc[0].date() if len(jumps) else ''} (unadjusted split? the price source's "
        "splits policy adjust (HPO_SPLITS) back-adjusts jumps matching a common ratio)", suspected_splits=len(jumps))
    return checks


def blocking_failures(checks: list[CheckOutcome]) -> list[CheckOutcome]:
    return [c for c in checks if c.blocking and not c.passed]


def validate_prices(frame: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """Raise :class:`PriceDataError` listing every blocking problem; return the frame otherwise."""
    failures = blocking_failures(quality_checks(frame, symbol))
    if failures:
        raise PriceDataError(rejection_message(symbol, failures))
    return frame


def data_version(frame: pd.DataFrame) -> str:
    """Content hash of a normalised frame: changes whenever any bar changes or is added."""
    digest = hashlib.sha256()
    digest.update(frame["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64).tobytes())
    digest.update(np.ascontiguousarray(frame.loc[:, list(PRICE_COLUMNS)].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()[:16]
