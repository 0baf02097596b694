"""Sweep budgets, and one whole per-symbol tune without Dagster.

A :class:`TuneBudget` holds one budget per model sweep; a deployment names the one its tunes run
(:func:`named_budget`): ``full`` (``TotoBudget()``, ``Toto2Budget()``, ``KronosBudget()``: the whole
search spaces, sized for a GPU), ``demo`` (``DEMO_TOTO`` / ``DEMO_TOTO2`` / ``DEMO_KRONOS``: what
``hpo demo`` runs on a CPU), or a budget of its own from a YAML file. :func:`tune_symbol` runs what the sweep
assets run for one symbol (baseline, Toto grid, Toto 2.0 grid, Kronos default + presets + TPE search +
promotion) into a :class:`Storage` through the assets' driver (:class:`~.symbol.SymbolSweep`); the
benchmarks use it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from ..aggregate import quantile_rule
from ..backtest import Trial
from ..forecasters import BASELINES
from ..knobs import TOTO2_BOUNDS
from ..knobs import problems as knob_problems
from ..kronos.forecaster import KronosForecaster, KronosSamplingConfig
from ..store import Storage
from ..toto import TotoForecaster
from ..toto2 import QUANTILE_LEVELS, Toto2Model
from ..windows import WindowSpec, Windows
from .plans import kronos_plans, kronos_search, toto2_plans, toto_plans
from .runner import DrawPlan, SingleDraw
from .spaces import (
    KRONOS_AGGREGATIONS,
    KRONOS_DEFAULT,
    KRONOS_PRESETS,
    KRONOS_SAMPLE_COUNTS,
    TOTO2_AGGREGATIONS,
    TOTO2_CONTEXT_LENGTHS,
    TOTO2_DECODE_BLOCK_SIZES,
    TOTO2_VARIATES,
    TOTO_AGGREGATIONS,
    TOTO_SAMPLE_COUNTS,
    default_trials,
    kronos_config,
    toto_grid,
)
from .symbol import SymbolSweep

# The random walk's sample count: Toto's default (256), so its CRPS% and coverage carry Monte Carlo
# noise comparable to the models' default configs; 256 x horizon normals per window cost microseconds.
RANDOM_WALK_SAMPLES = 256
BASELINE_TRIALS = {
    "persistence": Trial("persistence"),
    "seasonal_naive": Trial("seasonal_naive", {"period": BASELINES["seasonal_naive"].period}),
    "drift": Trial("drift"),
    # num_samples and aggregate are knobs too: a trial's identity (config hash) is its knobs.
    "random_walk": Trial("random_walk", {"lookback": BASELINES["random_walk"].lookback,
                                         "num_samples": RANDOM_WALK_SAMPLES, "aggregate": "median"},
                         num_samples=RANDOM_WALK_SAMPLES, aggregate="median"),
}


@dataclass(frozen=True)
class TotoBudget:
    sample_counts: Sequence[int] = TOTO_SAMPLE_COUNTS  # num_samples grid
    aggregations: Sequence[str] = TOTO_AGGREGATIONS  # aggregation grid


@dataclass(frozen=True)
class Toto2Budget:
    context_lengths: Sequence[int] = TOTO2_CONTEXT_LENGTHS  # bars (0 = all of the window's context)
    decode_block_sizes: Sequence[int] = TOTO2_DECODE_BLOCK_SIZES  # 0 = single pass, else block decoding
    variates: Sequence[str] = tuple(TOTO2_VARIATES)  # close | ohlc | ohlcv
    aggregations: Sequence[str] = TOTO2_AGGREGATIONS  # point rules over the quantile levels

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variates) - set(TOTO2_VARIATES))
        if unknown:
            raise ValueError(f"unknown Toto 2.0 variates {unknown}; known: {', '.join(TOTO2_VARIATES)}")
        found = [p for knob, values in (("context_length", self.context_lengths),
                                        ("decode_block_size", self.decode_block_sizes))
                 for v in values for p in knob_problems(TOTO2_BOUNDS, {knob: v})]
        if found:
            raise ValueError("Toto 2.0 budget: " + "; ".join(found))
        for rule in self.aggregations:
            quantile_rule(rule, QUANTILE_LEVELS)  # a point rule over the quantile levels, else a ValueError

    def plans(self, models: Mapping[str, Callable[[], Toto2Model]], context: int, tunable: bool = True):
        """The draws of this budget over ``models`` on windows of ``context`` bars (or the default alone)."""
        if not tunable:
            return toto2_plans(dict(list(models.items())[:1]), context, [], [], [], [])
        return toto2_plans(models, context, self.context_lengths, self.decode_block_sizes, self.variates,
                           self.aggregations)


@dataclass(frozen=True)
class KronosBudget:
    presets: Sequence[str] = tuple(KRONOS_PRESETS)  # users' guide presets to score
    sample_counts: Sequence[int] = KRONOS_SAMPLE_COUNTS  # sample_count prefixes
    aggregations: Sequence[str] = KRONOS_AGGREGATIONS
    search_budget: int = 24  # TPE proposals scored on the cheap rung (0 = presets only)
    search_sample_count: int = 64  # samples per proposal on the cheap rung
    rung_windows: int = 2  # validation windows of the cheap rung
    keep_fraction: float = 1 / 3  # share of proposals promoted to all windows
    max_sample_count: int = 0  # cap on every config's sample_count, e.g. for CPU demos (0 = none)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.presets) - set(KRONOS_PRESETS))
        if unknown:
            raise ValueError(f"unknown Kronos presets {unknown}; known: {sorted(KRONOS_PRESETS)}")


# Small enough for a CPU with the bundled tiny checkpoints; the defaults are the full spaces.
DEMO_TOTO = TotoBudget(sample_counts=(64, 256, 1024, 4096))
DEMO_TOTO2 = Toto2Budget(context_lengths=(0, 128, 256), decode_block_sizes=(0, 32), variates=("close", "ohlc"))
DEMO_KRONOS = KronosBudget(presets=("balanced",), sample_counts=(8,), search_budget=4, search_sample_count=8,
                           max_sample_count=8)


@dataclass(frozen=True)
class TuneBudget:
    """What one tune of a symbol searches: a budget per model sweep."""

    toto: TotoBudget = TotoBudget()
    toto2: Toto2Budget = Toto2Budget()
    kronos: KronosBudget = KronosBudget()


BUILT_IN_BUDGETS = {"full": TuneBudget(), "demo": TuneBudget(DEMO_TOTO, DEMO_TOTO2, DEMO_KRONOS)}
_FAMILY_BUDGETS = {f.name: f.default.__class__ for f in fields(TuneBudget)}


def read_budgets(path: str | Path) -> dict[str, TuneBudget]:
    """The named budgets of a YAML (or JSON) file: ``{name: {toto: {...}, toto2: {...}, kronos: {...}}}``.

    A family or field left out keeps the ``full`` budget's value, so a file states only what it cuts.
    """
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"tune budgets file {path}: cannot be read ({exc}); fix it or unset the budgets file") from None
    if not isinstance(document, dict) or not document:
        raise ValueError(f"tune budgets file {path}: expected a mapping of budget names to budgets, e.g. "
                         "{cpu_nightly: {toto: {sample_counts: [256, 1024]}, kronos: {search_budget: 8}}}")
    budgets = {}
    for name, families in document.items():
        where = f"tune budgets file {path}, budget {name!r}"
        if name in BUILT_IN_BUDGETS:
            raise ValueError(f"{where}: {name!r} is a built-in budget; give yours another name")
        if not isinstance(families, dict) or set(families) - set(_FAMILY_BUDGETS):
            raise ValueError(f"{where}: expected a mapping with keys among {', '.join(_FAMILY_BUDGETS)}")
        parts = {}
        for family, values in families.items():
            kind = _FAMILY_BUDGETS[family]
            known = [f.name for f in fields(kind)]
            if not isinstance(values, dict) or set(values) - set(known):
                raise ValueError(f"{where}, {family}: expected a mapping with keys among {', '.join(known)}")
            try:
                parts[family] = kind(**{k: _typed(kind, k, v) for k, v in values.items()})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}, {family}: {exc}") from None
        budgets[str(name)] = TuneBudget(**parts)
    return budgets


_MAY_BE_EMPTY = {"presets"}  # list fields where an empty list means "none" (no guide presets)


def _typed(kind: type, name: str, value):
    """``value`` for field ``name`` of ``kind``, of the type of the field's default (lists as tuples)."""
    default = getattr(kind(), name)
    if isinstance(default, tuple):
        element, empty_ok = type(default[0]), name in _MAY_BE_EMPTY
        if not isinstance(value, list) or not (value or empty_ok) or not all(isinstance(v, element) for v in value):
            raise ValueError(f"{name} must be a {'' if empty_ok else 'non-empty '}list of {element.__name__}, "
                             f"not {value!r}")
        return tuple(value)
    wanted = (int, float) if isinstance(default, float) else type(default)
    if isinstance(value, bool) or not isinstance(value, wanted):
        raise ValueError(f"{name} must be of type {type(default).__name__}, not {value!r}")
    return value


