"""Toto 2.0 model, loader and forecaster properties (small random configs; no upstream needed)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from forecast_core.checkpoints import CheckpointError
from forecast_core.forecasters import BATCH_RTOL, ContextBatch
from forecast_core.synthetic import make_prices
from forecast_core.toto2 import (
    OHLCV, QUANTILE_LEVELS, Toto2Config, Toto2ConfigError, Toto2Forecaster, Toto2Model, load_toto2, save_toto2,
)
from forecast_core.toto2.model import MEDIAN, causal_patch_scaler, residual_tau
from forecast_core.windows import WindowSpec, build_windows
from tests.support import assert_no_leakage, offline_hub, offline_hub_snapshot

SMALL = Toto2Config(patch_size=8, d_model=32, num_heads=4, num_groups=2, num_layers=4, layer_group_size=2,
                    num_variate_layers_per_group=1, variate_layer_first=False, residual_attn_ratio=1.3)
SPEC = WindowSpec(horizon=20, n_val=2, n_test=2, context=48)  # 3 patches ahead, the last one partial


@pytest.fixture(scope="module")
def model() -> Toto2Model:
    torch.manual_seed(0)
    model = Toto2Model(SMALL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 if p.dim() > 1 else 0.3)
    return model


@pytest.fixture(scope="module")
def windows():
    return build_windows(make_prices(300, seed=3), SPEC, "SYM")


# -- config and checkpoints -----------------------------------------------------------------------


def test_config_fills_derived_sizes_and_round_trips():
    assert (SMALL.d_ff, SMALL.qk_dim, SMALL.v_dim, SMALL.heads_per_group) == (88, 8, 8, 2)
    assert SMALL.qk_norm_include_weight is False
    config, ignored = Toto2Config.from_dict({**SMALL.to_dict(), "model_type": "toto2"})
    assert config == SMALL and ignored == ["model_type"]
    assert [SMALL.is_variate_layer(i) for i in range(4)] == [False, True, False, True]
    first = Toto2Config(**{**SMALL.to_dict(), "variate_layer_first": True})
    assert [first.is_variate_layer(i) for i in range(4)] == [True, False, True, False]


@pytest.mark.parametrize("change, message", [
    ({"use_xpos": True}, "use_xpos"),
    ({"dropout_p": 0.1}, "dropout_p"),
    ({"num_output_patches": 2}, "num_output_patches"),
    ({"num_layers": 3}, "layer_group_size"),
    ({"num_groups": 3}, "num_groups"),
])
def test_unsupported_configs_are_refused_by_name(change, message):
    with pytest.raises(Toto2ConfigError, match=message):
        Toto2Config(**{**SMALL.to_dict(), **change})


def test_residual_tau_follows_the_depth_rule():
    # attention and MLP branches each weigh alike; with ratio 1 and mult 1 the first tau is sqrt(2 / depth)
    assert residual_tau(0, 8, 1.0, 1.0) == pytest.approx((1 / 4) ** 0.5)
    taus = [residual_tau(i, 8, 1.0, 1.3) for i in range(8)]
    assert all(a > b for a, b in zip(taus[::2], taus[2::2]))  # later branches are damped more


def test_checkpoint_round_trip_and_strict_errors_name_keys(model, tmp_path, caplog):
    save_toto2(model, tmp_path / "ckpt")
    torch.testing.assert_close(load_toto2(tmp_path / "ckpt").state_dict(), model.state_dict(), rtol=0, atol=0)

    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "architectures": ["Toto2Model"]}))
    with caplog.at_level(logging.INFO, logger="forecast_core.toto2.loader"):
        load_toto2(tmp_path / "ckpt")
    assert "architectures" in caplog.text

    state = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    broken = dict(state)
    broken.pop("patch_proj.linear1.bias")
    broken["transformer.extra.weight"] = torch.zeros(1)
    broken["transformer.layers.0.ffn.fc2.weight"] = torch.zeros(32, 7)
    save_file(broken, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        load_toto2(tmp_path / "ckpt")
    text = str(error.value)
    assert "missing keys ['patch_proj.linear1.bias']" in text
    assert "unexpected keys ['transformer.extra.weight']" in text
    assert "transformer.layers.0.ffn.fc2.weight: (32, 7) vs (32, 88)" in text

    wrong_tau = {**state, "transformer.layers.2.mlp_tau": torch.tensor(0.5)}
    save_file(wrong_tau, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="transformer.layers.2.mlp_tau"):
        load_toto2(tmp_path / "ckpt")

    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "use_xpos": True}))
    with pytest.raises(CheckpointError, match="use_xpos"):
        load_toto2(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "d_model"}))
    with pytest.raises(CheckpointError, match="lacks \\['d_model'\\]"):
        load_toto2(tmp_path / "ckpt")


def test_loads_a_pinned_revision_from_the_offline_hub_cache(model, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    save_toto2(model, offline_hub_snapshot(monkeypatch, tmp_path / "hub", "Datadog/Toto-2.0-4m", commit))
    loaded = load_toto2("Datadog/Toto-2.0-4m", revision=commit)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_offline_without_cached_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.raises(CheckpointError, match="copy a checkpoint directory"):
        load_toto2("Datadog/Toto-2.0-22m", revision="main")


# -- scaler and forecasting ----------------------------------------------------------------------


def test_scaler_is_causal_per_patch_and_matches_numpy():
    g = torch.Generator().manual_seed(0)
    values = 50 + torch.randn(2, 3, 24, generator=g, dtype=torch.float64).cumsum(-1)
    observed = torch.ones_like(values, dtype=torch.bool)
    loc, scale = causal_patch_scaler(values, observed, 8)
    for end in (8, 16, 24):
        seen = values[..., :end].numpy()
        np.testing.assert_allclose(loc[..., end - 8:end].numpy(), np.repeat(seen.mean(-1)[..., None], 8, -1),
                                   rtol=1e-12)
        np.testing.assert_allclose(scale[..., end - 1].numpy(), seen.std(-1, ddof=1), rtol=1e-10)
    spoiled = values.clone()
    spoiled[..., 16:] = 1e6
    loc2, scale2 = causal_patch_scaler(spoiled, observed, 8)
    assert torch.equal(loc2[..., :16], loc[..., :16]) and torch.equal(scale2[..., :16], scale[..., :16])
    hidden = observed.clone()
    hidden[..., 16:] = False  # unobserved values are ignored: the statistics carry over
    loc3, _ = causal_patch_scaler(spoiled, hidden, 8)
    assert torch.equal(loc3[..., 16:], loc[..., 15:16].expand(-1, -1, 8))


@pytest.mark.parametrize("block", [None, 8, 16])
def test_quantiles_are_sorted_deterministic_and_batch_independent(model, windows, block):
    forecaster = Toto2Forecaster(model, decode_block_size=block)
    q = forecaster.quantiles(windows.batch)
    assert q.shape == (windows.batch.num_windows, len(QUANTILE_LEVELS), SPEC.horizon)
    assert np.isfinite(q).all() and (np.diff(q, axis=1) >= 0).all()
    np.testing.assert_array_equal(forecaster.quantiles(windows.batch), q)  # same call: bitwise
    level = np.abs(windows.batch.column("close")).max(axis=1)
    for i in range(windows.batch.num_windows):  # a window alone: within BATCH_RTOL of the level
        b = windows.batch
        alone = forecaster.quantiles(ContextBatch(b.values[i:i + 1], b.timestamps[i:i + 1],
                                                  b.future_timestamps[i:i + 1], b.seeds[i:i + 1]))
        assert np.abs(alone[0] - q[i]).max() <= BATCH_RTOL * level[i]


def test_block_covering_the_horizon_is_the_single_pass(model, windows):
    single = Toto2Forecaster(model).quantiles(windows.batch)
    np.testing.assert_array_equal(Toto2Forecaster(model, decode_block_size=24).quantiles(windows.batch), single)
    blocked = Toto2Forecaster(model, decode_block_size=8).quantiles(windows.batch)
    # the first block is the same computation on a shorter (causal) sequence: equal up to rounding
    level = np.abs(windows.batch.column("close")).max(axis=1)[:, None, None]
    assert (np.abs(blocked[:, :, :8] - single[:, :, :8]) <= BATCH_RTOL * level).all()
    assert not np.allclose(blocked[:, :, 8:], single[:, :, 8:])  # later blocks see the fed-back median


def _rerun_forecast(model: Toto2Model, context: torch.Tensor, horizon: int, block_patches: int) -> torch.Tensor:
    """Block decoding the long way (no cache, no skipped patches): each block re-runs the whole causal
    sequence, context + fed-back medians + the block's empty patches, and reads its outputs."""
    p = model.config.patch_size
    batch, variates, length = context.shape
    patches = -(-horizon // p)
    values = torch.cat([context, context.new_zeros(batch, variates, patches * p)], dim=-1)
    observed = torch.zeros_like(values, dtype=torch.bool)
    observed[..., :length] = True
    blocks = []
    with torch.no_grad():
        for done in range(0, patches, block_patches):
            step = min(block_patches, patches - done)
            start, end = length + done * p, length + (done + step) * p
            loc, scale = causal_patch_scaler(values[..., :end], observed[..., :end], p)
            hidden = model.hidden(values[..., :end], observed[..., :end], loc, scale)[..., -(step + 1):-1, :]
            squashed = model.output_head.param_projection(hidden).movedim(-1, 0)
            shape = (batch, variates, step, p)
            real = squashed.sinh() * scale[..., start:end].reshape(shape) + loc[..., start:end].reshape(shape)
            real = real.sort(dim=0).values
            blocks.append(real)
            values[..., start:end] = real[MEDIAN].flatten(-2)
            observed[..., start:end] = True
    return torch.cat(blocks, dim=-2).flatten(-2)[..., :horizon]


@pytest.mark.parametrize("variate_first", [False, True])
@pytest.mark.parametrize("variates", [1, 3])
def test_cached_decoding_equals_rerunning_the_whole_sequence(variate_first, variates):
    """The key/value cache, the unfed last patch and the output-only last layers change no number."""
    config = Toto2Config(**{**SMALL.to_dict(), "variate_layer_first": variate_first})
    torch.manual_seed(1)
    model = Toto2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0 if p.dim() > 1 else 0.3)
    g = torch.Generator().manual_seed(2)
    context = 100.0 + torch.randn(2, variates, 5 * config.patch_size, generator=g).cumsum(-1)
    horizon = 4 * config.patch_size - 5  # 4 patches, the last one partial
    level = context.abs().amax(-1)[None, :, :, None]
    for block_patches in (1, 2, 3, 4):  # 4: one block, the single pass
        got = model.forecast(context, horizon, decode_block_size=block_patches * config.patch_size, quantile_cap_k=0.0)
        expected = _rerun_forecast(model, context, horizon, block_patches)
        assert float(((got - expected).abs() / level).max()) <= 1e-6
    single = model.forecast(context, horizon, quantile_cap_k=0.0)
    assert float(((single - _rerun_forecast(model, context, horizon, 4)).abs() / level).max()) <= 1e-6


