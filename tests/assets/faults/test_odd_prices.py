"""Odd prices: tiny and huge price levels, an unadjusted split, zero and missing volume, sub-unit quotes.

Metrics stay finite and scale-free, the price asset accepts what is valid and names the bar it refuses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance

from forecast_core.backtest import draw, score_trials
from forecast_core.data import quality_checks
from forecast_core.forecasters import BASELINES
from forecast_core.store import Storage
from forecast_core.synthetic import make_prices
from forecast_core.windows import build_windows
from hpo_assets.sweeps import BASELINE_TRIALS
from tests.support import TINY_SPEC, make_resources, materialize_prices, step_failure_message

pytestmark = pytest.mark.slow


def _odd_prices() -> pd.DataFrame:
    """144 bars (exactly the windows' need): an untraded flat first context, zero-volume bars and an
    unadjusted 4:1 split inside a validation window."""
    frame = make_prices(144, seed=3)
    flat = frame.index < 64  # the first window's whole context: no trades, price unchanged
    frame.loc[flat, ["open", "high", "low", "close"]] = frame.loc[63, "close"]
    frame.loc[flat | (frame.index % 7 == 0), ["volume", "amount"]] = 0.0
    frame.loc[90:, ["open", "high", "low", "close"]] /= 4.0
    return frame


def _scaled(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    out = frame.copy()
    out[["open", "high", "low", "close", "amount"]] *= factor
    return out


def _baseline_scores(frame: pd.DataFrame) -> pd.DataFrame:
    windows = build_windows(frame, TINY_SPEC, "ODD")
    return pd.concat([score_trials(windows, draw(BASELINES[t.model], windows, t.num_samples), [t])
                      for t in BASELINE_TRIALS.values()], ignore_index=True)


def test_tiny_huge_split_and_zero_volume_prices_give_sane_scale_free_metrics():
    odd = _odd_prices()
    base = _baseline_scores(odd)
    metrics = ["mae_pct", "mase", "crps_pct", "coverage_10_90"]
    for factor in (1e-4, 1e5):
        frame = _scaled(odd, factor)
        checks = {c.name: c for c in quality_checks(frame, "ODD")}
        assert all(c.passed for c in checks.values() if c.blocking), checks
        assert not checks["no_suspected_splits"].passed and not checks["no_suspected_splits"].blocking
        with np.errstate(divide="raise", invalid="raise", over="raise"):
            scores = _baseline_scores(frame)
        assert np.isfinite(scores[[*metrics, "mae"]].to_numpy()).all()
        np.testing.assert_allclose(scores[metrics].to_numpy(), base[metrics].to_numpy(), rtol=1e-9)
        np.testing.assert_allclose(scores["mae"], base["mae"] * factor, rtol=1e-9)
    # The flat context has no one-step change to scale by: MASE stays finite and the same at any price.
    first = base[base["origin_index"] == base["origin_index"].min()]
    assert (first["mase"] > 0).all() and np.isfinite(first["mase"]).all()


@pytest.mark.parametrize("factor", [1e-4, 1e5])
def test_price_asset_accepts_tiny_and_huge_prices_with_zero_volume(tmp_path, csv_dir, factor):
    _scaled(_odd_prices(), factor).to_csv(csv_dir / "ODD.csv", index=False)
    result = materialize_prices(DagsterInstance.ephemeral(), "ODD", make_resources(tmp_path / "st", csv_dir))
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(c.passed for c in checks.values() if c.severity == AssetCheckSeverity.ERROR)
    assert not checks["no_suspected_splits"].passed  # the unadjusted split warns
    stored = Storage(tmp_path / "st").read_prices("ODD")
    np.testing.assert_allclose(stored["close"], _scaled(_odd_prices(), factor)["close"], rtol=1e-12)


def test_missing_volume_blocks_the_partition_and_names_the_bar(tmp_path, csv_dir):
    """Kronos reads volume and amount: a NaN there is refused, not silently read as 'no trades'."""
    resources = make_resources(tmp_path / "st", csv_dir)
    instance = DagsterInstance.ephemeral()
    assert materialize_prices(instance, "AAA", resources).success
    before = (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes()
    frame = make_prices(300, seed=1).drop(columns=["amount"])
    frame.loc[[40, 41, 200], "volume"] = np.nan
    frame.to_csv(csv_dir / "AAA.csv", index=False)
    result = materialize_prices(instance, "AAA", resources)
    assert not result.success
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["no_missing_prices"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["missing_volume_bars"].value == 3
    message = step_failure_message(result)
    day = frame.loc[40, "timestamp"].date()
    assert f"AAA: price data rejected, nothing stored: 3 bars with missing (NaN or infinite) volume/amount, " \
           f"first on {day}" in message
    assert "fill them in the source (volume 0 where nothing traded), or set the price source's missing policy" in message
    assert (tmp_path / "st" / "prices" / "AAA.parquet").read_bytes() == before

    # A source without any volume column is documented to mean volume 0 (and amount 0): accepted.
    frame.drop(columns=["volume"]).to_csv(csv_dir / "AAA.csv", index=False)
    assert materialize_prices(instance, "AAA", resources).success
    stored = Storage(tmp_path / "st").read_prices("AAA")
    assert (stored["volume"] == 0).all() and (stored["amount"] == 0).all()


def test_models_forecast_sub_unit_prices_like_dollar_prices():
    """Both scalers floor the scale at an absolute value; 1e-4 prices must not turn into noise."""
    from forecast_core.aggregate import aggregate
    from forecast_core.kronos.forecaster import KronosForecaster, KronosSamplingConfig, load_kronos
    from forecast_core.metrics import mae_pct
    from forecast_core.toto import TotoForecaster, load_toto

    toto = TotoForecaster(load_toto())
    kronos = KronosForecaster(*load_kronos(), KronosSamplingConfig(sample_count=8))
    frame = make_prices(TINY_SPEC.min_bars, seed=11)
    for forecaster in (toto, kronos):
        scores = {}
        for factor in (1.0, 1e-4):
            windows = build_windows(_scaled(frame, factor), TINY_SPEC, "ODD")
            paths = forecaster.sample_paths(windows.batch, 8)
            scores[factor] = mae_pct(aggregate(paths, "median", sample_axis=1), windows.targets).mean()
        assert np.isfinite(list(scores.values())).all()
        assert abs(scores[1e-4] - scores[1.0]) < 0.5 * scores[1.0], (forecaster.name, scores)
