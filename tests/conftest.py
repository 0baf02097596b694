"""Shared fixtures: every test gets its own storage root and Dagster home under a temp dir."""

from __future__ import annotations

import shutil

import pytest

from forecast_core.synthetic import make_prices


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


@pytest.fixture(scope="session")
def random_checkpoints(tmp_path_factory):
    """Small random-weight Toto, Toto 2.0 and Kronos checkpoints, saved in the published layouts by our own code."""
    import torch

    from forecast_core.checkpoints import save_checkpoint
    from forecast_core.kronos.model import Kronos, KronosConfig
    from forecast_core.kronos.tokenizer import KronosTokenizer, TokenizerConfig
    from forecast_core.toto.model import TotoConfig, TotoModel
    from forecast_core.toto2 import Toto2Config, Toto2Model, save_toto2

    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    TotoModel(TotoConfig(patch_size=16, stride=16, embed_dim=16, num_layers=2, num_heads=2, mlp_hidden_dim=32,
                         spacewise_every_n_layers=2, k_components=3)).save(root / "toto")
    tokenizer = TokenizerConfig(d_in=6, d_model=16, n_heads=2, ff_dim=32, n_enc_layers=2, n_dec_layers=2,
                                s1_bits=3, s2_bits=3)
    save_checkpoint(KronosTokenizer(tokenizer), tokenizer.to_dict(), root / "kronos-tokenizer")
    model = KronosConfig(s1_bits=3, s2_bits=3, n_layers=1, d_model=16, n_heads=2, ff_dim=32)
    save_checkpoint(Kronos(model), model.to_dict(), root / "kronos")
    save_toto2(Toto2Model(Toto2Config(patch_size=8, d_model=16, num_heads=2, num_groups=1, num_layers=2,
                                      layer_group_size=2, num_variate_layers_per_group=1, variate_layer_first=False,
                                      residual_attn_ratio=1.0)), root / "toto2")
    return {"toto": root / "toto", "kronos": root / "kronos", "kronos_tokenizer": root / "kronos-tokenizer",
            "toto2": root / "toto2"}


@pytest.fixture(scope="session")
def tuned_feed_template(tmp_path_factory):
    from tests.support import tune_feed

    root = tmp_path_factory.mktemp("tuned_feed")
    tune_feed(root)
    return root


@pytest.fixture
def tuned_feed(tmp_path, tuned_feed_template, monkeypatch):
    """A copy of tests.support.tune_feed's result in ``tmp_path`` (csv/, dagster_home/, st/), with
    DAGSTER_HOME pointing at it: built once per session, copied per test."""
    shutil.copytree(tuned_feed_template, tmp_path, dirs_exist_ok=True)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path
