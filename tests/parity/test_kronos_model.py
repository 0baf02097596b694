"""Our Kronos engine on its own: cache correctness, sampling rules, forecaster properties, loading."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmarks.upstream.kronos import random_ours
from forecast_core.checkpoints import CheckpointError, save_checkpoint
from forecast_core.forecasters import BATCH_RTOL
from forecast_core.kronos.forecaster import (DEFAULT_TINY, KronosForecaster, KronosSamplingConfig, decode_tokens,
                                             frame_to_batch, load_kronos)
from forecast_core.kronos.sampling import draw_inverse_cdf, filter_probs
from forecast_core.synthetic import make_prices
from forecast_core.windows import WindowSpec, build_windows
from tests.support import assert_no_leakage

SPEC = WindowSpec(horizon=12, n_val=1, n_test=2, context=40)


@pytest.fixture(scope="module")
def ours():
    return random_ours(seed=5)


@pytest.fixture(scope="module")
def windows():
    return build_windows(make_prices(120, seed=4), SPEC, "TEST")


def test_kv_cache_matches_full_forward(ours):
    model, _ = ours
    torch.manual_seed(0)
    s1, s2 = torch.randint(0, 32, (2, 30)), torch.randint(0, 32, (2, 30))
    stamp = torch.randint(0, 7, (2, 30, 5))
    full_s1, _ = model(s1, s2, stamp, s1)  # teacher-forced pass over the whole sequence
    state = model.prefill(s1[:, :20], s2[:, :20], stamp[:, :20], rows_per_window=3, capacity=10)
    rows = lambda t: t.repeat_interleave(3, 0)  # noqa: E731
    for t in range(20, 30):
        model.extend(state, rows(s1[:, t:t + 1]), rows(s2[:, t:t + 1]), rows(stamp[:, t:t + 1]))
        torch.testing.assert_close(model.s1_logits(state), rows(full_s1[:, t]), rtol=1e-4, atol=1e-4)
    # s2 head: the dependency layer over the whole window equals the causal training pass
    s1_next = torch.roll(s1, -1, 1)
    _, full_s2 = model(s1, s2, stamp, s1_next)
    torch.testing.assert_close(model.s2_logits(state, rows(s1_next[:, 29])), rows(full_s2[:, 29]),
                               rtol=1e-4, atol=1e-4)


def test_greedy_temperature_zero_is_argmax_without_nan():
    logits = torch.randn(4, 50)
    probs = filter_probs(logits, torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.full((4,), 0.5))
    assert torch.isfinite(probs).all()
    assert torch.equal(probs.argmax(-1), logits.argmax(-1)) and torch.equal(probs.max(-1).values, torch.ones(4))


def test_top_k_and_top_p_both_apply_per_row():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]] * 4))
    t = torch.ones(4)
    k = torch.tensor([0, 3, 0, 3])
    p = torch.tensor([1.0, 1.0, 0.6, 0.6])
    kept = filter_probs(logits, t, k, p) > 0
    assert kept.sum(-1).tolist() == [5, 3, 2, 2]  # off, top-3, top-p, both (p applied after k)
    # the same rows one at a time give the same probabilities
    for i in range(4):
        torch.testing.assert_close(filter_probs(logits[i:i + 1], t[i:i + 1], k[i:i + 1], p[i:i + 1]),
                                   filter_probs(logits, t, k, p)[i:i + 1])


def test_inverse_cdf_never_picks_filtered_tokens():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).repeat(6, 1)
    u = torch.tensor([0.0, 0.25, 0.4999, 0.5, 0.75, 0.999999])
    assert draw_inverse_cdf(probs, u).tolist() == [1, 1, 1, 3, 3, 3]


def assert_same_paths(a: np.ndarray, b: np.ndarray, batch) -> None:
    """The same tokens decoded in differently shaped batches: close paths within BATCH_RTOL, not bitwise.

    A flipped token (see "Reproducibility" in the forecaster) would move a path by far more.
    """
    assert a.shape == b.shape
    level = np.abs(batch.column("close")).max(axis=1)[:, None, None]
    gap = float((np.abs(a - b) / level).max())
    assert gap <= BATCH_RTOL, f"paths differ by {gap:.3g} of the price level (bound {BATCH_RTOL:g})"


def test_paths_are_prefixes_batch_independent_and_shared_across_configs(ours, windows):
    model, tok = ours
    batch = windows.batch
    base = KronosSamplingConfig(temperature=0.8, top_p=0.95, max_context=48)
    other = dataclasses.replace(base, temperature=0.3, top_k=4)
    forecaster = KronosForecaster(model, tok, base)
    big = forecaster.sample_paths(batch, 6)
    assert big.shape == (3, 6, SPEC.horizon) and np.isfinite(big).all()
    np.testing.assert_array_equal(forecaster.sample_paths(batch, 6), big)  # same call: bitwise
    # Every comparison below decodes other row counts per pass: same tokens, paths within the bound.
    assert_same_paths(forecaster.sample_paths(batch, 2), big[:, :2], batch)
    # one window at a time, or chunked by max_rows: same paths
    single = KronosForecaster(model, tok, base, max_rows=1)
    assert_same_paths(single.sample_paths(batch, 6), big, batch)
    # several configs from one prefill = separate calls
    together = forecaster.sample_configs(batch, [dataclasses.replace(other, sample_count=3),
                                                  dataclasses.replace(base, sample_count=6)])
    assert_same_paths(together[1], big, batch)
    assert_same_paths(together[0], KronosForecaster(model, tok, other).sample_paths(batch, 3), batch)
    # the bound still sees a mix-up: each sample's path is far from its neighbour's
    level = np.abs(batch.column("close")).max(axis=1)[:, None]
    assert (np.abs(big[:, 1:] - big[:, :-1]).max(axis=2) / level).min() > 100 * BATCH_RTOL


def naive_greedy(model, s1, s2, stamps, horizon, max_context):
    """Upstream's algorithm with our model: re-run the last max_context tokens at every step."""
    for _ in range(horizon):
        lo = max(0, s1.shape[1] - max_context)
        w1, w2, ws = s1[:, lo:], s2[:, lo:], stamps[:, lo:s1.shape[1]]
        t1 = model(w1, w2, ws, w1)[0][:, -1].argmax(-1)
        t2 = model(w1, w2, ws, torch.cat((w1[:, 1:], t1[:, None]), 1))[1][:, -1].argmax(-1)
        s1, s2 = torch.cat((s1, t1[:, None]), 1), torch.cat((s2, t2[:, None]), 1)
    return s1[:, -horizon:], s2[:, -horizon:]


