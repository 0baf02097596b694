"""Same weights, same numbers as Datadog's ``toto-ts`` 0.2.0 (installed for tests only).

Skipped only when ``.upstream/toto`` is absent; see ``benchmarks/upstream/toto.py`` for the install.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from benchmarks.upstream import toto as upstream_toto
from forecast_core.forecasters import PRICE_COLUMNS, ContextBatch
from forecast_core.toto import TotoConfig, TotoForecaster, TotoModel, load_toto
from forecast_core.toto.model import Rows, XPosRotary, context_scaler_state, scale_patches

pytestmark = pytest.mark.skipif(not upstream_toto.available(), reason=upstream_toto.INSTALL_HINT)

CONFIGS = {
    "spacewise_last": TotoConfig(patch_size=16, stride=16, embed_dim=32, num_layers=4, num_heads=4,
                                 mlp_hidden_dim=48, spacewise_every_n_layers=2, spacewise_first=False,
                                 k_components=3),
    "spacewise_first": TotoConfig(patch_size=8, stride=8, embed_dim=24, num_layers=3, num_heads=2,
                                  mlp_hidden_dim=40, spacewise_every_n_layers=3, spacewise_first=True,
                                  k_components=4, scale_factor_exponent=1.0),
}
HORIZON_PATCHES = 3


def random_model(config: TotoConfig, seed: int = 0) -> TotoModel:
    torch.manual_seed(seed)
    model = TotoModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than default init, so every block matters
            p.normal_(0.0, 0.1)
    return model


def series(batch: int, variates: int, length: int, seed: int = 1) -> torch.Tensor:
    """float32-representable random walks around 10 (so both sides see the same inputs)."""
    g = torch.Generator().manual_seed(seed)
    return (10 + torch.randn(batch, variates, length, generator=g).cumsum(-1) * 0.5).float()


def our_mean(model: TotoModel, context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Autoregressive mixture mean at the model level (any number of variates)."""
    encoded = model.encode(context.double())
    mixture, loc, scale = encoded.next, encoded.loc, encoded.scale
    rows, out = Rows.start(encoded, torch.arange(context.shape[0])), []
    while sum(p.shape[-1] for p in out) < horizon:
        patch = mixture.mean().double() * scale[..., None] + loc[..., None]
        out.append(patch)
        mixture, loc, scale, rows = model.decode(encoded, rows, patch)
    return torch.cat(out, -1)[..., :horizon]


def their_mean(theirs, context: torch.Tensor, horizon: int) -> torch.Tensor:
    _, Forecaster, _ = upstream_toto.import_upstream()
    forecast = Forecaster(theirs.model).forecast(upstream_toto.masked_series(context), prediction_length=horizon,
                                                 num_samples=None, use_kv_cache=True)
    return forecast.mean.double()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_mean_forecast_matches_upstream(name):
    config = CONFIGS[name]
    ours = random_model(config)
    theirs = upstream_toto.upstream_twin(ours)
    context = series(3, 2, 4 * config.patch_size)  # 2 variates: the space-wise layer really mixes
    horizon = HORIZON_PATCHES * config.patch_size - 5
    expected = their_mean(theirs, context, horizon)
    torch.testing.assert_close(our_mean(ours, context, horizon), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length, offset", [(9, 0), (1, 9), (1, 12)])
def test_rotary_xpos_matches_upstream(length, offset):
    """Direct check: attention logits barely move under xPos at a few positions, so test it alone."""
    import importlib

    upstream_toto.import_upstream()
    rope = importlib.import_module("toto.model.rope").TimeAwareRotaryEmbedding(
        16, use_xpos=True, cache_if_possible=True, seq_before_head_dim=False)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, length, 16, generator=g), torch.randn(2, 3, length, 16, generator=g)
    expected = rope.rotate_queries_and_keys(q, k, seq_pos_offset=offset)
    ours = XPosRotary(16)(q, k, torch.arange(length, dtype=torch.float32) + offset)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_scaler_with_active_global_clamp_matches_upstream():
    import importlib

    upstream_toto.import_upstream()
    scaler = importlib.import_module("toto.model.scaler").CausalPatchStdMeanScaler(
        patch_size=8, stabilize_with_global=True, scale_factor_exponent=1.0)
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.full((2, 1, 8), 5.0), 1000 * torch.randn(2, 1, 24, generator=g)], -1)  # flat, then wild
    ones = torch.ones_like(x)
    scaled, loc, scale = scaler(x, padding_mask=ones, weights=ones)
    config = TotoConfig(patch_size=8, stride=8, embed_dim=8, num_heads=2, num_layers=1, spacewise_every_n_layers=1,
                        k_components=2, scale_factor_exponent=1.0)
    state = context_scaler_state(x.double(), config)
    our_scaled, our_loc, our_scale, _ = scale_patches(x.double(), state, 8)
    assert scale[0, 0, 0] > 1.0, "the first (flat) patch's scale must be lifted by the global clamp"
    torch.testing.assert_close(our_loc.repeat_interleave(8, -1).float(), loc)
    torch.testing.assert_close(our_scale.repeat_interleave(8, -1).float(), scale)
    torch.testing.assert_close(our_scaled.float(), scaled, rtol=1e-5, atol=1e-5)


