"""Same weights, same quantiles as Datadog's ``toto-2`` 2.0.0 (installed for tests only).

Skipped only when ``.upstream/toto2`` is absent; see ``benchmarks/upstream/toto2.py`` for the install.
Bounds: max |ours - upstream| over every quantile, step and series, divided by the series' price
level (largest |value| of its context), must stay within ``BATCH_RTOL`` (1e-5): both run float32
weights on the same inputs, and differ only in how kernels round (measured: <= 1e-7).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.upstream import toto2 as upstream_toto2
from forecast_core.forecasters import BATCH_RTOL, PRICE_COLUMNS, ContextBatch
from forecast_core.toto2 import OHLC, Toto2Config, Toto2Forecaster, Toto2Model, load_toto2, save_toto2

pytestmark = pytest.mark.skipif(not upstream_toto2.available(), reason=upstream_toto2.INSTALL_HINT)

CONFIGS = {
    # grouped-query attention (2 key/value heads for 4 query heads), variate layer last in each group
    "gqa": Toto2Config(patch_size=8, d_model=32, num_heads=4, num_groups=2, num_layers=4, layer_group_size=2,
                       num_variate_layers_per_group=1, variate_layer_first=False, residual_attn_ratio=1.3),
    # every optional weight: norm weights, per-dimension query scale, biases; variate layer first
    "weights": Toto2Config(patch_size=4, d_model=24, num_heads=2, num_layers=3, layer_group_size=3,
                           num_variate_layers_per_group=1, variate_layer_first=True, residual_attn_ratio=0.7,
                           residual_mult=1.4, norm_include_weight=True, per_dim_scale=True, attn_bias=True,
                           mlp_bias=True, d_ff=40),
}


def random_model(config: Toto2Config, seed: int = 0) -> Toto2Model:
    torch.manual_seed(seed)
    model = Toto2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # unit-scale weights (u-muP), so every block matters
            p.normal_(0.0, 1.0 if p.dim() > 1 else 0.3)
    return model


def prices(batch: int, variates: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 100.0 + torch.randn(batch, variates, length, generator=g).cumsum(-1)


def relative_gap(ours: torch.Tensor, theirs: torch.Tensor, context: torch.Tensor) -> float:
    level = context.abs().amax(-1)[None, :, :, None]
    return float(((ours.double() - theirs.double()).abs() / level).max())


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("block_patches", [None, 1, 2])
@pytest.mark.parametrize("variates", [1, 2])
def test_quantiles_match_upstream(name, block_patches, variates):
    config = CONFIGS[name]
    ours = random_model(config)
    theirs = upstream_toto2.upstream_twin(ours)
    context = prices(3, variates, 6 * config.patch_size)  # 2 variates: the variate layers really mix
    horizon = 5 * config.patch_size - 3  # a partial last patch
    block = None if block_patches is None else block_patches * config.patch_size
    got = ours.forecast(context, horizon, decode_block_size=block, quantile_cap_k=0.0)
    expected = upstream_toto2.upstream_forecast(theirs, context, horizon, decode_block_size=block)
    assert got.shape == expected.shape == (9, 3, variates, horizon)
    assert relative_gap(got, expected, context) <= BATCH_RTOL
    # a different model moves the quantiles far more than that: the comparison has teeth
    other = random_model(config, seed=1).forecast(context, horizon, decode_block_size=block, quantile_cap_k=0.0)
    assert relative_gap(other, expected, context) > 1e-3


def test_quantile_cap_matches_upstream():
    config = CONFIGS["gqa"]
    ours = random_model(config, seed=3)
    with torch.no_grad():  # a wide head: sinh of its outputs leaves the context range by far
        for p in ours.output_head.parameters():
            p.mul_(4.0)
    theirs = upstream_toto2.upstream_twin(ours)
    context = prices(2, 1, 4 * config.patch_size, seed=4)
    uncapped = ours.forecast(context, 24, quantile_cap_k=0.0)
    got = ours.forecast(context, 24, quantile_cap_k=0.5)
    expected = upstream_toto2.upstream_forecast(theirs, context, 24, cap_k=0.5)
    assert not torch.equal(got, uncapped)
    assert relative_gap(got, expected, context) <= BATCH_RTOL


@pytest.mark.parametrize("block", [None, 8])
def test_forecaster_close_quantiles_match_upstream_multivariate(block):
    config = CONFIGS["gqa"]
    ours = random_model(config, seed=2)
    theirs = upstream_toto2.upstream_twin(ours)
    ohlc = prices(2, 4, 5 * config.patch_size + 3, seed=5)  # 3 extra bars: the forecaster drops them
    horizon = 20
    values = np.zeros((2, ohlc.shape[-1], len(PRICE_COLUMNS)))
    for i, column in enumerate(OHLC):
        values[:, :, PRICE_COLUMNS.index(column)] = ohlc[:, i].double().numpy()
    stamps = np.broadcast_to(pd.bdate_range("2020-01-01", periods=ohlc.shape[-1]).to_numpy(), ohlc.shape[::2])
    batch = ContextBatch(values, stamps.copy(), np.zeros((2, horizon), dtype="datetime64[ns]"), np.arange(2))
    got = Toto2Forecaster(ours, columns=OHLC, decode_block_size=block, quantile_cap_k=0.0).quantiles(batch)
    context = ohlc[..., 3:]
    expected = upstream_toto2.upstream_forecast(theirs, context, horizon, decode_block_size=block)
    expected = expected[:, :, OHLC.index("close")].permute(1, 0, 2)  # [windows, 9, horizon]
    level = context[:, OHLC.index("close")].abs().amax(-1)[:, None, None].double().numpy()
    assert got.shape == (2, 9, horizon)
    assert np.abs(got - expected.double().numpy()).max(initial=0.0) <= BATCH_RTOL * level.min()


def test_checkpoints_are_interchangeable_both_ways(tmp_path):
    toto2 = upstream_toto2.import_upstream()
    config = CONFIGS["weights"]
    context = prices(2, 2, 3 * config.patch_size, seed=6)

    ours = random_model(config, seed=7)
    save_toto2(ours, tmp_path / "ours")
    reread = toto2.Toto2Model.from_pretrained(str(tmp_path / "ours"), strict=True).eval()
    torch.testing.assert_close(reread.state_dict(), ours.state_dict(), rtol=0, atol=0)
    gap = relative_gap(ours.forecast(context, 10, quantile_cap_k=0.0),
                       upstream_toto2.upstream_forecast(reread, context, 10), context)
    assert gap <= BATCH_RTOL

    torch.manual_seed(8)
    theirs = toto2.Toto2Model(toto2.Toto2ModelConfig(**config.to_dict())).eval()
    theirs.save_pretrained(str(tmp_path / "theirs"))
    loaded = load_toto2(tmp_path / "theirs")
    assert loaded.config == config
    torch.testing.assert_close(loaded.state_dict(), theirs.state_dict(), rtol=0, atol=0)
    gap = relative_gap(loaded.forecast(context, 10, decode_block_size=4, quantile_cap_k=0.0),
                       upstream_toto2.upstream_forecast(theirs, context, 10, decode_block_size=4), context)
    assert gap <= BATCH_RTOL
