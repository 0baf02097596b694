"""The zero-drift random-walk baseline: reproducible, prefix-consistent, calibrated on its own model."""

from __future__ import annotations

import numpy as np
import pytest

from forecast_core.aggregate import aggregate
from forecast_core.backtest import Trial
from forecast_core.forecasters import BASELINES, PRICE_COLUMNS, ContextBatch, Persistence, RandomWalk
from forecast_core.metrics import coverage, crps_pct
from forecast_core.sweep.budgets import BASELINE_TRIALS, RANDOM_WALK_SAMPLES

SIGMA = 0.02  # true one-bar log-return sd of the simulated series (a typical daily stock)
WINDOWS, CONTEXT, HORIZON = 400, 300, 16


def _batch(close: np.ndarray, horizon: int = HORIZON, seeds: np.ndarray | None = None) -> ContextBatch:
    """A batch whose every price column is ``close`` ``[windows, context]``."""
    w, length = close.shape
    values = np.repeat(close[:, :, None], len(PRICE_COLUMNS), axis=2).astype(np.float64)
    values[:, :, PRICE_COLUMNS.index("volume")] = 1.0
    ts = np.datetime64("2020-01-01", "ns") + np.arange(length + horizon).astype("timedelta64[D]")
    return ContextBatch(values, np.tile(ts[:length], (w, 1)), np.tile(ts[length:], (w, 1)),
                        np.arange(w, dtype=np.int64) + 1000 if seeds is None else seeds)


def _simulate(seed: int = 0, windows: int = WINDOWS, context: int = CONTEXT, horizon: int = HORIZON):
    """Independent Gaussian log random walks with known sigma: (context closes, target closes)."""
    rng = np.random.default_rng(seed)
    start = 100.0 * np.exp(rng.normal(0, 1, (windows, 1)))  # levels from ~10 to ~1000
    prices = start * np.exp(np.cumsum(rng.normal(0.0, SIGMA, (windows, context + horizon)), axis=1))
    return prices[:, :context], prices[:, context:]


@pytest.fixture(scope="module")
def simulated():
    context, targets = _simulate()
    batch = _batch(context)
    return batch, targets, RandomWalk().sample_paths(batch, RANDOM_WALK_SAMPLES)


def test_registered_as_a_baseline_with_a_multi_sample_median_trial():
    assert isinstance(BASELINES["random_walk"], RandomWalk) and BASELINES["random_walk"].name == "random_walk"
    trial = BASELINE_TRIALS["random_walk"]
    assert (trial.model, trial.num_samples, trial.aggregate) == ("random_walk", RANDOM_WALK_SAMPLES, "median")
    assert trial.knobs == {"lookback": RandomWalk().lookback, "num_samples": RANDOM_WALK_SAMPLES,
                           "aggregate": "median"}
    # another sample count or aggregation is another config (its own hash, its own stored file)
    other = Trial("random_walk", {**trial.knobs, "num_samples": 64}, num_samples=64, aggregate="median")
    assert other.config_hash != trial.config_hash


def test_same_seeds_same_paths_and_each_window_has_its_own_stream(simulated):
    batch, _, paths = simulated
    assert paths.shape == (WINDOWS, RANDOM_WALK_SAMPLES, HORIZON) and np.isfinite(paths).all()
    np.testing.assert_array_equal(RandomWalk().sample_paths(batch, RANDOM_WALK_SAMPLES), paths)
    # a window alone gives the same paths as in the batch: nothing is shared across windows
    alone = ContextBatch(batch.values[7:8], batch.timestamps[7:8], batch.future_timestamps[7:8], batch.seeds[7:8])
    np.testing.assert_array_equal(RandomWalk().sample_paths(alone, RANDOM_WALK_SAMPLES)[0], paths[7])
    reseeded = ContextBatch(batch.values, batch.timestamps, batch.future_timestamps, batch.seeds + 1)
    assert not np.allclose(RandomWalk().sample_paths(reseeded, RANDOM_WALK_SAMPLES), paths)


def test_smaller_sample_count_is_exactly_a_prefix(simulated):
    batch, _, paths = simulated
    for n in (1, 3, 64, 255):
        np.testing.assert_array_equal(RandomWalk().sample_paths(batch, n), paths[:, :n])


def test_paths_start_from_the_last_close_and_scale_with_the_prices(simulated):
    batch, _, paths = simulated
    last = batch.column("close")[:, -1]
    sigma = RandomWalk().sigma(batch)
    first_step = np.log(paths[:, :, 0] / last[:, None]) / sigma[:, None]  # z of the first step
    assert np.abs(first_step).max() < 6.0  # one sigma-step from the last close, never a jump
    assert abs(first_step.mean()) < 0.02 and abs(first_step.std() - 1.0) < 0.02  # 102,400 N(0,1) draws
    scaled = ContextBatch(batch.values * 1e-4, batch.timestamps, batch.future_timestamps, batch.seeds)
    np.testing.assert_allclose(RandomWalk().sample_paths(scaled, RANDOM_WALK_SAMPLES), paths * 1e-4, rtol=1e-12)


