"""Is the best validation config really better than the default? A test that counts every config.

Picking the best of N configs on a symbol's few validation windows and then testing only that
config against the default ignores the other N-1 draws: with every config truly equal to the
default, the percentile-bootstrap rule ``best_configs.sql`` used before calls about 18% of
symbols "significant" at N=5 and half of them at N=124 (:func:`percentile_bootstrap_rule`). :func:`selection_test` asks the
question for all configs at once, with the resampling done by ``arch.bootstrap``:

* **Romano-Wolf StepM** (FWER 5%) gives the set of configs superior to the default; the best
  config (lowest mean validation loss) is *significantly better* when it is in that set. Its first
  step is Hansen's SPA, whose consistent p-value is reported. StepM rather than SPA alone because
  SPA only says "some config beats the default"; StepM says which ones, with the same error
  control, so the decision is about the config we would actually select.
* **Model confidence set** (Hansen-Lunde-Nason, 10%, "max" statistic): the configs that cannot be
  told apart from the best, i.e. how flat the optimum is. The "R" statistic costs O(reps * N^3)
  (seconds per symbol at a hundred configs) and, with 8 windows, drops truly equal configs far more often.

Choices forced by 8 windows per symbol (measured with ``benchmarks/bench_selection.py``):

* The statistic is arch's *raw* mean loss difference (arch 8 does not divide by the standard error
  in SPA/StepM whatever ``studentize`` says; it only uses it for the SPA recentring threshold).
  That is what we want: dividing by per-config standard errors estimated from 8 windows rejects
  for whichever config has a spuriously small spread (11-21% false positives at N=5-36).
* A circular block bootstrap (block b) of a mean of T windows has, for uncorrelated windows,
  (T-b)/T of the mean's variance: 12% too small at T=8, b=1, which alone lifts a nominal 5% test to
  ~8%, and 25% too small at b=2. Losses are therefore spread about each config's mean by
  sqrt(T/(T-b)) before resampling (for b=1 the usual small-sample variance correction); means, and
  so the ranking, are unchanged.
* Circular blocks of ``block_length`` consecutive windows (1 = i.i.d.; ceil(H/stride) when targets
  overlap). With fewer than two blocks (2 * block > windows) every
  resample is about a rotation of the sample, so the bootstrap has no spread and any gain looks
  certain; with fewer than 3 windows SPA's recentring threshold (log log T) is undefined. Then no
  test is run: not significant, p = 1, every config in the confidence set.
* Measured false-positive rates (all configs equal, 8 uncorrelated windows): ~4.7% at N=5 and
  2-4% at N=12-124; above 5% only at N=1 (6.5%) and with blocks of 2 (8% at N=1, 5.3% at N=5),
  where 4-8 independent draws make the bootstrap's tails too light.
* The MCS is optimistic at 8 windows (with 37 truly equal configs it drops at least one for about
  half of the symbols): read it as a picture of the optimum's flatness, not as a guarantee.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from arch.bootstrap import MCS, SPA, CircularBlockBootstrap

SIZE = 0.05  # FWER of "significantly better than the default"
MCS_SIZE = 0.10  # configs with an MCS p-value above this are indistinguishable from the best
BOOTSTRAP = "circular"  # fixed-length blocks of consecutive windows


@dataclass(frozen=True)
class SelectionTest:
    """The outcome for one (symbol, model): indices are columns of the ``losses`` passed in."""

    best: int  # lowest mean validation loss (the default on ties)
    default: int
    significant: bool  # best is in ``superior``: better than the default at FWER 5%
    p_value: float  # SPA consistent p-value of "no config beats the default" (1.0 when untested)
    superior: tuple[int, ...]  # StepM: configs better than the default at FWER 5%
    confidence_set: tuple[int, ...] | None  # MCS at 10% (None when not asked for)
    test: str  # what was run, or why nothing was
    block_length: int  # block length used (requested, capped at the number of windows)
    configs: int
    windows: int
    reps: int


@dataclass(frozen=True)
class PercentileRule:
    """The rule that selected before StepM (a percentile bootstrap of best - default), for comparison."""

    best: int
    mean_diff: float  # mean over windows of loss(best) - loss(default)
    ci_low: float
    ci_high: float
    significant: bool  # ci_high < 0


def _validated(losses: np.ndarray, default: int, block_length: int) -> np.ndarray:
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 2 or losses.shape[0] < 1 or losses.shape[1] < 1:
        raise ValueError(f"losses must be [windows, configs] with at least one of each, got {losses.shape}")
    if not np.isfinite(losses).all():
        raise ValueError("losses must be finite: pass only windows every config was scored on")
    if not 0 <= default < losses.shape[1]:
        raise ValueError(f"default {default} is not a column of losses ({losses.shape[1]} configs)")
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    return losses


def _best(losses: np.ndarray, default: int) -> int:
    means = losses.mean(axis=0)
    return default if means[default] <= means.min() else int(np.argmin(means))


def _corrected(losses: np.ndarray, block: int) -> np.ndarray:
    """Spread each config's losses about its mean by sqrt(T/(T-b)) (see the module docstring)."""
    t = losses.shape[0]
    means = losses.mean(axis=0)
    return means + math.sqrt(t / (t - block)) * (losses - means)


