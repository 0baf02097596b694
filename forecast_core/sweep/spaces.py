"""Search spaces and the Kronos search: one place for every knob's range and preset.

Toto's space is small: a grid of sample count x aggregation, all scored from one draw. Toto 2.0's is a
grid of forward passes (checkpoint x context length x decoding x input variates), each scoring every
point rule over its quantile levels. Kronos's is
6-D: the defaults and the users' presets are always scored; an Optuna TPE search proposes more
sampling configs, each scored cheaply on the last few validation windows, and only the best
fraction is promoted to every window (successive halving). Test windows never steer the search.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict
from typing import Callable, Sequence

from ..aggregate import quantile_rule
from ..backtest import Trial
from ..knobs import TOTO2_BOUNDS
from ..knobs import problems as knob_problems
from ..kronos.forecaster import KronosSamplingConfig
from ..toto2.model import QUANTILE_LEVELS

# -- Toto --------------------------------------------------------------------------------------
TOTO_SAMPLE_COUNTS = (256, 512, 1024, 2048, 4096, 8192)
TOTO_AGGREGATIONS = ("mean", "median", "trimmed_mean_5", "trimmed_mean_10", "trimmed_mean_20", "quantile_0.45")
# Upstream's documented usage: 256 samples, the median of the paths.
TOTO_DEFAULT = {"num_samples": 256, "aggregate": "median"}
# The users' guide configs (samples_per_batch is speed only and not part of a trial).
TOTO_GUIDE_PRESETS = {
    "nvda_guide": {"num_samples": 4096, "aggregate": "mean"},
    "tsla_guide": {"num_samples": 2048, "aggregate": "trimmed_mean_5"},
    "coin_guide": {"num_samples": 1024, "aggregate": "trimmed_mean_5"},
}


def toto_trial(num_samples: int, aggregate: str) -> Trial:
    knobs = {"num_samples": int(num_samples), "aggregate": aggregate}
    return Trial("toto", knobs, int(num_samples), aggregate, is_default=knobs == TOTO_DEFAULT)


def toto_grid(sample_counts: Sequence[int] = TOTO_SAMPLE_COUNTS,
              aggregations: Sequence[str] = TOTO_AGGREGATIONS) -> list[Trial]:
    """Grid plus the default and the guide presets (duplicates removed), all from one draw."""
    knobs = [{"num_samples": n, "aggregate": a} for n in sample_counts for a in aggregations]
    knobs += [TOTO_DEFAULT, *TOTO_GUIDE_PRESETS.values()]
    unique = {(k["num_samples"], k["aggregate"]): k for k in knobs}
    return [toto_trial(n, a) for n, a in sorted(unique)]


# -- Toto 2.0 ----------------------------------------------------------------------------------
# Variates fed to the model, by name (the close is always one of them; its quantiles are scored).
TOTO2_VARIATES = {"close": ("close",), "ohlc": ("open", "high", "low", "close"),
                  "ohlcv": ("open", "high", "low", "close", "volume")}
# Bars of context (0 = all of the window's context, cut to whole patches); longer than a layout's
# context is dropped for that symbol. Multiples of 32, the published checkpoints' patch size.
TOTO2_CONTEXT_LENGTHS = (0, 128, 256, 1024, 2048, 4096)
TOTO2_DECODE_BLOCK_SIZES = (0, 32)  # 0 = one forward pass; else block decoding with median feedback
TOTO2_AGGREGATIONS = ("median", "mean", "quantile_0.4", "quantile_0.45", "quantile_0.55", "quantile_0.6")
# Upstream's documented usage: all the context, one pass, the close alone, the median.
TOTO2_DEFAULT = {"context_length": 0, "decode_block_size": 0, "variates": "close", "aggregate": "median"}


def toto2_trial(checkpoint: str, context_length: int, decode_block_size: int, variates: str, aggregate: str,
                default_checkpoint: str | None = None) -> Trial:
    """One Toto 2.0 config; the default is :data:`TOTO2_DEFAULT` on ``default_checkpoint`` (the runtime's first)."""
    if variates not in TOTO2_VARIATES:
        raise ValueError(f"toto2: variates {variates!r}; use one of {', '.join(TOTO2_VARIATES)}")
    found = knob_problems(TOTO2_BOUNDS, {"context_length": context_length, "decode_block_size": decode_block_size})
    if found:
        raise ValueError("toto2: " + "; ".join(found))
    quantile_rule(aggregate, QUANTILE_LEVELS)  # a point rule over the quantile levels
    knobs = {"checkpoint": checkpoint, "context_length": int(context_length),
             "decode_block_size": int(decode_block_size), "variates": variates, "aggregate": aggregate}
    default = {**TOTO2_DEFAULT, "checkpoint": default_checkpoint or checkpoint}
    return Trial("toto2", knobs, 1, aggregate, is_default=knobs == default)


def toto2_default(checkpoint: str) -> Trial:
    return toto2_trial(checkpoint, **TOTO2_DEFAULT)


def toto2_grid(checkpoints: Sequence[str], context_lengths: Sequence[int], decode_block_sizes: Sequence[int],
               variates: Sequence[str], aggregations: Sequence[str]) -> dict[tuple, list[Trial]]:
    """Trials per forward pass ``(checkpoint, context_length, decode_block_size, variates)``, default
    included (on the first checkpoint); each pass's trials differ only in the point rule."""
    passes: dict[tuple, set[str]] = {}
    for key in [(c, n, b, v) for c in checkpoints for n in context_lengths for b in decode_block_sizes
                for v in variates]:
        passes.setdefault(key, set()).update(aggregations)
    default = toto2_default(checkpoints[0])
    passes.setdefault(tuple(default.knobs[k] for k in ("checkpoint", "context_length", "decode_block_size",
                                                       "variates")), set()).add(default.aggregate)
    return {key: [toto2_trial(*key, a, default_checkpoint=checkpoints[0]) for a in sorted(rules)]
            for key, rules in passes.items()}


# -- Kronos ------------------------------------------------------------------------------------
KRONOS_RANGES = {
    "temperature": (0.1, 1.0),
    "top_p": (0.8, 1.0),
    "top_k": (0, 20, 50, 100, 200),  # 0 = off
    "max_context": (128, 192, 256, 384, 512),
    "clip": (1.0, 5.0),
}
KRONOS_SAMPLE_COUNTS = (16, 64, 256)
KRONOS_AGGREGATIONS = ("mean", "median", "trimmed_mean_10")
# Upstream predictor defaults (it returns the mean path of sample_count paths).
KRONOS_DEFAULT = KronosSamplingConfig(temperature=1.0, top_p=0.9, top_k=0, sample_count=1, max_context=512, clip=5.0)
KRONOS_DEFAULT_AGGREGATE = "mean"
# The users' guide: the stored NVDA config and its three quick-reference profiles.
KRONOS_PRESETS = {
    "nvda_guide": KronosSamplingConfig(0.24, 0.88, 0, 256, 192, 1.8),
    "conservative": KronosSamplingConfig(0.2, 0.85, 0, 512, 512, 1.5),
    "balanced": KronosSamplingConfig(0.25, 0.90, 0, 256, 512, 2.5),
    "exploratory": KronosSamplingConfig(0.35, 0.95, 0, 128, 512, 5.0),
}


def kronos_knobs(config: KronosSamplingConfig, sample_count: int, aggregate: str) -> dict:
    return {**asdict(config), "sample_count": int(sample_count), "aggregate": aggregate}


def kronos_trials(config: KronosSamplingConfig, sample_counts: Sequence[int],
                  aggregations: Sequence[str]) -> list[Trial]:
    """Every (sample_count prefix, aggregation) of one sampling config, all from one draw.

    One path has a single point forecast, so a count of 1 is scored with the mean only.
    """
    default = kronos_knobs(KRONOS_DEFAULT, KRONOS_DEFAULT.sample_count, KRONOS_DEFAULT_AGGREGATE)
    return [Trial("kronos", knobs, int(n), a, is_default=knobs == default)
            for n in sorted(set(sample_counts)) for a in (aggregations if n > 1 else [KRONOS_DEFAULT_AGGREGATE])
            for knobs in [kronos_knobs(config, n, a)]]


TOTO2_BUNDLED = "bundled:toto2-tiny"  # the checkpoint label of the offline default (pretraining.bundled_model_id)


def default_trials(toto2_checkpoint: str = TOTO2_BUNDLED) -> dict[str, Trial]:
    """Each model's upstream default config as a trial: what a history too short to tune keeps.

    Toto 2.0's default runs on ``toto2_checkpoint``, the first checkpoint its runtime lists.
    """
    return {"toto": toto_trial(TOTO_DEFAULT["num_samples"], TOTO_DEFAULT["aggregate"]),
            "toto2": toto2_default(toto2_checkpoint),
            "kronos": kronos_trials(KRONOS_DEFAULT, [KRONOS_DEFAULT.sample_count], [KRONOS_DEFAULT_AGGREGATE])[0]}


def kronos_config(trial: Trial) -> KronosSamplingConfig:
    """The sampling config a Kronos trial was drawn with (its knobs minus the aggregation)."""
    return KronosSamplingConfig(**{k: v for k, v in trial.knobs.items() if k != "aggregate"})


def search_seed(symbol: str, data_version: str, base_seed: int = 0) -> int:
    """The TPE seed: reproducible per (symbol, data version)."""
    digest = hashlib.blake2b(f"{base_seed}:{symbol}:{data_version}:tpe".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def tpe_then_halving(
    evaluate: Callable[[list[KronosSamplingConfig]], list[float]],
    budget: int,
    sample_count: int,
    keep_fraction: float,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[list[KronosSamplingConfig], list[tuple[KronosSamplingConfig, float]]]:
    """Propose ``budget`` sampling configs with TPE, scored by ``evaluate`` (cheap: few validation
    windows, lower is better), in batches so one decode serves several proposals.

    Returns the promoted configs (best ``keep_fraction``) and every (config, cheap score).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(batch_size, budget))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    scored: list[tuple[KronosSamplingConfig, float]] = []
    while len(scored) < budget:
        asked = [study.ask() for _ in range(min(batch_size, budget - len(scored)))]
        configs = [_suggest(trial, sample_count) for trial in asked]
        for trial, config, score in zip(asked, configs, evaluate(configs)):
            study.tell(trial, score)
            scored.append((config, score))
    keep = max(1, math.ceil(keep_fraction * len(scored)))
    promoted = [c for c, _ in sorted(scored, key=lambda item: item[1])[:keep]]
    return promoted, scored


def _suggest(trial, sample_count: int) -> KronosSamplingConfig:
    r = KRONOS_RANGES
    return KronosSamplingConfig(
        temperature=round(trial.suggest_float("temperature", *r["temperature"]), 3),
        top_p=round(trial.suggest_float("top_p", *r["top_p"]), 3),
        top_k=trial.suggest_categorical("top_k", r["top_k"]),
        sample_count=sample_count,
        max_context=trial.suggest_categorical("max_context", r["max_context"]),
        clip=round(trial.suggest_float("clip", *r["clip"]), 2),
    )
