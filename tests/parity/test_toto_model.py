"""Toto model, loader and forecaster properties (small random configs; no upstream needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from forecast_core.aggregate import aggregate
from forecast_core.checkpoints import CheckpointError
from forecast_core.forecasters import BATCH_RTOL
from forecast_core.synthetic import make_prices
from forecast_core.toto import DEFAULT_TINY_DIR, TotoConfig, TotoForecaster, TotoModel, load_toto
from forecast_core.toto import sampling
from forecast_core.toto.model import Mixture, ScalerState, context_scaler_state, scale_patches
from forecast_core.windows import WindowSpec, build_windows
from tests.support import assert_no_leakage, offline_hub, offline_hub_snapshot

SMALL = TotoConfig(patch_size=16, stride=16, embed_dim=32, num_layers=4, num_heads=4, mlp_hidden_dim=48,
                   spacewise_every_n_layers=2, spacewise_first=False, k_components=3)
SPEC = WindowSpec(horizon=40, n_val=2, n_test=2, context=64)  # 3 patches: exercises decoding


@pytest.fixture(scope="module")
def model() -> TotoModel:
    torch.manual_seed(0)
    return TotoModel(SMALL).eval()


@pytest.fixture(scope="module")
def windows():
    return build_windows(make_prices(400, seed=3), SPEC, "SYM")


# -- config and checkpoints -----------------------------------------------------------------------


def test_config_round_trips_and_rejects_unknown_keys():
    assert TotoConfig.from_dict(SMALL.to_dict()) == SMALL
    with pytest.raises(CheckpointError, match="unknown Toto config keys.*'n_layer'"):
        TotoConfig.from_dict({**SMALL.to_dict(), "n_layer": 3})
    with pytest.raises(CheckpointError, match="unsupported scaler_cls"):
        TotoConfig.from_dict({**SMALL.to_dict(), "scaler_cls": "<class 'model.scaler.StdMeanScaler'>"})
    with pytest.raises(CheckpointError, match="multiple of spacewise_every_n_layers"):
        TotoConfig(num_layers=5, spacewise_every_n_layers=2)


def test_layer_layout_follows_spacewise_first():
    assert TotoConfig(num_layers=4, spacewise_every_n_layers=2, spacewise_first=False).layer_is_spacewise() == [
        False, True, False, True]
    assert TotoConfig(num_layers=4, spacewise_every_n_layers=2, spacewise_first=True).layer_is_spacewise() == [
        True, False, True, False]


def test_checkpoint_round_trip_fused_names_and_strict_errors(model, tmp_path):
    model.save(tmp_path / "plain")
    loaded = load_toto(tmp_path / "plain")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)

    state = load_file(str(tmp_path / "plain" / "model.safetensors"))
    fused = {k.replace("mlp.0.", "mlp.0.w12.").replace("mlp.2.", "mlp.0.w3."): v for k, v in state.items()}
    (tmp_path / "fused").mkdir()
    save_file(fused, str(tmp_path / "fused" / "model.safetensors"))
    (tmp_path / "fused" / "config.json").write_text(json.dumps(SMALL.to_dict()))
    torch.testing.assert_close(load_toto(tmp_path / "fused").state_dict(), model.state_dict(), rtol=0, atol=0)

    # Rotary frequencies some exports carry are computed here, so they are dropped, not loaded.
    with_freqs = {**state, "model.transformer.layers.0.attention.rotary_emb.freqs": torch.ones(4)}
    save_file(with_freqs, str(tmp_path / "fused" / "model.safetensors"))
    torch.testing.assert_close(load_toto(tmp_path / "fused").state_dict(), model.state_dict(), rtol=0, atol=0)

    state.pop("model.unembed.bias")
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "plain" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['model.unembed.bias'\].*unexpected keys"):
        load_toto(tmp_path / "plain")


def test_loads_a_pinned_revision_from_the_offline_hub_cache(model, tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    model.save(offline_hub_snapshot(monkeypatch, tmp_path / "hub", "Datadog/Toto-Open-Base-1.0", commit))
    loaded = load_toto("Datadog/Toto-Open-Base-1.0", revision=commit)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_offline_without_cached_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    offline_hub(monkeypatch, tmp_path / "hub")
    with pytest.raises(CheckpointError, match="copy a checkpoint directory"):
        load_toto("Datadog/Toto-Open-Base-1.0", revision="main")


# -- scaler and sampling --------------------------------------------------------------------------


def test_scaler_is_causal_and_incremental():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(50, 5, (2, 1, 64)))
    state = context_scaler_state(x[..., :48], SMALL)
    _, loc, scale, after = scale_patches(x[..., :48], state, 16)
    for i in range(3):  # each patch: statistics of everything up to its end, Bessel-corrected
        seen = x[..., : 16 * (i + 1)].numpy()
        np.testing.assert_allclose(loc[..., i].numpy(), seen.mean(-1))
        np.testing.assert_allclose(scale[..., i].numpy(), np.sqrt(seen.var(-1, ddof=1) + 0.1))
    _, loc2, scale2, _ = scale_patches(x[..., 48:], after, 16)  # continuing = recomputing over 64 bars
    full = ScalerState(*(t for t in (torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1),
                                     state.low, state.high)))
    _, loc_full, scale_full, _ = scale_patches(x, full, 16)
    torch.testing.assert_close(loc2[..., 0], loc_full[..., 3])
    torch.testing.assert_close(scale2[..., 0], scale_full[..., 3])


def test_bailey_student_t_has_the_right_quantiles():
    rand = sampling.uniforms(seed=1, step=0, start=0, stop=64 * 8, shape=(2, 500))
    df = torch.tensor([3.0, 10.0])[None, :, None, None]
    mixture = Mixture(df, torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))
    t = sampling.draw(mixture, rand)
    q = torch.quantile(t.transpose(0, 1).reshape(2, -1)[:, :1_000_000], torch.tensor([0.9, 0.975], dtype=t.dtype),
                       dim=1)
    expected = torch.tensor([[1.638, 1.372], [3.182, 2.228]], dtype=t.dtype)  # t tables, df 3 and 10
    torch.testing.assert_close(q, expected, atol=0.05, rtol=0)  # a normal would give 1.28 / 1.96


def test_mixture_log_prob_matches_torch_distributions(model):
    torch.manual_seed(1)
    mixture, _, _ = model(torch.randn(2, 1, 32, dtype=torch.float64).cumsum(-1))
    y = torch.randn(mixture.loc.shape[:-1])
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=mixture.log_weights),
        torch.distributions.StudentT(mixture.df, mixture.loc, mixture.scale),
    ).log_prob(y)
    torch.testing.assert_close(mixture.log_prob(y), reference, rtol=1e-5, atol=1e-5)


# -- forecaster properties ------------------------------------------------------------------------


def relative_gap(a: np.ndarray, b: np.ndarray, batch) -> float:
    """Largest |a - b| over paths ``[W, S, H]``, relative to each window's price level (its largest |close|)."""
    level = np.abs(batch.column("close")).max(axis=1)[:, None, None]
    return float((np.abs(a - b) / level).max())


