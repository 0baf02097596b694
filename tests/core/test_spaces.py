"""The search spaces (forecast_core/sweep/spaces.py): what each grid holds, the one default per family,
the presets, the TPE seed, and the Kronos search's promotion and its blindness to test windows."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from forecast_core.configs import validate_document
from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, load_kronos
from forecast_core.sweep.plans import kronos_search, toto2_plans
from forecast_core.sweep.spaces import (
    KRONOS_AGGREGATIONS, KRONOS_DEFAULT, KRONOS_DEFAULT_AGGREGATE, KRONOS_PRESETS, KRONOS_RANGES,
    KRONOS_SAMPLE_COUNTS, TOTO2_AGGREGATIONS, TOTO2_BUNDLED, TOTO2_CONTEXT_LENGTHS, TOTO2_DECODE_BLOCK_SIZES,
    TOTO2_DEFAULT, TOTO2_VARIATES, TOTO_AGGREGATIONS, TOTO_DEFAULT, TOTO_GUIDE_PRESETS, TOTO_SAMPLE_COUNTS,
    default_trials, kronos_config, kronos_trials, search_seed, toto2_grid, toto_grid, toto_trial,
    tpe_then_halving)
from forecast_core.synthetic import make_prices
from forecast_core.windows import TEST, VALIDATION, build_windows
from tests.support import REPO, TINY_SPEC, config_document, garbage_after


# -- Toto ------------------------------------------------------------------------------------------------------


def test_toto_grid_adds_the_default_and_guide_presets_once_in_a_stable_order():
    small = toto_grid([16, 16], ["mean", "median"])
    extras = [TOTO_DEFAULT, *TOTO_GUIDE_PRESETS.values()]
    expected = {(16, "mean"), (16, "median"), *((k["num_samples"], k["aggregate"]) for k in extras)}
    assert [(t.num_samples, t.aggregate) for t in small] == sorted(expected)
    assert all(t.knobs == {"num_samples": t.num_samples, "aggregate": t.aggregate} for t in small)
    assert len({t.config_hash for t in small}) == len(small)

    full = toto_grid()  # the presets are grid points already: nothing is added twice
    assert len(full) == len(TOTO_SAMPLE_COUNTS) * len(TOTO_AGGREGATIONS)
    assert {(k["num_samples"], k["aggregate"]) for k in extras} <= {(t.num_samples, t.aggregate) for t in full}


# -- Toto 2.0 --------------------------------------------------------------------------------------------------


def test_toto2_grid_groups_trials_by_forward_pass_and_adds_the_default_pass_on_the_first_checkpoint():
    grid = toto2_grid(["first", "second"], [128], [32], ["ohlc"], ["mean", "quantile_0.6"])
    default_pass = ("first", TOTO2_DEFAULT["context_length"], TOTO2_DEFAULT["decode_block_size"],
                    TOTO2_DEFAULT["variates"])
    assert set(grid) == {("first", 128, 32, "ohlc"), ("second", 128, 32, "ohlc"), default_pass}
    assert [t.aggregate for t in grid[default_pass]] == [TOTO2_DEFAULT["aggregate"]]  # the default alone
    for (checkpoint, context, block, variates), trials in grid.items():
        assert {(t.knobs["checkpoint"], t.knobs["context_length"], t.knobs["decode_block_size"],
                 t.knobs["variates"]) for t in trials} == {(checkpoint, context, block, variates)}
        assert [t.aggregate for t in trials] == sorted(t.aggregate for t in trials)

    # When the grid holds the default's pass, its rule joins that pass instead of a second one.
    both = toto2_grid(["first", "second"], [0], [0], ["close"], ["mean"])
    assert set(both) == {("first", 0, 0, "close"), ("second", 0, 0, "close")}
    assert [t.aggregate for t in both[("first", 0, 0, "close")]] == ["mean", "median"]
    assert [t.aggregate for t in both[("second", 0, 0, "close")]] == ["mean"]
    defaults = [t for trials in both.values() for t in trials if t.is_default]
    assert defaults == [default_trials("first")["toto2"]]  # the same knobs on "second" are not the default


def test_toto2_context_lengths_not_shorter_than_the_windows_context_are_left_out():
    """0 (all of the context) always stays; a length equal to the context would be the same pass as 0."""
    loaders = {"ckpt": lambda: None}  # plans only hold the loader; nothing is loaded here
    plans = toto2_plans(loaders, 256, [0, 128, 255, 256, 4096], [0, 32], ["close"], ["median"])
    assert sorted({p.context_length for p in plans}) == [0, 128, 255] and len(plans) == 3 * 2
    assert {p.context_length for p in toto2_plans(loaders, 257, [0, 256, 257, 300], [0], ["close"], ["median"])} \
        == {0, 256}
    assert {p.context_length for p in toto2_plans(loaders, 16, [32, 64], [0], ["close"], ["median"])} == {0}


def test_the_shipped_toto2_space_is_valid_and_its_default_is_one_of_its_points():
    grid = toto2_grid([TOTO2_BUNDLED], TOTO2_CONTEXT_LENGTHS, TOTO2_DECODE_BLOCK_SIZES, list(TOTO2_VARIATES),
                      TOTO2_AGGREGATIONS)
    assert len(grid) == len(TOTO2_CONTEXT_LENGTHS) * len(TOTO2_DECODE_BLOCK_SIZES) * len(TOTO2_VARIATES)
    trials = [t for ts in grid.values() for t in ts]
    assert len(trials) == len(grid) * len(TOTO2_AGGREGATIONS)
    assert [t for t in trials if t.is_default] == [default_trials(TOTO2_BUNDLED)["toto2"]]


# -- Kronos ----------------------------------------------------------------------------------------------------


def test_kronos_trials_score_each_sample_count_prefix_and_a_single_path_with_the_mean_only():
    config = KRONOS_PRESETS["balanced"]
    trials = kronos_trials(config, [64, 1, 16, 64], ["median", "trimmed_mean_10"])
    assert [(t.num_samples, t.aggregate) for t in trials] == [
        (1, KRONOS_DEFAULT_AGGREGATE), (16, "median"), (16, "trimmed_mean_10"), (64, "median"), (64, "trimmed_mean_10")]
    assert all(t.knobs["sample_count"] == t.num_samples and t.knobs["aggregate"] == t.aggregate for t in trials)
    assert not any(t.is_default for t in trials)  # the balanced preset is not upstream's default
    for trial in trials:  # the knobs round-trip to the sampling config they were drawn with
        assert kronos_config(trial) == replace(config, sample_count=trial.num_samples)


def test_kronos_default_is_upstreams_single_path_mean_and_marked_once():
    trials = kronos_trials(KRONOS_DEFAULT, [1, *KRONOS_SAMPLE_COUNTS], KRONOS_AGGREGATIONS)
    defaults = [t for t in trials if t.is_default]
    assert defaults == [default_trials()["kronos"]]
    assert (defaults[0].num_samples, defaults[0].aggregate) == (KRONOS_DEFAULT.sample_count, KRONOS_DEFAULT_AGGREGATE)
    assert kronos_config(defaults[0]) == KRONOS_DEFAULT
    # The same sampling knobs at more paths or another aggregation are other configs, not the default.
    assert len(trials) == 1 + len(KRONOS_SAMPLE_COUNTS) * len(KRONOS_AGGREGATIONS)


# -- defaults and presets --------------------------------------------------------------------------------------


def test_default_trials_hold_one_default_per_family_found_once_in_each_familys_grid():
    defaults = default_trials("ckpt-a")
    assert set(defaults) == {"toto", "toto2", "kronos"}
    assert all(t.is_default and t.model == family for family, t in defaults.items())
    assert defaults["toto"].knobs == TOTO_DEFAULT
    assert defaults["toto2"].knobs == {**TOTO2_DEFAULT, "checkpoint": "ckpt-a"}
    assert default_trials()["toto2"].knobs["checkpoint"] == TOTO2_BUNDLED
    grids = {"toto": toto_grid([16], ["mean"]),
             "toto2": [t for ts in toto2_grid(["ckpt-a", "ckpt-b"], [128], [0], ["ohlc"], ["mean"]).values() for t in ts],
             "kronos": [t for c in (KRONOS_DEFAULT, *KRONOS_PRESETS.values())
                        for t in kronos_trials(c, [1, 16], ["mean", "median"])]}
    for family, trials in grids.items():
        assert [t for t in trials if t.is_default] == [defaults[family]], family


@pytest.mark.parametrize("family, trial", [
    *(("toto", toto_trial(k["num_samples"], k["aggregate"])) for k in TOTO_GUIDE_PRESETS.values()),
    *(("kronos", t) for c in KRONOS_PRESETS.values() for t in kronos_trials(c, [c.sample_count], ["mean"])),
    *((family, t) for family, t in default_trials().items()),
], ids=lambda value: value if isinstance(value, str) else value.name)
def test_every_preset_and_default_is_a_config_file_the_schema_accepts(family, trial):
    validate_document(config_document(trial), family, trial.name)


# -- the TPE seed ------------------------------------------------------------------------------------------------


def test_search_seed_depends_on_symbol_data_version_and_base_seed_only():
    seed = search_seed("AAA", "v1")
    assert seed == search_seed("AAA", "v1", 0) and 0 <= seed < 2 ** 32
    assert len({seed, search_seed("BBB", "v1"), search_seed("AAA", "v2"), search_seed("AAA", "v1", 1)}) == 4
    # Not Python's salted str hash: another interpreter with another hash seed gets the same value.
    code = "from forecast_core.sweep.spaces import search_seed; print(search_seed('AAA', 'v1'))"
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert int(other.stdout) == seed


# -- TPE then successive halving ---------------------------------------------------------------------------------


class _Recorder:
    """A cheap score with a known optimum (temperature 0.3, top_p 0.9), recording every batch it is asked."""

    def __init__(self):
        self.batches: list[list[KronosSamplingConfig]] = []

    def __call__(self, configs):
        self.batches.append(list(configs))
        return [abs(c.temperature - 0.3) + abs(c.top_p - 0.9) for c in configs]


@pytest.mark.parametrize("budget, batch_size, keep_fraction", [(10, 4, 0.25), (7, 8, 0.5), (5, 2, 0.01), (6, 3, 1.0)])
def test_tpe_scores_the_budget_in_batches_and_promotes_the_best_fraction(budget, batch_size, keep_fraction):
    evaluate = _Recorder()
    promoted, scored = tpe_then_halving(evaluate, budget, sample_count=4, keep_fraction=keep_fraction,
                                        batch_size=batch_size, seed=7)
    assert [len(b) for b in evaluate.batches] == [min(batch_size, budget - i) for i in range(0, budget, batch_size)]
    assert [c for b in evaluate.batches for c in b] == [c for c, _ in scored] and len(scored) == budget
    assert len(promoted) == max(1, math.ceil(keep_fraction * budget))
    ranked = sorted(scored, key=lambda item: item[1])
    assert promoted == [c for c, _ in ranked[:len(promoted)]]
    for config, _ in scored:  # every proposal is a valid config inside the search ranges, at the rung's count
        assert config.sample_count == 4
        assert KRONOS_RANGES["temperature"][0] <= config.temperature <= KRONOS_RANGES["temperature"][1]
        assert KRONOS_RANGES["top_p"][0] <= config.top_p <= KRONOS_RANGES["top_p"][1]
        assert KRONOS_RANGES["clip"][0] <= config.clip <= KRONOS_RANGES["clip"][1]
        assert config.top_k in KRONOS_RANGES["top_k"] and config.max_context in KRONOS_RANGES["max_context"]


def test_tpe_is_reproducible_from_its_seed():
    def run(seed):
        return tpe_then_halving(_Recorder(), 12, sample_count=2, keep_fraction=0.5, batch_size=4, seed=seed)

    assert run(3) == run(3)
    assert run(3)[1] != run(4)[1]


def test_test_windows_never_steer_the_kronos_search():
    """Every bar from the first test window's origin on spoiled: the same proposals, scores and promotions.
    Spoiling from the last validation window's origin on changes the scores: the comparison can fail."""
    forecaster = KronosForecaster(*load_kronos(), KronosSamplingConfig(sample_count=2))
    prices = make_prices(TINY_SPEC.min_bars, seed=21)
    clean = build_windows(prices, TINY_SPEC, "AAA")
    first_test = int(clean.origins[clean.splits == TEST][0])
    last_val = int(clean.origins[clean.splits == VALIDATION][-1])

    def search(frame):
        windows = build_windows(frame, TINY_SPEC, "AAA")
        return kronos_search(forecaster, windows, budget=3, sample_count=2, aggregations=["mean", "median"],
                             rung_windows=2, keep_fraction=0.5, seed=search_seed("AAA", "v1"))

    promoted, scored = search(prices)
    assert search(garbage_after(prices, first_test)) == (promoted, scored)
    spoiled_validation = search(garbage_after(prices, last_val))[1]
    assert [s for _, s in spoiled_validation] != [s for _, s in scored]
    assert np.isfinite([s for _, s in scored]).all()