def _confidence_set(losses: np.ndarray, block: int, seed: int, reps: int) -> tuple[int, ...]:
    """MCS members; identical columns are tested once (arch divides by their zero spread)."""
    _, first, group = np.unique(losses, axis=1, return_index=True, return_inverse=True)
    group = np.asarray(group).reshape(-1)
    if len(first) == 1:
        return tuple(range(losses.shape[1]))
    mcs = MCS(losses[:, first], MCS_SIZE, reps=reps, block_size=block, method="max",
              bootstrap=BOOTSTRAP, seed=seed)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero spread: a constant shift apart
        mcs.compute()
    kept = {int(i) for i in mcs.included}
    return tuple(c for c in range(losses.shape[1]) if int(group[c]) in kept)


def _step_down(spa: SPA) -> list[int]:
    """Romano-Wolf StepM on a computed SPA: reject, drop the rejected, retest the rest.

    As ``arch.bootstrap.StepM.compute``, which in arch 8.0.0 fails (max of an empty set) when the
    steps end up rejecting every config; here the loop simply stops.
    """
    active = np.ones(spa.k, dtype=bool)
    rejected: list[int] = []
    while active.any():
        spa.subset(active)
        spa.compute()
        new = [int(i) for i in spa.better_models(SIZE)]
        if not new:
            break
        rejected += new
        active[new] = False
    spa.subset(np.ones(spa.k, dtype=bool))
    return rejected


