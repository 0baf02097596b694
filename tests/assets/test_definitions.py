"""Load the whole code location and pin its asset graph (keys, dependencies, partitions, checks)."""

from __future__ import annotations

import json
import shutil

import pytest
from dagster import AssetCheckKey, AssetKey
from dagster_dbt import DbtProject

from forecast_core.forecasters import BASELINES
from forecast_core.selection_statistics import TABLES
from hpo_assets import dbt_project as dbt_project_module
from hpo_assets.dbt_project import DBT_PROJECT_DIR, PREPARE_MANIFEST
from hpo_assets.definitions import defs

EXPECTED_GRAPH = {
    "price_history": set(),
    "baseline_sweep": {"price_history"},
    "toto_sweep": {"price_history", "toto_model"},  # lineage only: sweeps run eager without a cache
    "toto2_sweep": {"price_history"},  # no compile cache: the Toto 2.0 engine runs eager
    "kronos_sweep": {"price_history", "kronos_model"},
    "stg_trials": {"baseline_sweep", "toto_sweep", "toto2_sweep", "kronos_sweep"},
    "leaderboard": {"stg_trials"},
    **{f"selection/{table}": {"stg_trials", "leaderboard"} for table in TABLES},
    "best_configs": {"selection/decisions", "selection/pretraining", "leaderboard"},
    "test_report": {"selection/test_comparisons"},
    "model_choice": {"selection/winner_tests", "leaderboard", "best_configs"},
    "pooled_challengers": {"selection/pooled", "leaderboard"},
    "window_pretraining": {"selection/pretraining_windows"},
    "pareto_front": {"leaderboard"},
    # the sweeps: a symbol's files follow its own sweeps (hpo_assets/automation.py)
    "selected_configs": {"best_configs", "test_report", "model_choice", "baseline_sweep", "toto_sweep", "toto2_sweep",
                         "kronos_sweep"},
    "forward_scores": {"price_history", "selected_configs"},
    "forward_report": {"forward_scores"},
    "toto_model": set(),
    "kronos_model": set(),
}
GROUPS = {
    "prices": {"price_history"},
    "sweeps": {"baseline_sweep", "toto_sweep", "toto2_sweep", "kronos_sweep"},
    "models": {"toto_model", "kronos_model"},
    "metrics": {"stg_trials", "leaderboard", "pareto_front", "forward_report"},  # dbt aggregation
    "selection": {*(f"selection/{table}" for table in TABLES), "best_configs", "test_report", "model_choice",
                  "pooled_challengers", "window_pretraining", "selected_configs"},
    "scorecard": {"forward_scores"},
}
PARTITIONED = {"price_history", "baseline_sweep", "toto_sweep", "toto2_sweep", "kronos_sweep", "selected_configs",
               "forward_scores"}


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == set(EXPECTED_GRAPH)
    for name, parents in EXPECTED_GRAPH.items():
        node = graph.get(AssetKey.from_user_string(name))
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        assert (node.partitions_def is not None) == (name in PARTITIONED), name


def test_every_asset_sits_in_a_named_group_with_a_short_description():
    """The UI lists assets by group and shows a description's first line beside each."""
    graph = defs.resolve_asset_graph()
    groups = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    assert groups == GROUPS
    for key in graph.get_all_asset_keys():
        description = defs.get_assets_def(key).specs_by_key[key].description
        first_line = (description or "").strip().splitlines()[0] if description else ""
        assert 0 < len(first_line) <= 100, (key.to_user_string(), first_line)
    for name in ("toto_model", "kronos_model"):  # never materialised is fine: the sweeps run eager
        assert defs.get_assets_def(name).specs_by_key[AssetKey(name)].description.startswith("Optional:"), name


def test_price_checks_and_jobs_are_defined():
    graph = defs.resolve_asset_graph()
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == AssetKey("price_history")}
    assert checks == {"sorted_unique_timestamps", "no_missing_prices", "positive_prices", "high_low_consistent",
                      "enough_bars_to_tune", "no_large_gaps", "no_suspected_splits"}
    for job in ("refresh_prices", "tune_symbol", "build_metrics", "select_configs"):
        assert defs.resolve_job_def(job) is not None
    for sensor in ("price_source_sensor", "stale_config_sensor", "marts_and_config_files"):
        assert defs.resolve_sensor_def(sensor) is not None
    assert defs.resolve_schedule_def("weekly_retune").cron_schedule == "0 2 * * 0"


def test_the_stages_after_the_sweeps_are_automated_by_a_sensor_that_runs_by_default():
    """Nothing a user must turn on stands between a tune and its config files; the triggers stay off."""
    from dagster import DefaultScheduleStatus, DefaultSensorStatus

    graph = defs.resolve_asset_graph()
    from hpo_assets.automation import FILE_READERS

    conditions = {key: graph.get(key).automation_condition for key in graph.get_all_asset_keys()}
    automated = {key.to_user_string() for key, condition in conditions.items() if condition}
    assert automated == {name for name in EXPECTED_GRAPH if name in GROUPS["metrics"] | GROUPS["selection"]}
    starts = {key for key, condition in conditions.items() if condition and condition.get_label() == "rebuild after new files"}
    assert starts == set(FILE_READERS)  # the dbt models over stored files (dbt_marts.FILE_SOURCES) start a build
    repository = defs.get_repository_def()
    assert [s.name for s in repository.sensor_defs if s.default_status == DefaultSensorStatus.RUNNING] == [
        "marts_and_config_files"]
    assert all(s.default_status == DefaultScheduleStatus.STOPPED for s in repository.schedule_defs)


