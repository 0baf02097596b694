"""price_source_sensor on a real temp instance: new CSV -> new partition + run; nothing new -> skip."""

from __future__ import annotations

from dagster import DagsterInstance, SkipReason, build_sensor_context

from forecast_core.synthetic import make_prices
from hpo_assets.sensors import price_source_sensor
from resources import PriceSourceResource


def _evaluate(instance, csv_dir, cursor):
    with build_sensor_context(instance=instance, cursor=cursor,
                              resources={"prices": PriceSourceResource(kind="csv_dir", csv_dir=str(csv_dir))}) as context:
        return price_source_sensor(context)


def _apply(instance, result):
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_new_symbols_then_nothing_then_appended_bars(tmp_path, csv_dir, dagster_home):
    instance = DagsterInstance.get()
    first = _evaluate(instance, csv_dir, None)
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["AAA", "BBB"]]
    assert sorted(r.partition_key for r in first.run_requests) == ["AAA", "BBB"]
    _apply(instance, first)
    assert sorted(instance.get_dynamic_partitions("symbols")) == ["AAA", "BBB"]

    quiet = _evaluate(instance, csv_dir, first.cursor)
    assert isinstance(quiet, SkipReason)

    make_prices(301, seed=1).to_csv(csv_dir / "AAA.csv", index=False)  # one more bar
    make_prices(300, seed=3).to_csv(csv_dir / "CCC.csv", index=False)  # a new symbol
    later = _evaluate(instance, csv_dir, first.cursor)
    assert [list(r.partition_keys) for r in later.dynamic_partitions_requests] == [["CCC"]]
    assert sorted(r.partition_key for r in later.run_requests) == ["AAA", "CCC"]
    assert all(r.run_key for r in later.run_requests)  # run keys dedupe repeated evaluations


