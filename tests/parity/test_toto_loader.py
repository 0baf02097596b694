"""Toto 1.0 checkpoints that carry buffers the model recomputes (rotary frequencies and xPos scales)."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from forecast_core.checkpoints import CheckpointError
from forecast_core.toto import TotoConfig, TotoModel, load_toto
from forecast_core.toto.model import COMPUTED_BUFFERS

SMALL = TotoConfig(patch_size=8, stride=8, embed_dim=16, num_layers=2, num_heads=2, mlp_hidden_dim=24,
                   spacewise_every_n_layers=2, k_components=2)
# What rotary-embedding-torch before 0.5 saved: the xPos scale as a persistent buffer, under the shared
# module and under every time-wise attention layer that holds it.
OLD_ROTARY_KEYS = ["model.transformer.rotary_emb.scale", "model.transformer.layers.0.attention.rotary_emb.scale",
                   "model.transformer.rotary_emb.freqs"]


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = TotoModel(SMALL).eval()
    model.save(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_family_declares_the_buffers_it_recomputes():
    assert set(COMPUTED_BUFFERS) == {"rotary_emb.freqs", "rotary_emb.scale"}


def test_checkpoint_with_old_rotary_buffers_loads_and_logs_them(saved, caplog):
    model, directory = saved
    state = load_file(str(directory / "model.safetensors"))
    save_file({**state, **{k: torch.ones(SMALL.embed_dim // SMALL.num_heads // 2) for k in OLD_ROTARY_KEYS}},
              str(directory / "model.safetensors"))
    with caplog.at_level(logging.INFO, logger="forecast_core.toto.model"):
        loaded = load_toto(directory)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(key in logged for key in OLD_ROTARY_KEYS), logged


def test_other_unknown_buffers_are_still_rejected_by_name(saved):
    _, directory = saved
    state = load_file(str(directory / "model.safetensors"))
    save_file({**state, "model.transformer.rotary_emb.scale_extra": torch.ones(2)},
              str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unexpected keys \['model.transformer.rotary_emb.scale_extra'\]"):
        load_toto(directory)


def test_plain_checkpoint_logs_nothing(saved, caplog):
    _, directory = saved
    with caplog.at_level(logging.INFO, logger="forecast_core.toto.model"):
        load_toto(directory)
    assert not [r for r in caplog.records if "recomputed" in r.getMessage()]


def test_upstream_reads_the_same_file(saved):
    """Upstream ``toto-ts`` loads such a file too (it drops keys its model lacks): same weights both ways."""
    from benchmarks.upstream import toto as upstream_toto

    if not upstream_toto.available():
        pytest.skip(upstream_toto.INSTALL_HINT)
    model, directory = saved
    state = load_file(str(directory / "model.safetensors"))
    save_file({**state, **{k: torch.ones(4) for k in OLD_ROTARY_KEYS}}, str(directory / "model.safetensors"))
    Toto, _, _ = upstream_toto.import_upstream()
    theirs = Toto.load_from_checkpoint(str(directory), strict=True)
    torch.testing.assert_close(theirs.state_dict(), load_toto(directory).state_dict(), rtol=0, atol=0)
