"""What each model may have seen in pretraining, so backtest windows inside that period are flagged.

A pretrained forecaster scored on a window whose target lies inside its own training data is
recalling, not forecasting: such a window measures memory, not skill. This module keeps a
registry of each model id's pretraining-data cutoff (``data/pretraining_cutoffs.json``: model-id glob,
the last date the model may have seen, what kind of statement that date is, and its public source),
lets a runtime override it for its own model id, and flags windows against it.

Three outcomes are kept apart: a known date (windows whose target starts on or before it are
flagged), "never seen" (the bundled tiny checkpoints never saw a symbol outside their training set:
nothing flagged), and unknown (no entry matches: nothing can be claimed, and the caller is told how
to add one).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

REGISTRY_PATH = Path(__file__).resolve().parent / "data" / "pretraining_cutoffs.json"
TRAINING_END, RELEASE_BOUND, PER_SYMBOL = "training data end", "release date (upper bound)", "per-symbol training end"
KINDS = (TRAINING_END, RELEASE_BOUND, PER_SYMBOL)
OVERRIDE, UNKNOWN = "override (resource config)", "unknown"
FIELDS = ("model_id", "seen_through", "kind", "source", "note")
HOW_TO_ADD = ("set `pretraining_cutoff` (ISO date) on the model runtime resource's config, or add an entry to "
              "forecast_core/data/pretraining_cutoffs.json")


class RegistryError(ValueError):
    """The cutoff registry file or an override is malformed; the message names the entry and field."""


def bundled_checkpoints() -> dict[Path, str]:
    """The shipped checkpoint directories (resolved; their path depends on the install) and their ids."""
    from .kronos.forecaster import DEFAULT_TINY, DEFAULT_TINY_TOKENIZER  # here: the engine modules pull in torch
    from .toto import DEFAULT_TINY_DIR
    from .toto2 import DEFAULT_TINY_DIR as TOTO2_TINY_DIR

    return {Path(DEFAULT_TINY_DIR).resolve(): "bundled:toto-tiny", Path(DEFAULT_TINY).resolve(): "bundled:kronos-tiny",
            Path(DEFAULT_TINY_TOKENIZER).resolve(): "bundled:kronos-tiny-tokenizer",
            Path(TOTO2_TINY_DIR).resolve(): "bundled:toto2-tiny"}


def bundled_model_id(source: str) -> str:
    """``bundled:toto-tiny`` / ``bundled:kronos-tiny`` / ``bundled:toto2-tiny`` for the shipped checkpoints,
    else ``source`` unchanged (a Hugging Face repo id or a local directory)."""
    return bundled_checkpoints().get(Path(source).expanduser().resolve(), source)


def parse_date(value: object, where: str) -> dt.date:
    """An ISO date (YYYY-MM-DD), or a RegistryError naming ``where`` and the value."""
    if not isinstance(value, str):
        raise RegistryError(f"{where}: expected an ISO date string (YYYY-MM-DD), got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RegistryError(f"{where}: {value!r} is not an ISO date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Cutoff:
    """What ``model_id`` may have seen of one symbol: through ``seen_through``, never (None, known), or
    unknown (kind ``unknown``)."""

    model_id: str
    seen_through: dt.date | None
    kind: str
    source: str
    note: str

    @property
    def known(self) -> bool:
        return self.kind != UNKNOWN

    @property
    def never_seen(self) -> bool:
        """Known and never seen: a per-symbol checkpoint whose training data lacked this symbol."""
        return self.known and self.seen_through is None

    @property
    def warning(self) -> str:
        if self.known:
            return ""
        return (f"no pretraining cutoff is known for model id {self.model_id!r}, so windows inside its pretraining "
                f"period cannot be flagged; to add one, {HOW_TO_ADD}")


@dataclass(frozen=True)
class Entry:
    model_id: str  # fnmatch glob, matched case-insensitively (Hugging Face repo ids are)
    seen_through: dt.date
    kind: str
    source: str
    note: str
    per_symbol: Mapping[str, dt.date] | None = None

    def matches(self, model_id: str) -> bool:
        return fnmatchcase(model_id.lower(), self.model_id.lower())

    def cutoff(self, model_id: str, symbol: str) -> Cutoff:
        if self.per_symbol is None:
            return Cutoff(model_id, self.seen_through, self.kind, self.source, self.note)
        if symbol in self.per_symbol:
            return Cutoff(model_id, self.per_symbol[symbol], self.kind, self.source, self.note)
        return Cutoff(model_id, None, self.kind, self.source,
                      f"{symbol} was not in this checkpoint's training data, so every window is out-of-sample")


@dataclass(frozen=True)
class Registry:
    entries: tuple[Entry, ...]
    overrides: tuple[tuple[str, dt.date], ...] = ()

    def lookup(self, model_id: str, symbol: str) -> Cutoff:
        """Overrides first (exact id or glob), then the first matching registry entry, else unknown."""
        for pattern, date in self.overrides:
            if pattern == model_id or fnmatchcase(model_id.lower(), pattern.lower()):
                return Cutoff(model_id, date, OVERRIDE, "resource config pretraining_cutoff",
                              f"{pattern} set to {date.isoformat()} in the model runtime's resource config")
        for entry in self.entries:
            if entry.matches(model_id):
                return entry.cutoff(model_id, symbol)
        return Cutoff(model_id, None, UNKNOWN, "", "")


def load_registry(overrides: Mapping[str, str] | None = None, path: str | Path | None = None) -> Registry:
    """The cutoff registry at ``path`` (default: the packaged one) plus ``overrides`` {model id or glob:
    ISO date}, which win over every entry. Malformed input raises RegistryError naming what is wrong."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RegistryError(f"{path}: cannot read the pretraining cutoff registry: {error}") from None
    if not isinstance(raw, list):
        raise RegistryError(f"{path}: expected a JSON list of entries, got {type(raw).__name__}")
    entries = tuple(_entry(item, f"{path} entry {i}") for i, item in enumerate(raw))
    parsed = []
    for pattern, value in (overrides or {}).items():
        if not isinstance(pattern, str) or not pattern:
            raise RegistryError(f"pretraining cutoff override: model id must be a non-empty string, got {pattern!r}")
        parsed.append((pattern, parse_date(value, f"pretraining cutoff override for {pattern!r}")))
    return Registry(entries, tuple(parsed))


