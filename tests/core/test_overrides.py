"""The environment overrides (forecast_core/overrides.py): every TOTO_/TOTO2_/KRONOS_ variable parsed into
its family's knobs, the limits of forecast_core/knobs.py refused with the variable named, and the echo line."""

from __future__ import annotations

import pytest

from forecast_core.knobs import BOUNDS, Bound
from forecast_core.overrides import VARIABLES, Overrides, env_overrides
from forecast_core.sweep.spaces import TOTO2_VARIATES

# One valid value per variable (as the environment holds it) and what it must parse to.
VALID = {
    "TOTO_NUM_SAMPLES": (" 512 ", 512),
    "TOTO_AGGREGATE": ("trimmed_mean_10", "trimmed_mean_10"),
    "TOTO_SAMPLES_PER_BATCH": ("128", 128),
    "TOTO2_CHECKPOINT": ("Datadog/Toto-2.0-22m", "Datadog/Toto-2.0-22m"),
    "TOTO2_CONTEXT_LENGTH": ("0", 0),
    "TOTO2_DECODE_BLOCK_SIZE": ("32", 32),
    "TOTO2_VARIATES": ("ohlcv", "ohlcv"),
    "TOTO2_AGGREGATE": ("quantile_0.6", "quantile_0.6"),
    "KRONOS_TEMPERATURE": ("0", 0.0),
    "KRONOS_TOP_P": ("1", 1.0),
    "KRONOS_TOP_K": ("50", 50),
    "KRONOS_SAMPLE_COUNT": ("16", 16),
    "KRONOS_MAX_CONTEXT": ("192", 192),
    "KRONOS_CLIP": ("2.5", 2.5),
    "KRONOS_AGGREGATE": ("mean_minus_std_0.5", "mean_minus_std_0.5"),
}


def test_every_variable_is_parsed_into_its_familys_knobs_with_the_knobs_type():
    assert set(VALID) == set(VARIABLES)
    overrides = env_overrides({name: raw for name, (raw, _) in VALID.items()})
    by_family = {"toto": overrides.toto, "toto2": overrides.toto2, "kronos": overrides.kronos}
    for name, (model, knob, _) in VARIABLES.items():
        parsed = by_family[model][knob]
        assert parsed == VALID[name][1] and type(parsed) is type(VALID[name][1]), (name, parsed)
    assert overrides.variables == {name: value for name, (_, value) in VALID.items()}
    assert sum(len(knobs) for knobs in by_family.values()) == len(VARIABLES)


def test_unset_blank_and_unrelated_variables_override_nothing():
    overrides = env_overrides({"TOTO_NUM_SAMPLES": "", "KRONOS_CLIP": "   ", "TOTO_NUM_SAMPLE": "-1", "PATH": "/bin"})
    assert overrides == Overrides()
    assert overrides.describe() == "no knob overrides in the environment"


def test_describe_echoes_each_override_once_sorted_by_name():
    overrides = env_overrides({"KRONOS_TOP_K": "20", "TOTO_AGGREGATE": "median", "TOTO2_VARIATES": "ohlc"})
    assert overrides.describe() == ("overrides from the environment: "
                                    "KRONOS_TOP_K=20 TOTO2_VARIATES=ohlc TOTO_AGGREGATE=median")


def _outside(bound: Bound) -> list[str]:
    """Environment values just outside ``bound``, derived from its declared limits."""
    step = 1 if bound.kind is int else 0.5
    values = []
    if bound.minimum is not None:
        values.append(bound.minimum - step)
    if bound.exclusive_minimum is not None:
        values.append(bound.exclusive_minimum)
    if bound.maximum is not None:
        values.append(bound.maximum + step)
    return [str(bound.kind(v)) for v in values]


BOUNDED = [(name, model, knob, text) for name, (model, knob, _) in VARIABLES.items() if knob in BOUNDS[model]
           for text in _outside(BOUNDS[model][knob])]


def test_every_bounded_knob_has_a_value_outside_its_limits_to_try():
    assert {(model, knob) for _, model, knob, _ in BOUNDED} == {(f, k) for f, b in BOUNDS.items() for k in b}


@pytest.mark.parametrize("name, model, knob, text", BOUNDED, ids=[f"{n}={t}" for n, _, _, t in BOUNDED])
def test_a_value_outside_the_knobs_limits_is_refused_naming_the_variable_and_the_limit(name, model, knob, text):
    with pytest.raises(ValueError) as error:
        env_overrides({name: text})
    assert str(error.value) == (f"invalid knob override(s): {name}={text!r}: "
                                f"{knob} must be {BOUNDS[model][knob].describe()}")


@pytest.mark.parametrize("name, text, says", [
    ("TOTO_NUM_SAMPLES", "1.5", "num_samples must be an integer"),
    ("KRONOS_TOP_K", "twenty", "top_k must be an integer"),
    ("KRONOS_TEMPERATURE", "warm", "temperature must be a number"),
    ("KRONOS_TEMPERATURE", "nan", "temperature must be >= 0"),  # NaN compares false with every limit
    ("TOTO_AGGREGATE", "meen", "unknown aggregation 'meen'"),
    ("KRONOS_AGGREGATE", "trimmed_mean_50", "trim percentage must be < 50"),
    ("TOTO2_AGGREGATE", "trimmed_mean_5", "needs sample paths"),
    ("TOTO2_VARIATES", "hlc", f"must be one of {', '.join(TOTO2_VARIATES)}"),
])
def test_unknown_values_are_refused_naming_the_variable_and_what_is_accepted(name, text, says):
    with pytest.raises(ValueError) as error:
        env_overrides({name: text})
    message = str(error.value)
    assert message.startswith(f"invalid knob override(s): {name}={text!r}: ") and says in message, message


def test_every_bad_variable_is_reported_at_once_in_the_variables_order():
    with pytest.raises(ValueError) as error:
        env_overrides({"KRONOS_CLIP": "0", "TOTO_NUM_SAMPLES": "0", "TOTO_AGGREGATE": "median",
                       "TOTO2_VARIATES": "x"})
    problems = str(error.value).removeprefix("invalid knob override(s): ").split("; ")
    assert [p.split("=")[0] for p in problems] == ["TOTO_NUM_SAMPLES", "TOTO2_VARIATES", "KRONOS_CLIP"]