def named_budget(name: str, budgets_file: str | Path | None = None) -> TuneBudget:
    """The built-in budget ``name`` (``full``, ``demo``) or the one of that name in ``budgets_file``."""
    known = {**BUILT_IN_BUDGETS, **(read_budgets(budgets_file) if budgets_file else {})}
    if name not in known:
        where = f" or in {budgets_file}" if budgets_file else " (set a budgets file to name your own)"
        raise ValueError(f"unknown tune budget {name!r}: not built in{where}; known: {', '.join(known)}")
    return known[name]


def toto_trials(budget: TotoBudget, tunable: bool = True) -> list[Trial]:
    """The Toto sweep's trials: the budget's grid (plus default and guide presets), or the default alone."""
    return toto_grid(budget.sample_counts, budget.aggregations) if tunable else [default_trials()["toto"]]


def kronos_promoted(forecaster: KronosForecaster, windows: Windows, budget: KronosBudget, seed: int):
    """The budget's TPE search on the cheap rung: (promoted configs, [(config, cheap score)])."""
    if budget.search_budget <= 0:
        return [], []
    cap = budget.max_sample_count or budget.search_sample_count
    return kronos_search(forecaster, windows, budget.search_budget, min(budget.search_sample_count, cap),
                         budget.aggregations, budget.rung_windows, budget.keep_fraction, seed)


