"""Pretraining cutoffs: windows a model may have seen in pretraining are flagged (memory, not skill)."""

from __future__ import annotations

import ast
import re
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from forecast_core.kronos.forecaster import DEFAULT_TINY
from forecast_core.pretraining import (KINDS, OVERRIDE, PER_SYMBOL, REGISTRY_PATH, UNKNOWN, Cutoff, RegistryError,
                                       bundled_model_id, describe, in_pretraining_period, load_registry)
from forecast_core.sources import EmbeddedSource
from forecast_core.toto import DEFAULT_TINY_DIR
from forecast_core.toto2 import DEFAULT_TINY_DIR as TOTO2_TINY_DIR
from forecast_core.windows import TEST, WindowSpec, build_windows
from tests.support import REPO

SCRIPTS = {"bundled:toto-tiny": REPO / "scripts/train_tiny_toto.py",
           "bundled:toto2-tiny": REPO / "scripts/train_tiny_toto2.py",
           "bundled:kronos-tiny": REPO / "scripts/train_tiny_kronos.py"}


def days(*iso: str) -> np.ndarray:
    return np.array(iso, dtype="datetime64[ns]")


@pytest.mark.parametrize("model_id", ["NeoQuasar/Kronos-base", "NeoQuasar/Kronos-small", "NeoQuasar/Kronos-mini",
                                      "NeoQuasar/Kronos-Tokenizer-base", "neoquasar/kronos-base"])
def test_kronos_windows_in_2023_are_flagged_and_july_2024_is_not(model_id):
    cutoff = load_registry().lookup(model_id, "NVDA")
    assert cutoff.known and cutoff.kind == "training data end" and cutoff.seen_through == dt.date(2024, 5, 31)
    assert "shiyu-coder/Kronos/issues/204" in cutoff.source
    flags = in_pretraining_period(days("2023-03-01", "2024-07-01"), cutoff)
    assert flags.tolist() == [True, False]
    assert describe(cutoff, 2, int((~flags).sum())) == (
        "1 of 2 test windows out-of-sample: the model may have seen data through 2024-05-31 "
        "(training data end, https://github.com/shiyu-coder/Kronos/issues/204)")


def test_a_target_straddling_the_cutoff_counts_as_inside():
    cutoff = load_registry().lookup("NeoQuasar/Kronos-base", "AAPL")
    # starts on the last seen day (at the open), one day later, and an intraday bar on the cutoff day
    flags = in_pretraining_period(np.array(["2024-05-31T09:30", "2024-06-03", "2024-05-31T23:59"],
                                           dtype="datetime64[ns]"), cutoff)
    assert flags.tolist() == [True, False, True]


def test_toto_has_a_release_date_upper_bound_with_its_source():
    cutoff = load_registry().lookup("Datadog/Toto-Open-Base-1.0", "AAPL")
    assert cutoff.kind == "release date (upper bound)" and cutoff.seen_through == dt.date(2025, 5, 20)
    assert cutoff.source == "https://arxiv.org/abs/2505.14766" and "no training-data cutoff" in cutoff.note.lower()


def _script_rule(script: Path) -> WindowSpec:
    """The WindowSpec a training script cuts its data with (read from its source, without importing it),
    after checking it still cuts each symbol before its first validation origin."""
    tree = ast.parse(script.read_text())
    spec = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "SPEC" for t in node.targets))
    assert isinstance(spec, ast.Call) and spec.func.id == "WindowSpec" and not spec.args
    source = script.read_text()
    if re.search(r"^from train_tiny_toto import .*\btraining_series\b", source, re.M):  # toto-tiny's cut
        source = (script.parent / "train_tiny_toto.py").read_text()
    assert "build_windows(frame, " in source and "[:first_origin]" in source  # the rule the JSON dates follow
    return WindowSpec(**{k.arg: ast.literal_eval(k.value) for k in spec.keywords})


@pytest.mark.parametrize("model_id", sorted(SCRIPTS))
def test_bundled_per_symbol_dates_match_the_training_scripts(model_id):
    spec = _script_rule(SCRIPTS[model_id])
    assert spec == WindowSpec()  # the docs say "default WindowSpec"
    source, expected = EmbeddedSource(), {}
    for symbol in source.symbols():
        frame = source.load(symbol)
        first_origin = int(build_windows(frame, spec, symbol).origins.min())
        expected[symbol] = frame["timestamp"].iloc[first_origin - 1].date().isoformat()  # last bar trained on
    entry = next(e for e in json.loads(REGISTRY_PATH.read_text()) if e["model_id"] == model_id)
    assert entry["per_symbol"] == expected and entry["kind"] == PER_SYMBOL
    assert entry["source"] == f"scripts/{SCRIPTS[model_id].name}"

    registry = load_registry()
    for symbol in expected:  # every default window (validation and test) is out-of-sample for the tiny models
        windows = build_windows(source.load(symbol), spec, symbol)
        cutoff = registry.lookup(model_id, symbol)
        assert cutoff.seen_through.isoformat() == expected[symbol]
        assert not in_pretraining_period(windows.origin_timestamps, cutoff).any()
        # and the last training bar's day itself would be flagged
        assert in_pretraining_period(np.array([np.datetime64(expected[symbol])]), cutoff).tolist() == [True]


