"""forecast_core.sweep.budgets owns the sweep budgets: the deployment names one (resource `budget`, from
$HPO_TUNE_BUDGET and $HPO_TUNE_BUDGETS_FILE) that every tune runs, and tune_symbol runs the sweeps' phases
through the assets' driver (checked here with stub forecasters: no model is loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from forecast_core.store import Storage
from forecast_core.sweep.budgets import (
    BASELINE_TRIALS,
    BUILT_IN_BUDGETS,
    DEMO_KRONOS,
    DEMO_TOTO,
    KronosBudget,
    TotoBudget,
    TuneBudget,
    named_budget,
    read_budgets,
    toto_trials,
    tune_symbol,
)
from forecast_core.sweep.symbol import SymbolSweep
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec
from hpo_assets.cli import budget_run_config
from hpo_assets.sweeps import KronosSweepConfig, Toto2SweepConfig, TotoSweepConfig
from resources import TuneBudgetResource


def test_sweep_run_configs_leave_every_field_to_the_deployment_budget():
    for config in (TotoSweepConfig(), Toto2SweepConfig(), KronosSweepConfig()):
        assert set(config.model_dump().values()) == {None}
    assert TuneBudget() == BUILT_IN_BUDGETS["full"] and TuneBudget().toto == TotoBudget()
    assert BUILT_IN_BUDGETS["demo"].toto == DEMO_TOTO and BUILT_IN_BUDGETS["demo"].kronos == DEMO_KRONOS


def test_the_deployment_names_its_budget_once(tmp_path, monkeypatch):
    monkeypatch.delenv("HPO_TUNE_BUDGET", raising=False)
    monkeypatch.delenv("HPO_TUNE_BUDGETS_FILE", raising=False)
    assert TuneBudgetResource().budget() == BUILT_IN_BUDGETS["full"]
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("cpu_nightly:\n  toto: {sample_counts: [256, 1024]}\n  kronos: {presets: [], search_budget: 8}\n")
    monkeypatch.setenv("HPO_TUNE_BUDGET", "cpu_nightly")
    monkeypatch.setenv("HPO_TUNE_BUDGETS_FILE", str(budgets))
    mine = TuneBudgetResource().budget()
    assert mine.toto.sample_counts == (256, 1024) and mine.toto.aggregations == TotoBudget().aggregations
    assert mine.kronos.presets == () and mine.kronos.search_budget == 8 and mine.toto2 == BUILT_IN_BUDGETS["full"].toto2
    assert budget_run_config(None) is None  # the CLI's default: the deployment's, checked first
    assert budget_run_config("demo") == {"resources": {"budget": {"config": {"name": "demo"}}}}
    with pytest.raises(ValueError, match=r"unknown tune budget 'nope'.*known: full, demo, cpu_nightly"):
        budget_run_config("nope")


@pytest.mark.parametrize("text, error", [
    ("x: {toto: {sample_counts: 256}}", "budget 'x', toto: sample_counts must be a non-empty list of int, not 256"),
    ("x: {toto: {nope: [1]}}", "budget 'x', toto: expected a mapping with keys among sample_counts, aggregations"),
    ("x: {totoo: {}}", "budget 'x': expected a mapping with keys among toto, toto2, kronos"),
    ("demo: {}", "'demo' is a built-in budget; give yours another name"),
    ("x: {kronos: {presets: [nope]}}", "budget 'x', kronos: unknown Kronos presets ['nope']"),
    ("x: {kronos: {search_budget: 2.5}}", "budget 'x', kronos: search_budget must be of type int, not 2.5"),
    ("[1, 2]", "expected a mapping of budget names to budgets"),
    ("x: [unclosed", "cannot be read"),
])
def test_a_bad_budgets_file_names_the_budget_family_and_field(tmp_path, text, error):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_budgets(path)
    assert str(raised.value).startswith(f"tune budgets file {path}") and error in str(raised.value)


def test_an_unknown_budget_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown tune budget 'cpu'.*set a budgets file.*known: full, demo"):
        named_budget("cpu")
    with pytest.raises(ValueError, match="tune budget name"):
        TuneBudgetResource(name="../x")


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
