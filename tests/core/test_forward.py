"""The forward scorecard's core (forecast_core/forward.py), without Dagster: forward windows and their
seeds, incremental scoring into one file per scorecard, reading the stored config files, the report's
numbers and the re-tune decision. Cheap baseline forecasts stand in for the models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecast_core.backtest import Draw
from forecast_core.configs import config_path, write_config
from forecast_core.forecasters import BASELINES
from forecast_core.forward import (
    FORWARD,
    REPORT_COLUMNS,
    DriftPolicy,
    ForwardStore,
    Scorecard,
    current_scorecards,
    document_trial,
    drift_reason,
    forecast_with,
    forward_report,
    forward_windows,
    score_forward,
)
from forecast_core.sweep.budgets import BASELINE_TRIALS
from forecast_core.sweep.spaces import default_trials, toto_trial
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec, build_windows, window_seed

H, CONTEXT, TUNED = 16, 64, 300  # the config files saw bars [0, 300)
PRICES = make_prices(400, seed=1)
DATA_END = PRICES["timestamp"].iloc[TUNED - 1].date().isoformat()
SELECTED_AT = "2026-01-05T00:00:00+00:00"
TOTO_KNOBS = {"num_samples": 64, "aggregate": "median", "samples_per_batch": 64}
KRONOS_KNOBS = {"temperature": 0.7, "top_p": 0.95, "top_k": 20, "sample_count": 4, "max_context": 256, "clip": 5.0,
                "aggregate": "mean"}


# -- helpers -------------------------------------------------------------------------------------------------
def _card(data_end=DATA_END, context=CONTEXT, horizon=H, kind="toto", selected=None, symbol="AAA",
          selected_at=SELECTED_AT) -> Scorecard:
    trials = {"selected": selected or toto_trial(32, "median"), "default": default_trials()["toto"],
              "persistence": BASELINE_TRIALS["persistence"], "random_walk": BASELINE_TRIALS["random_walk"]}
    return Scorecard(symbol, kind, trials["selected"].model, selected_at, pd.Timestamp(data_end), horizon, context,
                     trials)


def _cheap(calls: list | None = None):
    """A Forecast: baselines as they are, every model trial drawn from the random walk (its sample count)."""
    def forecast(trial, windows):
        if calls is not None:
            calls.append((trial.model, trial.num_samples, windows.origins.tolist()))
        name = trial.model if trial.model in BASELINES else "random_walk"
        return Draw(BASELINES[name].sample_paths(windows.batch, trial.num_samples), 0.0)
    return forecast


def _model_document(model: str, data_end: str = DATA_END, selected_at: str = SELECTED_AT, context: int = CONTEXT,
                    knobs: dict | None = None, symbol: str = "AAA") -> dict:
    knobs = knobs or (TOTO_KNOBS if model == "toto" else KRONOS_KNOBS)
    scores = {"mae_pct": 5.0, "windows": 3}
    return {"symbol": symbol, "model": model, "config": {"name": f"{model}-picked", **knobs},
            "validation": scores, "test": scores,
            "windows": {"n_val": 3, "n_test": 2, "forecast_horizon": H, "stride": H, "context": context},
            "metadata": {"model_id": model, "model_revision": "sha256:1", "data_end": data_end,
                         "data_version": "x", "seed": 0, "search": {"method": "grid", "trials": 1},
                         "baselines_on_test": {}, "selection": {"significant_vs_default": False, "reason": "test"},
                         "selected_at": selected_at, "code_version": "test"}}


def _best_document(model: str, config: dict, selected_at: str = SELECTED_AT, symbol: str = "AAA") -> dict:
    baseline = model in ("persistence", "random_walk")
    return {"symbol": symbol, "model": model,
            "config_path": None if baseline else f"hyperparams/{model}/{symbol}.json",
            "config": config, "validation": {"mae_pct": 5.0}, "test": {"mae_pct": 5.0},
            "metadata": {"selected_at": selected_at, "data_version": "x", "compared": {}, "reason": "test",
                         "baseline": baseline}}


def _write_all(root, best_model="toto", toto_knobs=None, **model_kwargs) -> None:
    toto, kronos = _model_document("toto", knobs=toto_knobs, **model_kwargs), _model_document("kronos", **model_kwargs)
    write_config(root, "toto", "AAA", toto)
    write_config(root, "kronos", "AAA", kronos)
    config = {"name": best_model} if best_model in BASELINE_TRIALS else {"toto": toto, "kronos": kronos}[best_model]["config"]
    write_config(root, "best", "AAA", _best_document(best_model, config, selected_at=toto["metadata"]["selected_at"]))


def _per_role_window(rows: pd.DataFrame) -> pd.Series:
    return rows.groupby(["role", "origin_index"]).size()


# -- document_trial --------------------------------------------------------------------------------------------
def test_document_trial_reads_every_family_and_baseline_configs():
    toto = document_trial("toto", {"name": "toto-default", "num_samples": 256, "aggregate": "median",
                                   "samples_per_batch": 32})
    assert toto == default_trials()["toto"]  # samples_per_batch is runtime only
    assert (toto.num_samples, toto.aggregate, dict(toto.knobs)) == (256, "median",
                                                                    {"num_samples": 256, "aggregate": "median"})
    kronos_default = default_trials()["kronos"]
    kronos = document_trial("kronos", {"name": "kronos-default", **kronos_default.knobs, "max_rows": 64})
    assert kronos == kronos_default and kronos.config_hash == kronos_default.config_hash
    picked = document_trial("kronos", {"name": "x", **KRONOS_KNOBS})
    assert (picked.model, picked.num_samples, picked.aggregate) == ("kronos", 4, "mean")
    assert dict(picked.knobs) == KRONOS_KNOBS
    for baseline in ("persistence", "random_walk"):
        assert document_trial(baseline, {"name": baseline}) is BASELINE_TRIALS[baseline]
    toto2 = document_trial("toto2", {"name": "t2", **default_trials("Datadog/Toto-2.0-22m")["toto2"].knobs})
    assert toto2 == default_trials("Datadog/Toto-2.0-22m")["toto2"]
    assert (toto2.model, toto2.aggregate, toto2.knobs["checkpoint"]) == ("toto2", "median", "Datadog/Toto-2.0-22m")
    with pytest.raises(ValueError, match=r"no forecaster for model 'chronos'.*toto, toto2, kronos"):
        document_trial("chronos", {"name": "x"})


# -- forward windows -------------------------------------------------------------------------------------------
def test_forward_windows_start_after_data_end_and_step_by_the_horizon():
    windows = forward_windows(PRICES, _card())
    # first bar after data end (300), then every H bars, only complete windows (380 + 16 = 396 <= 400)
    np.testing.assert_array_equal(windows.origins, np.arange(TUNED, 381, H))
    assert set(windows.splits) == {FORWARD} and windows.spec.n_val == 0 and windows.spec.n_test == len(windows)
    closes, stamps = PRICES["close"].to_numpy(), PRICES["timestamp"].to_numpy()
    for i, origin in enumerate(windows.origins):
        np.testing.assert_array_equal(windows.targets[i], closes[origin:origin + H])
        np.testing.assert_array_equal(windows.batch.values[i, :, 3], closes[origin - CONTEXT:origin])  # close column
        assert windows.batch.timestamps[i, -1] == stamps[origin - 1] < stamps[origin] == windows.origin_timestamps[i]
        assert windows.batch.values.shape[1] == CONTEXT


def test_forward_windows_none_until_the_first_completes():
    card = _card()
    assert forward_windows(PRICES.iloc[:TUNED], card) is None  # no bar after data end yet
    assert forward_windows(PRICES.iloc[:TUNED + H - 1], card) is None  # the first window lacks one bar
    one = forward_windows(PRICES.iloc[:TUNED + H], card)
    assert one.origins.tolist() == [TUNED]
    # a partial second window is left for later
    assert forward_windows(PRICES.iloc[:TUNED + 2 * H - 1], card).origins.tolist() == [TUNED]
    assert forward_windows(PRICES.iloc[:TUNED + 2 * H], card).origins.tolist() == [TUNED, TUNED + H]


def test_forward_windows_data_end_between_bars_and_context_respected():
    # A data end on a day without a bar (a weekend): the first forward origin is the next bar.
    saturday = PRICES["timestamp"].iloc[TUNED - 1]
    while saturday.day_of_week != 5:
        saturday += pd.Timedelta(days=1)
    first = int((PRICES["timestamp"] > saturday).to_numpy().argmax())
    assert forward_windows(PRICES, _card(data_end=saturday.date().isoformat())).origins[0] == first
    # A data end earlier than one context: origins start where a full context is available.
    early = PRICES["timestamp"].iloc[9].date().isoformat()
    windows = forward_windows(PRICES, _card(data_end=early, context=100))
    assert windows.origins[0] == 100 and np.all(np.diff(windows.origins) == H)
    assert windows.batch.values.shape[1] == 100 and windows.origins[-1] + H <= len(PRICES)
    # A data end at or after the last bar: nothing yet.
    assert forward_windows(PRICES, _card(data_end=PRICES["timestamp"].iloc[-1].date().isoformat())) is None


def test_forward_windows_are_seeded_like_the_backtest():
    card = _card()
    for base_seed in (0, 7):
        windows = forward_windows(PRICES, card, base_seed)
        stamps = PRICES["timestamp"].to_numpy(dtype="datetime64[ns]")
        assert windows.batch.seeds.tolist() == [window_seed("AAA", stamps[o - 1], base_seed) for o in windows.origins]
        # The backtest's windows on the history that ends with the same windows: the same seeds, contexts, targets.
        last = int(windows.origins[-1])
        backtest = build_windows(PRICES.iloc[:last + H], WindowSpec(H, 2, 3, context=CONTEXT), "AAA", base_seed)
        np.testing.assert_array_equal(backtest.origins, windows.origins[-5:])
        np.testing.assert_array_equal(backtest.batch.seeds, windows.batch.seeds[-5:])
        np.testing.assert_array_equal(backtest.batch.values, windows.batch.values[-5:])
        np.testing.assert_array_equal(backtest.targets, windows.targets[-5:])
        np.testing.assert_array_equal(backtest.batch.future_timestamps, windows.batch.future_timestamps[-5:])
    assert not np.array_equal(forward_windows(PRICES, card, 0).batch.seeds, forward_windows(PRICES, card, 7).batch.seeds)
    # New bars do not change the seeds of windows already there.
    shorter = forward_windows(PRICES.iloc[:350], card)
    np.testing.assert_array_equal(shorter.batch.seeds, forward_windows(PRICES, card).batch.seeds[:len(shorter)])


# -- scoring and the store -------------------------------------------------------------------------------------
def test_score_forward_adds_only_new_windows_once_per_role(tmp_path):
    store, card, calls = ForwardStore(tmp_path), _card(), []
    forecast = _cheap(calls)
    assert score_forward(store, card, PRICES.iloc[:TUNED + H - 1], forecast) == 0  # nothing complete yet
    assert calls == [] and not store.path(card).exists()

    assert score_forward(store, card, PRICES.iloc[:350], forecast) == 3  # origins 300, 316, 332
    assert store.path(card) == tmp_path / FORWARD / "symbol=AAA" / f"{card.id}.parquet"
    first = pd.read_parquet(store.path(card))
    assert len(first) == 3 * len(card.trials) and (_per_role_window(first) == 1).all()
    assert set(first["role"]) == set(card.trials) and sorted(set(first["origin_index"])) == [300, 316, 332]
    assert set(first["scorecard"]) == {card.id} and set(first["kind"]) == {"toto"}
    assert not {"split", "draw_seconds", "drawn_samples", "is_default"} & set(first.columns)
    assert [c[0] for c in calls] == ["toto", "toto", "persistence", "random_walk"]  # one call per role

    calls.clear()
    before = store.path(card).read_bytes()
    assert score_forward(store, card, PRICES.iloc[:350], forecast) == 0  # a re-run with nothing new
    assert score_forward(store, card, PRICES.iloc[:TUNED + 4 * H - 1], forecast) == 0  # a partial window
    assert calls == [] and store.path(card).read_bytes() == before

    assert score_forward(store, card, PRICES, forecast) == 3  # 348, 364, 380: only those are forecast
    assert all(c[2] == [348, 364, 380] for c in calls) and len(calls) == len(card.trials)
    grown = pd.read_parquet(store.path(card))
    assert len(grown) == 6 * len(card.trials) and (_per_role_window(grown) == 1).all()
    assert sorted(set(grown["origin_index"])) == forward_windows(PRICES, card).origins.tolist()
    pd.testing.assert_frame_equal(grown.iloc[:len(first)], first)  # the old rows, unchanged
    assert list(store.path(card).parent.iterdir()) == [store.path(card)]  # no temp file left beside it

    # The same numbers as scoring every window in one go (the same seeds whatever the batch).
    once = ForwardStore(tmp_path / "once")
    assert score_forward(once, card, PRICES, _cheap()) == 6
    keys, metrics = ["role", "origin_index"], ["mae_pct", "crps_pct", "mase", "coverage_10_90", "seed"]
    got = grown.sort_values(keys).reset_index(drop=True)
    want = pd.read_parquet(once.path(card)).sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[keys + metrics], want[keys + metrics])


def test_append_keeps_stored_rows_and_skips_windows_already_there(tmp_path):
    store, card = ForwardStore(tmp_path), _card()
    score_forward(store, card, PRICES.iloc[:350], _cheap())
    stored = pd.read_parquet(store.path(card))
    # rows for a stored window (e.g. a second writer's) are dropped, never duplicated or overwriting
    again = stored.assign(mae_pct=-1.0)
    store.append(card, again)
    pd.testing.assert_frame_equal(pd.read_parquet(store.path(card)), stored)
    assert store.scored_origins(card) == set(PRICES["timestamp"].iloc[[300, 316, 332]])
    assert store.read("AAA").equals(stored)
    assert store.read("BBB").empty and store.scored_origins(_card(symbol="BBB")) == set()


def test_forecast_with_leaves_baselines_to_themselves():
    def never():
        raise AssertionError("a model was loaded for a baseline trial")

    windows = forward_windows(PRICES, _card())
    forecast = forecast_with(never, never)
    for name in ("persistence", "random_walk"):
        trial = BASELINE_TRIALS[name]
        np.testing.assert_array_equal(forecast(trial, windows).paths,
                                      BASELINES[name].sample_paths(windows.batch, trial.num_samples))


# -- current scorecards from the stored files ------------------------------------------------------------------
def test_current_scorecards_read_toto_kronos_and_best(tmp_path):
    root = tmp_path / "hyperparams"
    assert current_scorecards(root, "AAA") == ([], [])  # nothing selected yet
    _write_all(root, best_model="kronos")
    cards, problems = current_scorecards(root, "aaa")
    assert problems == [] and [c.kind for c in cards] == ["toto", "kronos", "best"]
    toto, kronos, best = cards
    assert toto.trials["selected"] == toto_trial(64, "median")
    assert toto.trials["default"] == default_trials()["toto"] and kronos.trials["default"] == default_trials()["kronos"]
    assert kronos.trials["selected"] == document_trial("kronos", KRONOS_KNOBS)
    assert best.model == "kronos" and best.trials["selected"] == kronos.trials["selected"]
    for card in cards:
        assert (card.symbol, card.horizon, card.context, card.selected_at) == ("AAA", H, CONTEXT, SELECTED_AT)
        assert card.data_end == pd.Timestamp(DATA_END)
        assert card.trials["persistence"] == BASELINE_TRIALS["persistence"]
        assert card.trials["random_walk"] == BASELINE_TRIALS["random_walk"]
    assert len({c.id for c in cards}) == 3  # one scorecard (and file) per kind


def test_best_takes_windows_and_data_end_from_a_model_file(tmp_path):
    root = tmp_path / "hyperparams"
    later = PRICES["timestamp"].iloc[TUNED + 9].date().isoformat()
    write_config(root, "toto", "AAA", _model_document("toto"))
    write_config(root, "kronos", "AAA", _model_document("kronos", data_end=later, context=128))
    write_config(root, "best", "AAA", _best_document("kronos", {"name": "k", **KRONOS_KNOBS}))
    best = {c.kind: c for c in current_scorecards(root, "AAA")[0]}["best"]
    assert (best.data_end, best.context) == (pd.Timestamp(later), 128)  # those of the file it points at

    write_config(root, "best", "AAA", _best_document("persistence", {"name": "persistence"}))
    cards = {c.kind: c for c in current_scorecards(root, "AAA")[0]}
    best = cards["best"]
    assert best.model == "persistence" and best.trials["selected"] == BASELINE_TRIALS["persistence"]
    assert "default" not in best.trials  # a baseline has no default config
    assert (best.data_end, best.horizon, best.context) == (cards["toto"].data_end, H, CONTEXT)

    # a persistence winner is scored like the others, and equals persistence on every window
    store = ForwardStore(tmp_path / "st")
    assert score_forward(store, best, PRICES, _cheap()) == 6
    wide = pd.read_parquet(store.path(best)).pivot(index="origin_index", columns="role", values="mae_pct")
    np.testing.assert_array_equal(wide["selected"], wide["persistence"])


def test_short_or_corrupt_files_are_problems_not_crashes(tmp_path):
    root = tmp_path / "hyperparams"
    write_config(root, "toto", "AAA", _model_document("toto", context=0))  # kept without any scored window
    write_config(root, "kronos", "AAA", _model_document("kronos", context=0))
    write_config(root, "best", "AAA", _best_document("toto", {"name": "t", **TOTO_KNOBS}))
    cards, problems = current_scorecards(root, "AAA")
    assert cards == [] and len(problems) == 3
    assert all("history too short" in p and "no forward windows until it is re-tuned" in p for p in problems)
    assert [p.split(":")[1].split()[0] for p in problems] == ["toto", "kronos", "best"]

    write_config(root, "toto", "AAA", _model_document("toto"))
    corrupt = config_path(root, "kronos", "AAA")
    corrupt.write_text('{"symbol": "AAA", "model": "kro')
    cards, problems = current_scorecards(root, "AAA")
    assert [c.kind for c in cards] == ["toto", "best"] and len(problems) == 1
    assert str(corrupt) in problems[0] and "not valid JSON" in problems[0]

    hand_edited = _model_document("toto")
    hand_edited["config"]["num_samples"] = 0
    config_path(root, "toto", "AAA").write_text(json.dumps(hand_edited))
    cards, problems = current_scorecards(root, "AAA")
    assert cards == [] and len(problems) == 3  # toto and kronos invalid; best has no model file left
    assert "num_samples" in problems[0] and "best config names toto but no readable model config file" in problems[2]


def test_a_reselected_file_starts_a_new_scorecard_and_the_old_one_stays(tmp_path):
    root, store = tmp_path / "hyperparams", ForwardStore(tmp_path / "st")
    _write_all(root)
    old = {c.kind: c for c in current_scorecards(root, "AAA")[0]}
    for card in old.values():
        assert score_forward(store, card, PRICES.iloc[:350], _cheap()) == 3
    kept = {kind: store.path(card).read_bytes() for kind, card in old.items()}

    # The same config re-selected later (new selected_at), then a re-tune on more data with another config.
    _write_all(root, selected_at="2026-02-01T00:00:00+00:00")
    reselected = {c.kind: c for c in current_scorecards(root, "AAA")[0]}
    assert all(reselected[k].id != old[k].id for k in old)
    assert reselected["toto"].trials == old["toto"].trials
    retuned_end = PRICES["timestamp"].iloc[349].date().isoformat()
    _write_all(root, data_end=retuned_end, selected_at="2026-03-01T00:00:00+00:00",
               toto_knobs={"num_samples": 16, "aggregate": "mean", "samples_per_batch": 16})
    new = {c.kind: c for c in current_scorecards(root, "AAA")[0]}
    assert len({c.id for c in (*old.values(), *reselected.values(), *new.values())}) == 9
    for card in new.values():
        assert score_forward(store, card, PRICES, _cheap()) == 3  # 350, 366, 382
        assert sorted(store.scored_origins(card)) == list(PRICES["timestamp"].iloc[[350, 366, 382]])
    for kind, card in old.items():  # history: neither extended nor rewritten
        assert store.path(card).read_bytes() == kept[kind]
    report = forward_report(store.read("AAA"), {c.id for c in new.values()})
    assert len(report) == 6 and report["current"].sum() == 3
    assert set(report.loc[report["current"], "scorecard"]) == {c.id for c in new.values()}
    assert (report["forward_windows"] == 3).all()
    assert list(report["kind"]) == ["toto", "toto", "kronos", "kronos", "best", "best"]  # in the same order every run

    # A report written before the last re-tune: the files stored now decide which scorecards are current.
    store.write_report("AAA", forward_report(store.read("AAA"), {c.id for c in old.values()}))
    assert set(store.read_report("AAA").query("current")["scorecard"]) == {c.id for c in old.values()}
    assert set(store.read_report("AAA", root).query("current")["scorecard"]) == {c.id for c in new.values()}


# -- the report and the re-tune decision ---------------------------------------------------------------------
def _rows(card: str, selected, persistence, default=None, kind="toto", random_walk=None) -> pd.DataFrame:
    """Hand-made stored rows of one scorecard: MAE% (and CRPS% = MAE% + 1) per role and window."""
    n = len(selected)
    origins = TUNED + H * np.arange(n)
    roles = {"selected": selected, "persistence": persistence,
             "random_walk": random_walk if random_walk is not None else persistence}
    if default is not None:
        roles["default"] = default
    frames = [pd.DataFrame({"scorecard": card, "role": role, "origin_index": origins,
                            "window_origin": pd.Timestamp("2021-03-01") + pd.to_timedelta(origins - TUNED, "D"),
                            "mae_pct": np.asarray(values, dtype=float),
                            "crps_pct": np.asarray(values, dtype=float) + 1.0,
                            "symbol": "AAA", "kind": kind, "file_model": kind, "config_name": f"{kind}-picked",
                            "selected_at": SELECTED_AT, "data_end": pd.Timestamp(DATA_END)})
              for role, values in roles.items()]
    return pd.concat(frames, ignore_index=True)


def test_forward_report_numbers_on_hand_made_rows():
    rows = pd.concat([_rows("c1", [2, 4, 6, 8], [4, 4, 4, 4], default=[5, 5, 5, 5], random_walk=[1, 2, 3, 4]),
                      _rows("c2", [3, 3, 3], [3, 3, 3], kind="best")], ignore_index=True)
    rows = rows.sample(frac=1.0, random_state=3)  # row order must not matter
    report = forward_report(rows, {"c1"})
    assert list(report.columns) == REPORT_COLUMNS and sorted(report["scorecard"]) == ["c1", "c2"]
    report = report.set_index("scorecard")
    c1, c2 = report.loc["c1"], report.loc["c2"]
    assert bool(c1["current"]) and not bool(c2["current"])
    assert (c1["forward_windows"], c2["forward_windows"]) == (4, 3)
    assert c1["first_origin"] == pd.Timestamp("2021-03-01") and c1["last_origin"] == pd.Timestamp("2021-03-01") + \
        pd.Timedelta(days=48)
    assert c1["mae_pct"] == pytest.approx(5.0) and c1["crps_pct"] == pytest.approx(6.0)
    assert c1["persistence_mae_pct"] == pytest.approx(4.0) and c1["default_mae_pct"] == pytest.approx(5.0)
    assert c1["random_walk_crps_pct"] == pytest.approx(3.5)
    assert c1["ratio_to_persistence"] == pytest.approx(1.25)
    assert c1["diff_vs_persistence"] == pytest.approx(1.0) and c1["diff_vs_default"] == pytest.approx(0.0)
    assert c1["ci_low_vs_persistence"] <= 1.0 <= c1["ci_high_vs_persistence"]
    assert c1["worse_than_persistence_in_a_row"] == 2  # 6 > 4, 8 > 4 at the end; 4 == 4 is not worse
    assert c1[["symbol", "kind", "file_model", "config_name", "selected_at"]].tolist() == \
        ["AAA", "toto", "toto", "toto-picked", SELECTED_AT]
    assert c1["data_end"] == pd.Timestamp(DATA_END)
    # a card without a default role (a baseline winner): no default numbers, never worse than itself
    assert pd.isna(c2["default_mae_pct"]) and pd.isna(c2["diff_vs_default"])
    assert c2["ratio_to_persistence"] == pytest.approx(1.0) and c2["worse_than_persistence_in_a_row"] == 0
    # all worse: the whole run counts
    all_worse = forward_report(_rows("c3", [5, 5, 5], [4, 4, 4]), set())
    assert all_worse["worse_than_persistence_in_a_row"].tolist() == [3]
    # fewer than 3 windows: the mean difference, no interval
    two = forward_report(_rows("c4", [5, 6], [4, 4]), set()).iloc[0]
    assert two["diff_vs_persistence"] == pytest.approx(1.5) and pd.isna(two["ci_low_vs_persistence"])
    empty = forward_report(pd.DataFrame(), set())
    assert empty.empty and list(empty.columns) == REPORT_COLUMNS


PERSISTENCE = np.array([3.0, 4.0, 5.0, 3.5, 4.5, 4.0, 5.0, 3.0])


def _reason(rows: pd.DataFrame, policy: DriftPolicy, current=("c",)) -> str | None:
    return drift_reason(forward_report(rows, set(current)), policy)


def test_drift_margin_rule_needs_the_margin_and_an_interval_above_zero():
    worse = PERSISTENCE * 1.5  # 50% behind persistence on every window
    policy = DriftPolicy(margin=0.10, consecutive=100, min_windows=3)  # only the margin rule can fire
    reason = _reason(_rows("c", worse, PERSISTENCE), policy)
    assert reason is not None and "toto config toto-picked on 8 forward windows" in reason
    assert "vs persistence" in reason and "worse by more than 10%" in reason
    assert _reason(_rows("c", worse, PERSISTENCE), DriftPolicy(margin=0.6, consecutive=100)) is None  # within margin
    # as far behind on average, but better on half the windows: the interval reaches below zero
    noisy = PERSISTENCE + np.array([8.0, -3.0, 8.0, -3.0, 8.0, -3.0, 8.0, -3.0])
    report = forward_report(_rows("c", noisy, PERSISTENCE), {"c"})
    assert report.loc[0, "diff_vs_persistence"] > 0.1 * report.loc[0, "persistence_mae_pct"]
    assert report.loc[0, "ci_low_vs_persistence"] <= 0
    assert drift_reason(report, policy) is None
    # behind its own default config, though ahead of persistence
    reason = _reason(_rows("c", PERSISTENCE * 0.9, PERSISTENCE, default=PERSISTENCE * 0.6), policy)
    assert reason is not None and "vs default" in reason


def test_drift_consecutive_rule_counts_the_latest_windows():
    selected = PERSISTENCE - 1.0
    selected[-4:] = PERSISTENCE[-4:] + 0.01  # slightly worse on the last four only: no margin, a run of 4
    policy = DriftPolicy(margin=0.10, consecutive=4, min_windows=3)
    reason = _reason(_rows("c", selected, PERSISTENCE), policy)
    assert reason is not None and "worse than persistence on the last 4 forward windows in a row" in reason
    assert "threshold 4" in reason
    assert _reason(_rows("c", selected, PERSISTENCE), DriftPolicy(consecutive=5)) is None
    selected[-1] = PERSISTENCE[-1] - 0.01  # the latest window is better again: the run is broken
    assert _reason(_rows("c", selected, PERSISTENCE), policy) is None


def test_drift_needs_evidence_a_current_scorecard_and_a_worse_config():
    bad = _rows("c", [9.0, 9.0], [3.0, 3.0])
    assert _reason(bad, DriftPolicy(margin=0.0, consecutive=1, min_windows=3)) is None  # 2 windows < 3
    assert _reason(bad, DriftPolicy(margin=0.0, consecutive=2, min_windows=2)) is not None
    worse = _rows("c", PERSISTENCE * 2, PERSISTENCE)
    eager = DriftPolicy(margin=0.0, consecutive=1, min_windows=1)
    assert _reason(worse, eager) is not None
    assert _reason(worse, eager, current=()) is None  # an old (re-tuned) scorecard asks for nothing
    assert _reason(worse, eager, current=("another",)) is None
    better = _rows("c", PERSISTENCE * 0.8, PERSISTENCE, default=PERSISTENCE * 0.9)
    assert _reason(better, eager) is None  # better than persistence and its default: never
    assert _reason(_rows("c", PERSISTENCE, PERSISTENCE), eager) is None  # ties are not worse
    # several scorecards: the current one that drifted is named
    both = pd.concat([_rows("c", PERSISTENCE * 0.8, PERSISTENCE), _rows("k", PERSISTENCE * 2, PERSISTENCE,
                                                                        kind="kronos")], ignore_index=True)
    assert "kronos config" in _reason(both, eager, current=("c", "k"))
    assert drift_reason(forward_report(pd.DataFrame(), set()), eager) is None


@pytest.mark.parametrize("bad", [{"margin": -0.01}, {"consecutive": 0}, {"min_windows": 0}])
def test_drift_policy_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="drift policy"):
        DriftPolicy(**bad)


def test_backfilled_history_does_not_score_a_window_twice(tmp_path):
    """Windows are keyed by their origin date: earlier bars arriving later shift every bar index."""
    store, card = ForwardStore(tmp_path), _card()
    assert score_forward(store, card, PRICES.iloc[:350], _cheap()) == 3
    earlier = make_prices(10, seed=99, start="2019-12-01")
    earlier = earlier[earlier["timestamp"] < PRICES["timestamp"].iloc[0]]
    backfilled = pd.concat([earlier, PRICES.iloc[:350]], ignore_index=True)
    assert score_forward(store, card, backfilled, _cheap()) == 0
    rows = store.read("AAA")
    assert not rows.duplicated(["role", "window_origin"]).any() and rows["window_origin"].nunique() == 3