@pytest.mark.parametrize("max_context", [40, 30], ids=["cache-exact", "window-slides"])
def test_decoding_matches_full_recompute(ours, max_context):
    model, _ = ours
    torch.manual_seed(1)
    s1, s2 = torch.randint(0, 32, (2, 24)), torch.randint(0, 32, (2, 24))
    stamps = torch.randint(0, 7, (2, 24 + 16, 5))
    gaps = []

    def greedy(logits, step, stage):
        top = logits.topk(2, -1).values
        gaps.append(float((top[:, 0] - top[:, 1]).min()))
        return logits.argmax(-1)

    want = naive_greedy(model, s1, s2, stamps, 16, max_context)
    exact = decode_tokens(model, s1, s2, stamps, 16, 1, max_context, 1, greedy)
    # The cache and the full recompute round differently (logits <= 3.6e-7 apart here, see
    # test_kv_cache_matches_full_forward); equal tokens are a sound claim only while no arg-max is
    # near a tie (smallest gap here: 3.4e-3).
    assert min(gaps) > 1e-4, f"a greedy choice is {min(gaps):.2g} from a tie: rounding could flip it"
    assert torch.equal(exact[0], want[0]) and torch.equal(exact[1], want[1])
    fast = decode_tokens(model, s1, s2, stamps, 16, 1, max_context, 4, greedy)
    same_until = max_context - 24 + 1  # steps before the window first slides
    assert torch.equal(fast[0][:, :same_until], want[0][:, :same_until])


def test_no_leakage(ours):
    model, tok = ours
    forecaster = KronosForecaster(model, tok, KronosSamplingConfig(max_context=44), refresh_every=4)
    assert_no_leakage(forecaster, make_prices(120, seed=9), SPEC, num_samples=3)


def test_volume_and_amount_never_negative(ours, windows):
    model, tok = ours
    bars = KronosForecaster(model, tok).sample_bars(windows.batch, [KronosSamplingConfig(sample_count=4)])[0]
    assert bars.shape == (3, 4, SPEC.horizon, 6) and (bars[..., 4:] >= 0).all()


def test_input_errors_are_clear(ours):
    model, tok = ours
    forecaster = KronosForecaster(model, tok, KronosSamplingConfig(max_context=32))
    frame = make_prices(60, seed=1)
    with pytest.raises(ValueError, match=r"missing \['close'\]"):
        frame_to_batch(frame.drop(columns=["close"]), 8)
    spoiled = frame.copy()
    spoiled.loc[5, "high"] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf values in columns \['high'\]"):
        forecaster.sample_paths(frame_to_batch(spoiled, 8), 2)
    with pytest.raises(ValueError, match="at least 8 context bars"):
        forecaster.sample_paths(frame_to_batch(frame.iloc[:5], 8), 2)
    with pytest.raises(ValueError, match="horizon 40 exceeds max_context 32"):
        forecaster.sample_paths(frame_to_batch(frame, 40), 2)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        KronosSamplingConfig(temperature=-1)
    # volume/amount are optional in a bare frame: amount = volume * mean(OHLC), volume = 0
    batch = frame_to_batch(frame.drop(columns=["volume", "amount"]), 8)
    assert (batch.column("volume") == 0).all() and (batch.column("amount") == 0).all()


def test_shipped_tiny_checkpoint_forecasts(windows):
    model, tok = load_kronos()
    paths = KronosForecaster(model, tok, KronosSamplingConfig(max_context=48)).sample_paths(windows.batch, 4)
    assert np.isfinite(paths).all() and (paths > 0).all()


def test_strict_loading_names_problems(ours, tmp_path, monkeypatch):
    model, tok = ours
    save_checkpoint(tok, tok.config.to_dict(), tmp_path / "tok")
    directory = save_checkpoint(model, model.config.to_dict(), tmp_path / "model")
    state = load_file(str(directory / "model.safetensors"))
    del state["head.proj_s2.bias"]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \['head.proj_s2.bias'\]"):
        load_kronos(directory, tmp_path / "tok")
    (directory / "config.json").write_text('{"d_model": 8, "colour": 1}')
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        load_kronos(directory, tmp_path / "tok")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="Without network"):
        load_kronos("NeoQuasar/Kronos-does-not-exist", tmp_path / "tok")
    assert DEFAULT_TINY.endswith("kronos-tiny/model")
