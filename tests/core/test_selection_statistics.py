"""The selection decisions on hand-made trial rows: pooled challengers, persistence winning, the
test report on out-of-sample windows, pretraining flags, and layouts too short to tune."""

import json

import numpy as np
import pandas as pd
import pytest

from forecast_core.pretraining import load_registry
from forecast_core.selection_statistics import TABLES, TRIAL_COLUMNS, selection_tables

N_VAL, N_TEST, H = 8, 4, 16
ORIGINS = pd.bdate_range("2023-01-02", periods=(N_VAL + N_TEST) * H, freq="B")[::H]


def _rows(symbol: str, model: str, config: str, val: np.ndarray, test: np.ndarray, default=False, seconds=1.0,
          tunable=True) -> list[dict]:
    splits = [("val", v) for v in val] + [("test", t) for t in test]
    offset = 0 if tunable else N_VAL
    return [{"symbol": symbol, "model": model, "config_hash": f"{model}-{config}", "config_name": f"{model}[{config}]",
             "split": split, "origin_index": 1000 + (i + offset) * H, "window_origin": ORIGINS[i + offset],
             "mae_pct": float(loss), "crps_pct": float(loss) * 0.7, "seconds": seconds, "is_default": default,
             "tunable": tunable, "block_length": 1,
             "layout_reason": "requested layout" if tunable else "insufficient history: 200 bars, tuning needs 272"}
            for i, (split, loss) in enumerate(splits)]


def _symbol(symbol: str, rng: np.random.Generator, gains: dict[str, float], persistence_gain: float = 0.0,
            noise: float = 0.05, tunable: bool = True) -> list[dict]:
    """Persistence, a random walk and two models; each config's loss = level * (1 - gain + noise)."""
    level = rng.uniform(3.0, 6.0, size=N_VAL + N_TEST)
    rows = []

    def loss(gain):
        values = level * (1.0 - gain + noise * rng.standard_normal(N_VAL + N_TEST))
        return (values[:N_VAL], values[N_VAL:]) if tunable else (values[:0], values[N_VAL:])

    rows += _rows(symbol, "persistence", "p", *loss(persistence_gain), default=True, seconds=0.0, tunable=tunable)
    rows += _rows(symbol, "random_walk", "rw", *loss(persistence_gain), default=True, seconds=0.01, tunable=tunable)
    for model in ("toto", "kronos"):
        rows += _rows(symbol, model, "default", *loss(0.0), default=True, seconds=2.0, tunable=tunable)
        for config, gain in gains.items():
            if tunable:
                rows += _rows(symbol, model, config, *loss(gain), seconds=1.0 + gain)
    return rows


def _cutoffs(overrides=None):
    registry = load_registry(overrides)
    return {model: (lambda symbol, m=model: registry.lookup(f"test/{m}", symbol)) for model in ("toto", "kronos")}


def _frame(rows):
    return pd.DataFrame(rows)[TRIAL_COLUMNS]


def test_every_table_keeps_its_schema_when_empty():
    tables = selection_tables(pd.DataFrame(columns=TRIAL_COLUMNS), _cutoffs())
    assert set(tables) == set(TABLES)
    for name, frame in tables.items():
        assert list(frame.columns) == list(TABLES[name]) and (frame.empty or name == "pooled")
    assert tables["pooled"]["outcome"].str.startswith("no pooled challenger: 0 tunable symbol(s)").all()


def test_missing_columns_say_what_to_rebuild():
    with pytest.raises(ValueError, match=r"lack columns \['tunable'.*dbt build"):
        selection_tables(pd.DataFrame(columns=[c for c in TRIAL_COLUMNS if c != "tunable"]), _cutoffs())


