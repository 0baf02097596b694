"""The selection statistics' decision helpers one at a time (forecast_core/selection_statistics.py), for
the branches the whole-table tests (test_selection_statistics.py) do not reach: pooling that cannot
happen, a symbol whose best is the pooled challenger, no default scored, the cheaper-config rule, and a
model choice without persistence or with a best model that does not beat it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecast_core.selection_statistics import (
    MIN_POOLED_SYMBOLS, REFERENCE, TRIAL_COLUMNS, Pooled, choose_model, decide, pooled_challenger)

N_VAL, N_TEST = 8, 4
ORIGINS = pd.bdate_range("2024-01-01", periods=N_VAL + N_TEST)
REPS = 300
NOT_POOLED = Pooled("toto", None, None, None, 0, None, "no pooled challenger: test")


def _rows(symbol: str, config: str, val, test=(), default=False, seconds=1.0, model="toto") -> list[dict]:
    splits = [("val", v) for v in val] + [("test", t) for t in test]
    return [{"symbol": symbol, "model": model, "config_hash": config, "config_name": f"{model}[{config}]",
             "split": split, "origin_index": 100 + 16 * i, "window_origin": ORIGINS[i], "mae_pct": float(loss),
             "crps_pct": float(loss) * 0.7, "seconds": seconds, "is_default": default, "tunable": True,
             "block_length": 1, "layout_reason": "requested layout"} for i, (split, loss) in enumerate(splits)]


def _frame(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])[TRIAL_COLUMNS]


def _level(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(3.0, 6.0, N_VAL)


def _swing(size: float) -> np.ndarray:
    """Zero-mean noise (+size, -size, ...): large paired differences whose mean is exactly zero."""
    return size * np.resize([1.0, -1.0], N_VAL)


def _defaults(rows: pd.DataFrame) -> dict[str, str]:
    return rows[rows["is_default"]].groupby("symbol")["config_hash"].first().to_dict()


# -- the pooled challenger ---------------------------------------------------------------------------------------


def test_one_tunable_symbol_is_not_pooled():
    rows = _frame(_rows("S0", "d", _level(0), default=True), _rows("S0", "a", _level(0) * 0.5))
    pooled = pooled_challenger("toto", rows, _defaults(rows), REPS)
    assert pooled.challenger is None and pooled.test is None and pooled.symbols == 1
    assert pooled.outcome == f"no pooled challenger: 1 tunable symbol(s), pooling needs {MIN_POOLED_SYMBOLS}"


def test_a_default_missing_a_validation_window_on_one_symbol_is_not_pooled():
    level = _level(1)
    rows = _frame(_rows("S0", "d", level, default=True), _rows("S0", "a", level * 0.5),
                  _rows("S1", "d", level[:-1], default=True), _rows("S1", "a", level * 0.5))
    pooled = pooled_challenger("toto", rows, _defaults(rows), REPS)
    assert pooled.challenger is None and pooled.symbols == 2
    assert pooled.outcome == "no pooled challenger: the default config is not scored on every symbol"


def test_a_pooled_best_that_is_the_default_is_no_challenger():
    groups = []
    for i in range(3):
        level = _level(10 + i)
        groups += [_rows(f"S{i}", "d", level * 0.6, default=True), _rows(f"S{i}", "a", level)]
    pooled = pooled_challenger("toto", _frame(*groups), {f"S{i}": "d" for i in range(3)}, REPS)
    assert (pooled.best, pooled.default, pooled.challenger) == ("d", "d", None)
    assert pooled.outcome.startswith("no pooled challenger: the default config is best over 3 symbols (")


# -- one symbol's decision ---------------------------------------------------------------------------------------


def test_without_a_default_scored_the_best_on_validation_is_kept_untested():
    level = _level(2)
    rows = _frame(_rows("S0", "a", level), _rows("S0", "b", level * 0.9), _rows("S0", "c", level * 1.1))
    row = decide("S0", "toto", rows, NOT_POOLED, REPS)
    assert (row["selected_config_hash"], row["selection_basis"]) == ("b", "best")
    assert row["selection_test"] == "none: no default config scored" and row["configs_tested"] == 3
    assert row["default_config_hash"] is None


def test_a_symbol_whose_best_is_the_pooled_challenger_selects_it_as_pooled():
    level = _level(3)
    rows = _frame(_rows("S0", "d", level, default=True), _rows("S0", "p", level * 0.5), _rows("S0", "a", level * 0.8))
    pooled = Pooled("toto", "p", "d", "p", 4, None, "pooled challenger: significantly better than the default")
    row = decide("S0", "toto", rows, pooled, REPS)
    assert (row["selected_config_hash"], row["selection_basis"], row["pooled_config_hash"]) == ("p", "pooled", "p")
    assert row["selection_reason"] == "the pooled challenger is also this symbol's best"
    assert row["pooled_outcome"] == f"{pooled.outcome}; {row['selection_reason']}"
    assert row["val_diff_vs_default"] == float((level * 0.5).mean() - level.mean())


def test_a_best_that_is_not_significantly_better_wins_only_when_it_is_cheaper():
    noise = _swing(0.6)
    level = _level(4)
    for seconds, expected in ((0.5, ("a", "cheaper")), (2.0, ("d", "default"))):
        rows = _frame(_rows("S0", "d", level + noise, default=True, seconds=1.0),
                      _rows("S0", "a", level - 0.01, seconds=seconds))
        row = decide("S0", "toto", rows, NOT_POOLED, REPS)
        assert row["best_val_config_hash"] == "a" and not row["significant_vs_default"]
        assert (row["selected_config_hash"], row["selection_basis"]) == expected
        assert row["selection_reason"].startswith("not significantly better than the default (")
        assert row["selection_reason"].endswith("best is also cheaper" if expected[0] == "a"
                                                else "the cheaper default wins")


def test_without_validation_windows_the_default_or_else_the_cheapest_is_kept():
    level = _level(5)
    tested_only = _frame(_rows("S0", "d", [], level[:N_TEST], default=True, seconds=2.0),
                         _rows("S0", "a", [], level[:N_TEST], seconds=1.0))
    row = decide("S0", "toto", tested_only, NOT_POOLED, REPS)
    assert (row["selected_config_hash"], row["selection_basis"], row["selection_reason"]) == \
        ("d", "default", "no validation windows")
    no_default = tested_only[tested_only["config_hash"] == "a"].assign(is_default=False)
    cheaper = pd.concat([no_default, no_default.assign(config_hash="slow", seconds=9.0)])
    assert decide("S0", "toto", cheaper, NOT_POOLED, REPS)["selected_config_hash"] == "a"


# -- the model choice -----------------------------------------------------------------------------------------------


def test_a_symbol_without_persistence_names_no_winner():
    rows = _frame(_rows("S0", "d", _level(6), default=True))
    row = choose_model("S0", rows, {"toto": "d"}, REPS)
    assert row["winning_model"] is None and row["selection_test"] == "none: persistence not scored"


def test_a_best_model_that_does_not_beat_persistence_significantly_leaves_persistence_named():
    level = _level(7)
    noise = _swing(0.8)
    rows = _frame(_rows("S0", "p", level + noise, default=True, model=REFERENCE),
                  _rows("S0", "d", level - 0.05, default=True))
    row = choose_model("S0", rows, {"toto": "d"}, REPS)
    assert (row["winning_model"], row["winning_config_hash"]) == (REFERENCE, "p")
    assert not row["significant_vs_persistence"]
    assert row["choice_reason"].startswith("toto has the lowest validation MAE% but does not beat persistence "
                                           "significantly (")
    assert row["choice_reason"].endswith(": persistence named")
