"""When the stages after the sweeps run by themselves: the marts, the selection statistics, the config files.

Declarative automation conditions, evaluated by the ``marts_and_config_files`` sensor
(hpo_assets/sensors.py), which runs by default. Whatever starts a tune (the weekly schedule, the
re-tune sensor, a backfill in the UI), the chain ends in config files:

- **The marts stage starts** at the dbt models that read the files the partitioned assets write
  (``stg_trials``: the trials; ``forward_report``: the forward scorecards). They rebuild when any
  upstream file was written after their last *request*, once no upstream step and no dbt run is
  in flight, so a schedule tick that tunes every symbol ends in one build. Comparing with the
  request, not the end of the build, means trials written while a build runs (it may have read the
  folder before they existed) start one more build.
- **Every later step** (the aggregation marts, the selection statistics, the selection marts) runs
  in the same run as the step it reads, or on the next tick when that step was rebuilt alone.
- **The config files** of a symbol are written once a marts build *requested after its latest
  sweep* has reached the selection marts, and only for symbols whose sweeps ran since their files
  were last written: another symbol's re-tune does not rewrite a file (and restart its forward
  scorecard) whose own evidence did not change.
- One dbt run at a time, and never beside the config files: a build locks the metrics database the
  files are read from, so files wait while a build (of the marts or of the forward report) is in
  flight or due, and a build waits for files being written.

Every "since" below compares event times (a materialisation's, a request's tick), so two events seen
on the same tick are still ordered.
"""

import functools
import operator

from dagster import AssetKey, AssetSelection, AutomationCondition

SWEEP_KEYS = [AssetKey(name) for name in ("baseline_sweep", "toto_sweep", "toto2_sweep", "kronos_sweep")]
TRIALS_VIEW, FORWARD_REPORT = AssetKey("stg_trials"), AssetKey("forward_report")
# The dbt models that read the stored files (dbt_marts.FILE_SOURCES): a request of stg_trials starts a build.
FILE_READERS = [TRIALS_VIEW, FORWARD_REPORT]
SELECTION_MART_KEYS = [AssetKey(name) for name in ("best_configs", "test_report", "model_choice")]
# In progress until their dbt run ends: a marts run builds model_choice last, a forward run only its report.
DBT_RUN_ENDS = [AssetKey("model_choice"), FORWARD_REPORT]
CONFIG_FILES_KEY = AssetKey("selected_configs")

_NOT_BLOCKED = ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()


def _any_of(keys: list[AssetKey], condition: AutomationCondition) -> AutomationCondition:
    return functools.reduce(operator.or_, [AutomationCondition.asset_matches(key, condition) for key in keys])


def _new_files() -> AutomationCondition:
    """Upstream files written since this dbt model was last requested."""
    written = AutomationCondition.any_deps_match(AutomationCondition.newly_updated()).with_label("upstream written")
    return written.since(AutomationCondition.newly_requested()).with_label("written since last requested")


def _dbt_running() -> AutomationCondition:
    return _any_of(DBT_RUN_ENDS, AutomationCondition.in_progress()).with_label("a dbt run in flight")


def reads_stored_files() -> AutomationCondition:
    """A dbt model over files the Python assets write: rebuild after any of them is newer than the
    model's last request, once no dbt run is in flight (so every later step can join the run, and one
    build writes the metrics database at a time) and no config files are being written (they read it)."""
    writing_files = AutomationCondition.asset_matches(CONFIG_FILES_KEY, AutomationCondition.in_progress())
    return (_new_files() & _NOT_BLOCKED & ~_dbt_running()
            & ~writing_files.with_label("config files being written")).with_label("rebuild after new files")


def follows_upstream() -> AutomationCondition:
    """A later step of the marts stage: in the same run as the step it reads, or on the tick after that
    step was rebuilt on its own (never after a run that also built this step)."""
    return (AutomationCondition.any_deps_updated() & _NOT_BLOCKED).with_label("follow the marts stage")


def config_files() -> AutomationCondition:
    """Write a symbol's files once its latest sweeps have gone through a complete marts build, and the
    metrics database is at rest (no dbt run in flight or due)."""
    swept = AutomationCondition.any_deps_match(AutomationCondition.newly_updated()).allow(
        AssetSelection.assets(*SWEEP_KEYS)).with_label("a sweep of this symbol ran")
    build_requested = AutomationCondition.asset_matches(TRIALS_VIEW, AutomationCondition.newly_requested()).with_label(
        "marts build requested")
    marts_built = AutomationCondition.any_deps_match(AutomationCondition.newly_updated()).allow(
        AssetSelection.assets(*SELECTION_MART_KEYS)).with_label("selection marts built")
    build_due = _any_of(FILE_READERS, _new_files()).with_label("a dbt run due")
    return (
        swept.since(AutomationCondition.newly_requested()).with_label("swept since its files were last requested")
        & swept.since(AutomationCondition.newly_updated()).with_label("swept since its files were last written")
        & build_requested.since(swept).with_label("marts build requested after the sweep")
        & marts_built.since(build_requested).with_label("selection marts built since that request")
        & _NOT_BLOCKED & ~_dbt_running() & ~build_due
    ).with_label("config files")
