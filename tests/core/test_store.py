"""Parquet trial storage and resumable sweeps: round trip, idempotence, safe paths, clear errors."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from forecast_core.backtest import Trial, draw, score_trials
from forecast_core.configs import MODELS
from forecast_core.data import InvalidSymbolError
from forecast_core.forecasters import BASELINES, Drift, Persistence, SeasonalNaive
from forecast_core.store import TRIAL_COLUMNS, Storage, StoreError, TrialContext, trial_context
from forecast_core.sweep.runner import SingleDraw, run_sweep, summarize
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec, build_windows
from tests.support import REPO, TINY_BACKTEST

SPEC = WindowSpec(**TINY_BACKTEST)
N_WINDOWS = SPEC.n_val + SPEC.n_test
FILE_NAME = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{16}\.parquet$")


@pytest.fixture
def prices():
    return make_prices(200, seed=21)


@pytest.fixture
def storage(storage_dir):
    return Storage(storage_dir)


def _rows(prices, trial=None, symbol="AAA"):
    trial = trial or Trial("persistence")
    windows = build_windows(prices, SPEC, symbol)
    return trial, score_trials(windows, draw(BASELINES[trial.model], windows, trial.num_samples), [trial])


def _parquet_files(storage):
    return sorted(storage.trials_dir.rglob("*.parquet")) if storage.trials_dir.exists() else []


def _groups():
    return [
        SingleDraw(Persistence(), [Trial("persistence")]),
        SingleDraw(SeasonalNaive(), [Trial("seasonal_naive", {"period": 5})]),
        SingleDraw(Drift(), [Trial("drift")]),
    ]


# -- write / read ------------------------------------------------------------------------------------------
def test_write_then_read_round_trip(storage, prices):
    trial, rows = _rows(prices)
    ctx = trial_context("aaa", prices, SPEC, model_revision="rev1", run_id="run-7")
    assert not storage.has_trial("s1", ctx, trial)
    path = storage.write_trial("s1", ctx, trial, rows)
    assert path.exists() and storage.has_trial("s1", ctx, trial)
    back = storage.read_trials("s1")
    assert len(back) == N_WINDOWS
    back = back.sort_values("origin_index").reset_index(drop=True)
    for col in ("mae", "mae_pct", "mase", "crps_pct", "coverage_10_90"):
        np.testing.assert_allclose(back[col].to_numpy(), rows[col].to_numpy(), rtol=0, atol=0, err_msg=col)
    assert back["origin_index"].tolist() == rows["origin_index"].tolist()
    assert back["seed"].tolist() == rows["seed"].tolist()
    assert back["split"].tolist() == rows["split"].tolist()
    assert set(back["symbol"]) == {"AAA"} and set(back["sweep"]) == {"s1"}
    assert set(back["data_version"]) == {ctx.data_version}
    assert set(back["model_revision"]) == {"rev1"} and set(back["run_id"]) == {"run-7"}
    assert set(back["trial_key"]) == {ctx.key(trial)}
    assert (back["horizon"] == 16).all() and (back["n_val"] == 3).all() and (back["n_test"] == 2).all()
    assert (back["stride"] == 16).all() and (back["context"] == 64).all()
    assert pd.Timestamp(back["data_end"].iloc[0]) == prices["timestamp"].iloc[-1]
    pd.testing.assert_series_equal(back["window_origin"].astype("datetime64[ns]"),
                                   rows["window_origin"].astype("datetime64[ns]"), check_names=False)


def test_stored_columns_and_the_dbt_reader_follow_one_list(storage, prices):
    """store.TRIAL_COLUMNS owns the row layout; read_trials.sql types its empty relation with the same list."""
    trial, rows = _rows(prices)
    path = storage.write_trial("s1", trial_context("AAA", prices, SPEC), trial, rows)
    assert list(pd.read_parquet(path).columns) == list(TRIAL_COLUMNS)
    macro = (REPO / "dbt_metrics" / "macros" / "read_trials.sql").read_text()
    assert dict(re.findall(r"'(\w+) (\w+)'", macro)) == TRIAL_COLUMNS
    with pytest.raises(ValueError, match="beyond or missing from store.TRIAL_COLUMNS"):
        storage.write_trial("s1", trial_context("AAA", prices, SPEC), trial, rows.assign(extra=1))
    staging = REPO / "dbt_metrics" / "models" / "staging"
    read = re.findall(r"read_trials\('(\w+)'\)", (staging / "stg_trials.sql").read_text())
    assert sorted(read) == sorted(["baseline", *MODELS])  # every family's sweep


def test_same_trial_twice_replaces(storage, prices):
    trial, rows = _rows(prices)
    ctx = trial_context("AAA", prices, SPEC)
    first = storage.write_trial("s1", ctx, trial, rows)
    second = storage.write_trial("s1", ctx, trial, rows)
    assert first == second
    assert len(_parquet_files(storage)) == 1
    assert len(storage.read_trials()) == N_WINDOWS
    # no temp files left behind
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".tmp")]


def test_new_data_version_creates_another_file(storage, prices):
    trial, rows = _rows(prices)
    ctx = trial_context("AAA", prices, SPEC)
    storage.write_trial("s1", ctx, trial, rows)
    changed = prices.copy()
    changed.loc[150, "close"] *= 1.01
    ctx2 = trial_context("AAA", changed, SPEC)
    assert ctx2.data_version != ctx.data_version
    assert not storage.has_trial("s1", ctx2, trial)
    _, rows2 = _rows(changed)
    storage.write_trial("s1", ctx2, trial, rows2)
    assert len(_parquet_files(storage)) == 2
    stored = storage.read_trials("s1")
    assert len(stored) == 2 * N_WINDOWS
    assert set(stored["data_version"]) == {ctx.data_version, ctx2.data_version}


def test_key_depends_on_everything_that_determines_the_numbers(prices):
    trial = Trial("persistence")
    ctx = trial_context("AAA", prices, SPEC)
    keys = {
        ctx.key(trial),
        trial_context("BBB", prices, SPEC).key(trial),
        trial_context("AAA", prices, WindowSpec(16, 3, 2, None, 32)).key(trial),
        trial_context("AAA", prices, SPEC, model_revision="abc").key(trial),
        trial_context("AAA", prices, SPEC, base_seed=1).key(trial),
        ctx.key(Trial("seasonal_naive", {"period": 5})),
        ctx.key(Trial("seasonal_naive", {"period": 7})),
    }
    assert len(keys) == 7
    # the run id does not change what a trial computes
    assert trial_context("AAA", prices, SPEC, run_id="other").key(trial) == ctx.key(trial)


def test_file_names_carry_no_user_controlled_path_parts(storage, prices):
    trial = Trial("persistence", {"note": "../../../etc/passwd", "path": "/tmp/x"})
    _, rows = _rows(prices, trial)
    ctx = trial_context("brk.b", prices, SPEC, model_revision="../../rev", run_id="/abs/run")
    path = storage.write_trial("s1", ctx, trial, rows)
    rel = path.relative_to(storage.root)
    assert rel.parts[:3] == ("trials", "sweep=s1", "symbol=BRK.B")
    assert len(rel.parts) == 4 and FILE_NAME.match(rel.parts[3])
    assert path.resolve().is_relative_to(storage.root)


@pytest.mark.parametrize("symbol", ["../etc", "a/b", "..", ""])
def test_unsafe_symbol_in_context_is_rejected(storage, prices, symbol):
    trial, rows = _rows(prices)
    ctx = TrialContext(symbol, "v", pd.Timestamp("2021-01-01"), SPEC)
    with pytest.raises(InvalidSymbolError):
        storage.write_trial("s1", ctx, trial, rows)
    with pytest.raises(InvalidSymbolError):
        storage.prices_path(symbol)
    assert _parquet_files(storage) == []


@pytest.mark.parametrize("sweep", ["", "Sweep", "a/b", "../x", "a-b", "a b", "s1;drop", "*"])
def test_invalid_sweep_names_are_rejected(storage, prices, sweep):
    trial, rows = _rows(prices)
    ctx = trial_context("AAA", prices, SPEC)
    with pytest.raises(ValueError, match="sweep"):
        storage.write_trial(sweep, ctx, trial, rows)
    with pytest.raises(ValueError, match="sweep"):
        storage.has_trial(sweep, ctx, trial)
    if sweep != "*":
        with pytest.raises(ValueError, match="sweep"):
            storage.read_trials(sweep)
    assert _parquet_files(storage) == []


def test_rows_of_another_config_are_refused(storage, prices):
    _, rows = _rows(prices, Trial("drift"))
    ctx = trial_context("AAA", prices, SPEC)
    with pytest.raises(ValueError):
        storage.write_trial("s1", ctx, Trial("persistence"), rows)
    with pytest.raises(ValueError):
        storage.write_trial("s1", ctx, Trial("drift"), rows.iloc[:0])


def test_read_trials_on_empty_store(storage):
    frame = storage.read_trials()
    assert isinstance(frame, pd.DataFrame) and frame.empty
    assert storage.read_trials("s1", symbol="AAA").empty


def test_read_trials_filters_by_sweep_and_symbol(storage, prices):
    trial, rows = _rows(prices)
    storage.write_trial("s1", trial_context("AAA", prices, SPEC), trial, rows)
    _, rows_b = _rows(prices, symbol="BBB")
    storage.write_trial("s1", trial_context("BBB", prices, SPEC), trial, rows_b)
    storage.write_trial("s2", trial_context("AAA", prices, SPEC), trial, rows)
    assert len(storage.read_trials()) == 3 * N_WINDOWS
    assert len(storage.read_trials("s1")) == 2 * N_WINDOWS
    only = storage.read_trials("s1", symbol="bbb")
    assert len(only) == N_WINDOWS and set(only["symbol"]) == {"BBB"}
    with pytest.raises(InvalidSymbolError):
        storage.read_trials(symbol="../x")


def test_numeric_sweep_and_symbol_names_stay_strings(storage, prices):
    trial, rows = _rows(prices, symbol="1234")
    storage.write_trial("2024", trial_context("1234", prices, SPEC), trial, rows)
    back = storage.read_trials("2024")
    assert back["symbol"].tolist() == ["1234"] * N_WINDOWS
    assert back["sweep"].tolist() == ["2024"] * N_WINDOWS


def test_corrupt_parquet_gives_store_error_naming_the_directory(storage, prices):
    trial, rows = _rows(prices)
    storage.write_trial("s1", trial_context("AAA", prices, SPEC), trial, rows)
    bad = storage.trials_dir / "sweep=s1" / "symbol=AAA" / "0000-broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError) as info:
        storage.read_trials()
    assert str(storage.trials_dir) in str(info.value)
    assert "0000-broken.parquet" in str(info.value)  # and which file is broken
    assert "re-run the s1 sweep for AAA, which recomputes" in str(info.value)  # and the fix


def test_prices_round_trip_and_missing_prices(storage, prices):
    with pytest.raises(StoreError, match="AAA: no stored price history .*; load and store its prices first"):
        storage.read_prices("AAA")
    storage.write_prices("aaa", prices.assign(extra=1))
    back = storage.read_prices("AAA")
    pd.testing.assert_frame_equal(back, prices)
    storage.prices_path("AAA").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="unreadable price history .*; load and store its prices again"):
        storage.read_prices("AAA")


def test_damaged_metrics_database_is_named_with_the_fix(storage):
    storage.check_metrics_db()  # missing is fine: dbt creates it
    storage.root.mkdir(parents=True, exist_ok=True)
    storage.duckdb_path.write_bytes(b"not a database " * 4096)
    with pytest.raises(StoreError, match=r"damaged metrics database .*delete it .*rebuild it \(dbt build\)"):
        storage.check_metrics_db()


# -- sweeps -------------------------------------------------------------------------------------------------
def test_run_sweep_is_resumable_and_idempotent(storage, prices):
    windows = build_windows(prices, SPEC, "AAA")
    ctx = trial_context("AAA", prices, SPEC)
    messages: list[str] = []
    first = run_sweep(storage, "baselines", ctx, windows, _groups(), progress=messages.append)
    assert len(first.computed) == 3 and len(first.skipped) == 0 and first.total == 3
    assert len(messages) == 3
    rows = storage.read_trials("baselines")
    assert len(rows) == 3 * N_WINDOWS
    assert sorted(rows["model"].unique()) == ["drift", "persistence", "seasonal_naive"]

    second = run_sweep(storage, "baselines", ctx, windows, _groups())
    assert len(second.computed) == 0 and len(second.skipped) == 3 and second.seconds == 0.0
    again = storage.read_trials("baselines")
    assert len(again) == 3 * N_WINDOWS
    assert not again.duplicated(["config_hash", "origin_index", "data_version"]).any()

    # a lost file is recomputed alone
    next(p for p in _parquet_files(storage) if p.name.startswith(Trial("drift").config_hash)).unlink()
    third = run_sweep(storage, "baselines", ctx, windows, _groups())
    assert [t.model for t in third.computed] == ["drift"] and len(third.skipped) == 2
    assert len(storage.read_trials("baselines")) == 3 * N_WINDOWS


def test_run_sweep_scores_match_a_direct_backtest(storage, prices):
    windows = build_windows(prices, SPEC, "AAA")
    ctx = trial_context("AAA", prices, SPEC)
    run_sweep(storage, "s", ctx, windows, _groups())
    stored = storage.read_trials("s").set_index(["model", "origin_index"]).sort_index()
    for plan in _groups():
        forecaster, trials = plan.forecaster, plan.group
        direct = score_trials(windows, draw(forecaster, windows, 1), trials)
        for _, row in direct.iterrows():
            got = stored.loc[(row["model"], row["origin_index"])]
            assert got["mae_pct"] == row["mae_pct"] and got["crps_pct"] == row["crps_pct"]
    # persistence MAE of the last window, computed by hand
    last = windows.origins[-1]
    closes = prices["close"].to_numpy()
    expected = np.abs(closes[last : last + 16] - closes[last - 1]).mean()
    assert stored.loc[("persistence", last), "mae"] == pytest.approx(expected, rel=1e-12)
    table = summarize(storage.read_trials("s"))
    assert set(table["model"]) == {"persistence", "seasonal_naive", "drift"}
    assert (table["val_windows"] == 3).all() and (table["test_windows"] == 2).all()


def test_run_sweep_after_new_bars_computes_again(storage, prices):
    old = prices.iloc[:184]
    run_sweep(storage, "s", trial_context("AAA", old, SPEC), build_windows(old, SPEC, "AAA"), _groups())
    result = run_sweep(storage, "s", trial_context("AAA", prices, SPEC), build_windows(prices, SPEC, "AAA"),
                       _groups())
    assert len(result.computed) == 3 and not result.skipped
    assert len(storage.read_trials("s")) == 6 * N_WINDOWS


def test_trials_that_differ_only_outside_knobs_cannot_collide(storage, prices):
    """Two trials whose stored config is identical would share one file and mix their rows."""
    windows = build_windows(prices, SPEC, "AAA")
    ctx = trial_context("AAA", prices, SPEC)
    twins = [Trial("persistence", aggregate="mean"), Trial("persistence", aggregate="median")]
    assert twins[0].config_hash == twins[1].config_hash
    with pytest.raises(ValueError, match="config"):
        run_sweep(storage, "s", ctx, windows, [SingleDraw(Persistence(), twins)])
    assert _parquet_files(storage) == []
    # with the aggregation in the knobs they are distinct configs, stored apart
    distinct = [Trial("persistence", {"aggregate": a}, aggregate=a) for a in ("mean", "median")]
    result = run_sweep(storage, "s", ctx, windows, [SingleDraw(Persistence(), distinct)])
    assert len(result.computed) == 2 and len(_parquet_files(storage)) == 2
    assert len(storage.read_trials("s")) == 2 * N_WINDOWS
