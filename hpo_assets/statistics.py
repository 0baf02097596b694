"""The selection statistics between the dbt aggregation and the selection marts (one unpartitioned step).

Reads ``stg_trials`` from the metrics database (read-only), runs
:func:`forecast_core.selection_statistics.selection_tables` and writes the tables as Parquet under the
storage root, where the selection marts read them as dbt sources: dbt stays the only DuckDB writer.
"""

from pathlib import Path

import duckdb
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from forecast_core.selection import open_marts
from forecast_core.selection_statistics import TABLES, TRIAL_COLUMNS, selection_tables
from forecast_core.store import StoreError
from resources import StorageResource
from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

from .automation import follows_upstream
from .instance import METRICS_POOL
from .metadata import table


# One asset per table, keyed as dagster-dbt keys the dbt source tables that read them.
TABLE_KEYS = {name: AssetKey(["selection", name]) for name in TABLES}


def _retired_tables(selection_dir: Path) -> list[Path]:
    """Parquet files in the selection folder that no table writes any more (tables renamed since they
    were written, e.g. model_choice -> winner_tests): stale copies that nothing reads or refreshes."""
    return [path for path in sorted(selection_dir.glob("*.parquet")) if path.stem not in TABLES]


@multi_asset(specs=[AssetSpec(key, deps=[AssetKey("stg_trials"), AssetKey("leaderboard")], group_name="selection",
                              kinds={"python", "parquet"}, automation_condition=follows_upstream(),
                              description=f"selection statistics table {name} (storage/selection/{name}.parquet)")
                    for name, key in TABLE_KEYS.items()],
             name="selection_statistics", pool=METRICS_POOL)
def selection_statistics(context: AssetExecutionContext, storage: StorageResource, toto: TotoRuntime,
                         toto2: Toto2Runtime, kronos: KronosRuntime):
    """Selection tests for every symbol: StepM/SPA/MCS, pooled challengers, model choice.

    Also the test report against the references and the pretraining-period flags; no model weights
    are loaded (the runtimes only give each model's pretraining cutoff).
    """
    store = storage.storage()
    try:
        store.check_metrics_db()
        with open_marts(store.duckdb_path) as con:
            trials = con.execute(f"select {', '.join(TRIAL_COLUMNS)} from stg_trials").df()
    except (StoreError, duckdb.Error) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise Failure(description=f"selection statistics not computed: {reason}; re-materialise the dbt "
                                  "aggregation (job build_metrics)") from None
    cutoffs = {"toto": toto.cutoff, "toto2": toto2.cutoff, "kronos": kronos.cutoff}
    for model, cutoff in cutoffs.items():
        probe = cutoff(trials["symbol"].iloc[0]) if len(trials) else None
        if probe is not None and not probe.known:
            context.log.warning(f"{model}: {probe.warning}")
    tables = selection_tables(trials, cutoffs)
    store.write_selection_tables(tables)
    for retired in _retired_tables(store.selection_dir):
        retired.unlink()
        context.log.info(f"removed {retired}: no selection table has that name any more")
    decisions, choice, pooled = tables["decisions"], tables["winner_tests"], tables["pooled"]
    pretraining = tables["pretraining"]
    metadata = {
        "symbols": int(trials["symbol"].nunique()),
        "significant_vs_default": int(decisions["significant_vs_default"].fillna(False).sum()),
        "pooled_config_selected": int((decisions["selection_basis"] == "pooled").sum()),
        "persistence_wins": int((choice["winning_model"] == "persistence").sum()),
        "decisions": table(decisions[["symbol", "model", "selection_basis", "p_value_vs_default",
                                      "confidence_set_size", "selection_reason"]]),
        "pooled_challengers": table(pooled[["model", "symbols", "p_value", "outcome"]]),
        "winner_tests": table(choice[["symbol", "winning_model", "choice_reason"]]),
        "out_of_sample_test_windows": table(pretraining[["symbol", "model", "test_windows",
                                                         "test_windows_out_of_sample", "statement"]]),
        "files": MetadataValue.json({name: str(store.selection_dir / f"{name}.parquet") for name in tables}),
    }
    for model, rows in pretraining.groupby("model"):
        known = rows["test_windows_out_of_sample"].dropna()
        metadata[f"{model}_out_of_sample_test_windows"] = int(known.sum()) if len(known) else -1
    for name, frame in tables.items():
        extra = metadata if name == "decisions" else {}
        yield MaterializeResult(asset_key=TABLE_KEYS[name], metadata={"rows": len(frame), **extra})