def selection_test(losses: np.ndarray, default: int, block_length: int, seed: int, reps: int = 1000,
                   confidence_set: bool = True) -> SelectionTest:
    """Test the best of all scored configs against the default, accounting for every config.

    ``losses``: [windows, configs] validation losses (MAE%), windows in origin order (blocks are
    consecutive windows), every config scored on every window. ``default``: the column of the
    model's default config. ``block_length``: 1 when targets do not overlap, else ceil(H/stride).
    Deterministic given ``seed``. ``confidence_set=False`` skips the MCS (simulations).
    """
    losses = _validated(losses, default, block_length)
    windows, configs = losses.shape
    block = min(block_length, windows)
    best = _best(losses, default)
    everyone = tuple(range(configs))

    def untested(why: str) -> SelectionTest:
        return SelectionTest(best, default, False, 1.0, (), everyone if confidence_set else None, why,
                             block, configs, windows, reps)

    if configs == 1:
        return untested("none: only the default was scored")
    if windows < 3:
        return untested(f"none: {windows} validation windows (a test needs at least 3)")
    if 2 * block > windows:
        return untested(f"none: blocks of {block} leave fewer than two blocks in {windows} windows")

    corrected = _corrected(losses, block)
    others = [c for c in everyone if c != default]
    spa = SPA(corrected[:, default], corrected[:, others], block_size=block, reps=reps,
              bootstrap=BOOTSTRAP, seed=seed)
    spa.compute()
    # Nothing beats the default: Hansen's statistic max(0, .) is 0 and p = 1 (arch's raw max would
    # give p = 0 when every difference is exactly zero).
    p_value = 1.0 if best == default else float(spa.pvalues["consistent"])
    superior = tuple(sorted(others[i] for i in _step_down(spa)))
    members = _confidence_set(corrected, block, seed, reps) if confidence_set else None
    name = f"StepM at {SIZE:.0%} (SPA p-value), {BOOTSTRAP} bootstrap, block {block}"
    name += f"; MCS at {MCS_SIZE:.0%}" if confidence_set else ""
    return SelectionTest(best, default, best in superior, p_value, superior, members, name,
                         block, configs, windows, reps)


def percentile_bootstrap_rule(losses: np.ndarray, default: int, block_length: int, seed: int,
                              reps: int = 2000) -> PercentileRule:
    """The replaced rule, kept to measure it (benchmarks/bench_selection.py): best vs default, percentile 95% interval.

    As the SQL macro that selected before: per-window differences best - default, resampled in circular
    blocks of min(block_length, windows) (uniform block starts, truncated to the window count),
    linear-interpolated 2.5/97.5% quantiles of the resampled means; significant when the upper
    bound is below zero. It ignores that the best was chosen from N configs on the same windows.
    """
    losses = _validated(losses, default, block_length)
    best = _best(losses, default)
    diff = losses[:, best] - losses[:, default]
    n = len(diff)
    block = min(block_length, n)
    starts = np.random.default_rng(seed).integers(0, n, size=(reps, -(-n // block)))
    index = ((starts[:, :, None] + np.arange(block)) % n).reshape(reps, -1)[:, :n]
    low, high = np.quantile(diff[index].mean(axis=1), [0.025, 0.975])
    return PercentileRule(best, float(diff.mean()), float(low), float(high), bool(high < 0))


@dataclass(frozen=True)
class PairedInterval:
    """Mean per-window difference (config - reference; negative = better) and its 95% interval."""

    mean_diff: float
    ci_low: float | None  # None: too few windows or blocks to resample (nothing counts as significant)
    ci_high: float | None
    windows: int
    block_length: int

    @property
    def significantly_better(self) -> bool:
        return self.ci_high is not None and self.ci_high < 0


def paired_interval(diff: np.ndarray, block_length: int, seed: int, reps: int = 1000) -> PairedInterval:
    """A reported (not selecting) comparison on test windows, with the selection test's machinery.

    arch's circular block bootstrap of the mean difference, blocks of ``block_length`` windows, the
    same sqrt(T/(T-b)) spread correction and the same refusal below three windows or two blocks as
    :func:`selection_test`; 95% percentile interval.
    """
    diff = np.asarray(diff, dtype=float).reshape(-1)
    if len(diff) == 0 or not np.isfinite(diff).all():
        raise ValueError(f"diff must be finite and non-empty, got {len(diff)} values")
    block = min(max(int(block_length), 1), len(diff))
    mean = float(diff.mean())
    if len(diff) < 3 or 2 * block > len(diff):
        return PairedInterval(mean, None, None, len(diff), block)
    corrected = _corrected(diff[:, None], block)[:, 0]
    bootstrap = CircularBlockBootstrap(block, corrected, seed=seed)
    low, high = bootstrap.conf_int(np.mean, reps=reps, method="percentile", size=0.95).reshape(-1)
    return PairedInterval(mean, float(low), float(high), len(diff), block)
