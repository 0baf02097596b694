"""Price history per symbol, with blocking data-quality checks evaluated before anything is stored."""

import pandas as pd
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

from forecast_core.data import (
    CheckOutcome,
    PriceDataError,
    blocking_failures,
    data_version,
    quality_checks,
    rejection_message,
    validate_symbol,
)
from forecast_core.windows import Layout, plan_layout
from resources import BacktestSettings, PriceSourceResource, StorageResource

from .instance import symbols_partitions

from .metadata import table

BLOCKING_CHECKS = ("sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent")
# A short history is stored like any other: it gets a smaller layout or "too short to tune" (a warning).
WARNING_CHECKS = ("no_large_gaps", "no_suspected_splits", "enough_bars_to_tune")


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
    """Daily OHLCV bars of one symbol, repaired and checked before they are stored.

    From the configured price source, normalised, repaired as the source's policy says (missing bars,
    splits; listed in the metadata) and validated. Data failing a blocking check is never stored: the
    previous good copy stays in place.
    """
    symbol = validate_symbol(context.partition_key)
    try:
        frame, report = prices.source().load_report(symbol)
    except PriceDataError as exc:
        raise Failure(description=str(exc)) from None
    layout = plan_layout(len(frame), backtest.spec())
    checks = [*quality_checks(frame, symbol), _layout_check(layout)]
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
        raise Failure(description=rejection_message(symbol, failures, "price data rejected, nothing stored: "))
    path = storage.storage().write_prices(symbol, frame)
    version = data_version(frame)
    context.log.info(f"{symbol}: stored {len(frame)} bars ending {frame['timestamp'].iloc[-1]:%Y-%m-%d} at {path}; "
                     f"windows: {layout.reason}")
    repairs = report.metadata()
    if report.splits:  # the same rows as the report's Markdown, as a sortable table
        repairs["split_table"] = table(pd.DataFrame([
            {"date": split.date.date(), "ratio": split.label, "gap": split.gap, "volume_change": split.volume_change,
             "adjusted": split.adjusted, "note": split.note} for split in report.splits]))
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
            "layout_reason": layout.reason,
            "tunable": layout.tunable,
            **repairs,
        },
    )


def _layout_check(layout: Layout) -> CheckOutcome:
    """Warns (never blocks) when the history is shorter than the requested layout needs."""
    bars = layout.bars
    return CheckOutcome(
        "enough_bars_to_tune", layout.tunable and layout.spec == layout.requested, False,
        f"{bars} bars: {layout.reason}" if layout.tunable else f"{bars} bars: {layout.reason}; default configs kept",
        {"bars": bars, "needed_for_requested_layout": layout.requested.min_bars,
         "needed_to_tune": layout.needed_to_tune, "tunable": layout.tunable},
    )