def assert_same_paths(a: np.ndarray, b: np.ndarray, batch) -> None:
    """The same sample paths computed in differently shaped batches: equal within BATCH_RTOL, not bitwise."""
    assert a.shape == b.shape
    gap = relative_gap(a, b, batch)
    assert gap <= BATCH_RTOL, f"paths differ by {gap:.3g} of the price level (bound {BATCH_RTOL:g})"


def test_paths_do_not_depend_on_chunking_or_window_batching(model, windows):
    """Chunk size and window batching change the shapes the kernels see: equal within BATCH_RTOL."""
    one_chunk = TotoForecaster(model, samples_per_batch=24).sample_paths(windows.batch, 24)
    assert one_chunk.shape == (4, 24, 40) and np.isfinite(one_chunk).all()
    # identical shapes: bitwise
    np.testing.assert_array_equal(TotoForecaster(model, samples_per_batch=24).sample_paths(windows.batch, 24),
                                  one_chunk)
    for chunk in (1, 5, 7):  # 7: the last chunk is 3 samples
        assert_same_paths(TotoForecaster(model, samples_per_batch=chunk).sample_paths(windows.batch, 24), one_chunk,
                          windows.batch)
    for i in range(4):
        alone = windows.select(np.arange(4) == i).batch
        assert_same_paths(TotoForecaster(model, samples_per_batch=24).sample_paths(alone, 24), one_chunk[i:i + 1],
                          alone)
    # the bound still sees a mix-up: every path of another seed, or of the neighbouring sample, is far off
    b = windows.batch
    reseeded = TotoForecaster(model, samples_per_batch=24).sample_paths(
        b.__class__(b.values, b.timestamps, b.future_timestamps, b.seeds + 1), 24)
    level = np.abs(b.column("close")).max(axis=1)[:, None]
    assert (np.abs(reseeded - one_chunk).max(axis=2) / level).min() > 1000 * BATCH_RTOL
    assert (np.abs(one_chunk[:, 1:] - one_chunk[:, :-1]).max(axis=2) / level).min() > 1000 * BATCH_RTOL


def test_same_seed_same_paths_fewer_samples_are_a_prefix(model, windows):
    toto = TotoForecaster(model, samples_per_batch=32)
    paths = toto.sample_paths(windows.batch, 70)
    np.testing.assert_array_equal(toto.sample_paths(windows.batch, 70), paths)  # same call: bitwise
    assert_same_paths(toto.sample_paths(windows.batch, 5), paths[:, :5], windows.batch)  # fewer rows: bound
    assert np.abs(paths[:, 1:] - paths[:, :1]).max() > 0  # paths differ from each other
    reseeded = windows.batch.__class__(windows.batch.values, windows.batch.timestamps,
                                       windows.batch.future_timestamps, windows.batch.seeds + 1)
    assert relative_gap(toto.sample_paths(reseeded, 70), paths, windows.batch) > 1000 * BATCH_RTOL