def test_a_symbol_the_tiny_model_never_saw_is_known_and_never_flagged():
    cutoff = load_registry().lookup("bundled:toto-tiny", "COIN")
    assert cutoff.known and cutoff.never_seen and cutoff.kind == PER_SYMBOL and cutoff.warning == ""
    assert in_pretraining_period(days("2015-01-02", "2019-01-02"), cutoff).tolist() == [False, False]
    assert describe(cutoff, 8, 8).startswith("8 of 8 test windows out-of-sample: bundled:toto-tiny was never trained")


def test_bundled_model_id_maps_the_shipped_checkpoints_only():
    assert bundled_model_id(str(DEFAULT_TINY_DIR)) == "bundled:toto-tiny"
    assert bundled_model_id(DEFAULT_TINY) == "bundled:kronos-tiny"
    assert bundled_model_id(str(TOTO2_TINY_DIR)) == "bundled:toto2-tiny"
    assert bundled_model_id(str(Path(DEFAULT_TINY) / ".." / "model")) == "bundled:kronos-tiny"
    assert bundled_model_id("NeoQuasar/Kronos-base") == "NeoQuasar/Kronos-base"
    assert bundled_model_id("/somewhere/else") == "/somewhere/else"


def test_an_unknown_model_id_flags_nothing_and_says_how_to_add_one():
    cutoff = load_registry().lookup("amazon/chronos-bolt-base", "AAPL")
    assert cutoff.kind == UNKNOWN and not cutoff.known and not cutoff.never_seen and cutoff.seen_through is None
    assert in_pretraining_period(days("2020-01-02"), cutoff) is None
    assert "amazon/chronos-bolt-base" in cutoff.warning and "pretraining_cutoff" in cutoff.warning
    assert "pretraining_cutoffs.json" in cutoff.warning
    line = describe(cutoff, 8, None)
    assert line.startswith("unknown pretraining cutoff for amazon/chronos-bolt-base: 8 test windows unchecked")


def test_overrides_win_over_entries_by_exact_id_or_glob():
    registry = load_registry({"NeoQuasar/Kronos-base": "2023-01-31", "my-org/*": "2022-06-30"})
    kronos = registry.lookup("NeoQuasar/Kronos-base", "AAPL")
    assert kronos.kind == OVERRIDE and kronos.seen_through == dt.date(2023, 1, 31)
    assert registry.lookup("NeoQuasar/Kronos-small", "AAPL").kind == "training data end"  # only the exact id
    assert registry.lookup("my-org/forecaster-7", "AAPL").seen_through == dt.date(2022, 6, 30)
    tiny = load_registry({"bundled:toto-tiny": "2023-01-01"}).lookup("bundled:toto-tiny", "COIN")
    assert tiny.kind == OVERRIDE and not tiny.never_seen  # an override applies to every symbol


def test_an_override_after_the_data_end_flags_every_window():
    frame = EmbeddedSource().load("AAPL")  # ends 2023-09-21
    windows = build_windows(frame, WindowSpec(), "AAPL")
    cutoff = load_registry({"Datadog/Toto-Open-Base-1.0": "2023-12-31"}).lookup("Datadog/Toto-Open-Base-1.0", "AAPL")
    flags = in_pretraining_period(windows.split(TEST).origin_timestamps, cutoff)
    assert flags.shape == (8,) and flags.all()
    assert describe(cutoff, 8, int((~flags).sum())).startswith(
        "every test window (8) is inside the pretraining period of Datadog/Toto-Open-Base-1.0 (data seen through "
        "2023-12-31; override (resource config)")


@pytest.mark.parametrize("overrides, message", [
    ({"NeoQuasar/Kronos-base": "2024-02-30"}, r"override for 'NeoQuasar/Kronos-base': '2024-02-30' is not an ISO date"),
    ({"NeoQuasar/Kronos-base": "May 2024"}, r"'May 2024' is not an ISO date"),
    ({"NeoQuasar/Kronos-base": 20240531}, r"expected an ISO date string .* got 20240531"),
    ({"": "2024-05-31"}, r"model id must be a non-empty string"),
])
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(RegistryError, match=message):
        load_registry(overrides)


