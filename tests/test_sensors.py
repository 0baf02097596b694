"""price_source_sensor on a real temp instance: new CSV -> new partition + run; nothing new -> skip."""

from __future__ import annotations

from dagster import DagsterInstance, SkipReason, build_sensor_context

from hpo_assets.sensors import price_source_sensor
from resources import PriceSourceResource
from tests.synthetic import make_prices


def _evaluate(instance, csv_dir, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor,
                                   resources={"prices": PriceSourceResource(kind="csv_dir", csv_dir=str(csv_dir))})
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
