"""Numeric knob limits, one owner: the config classes, the environment overrides and the JSON schema of
config files all read them from here (``tests/core/test_knobs.py`` keeps the schema in step).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Bound:
    """An integer or real knob's range; ``hint`` says what the edge value means (e.g. ``0 = off``)."""

    kind: type  # int | float
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    hint: str = ""

    def problem(self, name: str, value) -> str | None:
        """What is wrong with ``value`` for knob ``name`` (None when it is in range)."""
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            return f"{name} must be an integer, got {value!r}"
        wrong = ((self.minimum is not None and not value >= self.minimum)
                 or (self.exclusive_minimum is not None and not value > self.exclusive_minimum)
                 or (self.maximum is not None and not value <= self.maximum))
        return f"{name} must be {self.describe()}, got {value!r}" if wrong else None

    def describe(self) -> str:
        low = (f">= {self.minimum:g}" if self.minimum is not None else
               f"> {self.exclusive_minimum:g}" if self.exclusive_minimum is not None else "")
        parts = [p for p in (low, f"<= {self.maximum:g}" if self.maximum is not None else "") if p]
        return " and ".join(parts) + (f" ({self.hint})" if self.hint else "")

    def parse(self, name: str, text: str):
        """``text`` (an environment value) as this knob, or a ValueError naming the limit."""
        try:
            value = self.kind(text)
        except ValueError:
            raise ValueError(f"{name} must be {'an integer' if self.kind is int else 'a number'}") from None
        if self.problem(name, value):
            raise ValueError(f"{name} must be {self.describe()}")
        return value

    def schema(self) -> dict:
        """This bound as a JSON-schema fragment."""
        fragment = {"type": "integer" if self.kind is int else "number"}
        for key, value in (("minimum", self.minimum), ("exclusiveMinimum", self.exclusive_minimum),
                           ("maximum", self.maximum)):
            if value is not None:
                fragment[key] = value
        return fragment


def problems(bounds: Mapping[str, Bound], values: Mapping) -> list[str]:
    return [p for name, bound in bounds.items() if name in values
            for p in [bound.problem(name, values[name])] if p]


MIN_KRONOS_CONTEXT = 8  # bars; fewer make Kronos's per-column z-score meaningless

TOTO_BOUNDS = {"num_samples": Bound(int, minimum=1), "samples_per_batch": Bound(int, minimum=1)}
TOTO2_BOUNDS = {"context_length": Bound(int, minimum=0, hint="0 = all of the window's context"),
                "decode_block_size": Bound(int, minimum=0, hint="0 = one forward pass")}
KRONOS_BOUNDS = {
    "temperature": Bound(float, minimum=0, hint="0 = greedy"),
    "top_p": Bound(float, exclusive_minimum=0, maximum=1, hint="1 = off"),
    "top_k": Bound(int, minimum=0, hint="0 = off"),
    "sample_count": Bound(int, minimum=1),
    "max_context": Bound(int, minimum=MIN_KRONOS_CONTEXT),
    "clip": Bound(float, exclusive_minimum=0),
}
BOUNDS = {"toto": TOTO_BOUNDS, "toto2": TOTO2_BOUNDS, "kronos": KRONOS_BOUNDS}