GOOD = {"model_id": "x/*", "seen_through": "2024-01-31", "kind": "training data end", "source": "s", "note": "n"}


@pytest.mark.parametrize("entries, message", [
    ({"model_id": "x"}, r"expected a JSON list of entries, got dict"),
    ([{**GOOD, "seen_through": "2024-13-01"}], r"entry 0 \(x/\*\): field seen_through: '2024-13-01' is not an ISO date"),
    ([GOOD, {**GOOD, "model_id": "y", "kind": "vibes"}], r"entry 1 \(y\): field kind is 'vibes'; use one of"),
    ([{k: v for k, v in GOOD.items() if k not in ("source", "note")}], r"entry 0 \(x/\*\): missing field\(s\) source, note"),
    ([{**GOOD, "sen_through": "2024-01-01"}], r"unknown field\(s\) sen_through"),
    ([{**GOOD, "source": ""}], r"field source must be a non-empty string"),
    ([{**GOOD, "kind": PER_SYMBOL}], r"per_symbol mapping goes with kind 'per-symbol training end'"),
    ([{**GOOD, "kind": PER_SYMBOL, "per_symbol": {"A": "2024-01-31", "B": "2024-1-5"}}], r"per_symbol\['B'\]: '2024-1-5'"),
    ([{**GOOD, "kind": PER_SYMBOL, "per_symbol": {"A": "2023-01-31"}}], r"seen_through 2024-01-31 must be the latest"),
    (["x"], r"entry 0: expected an object"),
])
def test_a_bad_registry_file_is_named(tmp_path, entries, message):
    path = tmp_path / "cutoffs.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(RegistryError, match=message):
        load_registry(path=path)
    assert str(path) in str(pytest.raises(RegistryError, load_registry, path=path).value)


def test_a_registry_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "cutoffs.json"
    path.write_text("[{,")
    with pytest.raises(RegistryError, match="cannot read the pretraining cutoff registry"):
        load_registry(path=path)


def test_the_packaged_registry_is_valid_and_first_match_wins(tmp_path):
    entries = json.loads(REGISTRY_PATH.read_text())
    assert {e["kind"] for e in entries} <= set(KINDS) and len(load_registry().entries) == len(entries)
    path = tmp_path / "cutoffs.json"
    path.write_text(json.dumps([{**GOOD, "model_id": "a/b"}, {**GOOD, "model_id": "a/*", "seen_through": "2020-01-01"}]))
    assert load_registry(path=path).lookup("a/b", "S").seen_through == dt.date(2024, 1, 31)
    assert load_registry(path=path).lookup("a/c", "S").seen_through == dt.date(2020, 1, 1)


def test_timezone_aware_starts_use_their_local_date():
    import pandas as pd

    cutoff = Cutoff("m", dt.date(2024, 5, 31), "training data end", "s", "n")
    starts = pd.DatetimeIndex(["2024-05-31 23:00", "2024-06-01 00:30"]).tz_localize("America/New_York")
    assert in_pretraining_period(starts, cutoff).tolist() == [True, False]


def test_the_runtime_resource_validates_and_resolves_its_cutoff():
    from resources.runtimes import KronosRuntime, TotoRuntime

    with pytest.raises(ValueError, match=r"pretraining_cutoff: '2024-31-05' is not an ISO date"):
        TotoRuntime(pretraining_cutoff="2024-31-05")
    bundled = TotoRuntime(source=str(DEFAULT_TINY_DIR))
    assert bundled.cutoff("AAPL").seen_through == dt.date(2019, 8, 27)
    assert bundled.cutoff("COIN").never_seen
    overridden = TotoRuntime(source=str(DEFAULT_TINY_DIR), pretraining_cutoff="2023-12-31").cutoff("COIN")
    assert overridden.kind == OVERRIDE and overridden.seen_through == dt.date(2023, 12, 31)
    # Kronos: the model's id counts, not the tokenizer's
    kronos = KronosRuntime(source="NeoQuasar/Kronos-base", tokenizer_source="elsewhere/tokenizer").cutoff("NVDA")
    assert kronos.model_id == "NeoQuasar/Kronos-base" and kronos.seen_through == dt.date(2024, 5, 31)
    assert TotoRuntime(source="Datadog/Toto-Open-Base-1.0").cutoff("NVDA").kind == "release date (upper bound)"
    assert not TotoRuntime(source="some/other-model").cutoff("NVDA").known
