"""Shared fixtures: every test gets its own storage root and Dagster home under a temp dir."""

from __future__ import annotations

import os

import pytest

from tests.synthetic import make_prices


@pytest.fixture
def storage_dir(tmp_path, monkeypatch):
    root = tmp_path / "storage"
    monkeypatch.setenv("HPO_STORAGE_DIR", str(root))
    return root


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def csv_dir(tmp_path):
    """A price directory with two clean synthetic symbols in different CSV layouts."""
    folder = tmp_path / "csv"
    folder.mkdir()
    a = make_prices(300, seed=1)
    a.drop(columns=["amount"]).rename(columns={"timestamp": "date"}).to_csv(folder / "AAA.csv", index=False)
    b = make_prices(300, seed=2, calendar="D", price=0.5)
    b = b.rename(columns=str.capitalize).rename(columns={"Timestamp": "Date"})
    b["Adj Close"] = b["Close"]
    b.to_csv(folder / "bbb.csv", index=True)  # lower-case file name, extra index column
    return folder


TINY_BACKTEST = {"horizon": 16, "n_val": 3, "n_test": 2, "context": 64}


def pytest_configure(config):
    os.environ.setdefault("TQDM_DISABLE", "1")
