"""Build the project's Definitions against temp storage and small windows, for tests."""

from __future__ import annotations

from dagster import DagsterInstance, materialize

from hpo_assets.definitions import default_resources
from hpo_assets.lib import register_symbols
from hpo_assets.prices import price_history
from resources import BacktestSettings, PriceSourceResource, StorageResource
from resources.models import KronosRuntime, Toto2Runtime, TotoRuntime
from tests.conftest import TINY_BACKTEST


def make_resources(storage_root, csv_dir=None, checkpoints=None, **backtest) -> dict:
    resources = default_resources()
    resources["storage"] = StorageResource(root=str(storage_root), hyperparams_dir=str(storage_root / "hyperparams"))
    if checkpoints is not None:
        resources["toto"] = TotoRuntime(source=str(checkpoints["toto"]), device="cpu")
        resources["toto2"] = Toto2Runtime(checkpoints=[str(checkpoints["toto2"])], device="cpu")
        resources["kronos"] = KronosRuntime(source=str(checkpoints["kronos"]),
                                            tokenizer_source=str(checkpoints["kronos_tokenizer"]), device="cpu")
    resources["backtest"] = BacktestSettings(**{**TINY_BACKTEST, **backtest})
    if csv_dir is not None:
        resources["prices"] = PriceSourceResource(kind="csv_dir", csv_dir=str(csv_dir))
    return resources


def materialize_prices(instance: DagsterInstance, symbol: str, resources: dict):
    register_symbols(instance, [symbol])
    return materialize([price_history], partition_key=symbol, instance=instance, resources=resources,
                       raise_on_error=False)