def test_accelerator_work_runs_in_its_pool():
    graph = defs.resolve_asset_graph()
    pools = {name: graph.get(AssetKey(name)).pools for name in ("toto_sweep", "toto2_sweep", "kronos_sweep")}
    assert all(p == {"accelerator"} for p in pools.values()), pools


def test_model_assets_run_in_the_accelerator_pool_with_a_blocking_parity_check():
    graph = defs.resolve_asset_graph()
    for name in ("toto_model", "kronos_model"):
        node = graph.get(AssetKey(name))
        assert node.pools == {"accelerator"}, name
        assert node.group_name == "models" and node.partitions_def is None, name
        spec = defs.get_assets_def(name).get_spec_for_check_key(AssetCheckKey(AssetKey(name), "compiled_matches_eager"))
        assert spec.blocking, name


def test_the_dbt_baseline_list_matches_the_core():
    """pareto_front excludes the baselines by the dbt var; the core's BASELINES is the owner."""
    import yaml

    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    assert set(project["vars"]["baseline_models"]) == set(BASELINES)



@pytest.mark.slow  # a real dbt parse
def test_without_a_manifest_loading_names_the_command_and_prepare_manifest_makes_it(tmp_path, monkeypatch):
    """Nothing parses dbt on import: without a manifest the dbt assets (hpo_assets.dbt_marts calls
    require_manifest first) fail to load, saying how to make one; prepare_manifest (what the hpo
    command calls before loading them) makes it with a real dbt parse once, then leaves it alone."""
    copy = tmp_path / "dbt_metrics"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setattr(dbt_project_module, "dbt_project", DbtProject(project_dir=copy, profiles_dir=copy))
    manifest = copy / "target" / "manifest.json"
    with pytest.raises(FileNotFoundError) as missing:
        dbt_project_module.require_manifest()
    assert str(missing.value).startswith(f"no dbt manifest at {manifest}")
    assert f"Create it with `make` (or `{PREPARE_MANIFEST}`" in str(missing.value)

    assert dbt_project_module.prepare_manifest() == manifest
    built = manifest.stat().st_mtime_ns
    assert "model.hpo_metrics.best_configs" in json.loads(manifest.read_text())["nodes"]
    assert dbt_project_module.changed_since_manifest() == []
    assert dbt_project_module.prepare_manifest().stat().st_mtime_ns == built  # up to date: not parsed again
    assert dbt_project_module.require_manifest() == manifest


STAGES = {"aggregation": 1, "statistics": 2, "selection": 3}  # the order a marts run builds them in


def _stage(node: dict) -> int:
    """Which stage of a marts run makes ``node``: the files the sweeps and the scorecard write come first."""
    if node["resource_type"] == "source":
        return STAGES["statistics"] if node["source_name"] == "selection" else 0
    return STAGES["selection"] if "selection" in node["tags"] else STAGES["aggregation"]


@pytest.mark.slow  # dbt lists its tests three times (in process, no database)
def test_no_data_test_of_a_stage_reads_a_later_stage(tmp_path):
    """A test that compares a model with one of a later stage would fail by design when its stage builds
    alone after a re-tune (that model is stale until its stage follows)."""
    from dbt.cli.main import dbtRunner

    manifest = json.loads((DBT_PROJECT_DIR / "target" / "manifest.json").read_text())
    nodes = {**manifest["nodes"], **manifest["sources"]}
    data_tests = {uid for uid, node in manifest["nodes"].items() if node["resource_type"] == "test"}

    def tests_run(*selection: str) -> set[str]:
        listed = dbtRunner().invoke(["ls", "--resource-type", "test", "--output", "json", "--output-keys", "unique_id",
                                     "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
                                     "--target-path", str(tmp_path), "--quiet", *selection])
        assert listed.success, listed.exception
        return {json.loads(line)["unique_id"] for line in listed.result} & data_tests

    stages = {"aggregation": tests_run("--exclude", "tag:selection"),
              "aggregation, as the automation subsets it": tests_run("--select", "stg_trials leaderboard"),
              "selection": tests_run("--select", "tag:selection")}
    for name, tests in stages.items():
        stage = STAGES[name.split(",")[0]]
        later = {uid: parents for uid in tests
                 if (parents := [p for p in manifest["nodes"][uid]["depends_on"]["nodes"] if _stage(nodes[p]) > stage])}
        assert later == {}, name
    assert stages["aggregation"] | stages["selection"] == data_tests  # and every test runs in some stage
