"""The core sweep driver (forecast_core.sweep.symbol), `hpo compare`'s core (forecast_core.sweep.compare) and
the selection's mart reads (forecast_core.selection.selection_from_marts), without Dagster."""

from __future__ import annotations

import re

import duckdb
import pandas as pd
import pytest
from matplotlib.figure import Figure

from forecast_core.backtest import Trial
from forecast_core.configs import ConfigFileError, read_config
from forecast_core.forecasters import BASELINES
from forecast_core.forward import forecast_with
from forecast_core.kronos.forecaster import KronosForecaster, load_kronos
from forecast_core.overrides import env_overrides
from forecast_core.selection import selection_from_marts
from forecast_core.store import Storage, StoreError
from forecast_core.sweep.budgets import BASELINE_TRIALS
from forecast_core.sweep.compare import COLUMNS, Models, compare_symbol
from forecast_core.sweep.runner import SingleDraw
from forecast_core.sweep.spaces import KRONOS_DEFAULT
from forecast_core.sweep.symbol import LEADERBOARD_ROWS, SymbolSweep, best_trial
from forecast_core.synthetic import make_prices
from forecast_core.toto import TotoForecaster, load_toto
from forecast_core.toto2 import load_toto2
from forecast_core.windows import WindowSpec
from tests.support import TINY_BACKTEST

SPEC = WindowSpec(**TINY_BACKTEST)
# What a core message must not name: the Dagster layer adds its assets and jobs where it catches them.
DAGSTER_WORDS = re.compile(r"materiali|asset|_sweep\b|price_history|selected_configs|build_metrics|tune_symbol")
PLANS = [SingleDraw(BASELINES[name], [trial]) for name, trial in BASELINE_TRIALS.items()]


def test_short_history_gets_no_windows_and_says_why(tmp_path):
    logged = []
    sweep = SymbolSweep.of(Storage(tmp_path), "AAA", make_prices(40, seed=3), SPEC, log=logged.append)
    assert sweep.windows is None and sweep.ctx is None and not sweep.tunable
    assert logged == [f"AAA: {sweep.layout.reason}"]
    values = sweep.layout_values()
    assert (values.reason, values.tunable, values.figures["history_bars"]) == (sweep.layout.reason, False, 40)


def test_run_summary_and_leaderboard_are_plain_values(tmp_path):
    store, logged = Storage(tmp_path), []
    prices = make_prices(200, seed=21)
    store.write_prices("AAA", prices)
    sweep = SymbolSweep.load(store, "AAA", SPEC, base_seed=7, run_id="run-1", log=logged.append)
    trials = list(BASELINE_TRIALS.values())
    result = sweep.run("baseline", PLANS)
    assert len(result.computed) == len(trials) and any("scored" in line for line in logged)
    summary = sweep.summary("baseline", trials)
    assert summary["val_mae_pct"].is_monotonic_increasing  # best on validation first

    board = sweep.leaderboard(result, summary, {"persistence": BASELINE_TRIALS["persistence"],
                                                "unscored": Trial("nope")})
    assert list(board.table.columns)[:2] == ["model", "config"] and board.table.columns[-1] == "config_name"
    assert len(board.table) == min(len(trials), LEADERBOARD_ROWS)
    persistence = summary[summary["config_name"] == "persistence"].iloc[0]
    assert board.figures["persistence_test_mae_pct"] == persistence["test_mae_pct"]
    assert board.figures["unscored_val_mae_pct"] is None  # a reference the sweep did not score
    assert (board.figures["trials_computed"], board.figures["trials_skipped"]) == (len(trials), 0)
    assert board.best_config == summary.iloc[0]["config"]
    assert best_trial(summary, trials).name == summary.iloc[0]["config_name"]
    layout = sweep.layout_values()
    assert layout.layout["requested"] == SPEC.as_dict() and layout.figures["val_windows"] == SPEC.n_val

    figure = sweep.figure(trials[:1], forecast_with(), "baselines")
    assert isinstance(figure, Figure) and figure.axes[0].get_title() == "AAA: baselines"

    again = sweep.run("baseline", PLANS)  # the same identities: nothing recomputed
    assert (len(again.computed), len(again.skipped)) == (0, len(trials))
    other = sweep.with_revision("other weights")
    assert other.windows is sweep.windows and other.ctx.key(trials[0]) != sweep.ctx.key(trials[0])


