"""The dbt project in dbt_metrics/ as Dagster assets: staging views and leaderboard marts in DuckDB.

Defined from the dbt manifest, which a build step makes (see hpo_assets.dbt_project); importing this
module without one fails and names the command that creates it.
"""

import os

from dagster import AssetExecutionContext
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from forecast_core.store import StoreError, unreadable_trials_message
from resources import StorageResource

from .automation import follows_upstream, reads_stored_files
from .dbt_project import dbt_project, require_manifest
from .fixes import in_dagster, trials_fix
from .instance import METRICS_POOL

MANIFEST = require_manifest()

SELECTION_TAG = "selection"  # dbt_project.yml tags the selection marts; built after selection_statistics
SELECTION_MARTS = f"tag:{SELECTION_TAG}"
# dbt unit tests check the SQL, not the data: tests/e2e/test_tuning_e2e.py runs them, the runs leave them out.
BUILD_EXCLUDES = ["--exclude-resource-type", "unit_test"]
# dbt sources the partitioned Python assets write (the sweeps' trials, the forward scorecards): never
# built in a marts run, so a model reading them starts the marts stage (hpo_assets/automation.py).
FILE_SOURCES = ("trials", "forward")


def reads_file_sources(dbt_resource_props: dict) -> bool:
    return any(node.split(".")[2] in FILE_SOURCES for node in dbt_resource_props.get("depends_on", {}).get("nodes", [])
               if node.startswith("source."))


class MetricsTranslator(DagsterDbtTranslator):
    """The models over the stored files start the marts stage, every other model follows it in the same
    run; the selection marts sit in the UI group ``selection`` beside the statistics and the config
    files, the staging view and aggregation marts in the group ``metrics``."""

    def get_automation_condition(self, dbt_resource_props):
        return reads_stored_files() if reads_file_sources(dbt_resource_props) else follows_upstream()

    def get_group_name(self, dbt_resource_props):
        return "selection" if SELECTION_TAG in dbt_resource_props.get("tags", []) else "metrics"


@dbt_assets(manifest=MANIFEST, project=dbt_project, pool=METRICS_POOL,
            dagster_dbt_translator=MetricsTranslator(), exclude=SELECTION_MARTS)
def dbt_metrics(context: AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource):
    """``dbt build`` of the staging views and aggregation marts over the stored trials."""
    yield from _build(context, dbt, storage)


@dbt_assets(manifest=MANIFEST, project=dbt_project, pool=METRICS_POOL,
            dagster_dbt_translator=MetricsTranslator(), select=SELECTION_MARTS, name="dbt_selection_marts")
def dbt_selection_marts(context: AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource):
    """``dbt build`` of the selection marts over the selection statistics' Parquet tables."""
    yield from _build(context, dbt, storage)


def _build(context: AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource):
    """``dbt build`` (models + schema tests) of this asset's selection; one DuckDB writer at a time.

    Damaged inputs stop the build first with a message naming the file and the fix (instead of a
    DuckDB error inside dbt's log): unreadable trial Parquet files, or a damaged metrics.duckdb.
    """
    store = storage.storage()
    problems = store.unreadable_trials()
    if problems:
        raise in_dagster("dbt build not started: " + unreadable_trials_message(problems), trials_fix(problems))
    try:
        store.check_metrics_db()
    except StoreError as exc:
        raise in_dagster(f"dbt build not started: {exc}", "then materialise the dbt assets (job build_metrics)") from None
    os.environ.update(storage.dbt_env())  # profiles.yml and read_trials read these (step process only)
    yield from dbt.cli(["build", *BUILD_EXCLUDES], context=context).stream()


def metrics_assets() -> list:
    """The three steps that turn stored trials into selection marts, in order (the build_metrics job)."""
    from .statistics import selection_statistics

    return [dbt_metrics, selection_statistics, dbt_selection_marts]