def test_teacher_forced_pass_matches_upstream():
    config = CONFIGS["spacewise_last"]
    ours = random_model(config, seed=4)
    theirs = upstream_toto.upstream_twin(ours)
    x = series(2, 2, 5 * config.patch_size, seed=7)
    out = theirs.model(x, torch.ones_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.int))
    mixture, loc, scale = ours(x.double())
    torch.testing.assert_close(mixture.mean().flatten(-2), out.distribution.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loc.repeat_interleave(config.patch_size, -1).float(), out.loc, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scale.repeat_interleave(config.patch_size, -1).float(), out.scale, rtol=1e-6,
                               atol=1e-6)


def test_forecaster_mean_paths_match_upstream_univariate():
    config = CONFIGS["spacewise_last"]
    ours = random_model(config, seed=2)
    theirs = upstream_toto.upstream_twin(ours)
    close = series(2, 1, 6 * config.patch_size, seed=3)
    horizon = 40
    values = np.repeat(close[:, 0, :, None].double().numpy(), len(PRICE_COLUMNS), axis=2)
    stamps = np.broadcast_to(pd.bdate_range("2020-01-01", periods=close.shape[-1]).to_numpy(), close.shape[::2])
    batch = ContextBatch(values, stamps.copy(), np.zeros((2, horizon), dtype="datetime64[ns]"), np.arange(2))
    paths = TotoForecaster(ours).mean_paths(batch)
    np.testing.assert_allclose(paths[:, 0], their_mean(theirs, close, horizon)[:, 0].numpy(), rtol=1e-5, atol=1e-5)


def test_we_read_upstream_checkpoints_and_upstream_reads_ours(tmp_path):
    config = CONFIGS["spacewise_last"]
    Toto, _, _ = upstream_toto.import_upstream()
    torch.manual_seed(5)
    theirs = Toto(**config.to_dict()).eval()
    # Upstream's fused-SwiGLU layout (what an xFormers install saves), written by upstream's own mapper.
    fused = Toto._map_state_dict_keys(theirs.state_dict(), True)
    assert any(".mlp.0.w12." in k for k in fused)
    (tmp_path / "up").mkdir()
    save_file({k: v.contiguous() for k, v in fused.items()}, str(tmp_path / "up" / "model.safetensors"))
    published = {**config.to_dict(), "use_memory_efficient_attention": True}  # as in the real config.json
    (tmp_path / "up" / "config.json").write_text(json.dumps(published))
    ours = load_toto(tmp_path / "up")
    context = series(2, 1, 3 * config.patch_size, seed=11)
    horizon = 2 * config.patch_size
    torch.testing.assert_close(our_mean(ours, context, horizon), their_mean(theirs, context, horizon),
                               rtol=1e-5, atol=1e-5)

    ours.save(tmp_path / "ours")
    reread = Toto.load_from_checkpoint(str(tmp_path / "ours"), strict=True).eval()
    # the same upstream code on the same shapes with the weights copied exactly: bitwise
    torch.testing.assert_close(their_mean(reread, context, horizon), their_mean(theirs, context, horizon),
                               rtol=0, atol=0)


def test_sample_distribution_matches_upstream():
    """Different random streams, same distribution: two-sample KS per step of the first patch."""
    config = CONFIGS["spacewise_last"]
    ours = random_model(config, seed=8)
    theirs = upstream_toto.upstream_twin(ours)
    close = series(1, 1, 4 * config.patch_size, seed=9)
    n = 2000
    _, Forecaster, _ = upstream_toto.import_upstream()
    torch.manual_seed(0)
    upstream = Forecaster(theirs.model).forecast(upstream_toto.masked_series(close), prediction_length=16,
                                                 num_samples=n, samples_per_batch=n).samples[0, 0].numpy().T
    values = np.repeat(close[:, 0, :, None].double().numpy(), len(PRICE_COLUMNS), axis=2)
    stamps = pd.bdate_range("2020-01-01", periods=close.shape[-1]).to_numpy()[None]
    batch = ContextBatch(values, stamps, np.zeros((1, 16), dtype="datetime64[ns]"), np.array([42]))
    mine = TotoForecaster(ours, samples_per_batch=n).sample_paths(batch, n)[0]
    for step in range(16):
        a, b = np.sort(mine[:, step]), np.sort(upstream[:, step])
        grid = np.concatenate([a, b])
        ks = np.abs(np.searchsorted(a, grid, "right") / n - np.searchsorted(b, grid, "right") / n).max()
        assert ks < 0.0705, f"step {step}: KS {ks:.3f} (alpha 1e-4 critical value 0.0705)"