def test_a_pooled_challenger_replaces_noise_and_a_clearly_better_own_config_stays():
    """Config `small` is 2% better everywhere: too little for one symbol's 8 windows, plenty pooled over 6.
    Symbol OWN also has config `big`, 40% better: it beats the pooled challenger and is kept."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(6):
        rows += _symbol(f"S{i}", rng, {"small": 0.02, "worse": -0.05}, noise=0.05)
    rows += _symbol("OWN", rng, {"small": 0.02, "worse": -0.05}, noise=0.05)
    own_big = _rows("OWN", "toto", "big", np.full(N_VAL, 2.0), np.full(N_TEST, 2.0), seconds=1.5)
    tables = selection_tables(_frame(rows + own_big), _cutoffs({"test/*": "2000-01-01"}))
    pooled = tables["pooled"].set_index("model")
    assert pooled.loc["toto", "challenger_config_hash"] == "toto-small"
    assert pooled.loc["toto", "outcome"].startswith("pooled challenger: significantly better than the default over 7")
    decisions = tables["decisions"].set_index(["symbol", "model"])
    for i in range(6):
        row = decisions.loc[(f"S{i}", "toto")]
        assert row["selected_config_hash"] == "toto-small" and row["selection_basis"] == "pooled"
        assert row["configs_tested"] == 3 and row["windows_tested"] == N_VAL and 1 <= row["confidence_set_size"] <= 3
    kept = decisions.loc[("OWN", "toto")]
    assert kept["selected_config_hash"] == "toto-big" and kept["selection_basis"] == "own"
    assert kept["significant_vs_pooled"] and "significantly better than the pooled challenger" in kept["selection_reason"]
    assert json.loads(kept["confidence_set"])[0] == "toto[big]"


def test_without_a_pooled_challenger_noise_keeps_the_cheaper_config():
    rng = np.random.default_rng(4)
    rows = []
    for i in range(4):
        rows += _symbol(f"S{i}", rng, {f"c{k}": 0.0 for k in range(12)}, noise=0.05)
    tables = selection_tables(_frame(rows), _cutoffs())
    assert tables["pooled"]["challenger_config_hash"].isna().all()
    decisions = tables["decisions"]
    assert not decisions["significant_vs_default"].any()
    assert set(decisions["selection_basis"]) <= {"default", "cheaper"}
    assert decisions["selection_reason"].str.contains("not significantly better than the default|default config is best").all()


def test_persistence_wins_unless_a_model_beats_it_under_the_test():
    rng = np.random.default_rng(5)
    rows = _symbol("FLAT", rng, {"a": 0.0}, persistence_gain=0.0) + _symbol("SKILL", rng, {"a": 0.3})
    choice = selection_tables(_frame(rows), _cutoffs())["winner_tests"].set_index("symbol")
    assert choice.loc["FLAT", "winning_model"] == "persistence" and not choice.loc["FLAT", "significant_vs_persistence"]
    assert choice.loc["FLAT", "choice_reason"].endswith("persistence named")
    assert choice.loc["SKILL", "winning_model"] in ("toto", "kronos")
    assert choice.loc["SKILL", "significant_vs_persistence"] and choice.loc["SKILL", "p_value_vs_persistence"] < 0.05
    assert choice.loc["SKILL", "winning_config_hash"].endswith("-a")


def test_a_cutoff_after_the_data_end_flags_every_window_and_reports_no_out_of_sample_evidence(tmp_path):
    """A hand-made registry entry dates the models' cutoff after the data's end."""
    registry = tmp_path / "cutoffs.json"
    registry.write_text(json.dumps([{"model_id": "test/*", "seen_through": "2030-01-01", "kind": "training data end",
                                     "source": "hand-made", "note": "after the data's end"}]))
    loaded = load_registry(path=registry)
    cutoffs = {m: (lambda symbol, m=m: loaded.lookup(f"test/{m}", symbol)) for m in ("toto", "kronos")}
    rows = _symbol("AAA", np.random.default_rng(6), {"a": 0.1})
    tables = selection_tables(_frame(rows), cutoffs)
    assert tables["pretraining_windows"]["in_pretraining_period"].all()
    pretraining = tables["pretraining"]
    assert (pretraining["test_windows_out_of_sample"] == 0).all() and (pretraining["test_windows"] == N_TEST).all()
    assert pretraining["statement"].str.startswith(f"every test window ({N_TEST}) is inside the pretraining period").all()
    assert pretraining["statement"].str.contains("no out-of-sample evidence").all()
    assert set(tables["test_comparisons"]["subset"]) == {"all"}


def test_out_of_sample_windows_get_their_own_test_rows():
    cutoff_day = ORIGINS[N_VAL + 1].date().isoformat()  # the first two test targets start on or before it
    rows = _symbol("AAA", np.random.default_rng(7), {"a": 0.1})
    tables = selection_tables(_frame(rows), _cutoffs({"test/*": cutoff_day}))
    flags = tables["pretraining_windows"].query("model == 'toto'").sort_values("origin_index")
    assert flags["in_pretraining_period"].tolist() == [True] * (N_VAL + 2) + [False] * (N_TEST - 2)
    assert (tables["pretraining"]["test_windows_out_of_sample"] == N_TEST - 2).all()
    report = tables["test_comparisons"].set_index(["model", "reference", "metric", "subset"])
    assert report.loc[("toto", "persistence", "mae_pct", "out_of_sample"), "windows"] == N_TEST - 2
    assert report.loc[("toto", "persistence", "mae_pct", "all"), "windows"] == N_TEST
    assert report.loc[("toto", "random_walk", "crps_pct", "all"), "windows"] == N_TEST
    assert set(report.index.get_level_values("reference")) == {"default", "persistence", "random_walk"}


def test_unknown_cutoffs_leave_flags_null_and_say_how_to_add_one():
    tables = selection_tables(_frame(_symbol("AAA", np.random.default_rng(8), {"a": 0.1})), _cutoffs())
    assert tables["pretraining_windows"]["in_pretraining_period"].isna().all()
    assert tables["pretraining"]["test_windows_out_of_sample"].isna().all()
    assert tables["pretraining"]["statement"].str.contains("unknown pretraining cutoff for test/").all()


def test_a_history_too_short_to_tune_keeps_defaults_and_names_persistence():
    rows = _symbol("NEW", np.random.default_rng(9), {"a": 0.3}, tunable=False)
    tables = selection_tables(_frame(rows), _cutoffs())
    decisions = tables["decisions"]
    assert (decisions["selected_config_hash"] == decisions["default_config_hash"]).all()
    assert decisions["selection_reason"].str.startswith("insufficient history").all()
    choice = tables["winner_tests"].iloc[0]
    assert choice["winning_model"] == "persistence" and choice["choice_reason"].startswith("insufficient history")
    assert (tables["test_comparisons"]["windows"] == N_TEST).all()


def test_deterministic():
    rows = _frame(_symbol("AAA", np.random.default_rng(10), {"a": 0.05, "b": 0.0}))
    first, second = selection_tables(rows, _cutoffs()), selection_tables(rows, _cutoffs())
    for name in TABLES:
        pd.testing.assert_frame_equal(first[name], second[name])