def test_core_store_and_config_messages_name_no_dagster_asset(tmp_path):
    store = Storage(tmp_path)
    with pytest.raises(StoreError) as missing:
        store.read_prices("AAA")
    with pytest.raises(StoreError) as marts:
        selection_from_marts(store, "AAA", {}, {}, 0)
    with pytest.raises(ConfigFileError) as config:
        read_config(tmp_path / "toto" / "AAA.json", "toto")
    messages = [str(missing.value), str(marts.value), str(config.value)]
    assert "load and store its prices first" in messages[0]
    assert "no metrics database" in messages[1] and "dbt build" in messages[1]
    assert "run the config selection for this symbol first" in messages[2]
    for message in messages:
        assert not DAGSTER_WORDS.search(message), message


def test_selection_from_unreadable_marts_is_a_store_error(tmp_path):
    store = Storage(tmp_path)
    store.root.mkdir(parents=True, exist_ok=True)
    duckdb.connect(str(store.duckdb_path)).close()  # a database without the marts
    with pytest.raises(StoreError, match=r"cannot read the dbt marts .*rebuild them \(dbt build\)"):
        selection_from_marts(store, "AAA", {}, {}, 0)


def _never(*_):
    raise AssertionError("a model was loaded although nothing needed it")


@pytest.fixture(scope="module")
def models(random_checkpoints):
    toto = TotoForecaster(load_toto(random_checkpoints["toto"]))
    kronos = KronosForecaster(*load_kronos(random_checkpoints["kronos"], random_checkpoints["kronos_tokenizer"]),
                              KRONOS_DEFAULT)
    toto2 = load_toto2(random_checkpoints["toto2"])
    return Models(toto=lambda: toto, kronos=lambda: kronos, toto2=lambda label: toto2,
                  toto2_checkpoints=lambda: ["random-toto2"], revision=lambda model: f"{model}-random")


def test_compare_scores_each_model_once_and_reuses_its_trials(tmp_path, models):
    store, logged = Storage(tmp_path), []
    prices = make_prices(200, seed=21)
    overrides = env_overrides({"TOTO_NUM_SAMPLES": "16", "KRONOS_SAMPLE_COUNT": "4", "TOTO2_VARIATES": "ohlc"})
    comparison = compare_symbol(store, "AAA", prices, SPEC, models, overrides, log=logged.append)
    table = comparison.table.set_index("model")
    assert list(comparison.table.columns) == COLUMNS and set(table.index) == {"persistence", "toto", "toto2",
                                                                               "kronos"}
    assert table.loc["persistence", "test_vs_persistence"] == 1.0
    assert table.loc["toto", "config"] == "toto[aggregate=median,num_samples=16]"
    assert "sample_count=4" in table.loc["kronos", "config"] and "variates=ohlc" in table.loc["toto2", "config"]
    assert (table["test_windows"] == SPEC.n_test).all() and comparison.overrides == overrides.describe()
    rows = store.read_trials(symbol="AAA")
    assert set(rows["sweep"]) == {"baseline", "toto", "toto2", "kronos"} and set(rows["run_id"]) == {"cli-compare"}
    assert set(rows.loc[rows["model"] == "toto", "model_revision"]) == {"toto-random"}

    logged.clear()
    again = compare_symbol(store, "AAA", prices, SPEC, models, overrides, log=logged.append)
    assert sum("all trials already stored" in line for line in logged) == 4
    pd.testing.assert_frame_equal(again.table, comparison.table)


def test_compare_needs_no_model_without_windows_or_stored_files(tmp_path):
    never = Models(toto=_never, kronos=_never, toto2=_never, toto2_checkpoints=lambda: ["random-toto2"],
                   revision=_never)
    short = compare_symbol(Storage(tmp_path), "AAA", make_prices(40, seed=3), SPEC, never, env_overrides({}))
    assert short.table.empty and list(short.table.columns) == COLUMNS and short.layout.spec is None
    with pytest.raises(ConfigFileError, match="toto/AAA.json: no such config file"):
        compare_symbol(Storage(tmp_path), "AAA", make_prices(200, seed=21), SPEC, never, env_overrides({}),
                       stored_configs=tmp_path / "hyperparams")