def test_sigma_is_the_contexts_own_log_return_scale(simulated):
    batch, _, _ = simulated
    sigma = RandomWalk().sigma(batch)
    # 256 returns: sampling sd of the estimate ~ SIGMA / sqrt(512) ~ 4.4%; 5 of those bound each window
    assert np.abs(sigma / SIGMA - 1).max() < 0.22 and abs(sigma.mean() / SIGMA - 1) < 0.01
    # only the last `lookback` returns count; a shorter context uses all of it
    close = batch.column("close")
    np.testing.assert_allclose(RandomWalk(lookback=10).sigma(batch),
                               np.sqrt((np.diff(np.log(close[:, -11:]), axis=1) ** 2).mean(axis=1)), rtol=1e-12)
    np.testing.assert_array_equal(RandomWalk(lookback=10_000).sigma(batch),
                                  RandomWalk(lookback=CONTEXT - 1).sigma(batch))


def test_coverage_near_80_percent_and_crps_below_persistence_on_its_own_model(simulated):
    batch, targets, paths = simulated
    covered = coverage(paths, targets).mean()
    # Windows are independent; steps within a window are not, so the window is the unit: per-window
    # coverage sd <= 0.4, over 400 windows <= 0.02. 0.05 is 2.5 of those (plus sigma-estimate and
    # 256-sample quantile noise, both well below 1%).
    assert abs(covered - 0.80) < 0.05, covered
    rw = crps_pct(paths, targets).mean()
    flat = crps_pct(Persistence().sample_paths(batch), targets).mean()
    # For a calibrated Gaussian the expected CRPS is sd/sqrt(pi) ~ 0.56 sd vs persistence's E|X| ~ 0.80 sd:
    # a ratio ~ 0.71 (log-normal at these horizons is near Gaussian); 0.8 leaves room for noise.
    assert rw < 0.8 * flat, (rw, flat)


def test_median_path_is_the_last_close_up_to_monte_carlo_noise(simulated):
    batch, _, paths = simulated
    last = batch.column("close")[:, -1]
    sigma = RandomWalk().sigma(batch)
    median = aggregate(paths, "median", sample_axis=1)
    relative = np.log(median / last[:, None])  # log of the median path = median of the log steps' sum
    # sd of a sample median of n normals with sd s is ~1.2533 s / sqrt(n); s = sigma * sqrt(h)
    noise = 1.2533 * sigma[:, None] * np.sqrt(np.arange(1, HORIZON + 1))[None, :] / np.sqrt(RANDOM_WALK_SAMPLES)
    assert np.abs(relative / noise).max() < 5.0
    assert abs((relative / noise).mean()) < 0.1  # unbiased over 400 windows x 16 steps


def test_flat_context_gives_persistence():
    batch = _batch(np.full((2, 30), 42.5))
    paths = RandomWalk().sample_paths(batch, 8)
    np.testing.assert_array_equal(paths, np.full((2, 8, HORIZON), 42.5))


def test_two_bar_context_is_enough():
    paths = RandomWalk().sample_paths(_batch(np.array([[100.0, 101.0]])), 4)
    assert paths.shape == (1, 4, HORIZON) and np.isfinite(paths).all()
    assert np.isclose(RandomWalk().sigma(_batch(np.array([[100.0, 101.0]])))[0], np.log(1.01))


def test_bad_contexts_are_refused_clearly():
    with pytest.raises(ValueError, match="at least 2 bars"):
        RandomWalk().sample_paths(_batch(np.array([[100.0]])), 4)
    close = np.tile(np.linspace(90.0, 110.0, 40), (3, 1))
    for bad in (0.0, -5.0, np.nan, np.inf):
        spoiled = close.copy()
        spoiled[1, 20] = bad
        with pytest.raises(ValueError, match=r"finite, positive closes .* window\(s\) \[1\]"):
            RandomWalk().sample_paths(_batch(spoiled), 4)
    # a bad bar older than the lookback is never read
    old = close.copy()
    old[:, 0] = 0.0
    assert np.isfinite(RandomWalk(lookback=10).sample_paths(_batch(old), 4)).all()
    with pytest.raises(ValueError, match="lookback"):
        RandomWalk(lookback=0)
    with pytest.raises(ValueError, match="num_samples"):
        RandomWalk().sample_paths(_batch(close), 0)
