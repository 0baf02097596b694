"""Every symbol gets an answer: the users' worst performers (short listings, gappy crypto) end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from forecast_core.backtest import Trial, draw, score_trials
from forecast_core.configs import read_config, retune_reason
from forecast_core.forecasters import Persistence
from forecast_core.kronos.forecaster import KronosForecaster, load_kronos
from forecast_core.repairs import OHLC, PricePolicy
from forecast_core.sources import CsvDirectorySource
from forecast_core.store import Storage
from forecast_core.sweep.spaces import KRONOS_DEFAULT, default_trials
from forecast_core.synthetic import make_prices
from forecast_core.toto import TotoForecaster, load_toto
from forecast_core.windows import WindowSpec, build_windows, plan_layout
from hpo_assets.dbt_marts import metrics_assets
from hpo_assets.instance import register_symbols
from hpo_assets.prices import price_history
from hpo_assets.selected_configs import selected_configs
from hpo_assets.sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep
from resources import PriceSourceResource
from tests.support import make_resources
from tests.support import SMALL_SWEEPS

pytestmark = pytest.mark.slow
DEFAULT_LAYOUT = {"horizon": 64, "n_val": 8, "n_test": 8, "context": 512}  # needs 1536 bars
SWEEPS = [price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep]
HPO = str(Path(sys.executable).parent / "hpo")


def _gappy_crypto(bars: int = 700):
    """Every calendar day; 4 bars lost their close and 12 bars lost all of OHLC (dropped ticks)."""
    frame = make_prices(bars, seed=33, calendar="D", price=7.0, volatility=0.04)
    frame.loc[[100, 250, 401, 650], "close"] = np.nan
    frame.loc[[50, 51, 52, 300, 301, 450, 500, 501, 502, 503, 600, 690], ["open", "high", "low", "close"]] = np.nan
    return frame


def _write_users_symbols(folder: Path) -> None:
    folder.mkdir()
    make_prices(196, seed=31).to_csv(folder / "NEWA.csv", index=False)  # a recent listing
    make_prices(254, seed=32).to_csv(folder / "NEWB.csv", index=False)
    _gappy_crypto().to_csv(folder / "CRYP.csv", index=False)
    make_prices(1100, seed=34).to_csv(folder / "LONG.csv", index=False)
    make_prices(300, seed=39).to_csv(folder / "OVLP.csv", index=False)  # tuned on overlapping windows


def _materialize(symbol, instance, resources):
    return materialize(SWEEPS, partition_key=symbol, instance=instance, resources=resources,
                       run_config=SMALL_SWEEPS, raise_on_error=False)


def test_short_and_gappy_histories_get_an_answer(tmp_path, random_checkpoints, dagster_home):
    folder = tmp_path / "csv"
    _write_users_symbols(folder)
    instance = DagsterInstance.get()
    symbols = ["NEWA", "NEWB", "CRYP", "LONG", "OVLP"]
    register_symbols(instance, symbols)
    resources = make_resources(tmp_path / "st", folder, random_checkpoints, **DEFAULT_LAYOUT)

    # Under the default `reject` policy the gappy series fails alone, naming itself, the count and the date.
    results = {s: _materialize(s, instance, resources) for s in symbols}
    assert [s for s, r in results.items() if not r.success] == ["CRYP"]
    failure = next(e for e in results["CRYP"].all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert message.count("CRYP") == 1 and "16" in message and "2020-02-20" in message, message
    assert not (tmp_path / "st" / "prices" / "CRYP.parquet").exists()
    assert not list((tmp_path / "st" / "trials").glob("sweep=*/symbol=CRYP"))

    # `ffill` repairs it (close carried into OHLC, volume 0) and the partition lands like the others.
    resources["prices"] = PriceSourceResource(kind="csv_dir", csv_dir=str(folder), missing="ffill")
    crypto = _materialize("CRYP", instance, resources)
    assert crypto.success
    meta = crypto.asset_materializations_for_node("price_history")[0].metadata
    assert meta["bars"].value == 700 and meta["repaired_bars"].value == 16
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    for symbol in symbols:
        assert materialize([selected_configs], partition_key=symbol, instance=instance, resources=resources).success

    root = tmp_path / "st" / "hyperparams"
    documents = {s: {m: read_config(root / m / f"{s}.json", m) for m in ("toto", "toto2", "kronos")} for s in symbols}
    defaults = default_trials(str(random_checkpoints["toto2"]))
    for symbol, bars in (("NEWA", 196), ("NEWB", 254)):  # too short to tune: defaults kept, and why
        for model, document in documents[symbol].items():
            windows, selection = document["windows"], document["metadata"]["selection"]
            assert document["config"]["name"] == defaults[model].name
            assert not windows["tunable"] and windows["history_bars"] == bars and windows["n_val"] == 0
            assert selection["reason"].startswith(f"insufficient history: {bars} bars, tuning needs 272")
            assert not selection["tuned"] and not selection["significant_vs_default"]
            assert document["validation"]["mae_pct"] is None and document["validation"]["windows"] == 0
            assert document["test"]["windows"] == windows["n_test"] == 2  # compared with persistence
            assert document["metadata"]["baselines_on_test"]["persistence_mae_pct"] > 0
        assert read_config(root / "best" / f"{symbol}.json", "best")["metadata"]["reason"].startswith(
            "insufficient history")
    for symbol in ("NEWA", "NEWB"):  # a normal result for the stale-config sensor too: nothing to re-tune yet
        prices = Storage(tmp_path / "st").read_prices(symbol)
        revisions = {m: d["metadata"]["model_revision"] for m, d in documents[symbol].items()}
        assert retune_reason(root, symbol, list(prices["timestamp"]), revisions, 20) is None
    for symbol, n_val, n_test in (("CRYP", 4, 4), ("LONG", 8, 7)):  # shortened layouts, tuned
        for document in documents[symbol].values():
            windows = document["windows"]
            assert windows["tunable"] and (windows["n_val"], windows["n_test"], windows["context"]) == (n_val, n_test, 128)
            assert windows["layout_reason"].startswith(f"shortened for {windows['history_bars']} bars")
            assert document["validation"]["windows"] == n_val and document["metadata"]["selection"]["tuned"]

    for document in documents["OVLP"].values():  # 4 windows at stride 21 are one block of 4: no test possible
        windows, selection = document["windows"], document["metadata"]["selection"]
        assert (windows["n_val"], windows["stride"], windows["effective_val_windows"]) == (4, 21, 1.984)
        assert not selection["significant_vs_default"] and selection["p_value_vs_default"] == 1.0
        assert selection["test"] == "none: blocks of 4 leave fewer than two blocks in 4 windows"
        assert selection["basis"] != "own"  # nothing can be shown better on one block of windows

    with duckdb.connect(str(tmp_path / "st" / "metrics.duckdb"), read_only=True) as con:
        marts = con.execute("select symbol, bool_and(tunable), max(val_windows), max(test_windows) "
                            "from leaderboard group by symbol order by symbol").fetchall()
    assert marts == [("CRYP", True, 4, 4), ("LONG", True, 8, 7), ("NEWA", False, 0, 2), ("NEWB", False, 0, 2),
                     ("OVLP", True, 4, 2)]


def test_a_history_too_short_for_any_window_still_writes_the_defaults(tmp_path, random_checkpoints, dagster_home):
    folder = tmp_path / "csv"
    folder.mkdir()
    make_prices(90, seed=35).to_csv(folder / "TINY.csv", index=False)
    instance = DagsterInstance.get()
    register_symbols(instance, ["TINY"])
    resources = make_resources(tmp_path / "st", folder, random_checkpoints, **DEFAULT_LAYOUT)
    result = _materialize("TINY", instance, resources)
    assert result.success
    meta = result.asset_materializations_for_node("toto_sweep")[0].metadata
    assert meta["trials_computed"].value == 0 and not meta["tunable"].value
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    assert materialize([selected_configs], partition_key="TINY", instance=instance, resources=resources).success
    defaults = default_trials(str(random_checkpoints["toto2"]))
    for model in ("toto", "toto2", "kronos"):
        document = read_config(tmp_path / "st" / "hyperparams" / model / "TINY.json", model)
        assert document["metadata"]["selection"]["reason"] == (
            "insufficient history: 90 bars, tuning needs 272; too short for any comparison window (needs 128)")
        assert document["test"]["windows"] == 0 and document["config"]["name"] == defaults[model].name


def test_compare_prints_a_table_and_the_layout_for_short_and_long_symbols(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    make_prices(254, seed=32).to_csv(folder / "NEWB.csv", index=False)
    make_prices(1600, seed=36).to_csv(folder / "LONG.csv", index=False)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "HPO_STORAGE_DIR": str(tmp_path / "st"),
           "HPO_PRICE_SOURCE": "csv_dir", "HPO_CSV_DIR": str(folder)}
    done = subprocess.run([HPO, "compare", "--stocks", "NEWB", "LONG", "--forecast-horizon", "64"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    short, long = out[out.index("\nNEWB, horizon 64"):out.index("\nLONG, horizon 64")], out[out.index("\nLONG, horizon 64"):]
    assert "layout: 254 bars, 0 validation + 2 test windows" in short and "insufficient history" in short
    assert "layout: 1600 bars, 8 validation + 8 test windows" in long and "requested layout" in long
    for table in (short, long):  # a row per model, its first column the model's name
        assert all(re.search(rf"^\s*{model}\s", table, re.M) for model in ("persistence", "toto", "toto2", "kronos"))


@pytest.mark.parametrize("ratio", [Fraction(2), Fraction(1, 10)])  # a 2:1 split and a 1:10 reverse split
def test_adjusted_splits_score_like_the_pre_adjusted_series(tmp_path, random_checkpoints, ratio):
    """Through the CSV source with `splits: adjust`, every window metric of persistence, Toto and
    Kronos matches the same series adjusted at the source (to 1e-9 relative)."""
    truth = make_prices(700, seed=37)
    truth["volume"] = np.round(1e6 * np.exp(np.random.default_rng(38).normal(0, 0.3, len(truth))))
    truth["amount"] = truth["volume"] * truth[OHLC].mean(axis=1)
    raw = truth.copy()
    raw.loc[:499, OHLC] = raw.loc[:499, OHLC] * ratio.numerator / ratio.denominator  # split at bar 500
    raw.loc[:499, "volume"] = raw.loc[:499, "volume"] * ratio.denominator / ratio.numerator
    folder = tmp_path / "csv"
    folder.mkdir()
    truth.to_csv(folder / "ADJ.csv", index=False)
    raw.to_csv(folder / "RAW.csv", index=False)
    source = CsvDirectorySource(folder, PricePolicy(splits="adjust"))
    adjusted, report = source.load_report("RAW")
    assert [e.label for e in report.adjustments] == [f"{ratio.numerator}:{ratio.denominator}"]

    toto = TotoForecaster(load_toto(random_checkpoints["toto"]))
    kronos = KronosForecaster(*load_kronos(random_checkpoints["kronos"], random_checkpoints["kronos_tokenizer"]),
                              KRONOS_DEFAULT)
    trials = default_trials()
    layout = plan_layout(700, WindowSpec())

    def metrics(frame):
        windows = build_windows(frame, layout.spec, "SYM")  # one symbol name: the same seeds
        rows = [score_trials(windows, draw(f, windows, t.num_samples), [t])
                for f, t in ((Persistence(), Trial("persistence")), (toto, trials["toto"]), (kronos, trials["kronos"]))]
        return np.concatenate([r[["mae_pct", "mase", "crps_pct", "coverage_10_90"]].to_numpy() for r in rows])

    expected = metrics(source.load("ADJ"))
    np.testing.assert_allclose(metrics(adjusted), expected, rtol=1e-9, atol=1e-12)
    assert np.isfinite(expected).all()
