"""What the tests share: the repository root, small settings, the no-leakage check, Dagster set-up.

The no-leakage property every forecaster must satisfy: overwriting every bar at or after a window's
origin with garbage (prices and timestamps alike) must leave that window's sample paths, and so its
metrics, unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from forecast_core.forecasters import Forecaster
from forecast_core.windows import WindowSpec, build_windows

REPO = Path(__file__).resolve().parent.parent

# Small windows, so asset tests run in seconds on the tiny checkpoints.
TINY_BACKTEST = {"horizon": 16, "n_val": 3, "n_test": 2, "context": 64}

# Run config for small sweeps (the tuning end-to-end test counts the trials it implies).
SMALL_SWEEPS = {"ops": {
    "toto_sweep": {"config": {"sample_counts": [16, 64], "aggregations": ["mean", "median", "trimmed_mean_10"]}},
    "toto2_sweep": {"config": {"context_lengths": [0, 16], "decode_block_sizes": [0, 8], "variates": ["close", "ohlc"],
                               "aggregations": ["median", "mean"]}},
    "kronos_sweep": {"config": {"presets": ["balanced"], "sample_counts": [4], "aggregations": ["mean", "median"],
                                "search_budget": 3, "search_sample_count": 4, "max_sample_count": 4}},
}}


def garbage_after(frame: pd.DataFrame, origin: int, seed: int = 123) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spoiled = frame.copy()
    rows = slice(origin, None)
    n = len(frame) - origin
    for col in ("open", "high", "low", "close", "volume", "amount"):
        spoiled.loc[spoiled.index[rows], col] = rng.uniform(1e3, 1e6, n)
    # Later timestamps shift too (still sorted), so calendar features cannot leak either.
    spoiled.loc[spoiled.index[rows], "timestamp"] = (
        frame["timestamp"].iloc[origin - 1] + pd.to_timedelta(np.arange(1, n + 1) * 3, unit="D")
    )
    return spoiled


def assert_no_leakage(forecaster: Forecaster, frame: pd.DataFrame, spec: WindowSpec, num_samples: int = 4,
                      symbol: str = "LEAK") -> None:
    """For every window: forecast on clean data vs data spoiled from its origin on; paths must match.

    The spoiled batch has the same shape as the clean one, so any difference is leakage (through the
    window's own context, its calendar, its seed, or statistics shared across the batch).
    """
    clean = build_windows(frame, spec, symbol)
    clean_paths = forecaster.sample_paths(clean.batch, num_samples)
    assert np.isfinite(clean_paths).all(), f"{forecaster.name}: non-finite sample paths"
    for i, origin in enumerate(clean.origins):
        spoiled = build_windows(garbage_after(frame, int(origin)), spec, symbol)
        assert spoiled.origins[i] == origin
        paths = forecaster.sample_paths(spoiled.batch, num_samples)
        np.testing.assert_array_equal(
            paths[i], clean_paths[i], err_msg=f"{forecaster.name}: window at bar {origin} saw the future"
        )


# What a runtime adds to a family's config file beside the trial's knobs (speed only, not part of a trial).
RUNTIME_KNOBS = {"toto": {"samples_per_batch": 256}}


def config_document(trial, **config) -> dict:
    """A model config file holding ``trial``'s knobs (``config`` overrides some), otherwise minimal and valid."""
    scores = {"mae_pct": 1.0, "windows": 1}
    config = {"name": trial.name, **trial.knobs, **RUNTIME_KNOBS.get(trial.model, {}), **config}
    return {"symbol": "AAA", "model": trial.model, "config": config,
            "validation": scores, "test": scores,
            "windows": {"n_val": 1, "n_test": 1, "forecast_horizon": 16, "stride": 16, "context": 64},
            "metadata": {"model_id": "m", "model_revision": "r", "data_end": "2026-01-02", "data_version": "x",
                         "seed": 0, "search": {"method": "grid", "trials": 1}, "baselines_on_test": {},
                         "selection": {"significant_vs_default": False, "reason": "t"},
                         "selected_at": "2026-01-05T00:00:00+00:00", "code_version": "t"}}


def offline_hub_snapshot(monkeypatch, hub: Path, repo_id: str, commit: str) -> Path:
    """An offline Hugging Face cache at ``hub`` whose ``repo_id`` main ref is ``commit``; the snapshot
    directory to save the weights in (the hub library is switched to offline mode on this cache)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    offline_hub(monkeypatch, hub)
    return repo / "snapshots" / commit


def offline_hub(monkeypatch, hub: Path) -> None:
    """Point the Hugging Face hub library at the cache ``hub``, offline."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))


# -- a daily feed whose regime changes after selection (test_forward_scorecard.py, e2e/test_daemon.py) --------------
FEED_TUNED_BARS, FEED_BARS = 300, 96  # bars at selection; bars the feed then appends
FEED_DRIFT_MARGIN = 0.5  # the tiny Kronos default runs ~20% behind persistence anyway
# A small tune budget, as a budgets-file entry (resource `budget`); as run config: FEED_SWEEPS.
FEED_BUDGET = {
    "toto": {"sample_counts": [16], "aggregations": ["mean", "median"]},
    "toto2": {"context_lengths": [0], "decode_block_sizes": [0], "variates": ["close"], "aggregations": ["median", "mean"]},
    "kronos": {"presets": [], "sample_counts": [4], "aggregations": ["mean"], "search_budget": 2,
               "search_sample_count": 4, "max_sample_count": 4},
}
FEED_SWEEPS = {"ops": {f"{family}_sweep": {"config": values} for family, values in FEED_BUDGET.items()}}


def regime_change_feed() -> dict[str, pd.DataFrame]:
    """CALM goes on as before. SHIFT is pinned after bar FEED_TUNED_BARS (a takeover at a fixed price:
    closes scatter 0.1% around the last close), where persistence is nearly exact and a model that
    still forecasts the old volatility falls far behind it."""
    from forecast_core.synthetic import make_prices

    total = FEED_TUNED_BARS + FEED_BARS
    calm, shift = make_prices(total, seed=11), make_prices(total, seed=12)
    after = np.arange(FEED_TUNED_BARS, total)
    rng = np.random.default_rng(13)
    pinned = shift["close"].iloc[FEED_TUNED_BARS - 1] * np.exp(rng.normal(0.0, 0.001, len(after)))
    shift.loc[after, "close"] = pinned
    shift.loc[after, "open"] = np.concatenate([[shift["close"].iloc[FEED_TUNED_BARS - 1]], pinned[:-1]])
    shift.loc[after, "high"] = shift.loc[after, ["open", "close"]].max(axis=1) * 1.0005
    shift.loc[after, "low"] = shift.loc[after, ["open", "close"]].min(axis=1) * 0.9995
    return {"CALM": calm, "SHIFT": shift}


def write_feed(folder: Path, series: dict[str, pd.DataFrame], bars: int) -> None:
    """The first ``bars`` bars of each series as ``folder/SYMBOL.csv``, written whole then renamed into
    place, as the README asks a feed to do."""
    for symbol, frame in series.items():
        temp = folder / f".{symbol}.csv.tmp"
        frame.iloc[:bars].drop(columns=["amount"]).to_csv(temp, index=False)
        os.replace(temp, folder / f"{symbol}.csv")


def feed_resources(root: Path) -> dict:
    """The resources of a tuned feed under ``root`` (see tune_feed)."""
    from resources import RetuneSettings

    return {**make_resources(root / "st", root / "csv"), "retune": RetuneSettings(drift_margin=FEED_DRIFT_MARGIN)}


def tune_feed(root: Path) -> None:
    """CALM and SHIFT (regime_change_feed) at FEED_TUNED_BARS bars, tuned with FEED_SWEEPS and selected,
    under ``root``: the CSV folder csv/, a Dagster instance in dagster_home/, storage and config files in
    st/ (what `hpo tune` leaves). Tests copy it (the conftest fixture tuned_feed)."""
    from dagster import DagsterInstance, materialize

    from hpo_assets.dbt_marts import metrics_assets
    from hpo_assets.instance import register_symbols
    from hpo_assets.prices import price_history
    from hpo_assets.selected_configs import selected_configs
    from hpo_assets.sweeps import baseline_sweep, kronos_sweep, toto2_sweep, toto_sweep

    (root / "csv").mkdir(parents=True)
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    series = regime_change_feed()
    write_feed(root / "csv", series, FEED_TUNED_BARS)
    resources = feed_resources(root)
    # Not `with instance:` (its exit closes what materialize's own enter opened, and leaves Dagster's
    # current definitions-state storage pointing at this instance once it is gone).
    instance = DagsterInstance.from_config(str(root / "dagster_home"))
    register_symbols(instance, list(series))
    for symbol in series:
        assert materialize([price_history, baseline_sweep, toto_sweep, toto2_sweep, kronos_sweep], partition_key=symbol,
                           instance=instance, resources=resources, run_config=FEED_SWEEPS).success
    assert materialize(metrics_assets(), instance=instance, resources=resources).success
    for symbol in series:
        assert materialize([selected_configs], partition_key=symbol, instance=instance, resources=resources).success
    instance.dispose()


# The Dagster helpers import the Dagster layer when called, so core and parity tests never load it.
def make_resources(storage_root, csv_dir=None, checkpoints=None, **backtest) -> dict:
    """The project's resources against ``storage_root``, small windows, optional CSV prices and checkpoints."""
    from hpo_assets.definitions import default_resources
    from resources import BacktestSettings, PriceSourceResource, StorageResource
    from resources.runtimes import KronosRuntime, Toto2Runtime, TotoRuntime

    resources = default_resources()
    resources["storage"] = StorageResource(root=str(storage_root), hyperparams_dir=str(storage_root / "hyperparams"))
    if checkpoints is not None:
        resources["toto"] = TotoRuntime(source=str(checkpoints["toto"]), device="cpu")
        resources["toto2"] = Toto2Runtime(checkpoints=[str(checkpoints["toto2"])], device="cpu")
        resources["kronos"] = KronosRuntime(source=str(checkpoints["kronos"]),
                                            tokenizer_source=str(checkpoints["kronos_tokenizer"]), device="cpu")
    resources["backtest"] = BacktestSettings(**{**TINY_BACKTEST, **backtest})
    if csv_dir is not None:
        resources["prices"] = PriceSourceResource(kind="csv_dir", csv_dir=str(csv_dir))
    return resources


def materialize_prices(instance, symbol: str, resources: dict):
    """Register ``symbol`` and materialise its price history on ``instance`` (errors stay in the result)."""
    from dagster import materialize

    from hpo_assets.instance import register_symbols
    from hpo_assets.prices import price_history

    register_symbols(instance, [symbol])
    return materialize([price_history], partition_key=symbol, instance=instance, resources=resources,
                       raise_on_error=False)


# -- what the fault tests share (tests/assets/faults/) -------------------------------------------------------
TINY_SPEC = WindowSpec(**TINY_BACKTEST)
TINY_WINDOWS = TINY_SPEC.n_val + TINY_SPEC.n_test  # rows per trial file: one per validation and test window
DAGSTER_CLI = str(Path(sys.executable).parent / "dagster")


def step_failure_message(result) -> str:
    """The first failed step's error message and its user failure data, as the UI shows them."""
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)


def materialization_metadata(result, asset: str) -> dict:
    """The plain values of ``asset``'s first materialisation metadata in ``result``."""
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def kill_group_after_first_file(proc: subprocess.Popen, folder: Path, log: Path, timeout: float = 300.0) -> list[str]:
    """SIGKILL the process group as soon as ``folder`` holds a trial file; the files present then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before it could be killed:\n"
                                 f"{log.read_text()[-3000:]}")
        if folder.exists() and any(folder.glob("*.parquet")):
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its forkserver and the step process
            proc.wait()
            return sorted(p.name for p in folder.glob("*.parquet"))
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise AssertionError(f"no trial file in {folder} after {timeout}s")
