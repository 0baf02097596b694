"""Knob limits have one owner (forecast_core/knobs.py): the config classes, the environment overrides
and the config-file JSON schema all agree with it."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from forecast_core.configs import ConfigFileError, validate_document
from forecast_core.knobs import BOUNDS, KRONOS_BOUNDS, Bound
from forecast_core.kronos.forecaster import KronosSamplingConfig
from forecast_core.overrides import VARIABLES, env_overrides
from forecast_core.sweep.spaces import default_trials, toto2_trial
from tests.support import config_document


def _schema_knobs() -> dict:
    schema = json.loads((resources.files("forecast_core") / "schemas" / "hyperparams.schema.json").read_text())
    return schema["properties"]["config"]["properties"]


@pytest.mark.parametrize("family, knob", [(f, k) for f, bounds in BOUNDS.items() for k in bounds])
def test_the_config_file_schema_states_each_knobs_declared_range(family, knob):
    stated = {k: v for k, v in _schema_knobs()[knob].items() if k != "description"}
    assert stated == BOUNDS[family][knob].schema()


def test_every_bounded_knob_has_an_override_that_parses_by_its_bound():
    overridden = {(model, knob) for model, knob, _ in VARIABLES.values()}
    assert {(f, k) for f, bounds in BOUNDS.items() for k in bounds} <= overridden


def test_max_context_below_the_kronos_minimum_is_refused_everywhere():
    """The drift #15 found: the schema used to accept max_context 1 where the class refuses it."""
    low = KRONOS_BOUNDS["max_context"].minimum - 1
    with pytest.raises(ValueError, match=f"max_context must be >= 8, got {low:g}"):
        KronosSamplingConfig(max_context=int(low))
    with pytest.raises(ValueError, match="KRONOS_MAX_CONTEXT='7': max_context must be >= 8"):
        env_overrides({"KRONOS_MAX_CONTEXT": "7"})
    trial = default_trials()["kronos"]
    document = config_document(trial, max_context=7)
    with pytest.raises(ConfigFileError, match="config.max_context"):
        validate_document(document, "kronos", "test")


@pytest.mark.parametrize("bound, good, bad", [
    (Bound(int, minimum=0), [0, 5], [-1, 1.5, True]),
    (Bound(float, exclusive_minimum=0, maximum=1), [0.5, 1.0, 1], [0.0, 1.01, float("nan")]),
])
def test_a_bound_accepts_its_range_and_names_what_is_wrong(bound, good, bad):
    assert [bound.problem("k", v) for v in good] == [None] * len(good)
    assert all(bound.problem("k", v).startswith("k must be") for v in bad)


def test_toto2_trials_and_overrides_share_the_limits():
    with pytest.raises(ValueError, match=r"context_length must be >= 0 \(0 = all of the window's context\)"):
        toto2_trial("c", -32, 0, "close", "median")
    with pytest.raises(ValueError, match="TOTO2_DECODE_BLOCK_SIZE='x': decode_block_size must be an integer"):
        env_overrides({"TOTO2_DECODE_BLOCK_SIZE": "x"})
