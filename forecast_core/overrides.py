"""Knob overrides from the environment, as in the users' guide (TOTO_*, TOTO2_*, KRONOS_*).

Every variable is parsed and validated; a bad value is an error naming the variable, never
silently ignored. ``describe`` gives the line the CLI echoes so a run shows what it overrode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from .aggregate import parse_aggregation, quantile_rule
from .knobs import BOUNDS
from .sweep.spaces import TOTO2_VARIATES
from .toto2.model import QUANTILE_LEVELS


def _bounded(model: str, knob: str) -> Callable[[str], object]:
    """Parse by the knob's one declared range (forecast_core.knobs)."""
    return lambda text: BOUNDS[model][knob].parse(knob, text)


def _aggregate(text: str) -> str:
    return parse_aggregation(text).name


def _point_rule(text: str) -> str:
    """A Toto 2.0 point rule: one that applies to its quantile levels."""
    return quantile_rule(text, QUANTILE_LEVELS)


def _choice(options) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text
    return parse


# variable -> (model, knob, parser)
VARIABLES: dict[str, tuple[str, str, Callable[[str], object]]] = {
    "TOTO_NUM_SAMPLES": ("toto", "num_samples", _bounded("toto", "num_samples")),
    "TOTO_AGGREGATE": ("toto", "aggregate", _aggregate),
    "TOTO_SAMPLES_PER_BATCH": ("toto", "samples_per_batch", _bounded("toto", "samples_per_batch")),
    "TOTO2_CHECKPOINT": ("toto2", "checkpoint", str),  # blank values never reach a parser
    "TOTO2_CONTEXT_LENGTH": ("toto2", "context_length", _bounded("toto2", "context_length")),
    "TOTO2_DECODE_BLOCK_SIZE": ("toto2", "decode_block_size", _bounded("toto2", "decode_block_size")),
    "TOTO2_VARIATES": ("toto2", "variates", _choice(tuple(TOTO2_VARIATES))),
    "TOTO2_AGGREGATE": ("toto2", "aggregate", _point_rule),
    "KRONOS_TEMPERATURE": ("kronos", "temperature", _bounded("kronos", "temperature")),
    "KRONOS_TOP_P": ("kronos", "top_p", _bounded("kronos", "top_p")),
    "KRONOS_TOP_K": ("kronos", "top_k", _bounded("kronos", "top_k")),
    "KRONOS_SAMPLE_COUNT": ("kronos", "sample_count", _bounded("kronos", "sample_count")),
    "KRONOS_MAX_CONTEXT": ("kronos", "max_context", _bounded("kronos", "max_context")),
    "KRONOS_CLIP": ("kronos", "clip", _bounded("kronos", "clip")),
    "KRONOS_AGGREGATE": ("kronos", "aggregate", _aggregate),
}


@dataclass(frozen=True)
class Overrides:
    toto: dict = field(default_factory=dict)
    kronos: dict = field(default_factory=dict)
    variables: dict = field(default_factory=dict)
    toto2: dict = field(default_factory=dict)

    def describe(self) -> str:
        if not self.variables:
            return "no knob overrides in the environment"
        return "overrides from the environment: " + " ".join(f"{k}={v}" for k, v in sorted(self.variables.items()))


def env_overrides(environ: Mapping[str, str]) -> Overrides:
    knobs: dict[str, dict] = {"toto": {}, "toto2": {}, "kronos": {}}
    seen, problems = {}, []
    for name, (model, knob, parse) in VARIABLES.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = parse(raw.strip())
        except ValueError as exc:
            problems.append(f"{name}={raw!r}: {exc}")
            continue
        knobs[model][knob] = value
        seen[name] = value
    if problems:
        raise ValueError("invalid knob override(s): " + "; ".join(problems))
    return Overrides(knobs["toto"], knobs["kronos"], seen, knobs["toto2"])