def test_toto_does_not_leak_the_future(model):
    assert_no_leakage(TotoForecaster(model, samples_per_batch=3), make_prices(300, seed=5), SPEC, num_samples=4)


def test_context_must_be_whole_patches(model, windows):
    with pytest.raises(ValueError, match="multiple of Toto's patch size 16"):
        TotoForecaster(model, context_length=50)
    with pytest.raises(ValueError, match="needs a context of 128 bars"):
        TotoForecaster(model, context_length=128).sample_paths(windows.batch, 2)
    short = TotoForecaster(model).sample_paths(windows.batch.last(40), 3)  # uses the last 32 bars
    # the same [4, 1, 32] context either way, so the same shapes throughout: bitwise
    np.testing.assert_array_equal(short, TotoForecaster(model, context_length=32).sample_paths(windows.batch, 3))


def test_out_of_memory_lowers_the_chunk_not_the_samples(model, windows, monkeypatch):
    toto = TotoForecaster(model, samples_per_batch=64)
    expected = toto.sample_paths(windows.batch, 64)
    real_decode = model.decode

    def tight_memory(encoded, rows, patch):
        if patch.shape[0] > 4 * 16:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real_decode(encoded, rows, patch)

    monkeypatch.setattr(model, "decode", tight_memory)
    assert_same_paths(toto.sample_paths(windows.batch, 64), expected, windows.batch)  # smaller chunks: bound
    assert toto.last_run.used_samples_per_batch == 16 and len(toto.last_run.reductions) == 2
    toto.sample_paths(windows.batch, 64)  # a later call keeps the log a sweep reports from
    assert len(toto.reductions) == 4 and toto.reductions[:2] == toto.last_run.reductions

    monkeypatch.setattr(model, "decode", lambda *a: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(RuntimeError, match="out of memory even with samples_per_batch=1"):
        toto.sample_paths(windows.batch, 8)


def test_sample_grid_scores_prefixes_of_one_draw(model, windows, monkeypatch):
    toto = TotoForecaster(model, samples_per_batch=50)
    calls = []
    real_encode = model.encode
    monkeypatch.setattr(model, "encode", lambda context: calls.append(1) or real_encode(context))
    grid = toto.sample_grid(windows.batch, [8, 32], ["mean", "quantile_0.9", "trimmed_mean_10"])
    assert len(calls) == 1 and grid.paths.shape == (4, 32, 40) and len(grid.points) == 6
    # 8 samples alone decode fewer rows than the 32-sample draw: within the bound, not bitwise
    level = np.abs(windows.batch.column("close")).max()
    np.testing.assert_allclose(grid.points[(8, "quantile_0.9")],
                               aggregate(toto.sample_paths(windows.batch, 8), "quantile_0.9", sample_axis=1),
                               rtol=0, atol=BATCH_RTOL * level)
    np.testing.assert_array_equal(grid.points[(8, "quantile_0.9")],  # a prefix of the one draw: bitwise
                                  aggregate(grid.paths[:, :8], "quantile_0.9", sample_axis=1))
    with pytest.raises(ValueError, match="unknown aggregation"):
        toto.sample_grid(windows.batch, [8], ["average"])


def test_mean_paths_are_deterministic_and_near_the_sample_mean(model, windows):
    toto = TotoForecaster(model, samples_per_batch=2048)
    mean = toto.mean_paths(windows.batch)
    assert mean.shape == (4, 1, 40)
    np.testing.assert_array_equal(toto.mean_paths(windows.batch), mean)  # same call: bitwise
    b = windows.batch
    one_patch = b.__class__(b.values, b.timestamps, b.future_timestamps[:, :16], b.seeds)
    paths = toto.sample_paths(one_patch, 2048)
    standard_error = paths.std(axis=1) / np.sqrt(2048)
    assert (np.abs(paths.mean(axis=1) - mean[:, 0, :16]) < 5 * standard_error).mean() > 0.95


# -- the shipped tiny checkpoint ------------------------------------------------------------------


def test_shipped_tiny_checkpoint_is_the_offline_default():
    assert (DEFAULT_TINY_DIR / "README.md").is_file()
    model = load_toto()
    assert model.config.patch_size == 64
    windows = build_windows(make_prices(700, seed=9), WindowSpec(horizon=64, n_val=1, n_test=1, context=512), "X")
    paths = TotoForecaster(model).sample_paths(windows.batch, 16)
    close = windows.batch.column("close")[:, -1]
    assert np.isfinite(paths).all()
    assert (np.median(paths[:, :, 0], axis=1) / close < 1.2).all()  # plausible, not garbage
