"""Toto 2.0 as a tuned family: point rules over quantiles, quantile metrics, the knob grid and its sweep,
the runtime over several checkpoints, overrides and config files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from forecast_core.aggregate import quantile_point
from forecast_core.configs import ConfigFileError, validate_document
from forecast_core.metrics import crps, crps_from_quantiles, mae_pct, score_quantile_windows
from forecast_core.overrides import env_overrides
from forecast_core.store import Storage, trial_context
from forecast_core.sweep.budgets import Toto2Budget
from forecast_core.sweep.plans import toto2_forecaster
from forecast_core.sweep.runner import run_sweep
from forecast_core.sweep.spaces import TOTO2_DEFAULT, default_trials, toto2_trial
from forecast_core.synthetic import make_prices
from forecast_core.toto2 import QUANTILE_LEVELS, Toto2Config, Toto2Model, load_toto2, save_toto2
from forecast_core.windows import WindowSpec, build_windows, plan_layout

LEVELS = QUANTILE_LEVELS
SPEC = WindowSpec(horizon=16, n_val=3, n_test=2, context=48)


# -- point rules and metrics over quantile levels ------------------------------------------------------------


def test_point_rules_read_levels_interpolate_between_them_and_refuse_sample_statistics():
    q = np.sort(np.random.default_rng(0).normal(size=(3, 9, 5)), axis=1)
    np.testing.assert_array_equal(quantile_point(q, LEVELS, "median", level_axis=1), q[:, 4])
    np.testing.assert_array_equal(quantile_point(q, LEVELS, "quantile_0.3", level_axis=1), q[:, 2])
    np.testing.assert_allclose(quantile_point(q, LEVELS, "quantile_0.45", level_axis=1), (q[:, 3] + q[:, 4]) / 2)
    np.testing.assert_allclose(quantile_point(q, LEVELS, "mean", level_axis=1), q.mean(axis=1))
    for rule in ("trimmed_mean_10", "mean_minus_std_1"):
        with pytest.raises(ValueError, match="needs sample paths"):
            quantile_point(q, LEVELS, rule, level_axis=1)
    with pytest.raises(ValueError, match="levels 0.1..0.9"):
        quantile_point(q, LEVELS, "quantile_0.95", level_axis=1)


def test_quantile_crps_is_exact_for_a_point_mass_and_reads_high_for_a_gaussian():
    targets = np.random.default_rng(1).normal(size=(4, 6))
    point_mass = np.full((4, 9, 6), 0.25)
    np.testing.assert_allclose(crps_from_quantiles(point_mass, LEVELS, targets), np.abs(targets - 0.25).mean(axis=1))
    # a calibrated N(0, 1) forecast: the 9-level approximation leaves out the tails' small pinball losses
    rng = np.random.default_rng(2)
    y = rng.standard_normal((4000, 1))
    q = np.broadcast_to(stats.norm.ppf(LEVELS)[None, :, None], (4000, 9, 1))
    ratio = crps_from_quantiles(q, LEVELS, y).mean() / crps(rng.standard_normal((4000, 2000, 1)), y).mean()
    assert 1.05 < ratio < 1.14, ratio


def test_quantile_scores_read_coverage_from_the_outer_levels():
    targets = np.array([[0.0, 1.0, 5.0, -5.0]])
    q = np.broadcast_to(np.linspace(-1, 1, 9)[None, :, None], (1, 9, 4))
    scores = score_quantile_windows(q[:, 4], q, LEVELS, targets, np.ones((1, 10)))
    assert scores["coverage_10_90"][0] == 0.5  # 0 and 1 inside [-1, 1]; 5 and -5 outside
    np.testing.assert_allclose(scores["mae_pct"], mae_pct(q[:, 4], targets))


# -- the grid, its plans and the sweep ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, random_checkpoints):
    """Two checkpoints of different sizes: the shared random one and a wider one."""
    root = tmp_path_factory.mktemp("toto2")
    torch.manual_seed(4)
    save_toto2(Toto2Model(Toto2Config(patch_size=8, d_model=32, num_heads=4, num_groups=2, num_layers=2,
                                      layer_group_size=2, num_variate_layers_per_group=1, variate_layer_first=True,
                                      residual_attn_ratio=1.0)), root / "wide")
    return {str(random_checkpoints["toto2"]): random_checkpoints["toto2"], str(root / "wide"): root / "wide"}


class _Counted:
    """Loaders that count forward passes per checkpoint."""

    def __init__(self, checkpoints):
        self.models = {label: load_toto2(path) for label, path in checkpoints.items()}
        self.calls: list[str] = []
        for label, model in self.models.items():
            forecast = model.forecast

            def counted(*args, _label=label, _forecast=forecast, **kwargs):
                self.calls.append(_label)
                return _forecast(*args, **kwargs)

            model.forecast = counted

    def loaders(self):
        return {label: (lambda label=label: self.models[label]) for label in self.models}


def test_one_forward_pass_scores_every_point_rule_and_the_default_is_marked_once(tmp_path, checkpoints):
    prices = make_prices(260, seed=11)
    layout = plan_layout(len(prices), SPEC)
    windows = build_windows(prices, layout.spec, "SYM")
    counted = _Counted(checkpoints)
    budget = Toto2Budget(context_lengths=(0, 16, 48, 4096), decode_block_sizes=(0, 8), variates=("close", "ohlc"),
                         aggregations=("median", "mean", "quantile_0.45"))
    plans = budget.plans(counted.loaders(), layout.spec.context)
    # 48 and 4096 are not shorter than the windows' 48-bar context: only "all" (0) and 16 are scored
    assert len(plans) == 2 * 2 * 2 * 2
    assert {p.context_length for p in plans} == {0, 16}
    trials = [t for p in plans for t in p.group]
    defaults = [t for t in trials if t.is_default]
    first = next(iter(checkpoints))
    assert defaults == [toto2_trial(first, **TOTO2_DEFAULT)] and defaults[0].knobs["checkpoint"] == first

    store = Storage(tmp_path)
    ctx = trial_context("SYM", prices, layout, model_revision="rev")
    result = run_sweep(store, "toto2", ctx, windows, plans, probe_latency=False)
    assert len(result.computed) == len(trials) == 16 * 3
    assert len(counted.calls) == len(plans)  # one pass per (checkpoint, context, decoding, variates)
    rows = store.read_trials("toto2", "SYM")
    assert (rows["drawn_samples"] == len(LEVELS)).all()

    median = next(t for t in trials if t.is_default)
    quantiles = toto2_forecaster(counted.models[first], median).quantiles(windows.batch)
    stored = rows[rows["config_hash"] == median.config_hash].sort_values("origin_index")
    np.testing.assert_allclose(stored["mae_pct"], mae_pct(quantiles[:, 4], windows.targets))
    np.testing.assert_allclose(stored["crps_pct"], 100 * crps_from_quantiles(quantiles, LEVELS, windows.targets)
                               / np.abs(windows.targets).mean(axis=1))

    passes = len(counted.calls)
    again = run_sweep(store, "toto2", ctx, windows, plans, probe_latency=False)
    assert not again.computed and len(again.skipped) == len(trials) and len(counted.calls) == passes


def test_a_history_too_short_to_tune_scores_the_default_alone(checkpoints):
    loaders = _Counted(checkpoints).loaders()
    plans = Toto2Budget().plans(loaders, 64, tunable=False)
    assert [t for p in plans for t in p.group] == [default_trials(next(iter(checkpoints)))["toto2"]]


def test_budget_refuses_unknown_variates_and_negative_sizes():
    with pytest.raises(ValueError, match="unknown Toto 2.0 variates.*'hlc'"):
        Toto2Budget(variates=("close", "hlc"))
    with pytest.raises(ValueError, match=">= 0"):
        Toto2Budget(context_lengths=(-16,))
    with pytest.raises(ValueError, match="'trimmed_mean_5' needs sample paths"):
        Toto2Budget(aggregations=("median", "trimmed_mean_5"))


# -- runtime, overrides and files --------------------------------------------------------------------------------


def test_runtime_lists_checkpoints_by_label_and_refuses_unknown_ones(checkpoints):
    from resources.runtimes import Toto2Runtime

    paths = list(checkpoints)
    runtime = Toto2Runtime(checkpoints=paths)
    assert runtime.labels == paths
    assert runtime.model_revision.count("@sha256:") == 2 and runtime.model_revision.startswith(paths[0])
    assert runtime.model(paths[1]).config.d_model == 32
    with pytest.raises(ValueError, match="not in the runtime's checkpoints"):
        runtime.model("Datadog/Toto-2.0-22m")
    with pytest.raises(ValueError, match="listed more than once"):
        Toto2Runtime(checkpoints=[paths[0], paths[0]])
    with pytest.raises(ValueError, match="not in checkpoints"):
        Toto2Runtime(checkpoints=paths[:1], revisions={"Datadog/Toto-2.0-22m": "a" * 40})


def test_runtime_cutoff_is_the_latest_of_its_checkpoints():
    from resources.runtimes import Toto2Runtime
    from forecast_core.toto2 import DEFAULT_TINY_DIR

    both = Toto2Runtime(checkpoints=[str(DEFAULT_TINY_DIR), "Datadog/Toto-2.0-22m"])
    assert both.cutoff("AAPL").seen_through.isoformat() == "2026-05-31"  # the published family's bound
    assert Toto2Runtime(checkpoints=[str(DEFAULT_TINY_DIR)]).cutoff("AAPL").seen_through.isoformat() == "2019-08-27"
    assert not Toto2Runtime(checkpoints=["someone/else"]).cutoff("AAPL").known


def test_toto2_overrides_are_validated_and_echoed():
    overrides = env_overrides({"TOTO2_CONTEXT_LENGTH": "256", "TOTO2_VARIATES": "ohlc",
                               "TOTO2_AGGREGATE": "quantile_0.45", "TOTO2_DECODE_BLOCK_SIZE": "32",
                               "TOTO2_CHECKPOINT": "Datadog/Toto-2.0-22m"})
    assert overrides.toto2 == {"checkpoint": "Datadog/Toto-2.0-22m", "context_length": 256, "decode_block_size": 32,
                               "variates": "ohlc", "aggregate": "quantile_0.45"}
    assert "TOTO2_VARIATES=ohlc" in overrides.describe()
    with pytest.raises(ValueError) as error:
        env_overrides({"TOTO2_VARIATES": "hlc", "TOTO2_AGGREGATE": "trimmed_mean_5", "TOTO2_CONTEXT_LENGTH": "-1"})
    assert all(name in str(error.value) for name in ("TOTO2_VARIATES", "TOTO2_AGGREGATE", "TOTO2_CONTEXT_LENGTH"))


def test_toto2_config_files_need_every_knob():
    trial = default_trials("Datadog/Toto-2.0-22m")["toto2"]
    scores = {"mae_pct": 5.0, "windows": 3}
    document = {"symbol": "AAA", "model": "toto2", "config": {"name": trial.name, **trial.knobs},
                "validation": scores, "test": scores,
                "windows": {"n_val": 3, "n_test": 2, "forecast_horizon": 16, "stride": 16, "context": 64},
                "metadata": {"model_id": "Datadog/Toto-2.0-22m", "model_revision": "r", "data_end": "2026-01-02",
                             "data_version": "x", "seed": 0, "search": {"method": "grid", "trials": 1},
                             "baselines_on_test": {}, "selection": {"significant_vs_default": False, "reason": "t"},
                             "selected_at": "2026-11-24T00:00:00+00:00", "code_version": "t"}}
    validate_document(document, "toto2", "test")
    del document["config"]["variates"]
    with pytest.raises(ConfigFileError, match="'variates' is a required property"):
        validate_document(document, "toto2", "test")