def kronos_sweep_plans(forecaster: KronosForecaster, budget: KronosBudget, tunable: bool = True,
                       promoted: Sequence[KronosSamplingConfig] = ()) -> list[DrawPlan]:
    """The Kronos sweep's draws: default + presets + promoted configs at the budget's counts and
    aggregations, or the default config alone."""
    cap = budget.max_sample_count or None
    if not tunable:
        default = default_trials()["kronos"]
        return kronos_plans(forecaster, [kronos_config(default)], [default.num_samples], [default.aggregate], cap)
    configs = [KRONOS_DEFAULT, *(KRONOS_PRESETS[p] for p in budget.presets), *promoted]
    return kronos_plans(forecaster, configs, budget.sample_counts, budget.aggregations, cap)


@dataclass(frozen=True)
class Phase:
    seconds: float
    trials: int  # trials computed and stored (0 for the search: its scores are not stored)


def tune_symbol(store: Storage, symbol: str, prices: pd.DataFrame, toto: TotoForecaster, kronos: KronosForecaster,
                spec: WindowSpec = WindowSpec(), toto_budget: TotoBudget = TotoBudget(),
                kronos_budget: KronosBudget = KronosBudget(), model_revision: str = "", base_seed: int = 0,
                on_phase: Callable[[str, Phase], None] | None = None,
                toto2: Mapping[str, Callable[[], Toto2Model]] | None = None,
                toto2_budget: Toto2Budget = Toto2Budget()) -> dict[str, Phase]:
    """One symbol's whole tune, as the sweep assets run it, into ``store``; seconds and trials per phase
    (``baseline``, ``toto``, ``toto2`` when ``toto2`` {checkpoint label: loader} is given, ``kronos search``,
    ``kronos``), each also passed to ``on_phase`` when done.

    The windows are the layout the history allows (a history too short to tune scores default configs only).
    """
    models = SymbolSweep.of(store, symbol, prices, spec, base_seed, model_revision)
    if models.windows is None:
        raise ValueError(f"{symbol}: {models.layout.reason}")
    phases: dict[str, Phase] = {}

    def record(name: str, began: float, trials: int = 0) -> None:
        phases[name] = Phase(time.perf_counter() - began, trials)
        if on_phase:
            on_phase(name, phases[name])

    def sweep(name: str, plans: list[DrawPlan], on: SymbolSweep = models) -> None:
        began = time.perf_counter()
        record(name, began, len(on.run(name, plans).computed))

    sweep("baseline", [SingleDraw(BASELINES[n], [t]) for n, t in BASELINE_TRIALS.items()], models.with_revision(""))
    sweep("toto", toto_plans(toto, toto_trials(toto_budget, models.tunable)))
    if toto2:
        sweep("toto2", toto2_budget.plans(toto2, models.windows.spec.context, models.tunable))
    promoted = []
    if models.tunable:
        began = time.perf_counter()
        promoted, _ = kronos_promoted(kronos, models.windows, kronos_budget, models.search_seed)
        record("kronos search", began)
    sweep("kronos", kronos_sweep_plans(kronos, kronos_budget, models.tunable, promoted))
    return phases
