"""Price history per symbol, with blocking data-quality checks evaluated before anything is stored."""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from forecast_core.data import PriceDataError, blocking_failures, data_version, quality_checks, validate_symbol
from resources import BacktestSettings, PriceSourceResource, StorageResource

from .lib import symbols_partitions

BLOCKING_CHECKS = ("sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent",
                   "enough_bars")
WARNING_CHECKS = ("no_large_gaps", "no_suspected_splits")


@asset(
    partitions_def=symbols_partitions,
    group_name="prices",
    kinds={"parquet"},
    check_specs=[AssetCheckSpec(name, asset="price_history", blocking=True) for name in BLOCKING_CHECKS]
    + [AssetCheckSpec(name, asset="price_history") for name in WARNING_CHECKS],
)
def price_history(
    context: AssetExecutionContext,
    prices: PriceSourceResource,
    storage: StorageResource,
    backtest: BacktestSettings,
):
    """Daily OHLCV bars of one symbol from the configured price source, normalised and validated.

    Data failing a blocking check is never stored: the previous good copy stays in place.
    """
    symbol = validate_symbol(context.partition_key)
    try:
        frame = prices.source().load(symbol)
    except PriceDataError as exc:
        raise Failure(description=str(exc)) from None
    checks = quality_checks(frame, symbol, backtest.spec().min_bars)
    for check in checks:
        yield AssetCheckResult(
            check_name=check.name,
            passed=check.passed,
            severity=AssetCheckSeverity.ERROR if check.blocking else AssetCheckSeverity.WARN,
            description=check.description,
            metadata=check.metadata,
        )
    failures = blocking_failures(checks)
    if failures:
        raise Failure(description="price data rejected, nothing stored: " + "; ".join(c.description for c in failures))
    path = storage.storage().write_prices(symbol, frame)
    version = data_version(frame)
    context.log.info(f"{symbol}: stored {len(frame)} bars ending {frame['timestamp'].iloc[-1]:%Y-%m-%d} at {path}")
    yield MaterializeResult(
        data_version=DataVersion(version),
        metadata={
            "bars": len(frame),
            "first_bar": str(frame["timestamp"].iloc[0].date()),
            "last_bar": str(frame["timestamp"].iloc[-1].date()),
            "data_version": version,
            "source": prices.kind,
            "path": MetadataValue.path(str(path)),
            "last_close": float(frame["close"].iloc[-1]),
        },
    )
