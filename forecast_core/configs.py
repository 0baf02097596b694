"""The config files users read: ``hyperparams/{toto,toto2,kronos,best}/SYMBOL.json``.

Writes are atomic. A file that fails validation (corrupt, hand-edited) is never silently
overwritten: it is kept as ``SYMBOL.json.invalid-<UTC time>`` first, then the new one replaces it
atomically (readers never find the path missing). Readers validate against the JSON schemas in
``schemas/`` (plus: model matches the folder, symbol matches the file name, a known aggregation)
and name the file, the field and how to fix it.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jsonschema

from .aggregate import parse_aggregation
from .data import SYMBOL_PATTERN, validate_symbol
from .files import atomic_write_text

MODELS = ("toto", "toto2", "kronos")  # the tuned model families, one config file each
KINDS = (*MODELS, "best")  # the config files stored per symbol: each family's, then the winner's
FIX_HINT = ("fix that field by hand, or re-run the config selection for this symbol (e.g. `hpo tune`): "
            "it keeps the invalid file as SYMBOL.json.invalid-<time> and writes a valid one")


class ConfigFileError(ValueError):
    """A config file that is missing, not JSON, or does not match its schema."""


@lru_cache(maxsize=2)
def _schema(kind: str) -> dict:
    name = "best.schema.json" if kind == "best" else "hyperparams.schema.json"
    return json.loads((resources.files("forecast_core") / "schemas" / name).read_text())


def config_path(root: Path, kind: str, symbol: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"config kind must be one of {KINDS}, got {kind!r}")
    return Path(root) / kind / f"{validate_symbol(symbol)}.json"


def validate_document(document: dict, kind: str, source: str) -> dict:
    """Check a document against its schema; the error names the source and the field path."""
    validator = jsonschema.Draft202012Validator(_schema(kind))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise ConfigFileError(f"{source}: field {field!r}: {first.message}{more}")
    # What the schema cannot say: the model matches the folder, the aggregation is one we can apply.
    if kind in MODELS and document["model"] != kind:
        raise ConfigFileError(f"{source}: field 'model': {document['model']!r} in a {kind} config file")
    config = document.get("config")  # optional in best/SYMBOL.json
    if isinstance(config, dict) and "aggregate" in config:
        try:
            parse_aggregation(config["aggregate"])
        except ValueError as exc:
            raise ConfigFileError(f"{source}: field 'config.aggregate': {exc}") from None
    return document


def read_config(path: Path, kind: str) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file; run the config selection for this symbol first "
                              "(e.g. `hpo tune`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigFileError(f"{path}: not valid JSON ({exc}); {FIX_HINT}") from None
    if not isinstance(document, dict):
        raise ConfigFileError(f"{path}: expected a JSON object at the top level; {FIX_HINT}")
    try:
        validate_document(document, kind, str(path))
    except ConfigFileError as exc:
        raise ConfigFileError(f"{exc}; {FIX_HINT}") from None
    if SYMBOL_PATTERN.match(path.stem) and document["symbol"] != path.stem:
        raise ConfigFileError(f"{path}: field 'symbol': {document['symbol']!r} in the file of {path.stem} "
                              f"(copied from another symbol?); {FIX_HINT}")
    return document


def write_config(root: Path, kind: str, symbol: str, document: dict) -> tuple[Path, Path | None]:
    """Validate and atomically write; returns (path, where an invalid previous file was kept or None).

    An invalid previous file is kept under another name (hard link, else copy) *before* the new one
    replaces it atomically, so readers always find a file at ``path``: the old one or the new one.
    """
    path = config_path(root, kind, symbol)
    validate_document(document, kind, f"new {kind} config for {symbol}")
    set_aside = None
    if path.exists():
        try:
            read_config(path, kind)
        except ConfigFileError:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            set_aside = path.with_name(f"{path.name}.invalid-{stamp}")
            n = 0
            while set_aside.exists():  # never overwrite an earlier kept copy
                n += 1
                set_aside = path.with_name(f"{path.name}.invalid-{stamp}-{n}")
            try:
                os.link(path, set_aside)
            except FileExistsError:  # lost a race for the name: never overwrite a kept copy
                raise
            except OSError:  # no hard links on this file system
                shutil.copy2(path, set_aside)
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path, set_aside


def retune_reason(root: Path, symbol: str, prices_end: list, revisions: dict[str, str], min_new_bars: int) -> str | None:
    """Why ``symbol`` needs a re-tune, or None when its stored configs are current.

    ``prices_end``: timestamps of the stored bars; ``revisions``: the weights revision each model
    runtime would use now. Stale when a config is missing or unreadable, was selected for other
    weights, or at least ``min_new_bars`` bars (0: never) have arrived since its data ended.
    """
    for model in MODELS:
        path = config_path(root, model, symbol)
        try:
            document = read_config(path, model)
        except ConfigFileError as exc:
            return f"{model} config unusable: {exc}"
        stored = document["metadata"]["model_revision"]
        if model in revisions and stored != revisions[model]:
            return f"{model} config was selected for weights {stored}, runtime now has {revisions[model]}"
        data_end = datetime.fromisoformat(document["metadata"]["data_end"]).date()
        new_bars = sum(1 for t in prices_end if t.date() > data_end)
        if min_new_bars and new_bars >= min_new_bars:
            return f"{new_bars} new bars since the {model} config was selected on data ending {data_end}"
    return None
