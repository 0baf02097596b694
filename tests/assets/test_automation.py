"""The automation conditions that carry a tune on to the marts and the config files (hpo_assets/automation.py).

Evaluated with Dagster's own evaluator on a real temp instance, over the code location's real asset
graph and conditions, with stand-in bodies (each step only reports its materialisation), so a run or
a tick costs about a second, in-flight runs included, instead of a tune's or a dbt build's.
tests/e2e/test_daemon.py runs the same chain with the real assets under the real daemon.
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict

import pytest
from dagster import (
    AssetKey,
    AssetSelection,
    AssetSpec,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    define_asset_job,
    evaluate_automation_conditions,
    multi_asset,
)

from hpo_assets.automation import SWEEP_KEYS
from hpo_assets.definitions import defs

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
# What the stand-ins obey: a key in "hold" waits for "release" (after setting "held"); a key in "fail" fails.
HOLD = {"hold": set(), "release": threading.Event(), "held": threading.Event(), "fail": set()}


def _stand_ins(definitions: Definitions) -> list:
    """Every materialisable asset of ``definitions`` with its key, deps, partitions and automation
    condition, as steps that only report a materialisation (in topological order), obeying HOLD."""
    graph = definitions.resolve_asset_graph()
    order = {key: i for i, key in enumerate(graph.toposorted_asset_keys)}
    groups = defaultdict(list)
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable:
            groups[node.partitions_def].append(AssetSpec(key, deps=list(node.parent_keys), skippable=True,
                                                         partitions_def=node.partitions_def,
                                                         automation_condition=node.automation_condition))
    made = []
    for i, specs in enumerate(groups.values()):
        @multi_asset(specs=specs, can_subset=True, name=f"stand_in_{i}")
        def stand_in(context):
            for key in sorted(context.selected_asset_keys, key=order.get):
                if key in HOLD["hold"]:
                    HOLD["held"].set()
                    assert HOLD["release"].wait(30)
                if key in HOLD["fail"]:
                    raise RuntimeError(f"{key.to_user_string()} failed on purpose")
                yield MaterializeResult(asset_key=key)
        made.append(stand_in)
    return made


@functools.cache
def _graph() -> tuple[list, Definitions]:
    """The stand-in assets and their definitions (built once: they hold no state of their own)."""
    assets = _stand_ins(defs)
    return assets, Definitions(assets=assets)


@functools.cache
def _job(selection: tuple[AssetKey, ...]):
    assets, _ = _graph()
    return Definitions(assets=assets, jobs=[define_asset_job("run", AssetSelection.assets(*selection))]
                       ).resolve_job_def("run")


class Pipeline:
    """The stand-in graph on an instance: runs as the daemon would launch them, and sensor ticks."""

    def __init__(self, instance: DagsterInstance):
        self.instance, self.cursor = instance, None

    def run(self, keys, partition: str | None = None) -> bool:
        """One run of ``keys`` (the asset selection is recorded on the run, as the daemon records it)."""
        selection = tuple(sorted(AssetKey.from_user_string(k) if isinstance(k, str) else k for k in keys))
        return _job(selection).execute_in_process(partition_key=partition, instance=self.instance,
                                                  asset_selection=list(selection), run_config=QUIET,
                                                  raise_on_error=False).success

    def tune(self, symbol: str) -> bool:
        return self.run(SWEEP_KEYS, symbol)

    def tick(self) -> dict[str, list]:
        """One evaluation of the automation sensor: {asset: requested partitions ('' when unpartitioned)}."""
        result = evaluate_automation_conditions(defs=_graph()[1], instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {r.key.to_user_string(): sorted(p or "" for p in result.get_requested_partitions(r.key))
                for r in result.results if result.get_requested_partitions(r.key)}

    def launch(self, requested: dict[str, list]) -> None:
        """Run what a tick requested: unpartitioned assets in one run, then each partition in its own."""
        unpartitioned = [k for k, parts in requested.items() if parts == [""]]
        if unpartitioned:
            self.run(unpartitioned)
        for partition in sorted({p for parts in requested.values() for p in parts if p}):
            self.run([k for k, parts in requested.items() if partition in parts], partition)


MARTS_RUN = {"stg_trials", "leaderboard", "pareto_front", "selection/decisions", "selection/pooled",
             "selection/winner_tests", "selection/test_comparisons", "selection/pretraining",
             "selection/pretraining_windows", "best_configs", "test_report", "model_choice", "pooled_challengers",
             "window_pretraining"}


@pytest.fixture
def pipeline(dagster_home):
    for events in ("release", "held"):
        HOLD[events].clear()
    for keys in ("hold", "fail"):
        HOLD[keys].clear()
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("symbols", ["AAA", "BBB", "NEW"])
    made = Pipeline(instance)
    assert made.tick() == {}  # the first evaluation only starts the conditions' history
    return made


def test_a_tune_ends_in_one_marts_run_then_the_files_of_the_tuned_symbols(pipeline):
    assert pipeline.tune("AAA") and pipeline.tune("BBB")
    marts = pipeline.tick()
    assert set(marts) == MARTS_RUN  # every step of the stage in one run; NEW (never tuned) blocks nothing
    assert set(map(tuple, marts.values())) == {("",)}
    pipeline.launch(marts)
    files = pipeline.tick()
    assert files == {"selected_configs": ["AAA", "BBB"]}  # not NEW: nothing of it to select
    pipeline.launch(files)
    assert pipeline.tick() == {}  # nothing more until the next sweep

    assert pipeline.tune("AAA")  # a re-tune of one symbol: BBB keeps its files and its scorecard
    marts = pipeline.tick()
    assert set(marts) == MARTS_RUN
    pipeline.launch(marts)
    assert pipeline.tick() == {"selected_configs": ["AAA"]}


def test_forward_scores_rebuild_only_their_report_and_the_files_wait_for_it(pipeline):
    assert pipeline.run(["forward_scores"], "AAA")
    assert pipeline.tick() == {"forward_report": [""]}

    assert pipeline.tune("AAA")
    pipeline.launch(pipeline.tick())  # the marts
    assert pipeline.run(["forward_scores"], "BBB")  # a refresh lands before AAA's files are written
    assert pipeline.tick() == {"forward_report": [""]}  # one dbt run at a time, never beside the files
    reporting = _in_flight(["forward_report"], lambda: pipeline.launch({"forward_report": [""]}))
    assert pipeline.tick() == {}
    _finish(reporting)
    assert pipeline.tick() == {"selected_configs": ["AAA"]}


def _in_flight(keys, run) -> threading.Thread:
    """Start ``run`` in a thread and return once a step of ``keys`` is in flight (held until released)."""
    HOLD["hold"].update(AssetKey.from_user_string(k) if isinstance(k, str) else k for k in keys)
    HOLD["release"].clear()
    HOLD["held"].clear()
    thread = threading.Thread(target=run)
    thread.start()
    assert HOLD["held"].wait(30)
    return thread


def _finish(thread: threading.Thread) -> None:
    HOLD["hold"].clear()
    HOLD["release"].set()
    thread.join()


def test_marts_wait_for_sweeps_in_flight_and_trials_written_during_a_build_start_another(pipeline):
    assert pipeline.tune("AAA")
    tuning = _in_flight(SWEEP_KEYS, lambda: pipeline.tune("BBB"))
    assert pipeline.tick() == {}  # AAA is done, BBB is not: no marts yet
    _finish(tuning)
    marts = pipeline.tick()
    assert set(marts) == MARTS_RUN

    assert pipeline.tune("BBB")  # BBB's sweeps land again after the build was requested, before it ran
    pipeline.launch(marts)
    assert set(pipeline.tick()) == MARTS_RUN  # and no files yet: not even AAA's, while a build is due
    pipeline.launch({k: [""] for k in MARTS_RUN})
    assert pipeline.tick() == {"selected_configs": ["AAA", "BBB"]}  # written from the build that saw them


def test_a_failed_marts_run_writes_no_files_and_is_retried_by_the_next_sweep(pipeline):
    assert pipeline.tune("AAA")
    HOLD["fail"].add(AssetKey(["selection", "decisions"]))
    pipeline.launch(pipeline.tick())
    assert pipeline.tick() == {}  # no files from stale marts, and no retry loop
    HOLD["fail"].clear()
    assert pipeline.tune("AAA")
    pipeline.launch(pipeline.tick())
    assert pipeline.tick() == {"selected_configs": ["AAA"]}


def test_marts_and_config_files_never_run_at_once(pipeline):
    """A build locks the metrics database the config files are read from."""
    assert pipeline.tune("AAA")
    pipeline.launch(pipeline.tick())
    writing = _in_flight(["selected_configs"], lambda: pipeline.launch(pipeline.tick()))
    assert pipeline.tune("BBB")
    assert pipeline.tick() == {}  # AAA's files are being written: the build waits
    _finish(writing)
    marts = pipeline.tick()
    assert set(marts) == MARTS_RUN
    building = _in_flight(["model_choice"], lambda: pipeline.launch(marts))
    assert pipeline.tick() == {}  # BBB's files wait for the build
    _finish(building)
    assert pipeline.tick() == {"selected_configs": ["BBB"]}
