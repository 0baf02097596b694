"""The dbt project in dbt_metrics/ as Dagster assets: staging views and leaderboard marts in DuckDB."""

import os
import shutil
import sys
from pathlib import Path

from dagster import AssetExecutionContext, AutomationCondition, Failure
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from forecast_core.store import StoreError, unreadable_trials_message
from resources import StorageResource

from .instance import METRICS_POOL

DBT_PROJECT_DIR = Path(os.environ.get("HPO_DBT_PROJECT_DIR", Path(__file__).resolve().parent.parent / "dbt_metrics"))
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# The dbt installed beside this Python, so an un-activated virtual environment works too.
DBT_EXECUTABLE = shutil.which("dbt", path=str(Path(sys.executable).parent)) or shutil.which("dbt") or "dbt"


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


def _manifest_is_stale(project: DbtProject) -> bool:
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    sources = [project.project_dir / "dbt_project.yml", project.project_dir / "profiles.yml"]
    for folder in ("models", "macros"):
        sources.extend((project.project_dir / folder).rglob("*"))
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)


if _manifest_is_stale(dbt_project):  # parse once per change of the dbt project, not at every load
    dbt_resource().cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()


SELECTION_TAG = "selection"  # dbt_project.yml tags the selection marts; built after selection_statistics
SELECTION_MARTS = f"tag:{SELECTION_TAG}"


class MetricsTranslator(DagsterDbtTranslator):
    """Rebuild the marts whenever a sweep partition lands (once no sweep is still running); the
    selection marts sit in the UI group ``selection`` beside the statistics and the config files,
    the staging view and aggregation marts in the group ``metrics``."""

    def get_automation_condition(self, dbt_resource_props):
        return AutomationCondition.eager()

    def get_group_name(self, dbt_resource_props):
        return "selection" if SELECTION_TAG in dbt_resource_props.get("tags", []) else "metrics"


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, pool=METRICS_POOL,
            dagster_dbt_translator=MetricsTranslator(), exclude=SELECTION_MARTS)
def dbt_metrics(context: AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource):
    """``dbt build`` of the staging views and aggregation marts over the stored trials."""
    yield from _build(context, dbt, storage)


@dbt_assets(manifest=dbt_project.manifest_path, project=dbt_project, pool=METRICS_POOL,
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
        raise Failure(description="dbt build not started: " + unreadable_trials_message(problems))
    try:
        store.check_metrics_db()
    except StoreError as exc:
        raise Failure(description=f"dbt build not started: {exc}") from None
    os.environ.update(storage.dbt_env())  # profiles.yml and read_trials read these (step process only)
    yield from dbt.cli(["build"], context=context).stream()


def metrics_assets() -> list:
    """The three steps that turn stored trials into selection marts, in order (the build_metrics job)."""
    from .statistics import selection_statistics

    return [dbt_metrics, selection_statistics, dbt_selection_marts]
