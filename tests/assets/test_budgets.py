"""forecast_core.sweep.budgets owns the sweep budgets; the Dagster run configs and the demo take theirs from it,
and tune_symbol runs the sweeps' phases through the assets' driver (checked here with stub forecasters: no
model is loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from forecast_core.store import Storage
from forecast_core.sweep.budgets import (
    BASELINE_TRIALS,
    DEMO_KRONOS,
    DEMO_TOTO,
    KronosBudget,
    TotoBudget,
    toto_trials,
    tune_symbol,
)
from forecast_core.sweep.symbol import SymbolSweep
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec
from hpo_assets.cli import demo_tune_config
from hpo_assets.sweeps import KronosSweepConfig, TotoSweepConfig


def test_dagster_configs_default_to_the_core_budgets():
    assert TotoSweepConfig().model_dump() == TotoBudget().run_config()
    assert KronosSweepConfig().model_dump() == KronosBudget().run_config()


def test_demo_run_config_is_the_core_demo_budgets():
    ops = demo_tune_config()["ops"]
    assert TotoSweepConfig(**ops["toto_sweep"]["config"]).model_dump() == DEMO_TOTO.run_config()
    assert KronosSweepConfig(**ops["kronos_sweep"]["config"]).model_dump() == DEMO_KRONOS.run_config()


def test_unknown_kronos_preset_is_refused():
    with pytest.raises(ValueError, match="unknown Kronos presets"):
        KronosBudget(presets=("balanced", "nope"))


class _Walk:
    """Random-walk paths from the last close, seeded per window: a stand-in for a model."""

    def __init__(self, name: str):
        self.name = name

    def sample_paths(self, batch, num_samples: int) -> np.ndarray:
        horizon = batch.future_timestamps.shape[1]
        last = batch.column("close")[:, -1]
        steps = np.stack([np.random.default_rng(int(s)).normal(0, 0.01, (num_samples, horizon)) for s in batch.seeds])
        return last[:, None, None] * np.exp(np.cumsum(steps, axis=-1))

    def sample_configs(self, batch, configs) -> list[np.ndarray]:
        return [self.sample_paths(batch, c.sample_count) for c in configs]


@pytest.mark.parametrize("bars, tunable", [(400, True), (120, False)])
def test_tune_symbol_runs_every_phase(tmp_path, bars, tunable):
    spec = WindowSpec(horizon=16, n_val=4, n_test=2, context=128)
    store, prices = Storage(tmp_path), make_prices(bars, seed=5)
    phases = tune_symbol(store, "TEST", prices, _Walk("toto"), _Walk("kronos"), spec, DEMO_TOTO, DEMO_KRONOS)
    assert list(phases) == ["baseline", "toto", *(["kronos search"] if tunable else []), "kronos"]
    assert phases["baseline"].trials == len(BASELINE_TRIALS)
    assert phases["toto"].trials == len(toto_trials(DEMO_TOTO, tunable))
    assert (phases["kronos"].trials > 1) == tunable  # too short to tune: the default config alone
    assert all(p.seconds >= 0 for p in phases.values())
    # the sweep assets' driver, on the same store: the same trial identities, every baseline found
    driver = SymbolSweep.of(store, "TEST", prices, spec).with_revision("")
    assert len(driver.summary("baseline", list(BASELINE_TRIALS.values()))) == len(BASELINE_TRIALS)