def test_sub_unit_prices_are_lifted_exactly(model, windows):
    b = windows.batch
    tiny = ContextBatch(b.values * 2.0 ** -12, b.timestamps, b.future_timestamps, b.seeds)
    forecaster = Toto2Forecaster(model)
    np.testing.assert_allclose(forecaster.quantiles(tiny) * 2.0 ** 12, forecaster.quantiles(b), rtol=1e-6)


@dataclass
class _QuantilesAsPaths:
    """The leakage check reads ``sample_paths``: here the 9 quantiles stand in for the paths."""

    forecaster: Toto2Forecaster
    name: str = "toto2"

    def sample_paths(self, batch, num_samples):
        return self.forecaster.quantiles(batch)


@pytest.mark.parametrize("columns, block", [(("close",), None), (OHLCV, 8)])
def test_toto2_does_not_leak_the_future(model, columns, block):
    forecaster = Toto2Forecaster(model, columns=columns, decode_block_size=block)
    assert_no_leakage(_QuantilesAsPaths(forecaster), make_prices(200, seed=7), SPEC)


def test_inputs_are_validated(model, windows):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Toto2Forecaster(model, decode_block_size=12)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Toto2Forecaster(model, context_length=20)
    with pytest.raises(ValueError, match="including 'close'"):
        Toto2Forecaster(model, columns=("open", "high"))
    with pytest.raises(ValueError, match="needs a context of 64"):
        Toto2Forecaster(model, context_length=64).quantiles(windows.batch)
    b = windows.batch
    values = b.values.copy()
    values[0, 5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        Toto2Forecaster(model).quantiles(ContextBatch(values, b.timestamps, b.future_timestamps, b.seeds))
    with pytest.raises(ValueError, match="multiple of the patch"):
        model.forecast(torch.ones(1, 1, 12), 4)


def test_the_bundled_tiny_checkpoint_loads_strictly_and_forecasts_sorted_quantiles():
    """The offline default (scripts/train_tiny_toto2.py) on embedded test windows."""
    from forecast_core.sources import EmbeddedSource
    from forecast_core.toto2 import DEFAULT_TINY_DIR, Toto2Forecaster, load_toto2
    from forecast_core.windows import TEST, WindowSpec, build_windows

    windows = build_windows(EmbeddedSource().load("AAPL"), WindowSpec(), "AAPL").split(TEST)
    quantiles = Toto2Forecaster(load_toto2(DEFAULT_TINY_DIR)).quantiles(windows.batch)
    assert quantiles.shape == (8, 9, 64) and np.isfinite(quantiles).all()
    assert (np.diff(quantiles, axis=1) >= 0).all()
    first_step_median = quantiles[:, 4, 0]  # level 0.5, one bar ahead: near the last close
    assert (np.abs(first_step_median / windows.batch.column("close")[:, -1] - 1) < 0.2).all()