def _entry(item: object, where: str) -> Entry:
    if not isinstance(item, dict):
        raise RegistryError(f"{where}: expected an object with fields {', '.join(FIELDS)}, got {item!r}")
    where = f"{where} ({item.get('model_id', '?')})"
    missing = [f for f in FIELDS if f not in item]
    if missing:
        raise RegistryError(f"{where}: missing field(s) {', '.join(missing)}")
    unexpected = sorted(set(item) - set(FIELDS) - {"per_symbol"})
    if unexpected:
        raise RegistryError(f"{where}: unknown field(s) {', '.join(unexpected)}")
    for field in ("model_id", "source", "note"):
        if not isinstance(item[field], str) or not item[field].strip():
            raise RegistryError(f"{where}: field {field} must be a non-empty string, got {item[field]!r}")
    if item["kind"] not in KINDS:
        raise RegistryError(f"{where}: field kind is {item['kind']!r}; use one of {', '.join(map(repr, KINDS))}")
    seen_through = parse_date(item["seen_through"], f"{where}: field seen_through")
    per_symbol = item.get("per_symbol")
    if (item["kind"] == PER_SYMBOL) != (per_symbol is not None):
        raise RegistryError(f"{where}: a per_symbol mapping goes with kind {PER_SYMBOL!r} and only with it")
    if per_symbol is None:
        return Entry(item["model_id"], seen_through, item["kind"], item["source"], item["note"])
    if not isinstance(per_symbol, dict) or not per_symbol:
        raise RegistryError(f"{where}: field per_symbol must be a non-empty {{symbol: ISO date}} object")
    dates = {symbol: parse_date(value, f"{where}: per_symbol[{symbol!r}]") for symbol, value in per_symbol.items()}
    if seen_through != max(dates.values()):
        raise RegistryError(f"{where}: seen_through {seen_through} must be the latest per_symbol date "
                            f"({max(dates.values())})")
    return Entry(item["model_id"], seen_through, item["kind"], item["source"], item["note"], dates)


def in_pretraining_period(target_starts, cutoff: Cutoff) -> np.ndarray | None:
    """Per window: True where its target starts on or before ``cutoff.seen_through`` (compared by date).

    A target that starts inside the pretraining period and ends after it counts as inside: its first
    bars may be memory. This is deliberately stricter than "the target ends before the cutoff".
    All False when the model never saw the symbol; None when the cutoff is unknown (no claim either way).
    """
    starts = pd.DatetimeIndex(np.atleast_1d(np.asarray(target_starts)))
    if starts.tz is not None:
        starts = starts.tz_localize(None)  # the local (market) date is the one that counts
    if not cutoff.known:
        return None
    if cutoff.seen_through is None:
        return np.zeros(len(starts), dtype=bool)
    return np.asarray(starts.normalize() <= pd.Timestamp(cutoff.seen_through), dtype=bool)


def describe(cutoff: Cutoff, windows_total: int, out_of_sample: int | None, label: str = "test") -> str:
    """One line for files, CLI and metadata: how many windows are out-of-sample, and why."""
    if not cutoff.known:
        return f"unknown pretraining cutoff for {cutoff.model_id}: {windows_total} {label} windows unchecked; {HOW_TO_ADD}"
    head = f"{out_of_sample} of {windows_total} {label} windows out-of-sample"
    if out_of_sample == 0 and windows_total > 0:
        return (f"every {label} window ({windows_total}) is inside the pretraining period of {cutoff.model_id} "
                f"(data seen through {cutoff.seen_through.isoformat()}; {cutoff.kind}, {cutoff.source}): "
                f"no out-of-sample evidence, {label} scores may be memory, not skill")
    if cutoff.never_seen:
        return f"{head}: {cutoff.model_id} was never trained on this symbol ({cutoff.kind}, {cutoff.source})"
    return (f"{head}: the model may have seen data through {cutoff.seen_through.isoformat()} "
            f"({cutoff.kind}, {cutoff.source})")