def test_weekly_schedule_requests_every_partition_once_per_week(dagster_home):
    from datetime import datetime, timezone

    from dagster import build_schedule_context

    from hpo_assets.schedules import weekly_retune

    from resources import TuneBudgetResource

    instance, budget = DagsterInstance.get(), {"budget": TuneBudgetResource(name="demo")}
    # As context managers: a context with resources sets Dagster's current instance until it is closed.
    with build_schedule_context(instance=instance, resources=budget) as context:
        assert isinstance(weekly_retune(context), SkipReason)
    instance.add_dynamic_partitions("symbols", ["NVDA", "AAPL"])
    when = datetime(2026, 11, 22, 2, tzinfo=timezone.utc)
    with build_schedule_context(instance=instance, scheduled_execution_time=when, resources=budget) as context:
        requests = weekly_retune(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [("AAPL", "AAPL:2026-W47"), ("NVDA", "NVDA:2026-W47")]
    assert {r.tags["hpo/budget"] for r in requests} == {"demo"}  # the deployment's budget, shown in the runs list


RETUNE_AFTER_BARS = 20  # the bar-count rule, opt-in (off by default: forward evidence decides)


def test_stale_config_sensor(tmp_path, dagster_home, random_checkpoints):
    import json

    from forecast_core.checkpoints import checkpoint_revision
    from forecast_core.store import Storage
    from hpo_assets.sensors import stale_config_sensor
    from resources import RetuneSettings, StorageResource, TuneBudgetResource
    from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("symbols", ["AAA"])
    storage = StorageResource(root=str(tmp_path / "st"), hyperparams_dir=str(tmp_path / "hp"))
    resources = {"storage": storage, "toto": TotoRuntime(source=str(random_checkpoints["toto"])),
                 "toto2": Toto2Runtime(checkpoints=[str(random_checkpoints["toto2"])]),
                 "kronos": KronosRuntime(source=str(random_checkpoints["kronos"]),
                                         tokenizer_source=str(random_checkpoints["kronos_tokenizer"])),
                 "retune": RetuneSettings(after_new_bars=RETUNE_AFTER_BARS), "budget": TuneBudgetResource()}

    def evaluate():
        with build_sensor_context(instance=instance, resources=resources) as context:
            return stale_config_sensor(context)

    assert isinstance(evaluate(), SkipReason)  # no prices stored yet: nothing to tune from
    prices = make_prices(300, seed=1)
    Storage(tmp_path / "st").write_prices("AAA", prices)
    missing = evaluate()
    assert [r.partition_key for r in missing] == ["AAA"] and "no such config file" in missing[0].tags["retune_reason"]

    revisions = {"toto": checkpoint_revision(random_checkpoints["toto"]),
                 "toto2": f"{random_checkpoints['toto2']}@{checkpoint_revision(random_checkpoints['toto2'])}",
                 "kronos": f"{checkpoint_revision(random_checkpoints['kronos'])}+"
                           f"{checkpoint_revision(random_checkpoints['kronos_tokenizer'])}"}
    for model in ("toto", "toto2", "kronos"):
        document = _document(model, prices["timestamp"].iloc[-1].date().isoformat(), revisions[model])
        (tmp_path / "hp" / model).mkdir(parents=True, exist_ok=True)
        (tmp_path / "hp" / model / "AAA.json").write_text(json.dumps(document))
    assert isinstance(evaluate(), SkipReason)  # configs current

    Storage(tmp_path / "st").write_prices("AAA", make_prices(300 + RETUNE_AFTER_BARS, seed=1))
    advanced = evaluate()
    assert [r.partition_key for r in advanced] == ["AAA"]
    assert f"{RETUNE_AFTER_BARS} new bars" in advanced[0].tags["retune_reason"]

    other = _document("toto", prices["timestamp"].iloc[-1].date().isoformat(), "sha256:0000")
    (tmp_path / "hp" / "toto" / "AAA.json").write_text(json.dumps(other))
    Storage(tmp_path / "st").write_prices("AAA", prices)
    assert "sha256:0000" in evaluate()[0].tags["retune_reason"]


def _document(model: str, data_end: str, revision: str) -> dict:
    knobs = {"toto": {"num_samples": 256, "aggregate": "median", "samples_per_batch": 256},
             "toto2": {"checkpoint": "x", "context_length": 0, "decode_block_size": 0, "variates": "close",
                       "aggregate": "median"},
             "kronos": {"temperature": 1.0, "top_p": 0.9, "top_k": 0, "sample_count": 1, "max_context": 512,
                        "clip": 5.0, "aggregate": "mean"}}[model]
    scores = {"mae_pct": 5.0, "windows": 3}
    return {"symbol": "AAA", "model": model, "config": {"name": f"{model}-default", **knobs},
            "validation": scores, "test": scores,
            "windows": {"n_val": 3, "n_test": 2, "forecast_horizon": 16, "stride": 16, "context": 64},
            "metadata": {"model_id": model, "model_revision": revision, "data_end": data_end,
                         "data_version": "x", "seed": 0, "search": {"method": "grid", "trials": 1},
                         "baselines_on_test": {}, "selection": {"significant_vs_default": False, "reason": "test"},
                         "selected_at": "2026-11-24T00:00:00+00:00", "code_version": "test"}}


def test_sensor_intervals_are_set_per_deployment(monkeypatch):
    import pytest

    from hpo_assets.sensors import INTERVALS, interval_seconds

    variable, default = INTERVALS["price_source_sensor"]
    monkeypatch.delenv(variable, raising=False)
    assert interval_seconds("price_source_sensor") == default
    monkeypatch.setenv(variable, "3600")  # an hourly feed
    assert interval_seconds("price_source_sensor") == 3600
    for bad in ("0", "5m", "-1"):
        monkeypatch.setenv(variable, bad)
        with pytest.raises(ValueError, match=rf"\${variable}='{bad}': expected a whole number of seconds"):
            interval_seconds("price_source_sensor")
