"""Train the tiny Toto 2.0 checkpoint shipped in ``forecast_core/weights/toto2-tiny``.

It exists so the Toto 2.0 engine runs offline on real (if modest) weights in the published format
(``config.json`` + ``model.safetensors``, written by :func:`forecast_core.toto2.save_toto2`) without
downloading Datadog's Toto-2.0 checkpoints. The ``toto-2`` package ships no training code, so the
objective follows what its inference does: every output position predicts the 9 quantiles of the
next patch (causal patches), and a forecast appends empty (unobserved) patches to the context and
reads the next patches off them in one pass. Each training crop is therefore a close-price context
of 16-32 patches followed by 64 bars written as unobserved patches; the pinball loss (9 levels, in
the model's ``asinh`` standardised space, each target patch scaled by the causal scaler at the end
of the patch before it, as a forecast rescales) is averaged over the teacher-forced context patches
and, separately, over the masked target patches, and the two means are added. Only bars before
each symbol's first validation window are used, so the validation and test windows of the default
spec stay unseen. Weights start at unit scale (u-muP, as upstream's ``reset_parameters``).
Deterministic for a given seed (single thread). At the end it prints test MAE% of the median next to
persistence.

    .venv/bin/python scripts/train_tiny_toto2.py --out forecast_core/weights/toto2-tiny
"""

from __future__ import annotations

import time

import numpy as np
import torch

from forecast_core.forecasters import Persistence
from forecast_core.metrics import mae_pct
from forecast_core.sources import EmbeddedSource
from forecast_core.toto2 import QUANTILE_LEVELS, Toto2Config, Toto2Forecaster, Toto2Model, save_toto2
from forecast_core.toto2.model import MEDIAN, ScaledLinear, causal_patch_scaler
from forecast_core.windows import TEST, WindowSpec, build_windows
# The same data cut (bars before each symbol's first validation origin) and crop augmentation as
# toto-tiny; this script runs from scripts/, where that one lives.
from train_tiny_toto import sample_batch, training_run, training_series

SPEC = WindowSpec(horizon=64, n_val=8, n_test=8, context=512)
PATCH = 16
TINY = Toto2Config(patch_size=PATCH, d_model=64, num_heads=4, num_layers=3, layer_group_size=3,
                   num_variate_layers_per_group=1, variate_layer_first=False,
                   # upstream rule (Toto2ModelConfig.compute_residual_attn_ratio): sqrt(S / log S), S = 512 / patch
                   residual_attn_ratio=float(np.sqrt((512 / PATCH) / np.log(512 / PATCH))))
CONTEXT_PATCHES = (16, 32)  # context of 256 ... 512 bars
TARGET_PATCHES = SPEC.horizon // PATCH


def unit_scale_init(model: Toto2Model) -> None:
    """u-muP initialisation (upstream ``uu.Linear.reset_parameters``): weights N(0, 1), biases 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ScaledLinear):
                module.weight.normal_(0.0, 1.0)
                if module.bias is not None:
                    module.bias.zero_()


def pinball(model: Toto2Model, batch: torch.Tensor, context_patches: int) -> torch.Tensor:
    """Pinball loss of every next patch: teacher-forced over the context, then over the masked target."""
    p = model.config.patch_size
    observed = torch.zeros_like(batch, dtype=torch.bool)
    observed[..., : context_patches * p] = True
    loc, scale = causal_patch_scaler(batch, observed, p)
    hidden = model.hidden(torch.where(observed, batch, torch.zeros_like(batch)), observed, loc, scale)
    predicted = model.output_head.param_projection(hidden[:, :, :-1])  # [B, V, N-1, p, 9]
    patch_loc = loc.unflatten(-1, (-1, p))[..., :-1, -1:]  # scaler at the end of the patch before
    patch_scale = scale.unflatten(-1, (-1, p))[..., :-1, -1:]
    target = ((batch.unflatten(-1, (-1, p))[..., 1:, :] - patch_loc) / patch_scale).asinh()
    levels = torch.tensor(QUANTILE_LEVELS, dtype=batch.dtype)
    error = target[..., None] - predicted
    loss = torch.maximum(levels * error, (levels - 1) * error).mean(dim=(0, 1, 3, 4))  # per predicted patch
    return loss[: context_patches - 1].mean() + loss[context_patches - 1:].mean()


def evaluate(model: Toto2Model, spec: WindowSpec) -> dict[str, dict[str, float]]:
    """Per symbol: mean test MAE% of the Toto 2.0 median and of persistence."""
    source, toto2 = EmbeddedSource(), Toto2Forecaster(model, context_length=spec.context)
    scores = {}
    for symbol in source.symbols():
        test = build_windows(source.load(symbol), spec, symbol).split(TEST)
        median = toto2.quantiles(test.batch)[:, MEDIAN]
        persistence = Persistence().sample_paths(test.batch)[:, 0]
        scores[symbol] = {"toto2_median": float(mae_pct(median, test.targets).mean()),
                          "persistence": float(mae_pct(persistence, test.targets).mean())}
    return scores


def main() -> None:
    args, rng = training_run(__doc__, "forecast_core/weights/toto2-tiny", steps=2000, lr=1e-2)
    series = training_series(SPEC)
    model = Toto2Model(TINY)
    unit_scale_init(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps)
    began = time.perf_counter()
    for step in range(1, args.steps + 1):
        context_patches = int(rng.integers(CONTEXT_PATCHES[0], CONTEXT_PATCHES[1] + 1))
        batch = sample_batch(series, args.batch_size, (context_patches + TARGET_PATCHES) * PATCH, rng).float()
        loss = pinball(model, batch, context_patches)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:5d}  pinball {loss.item():.4f}  {time.perf_counter() - began:.0f}s", flush=True)
    model.eval()
    save_toto2(model, args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"saved {args.out} ({params:,} parameters) after {time.perf_counter() - began:.0f}s of training")
    scores = evaluate(model, SPEC)
    print(f"test MAE% (spec {SPEC.as_dict()}, median of 9 quantiles, {SPEC.n_test} test windows per symbol):")
    print(f"{'symbol':8s} {'toto2-tiny':>10s} {'persistence':>11s}")
    for symbol, s in scores.items():
        print(f"{symbol:8s} {s['toto2_median']:10.2f} {s['persistence']:11.2f}")
    means = {k: float(np.mean([s[k] for s in scores.values()])) for k in ("toto2_median", "persistence")}
    print(f"{'mean':8s} {means['toto2_median']:10.2f} {means['persistence']:11.2f}")


if __name__ == "__main__":
    main()
