"""Train the tiny Toto checkpoint shipped in ``forecast_core/weights/toto-tiny``.

It exists so the offline demo makes real (if modest) forecasts in the published Toto format
without downloading the 151M-parameter model. Objective: negative log-likelihood of every next
patch under the Student-T mixture, teacher-forced over 9-patch (576-bar) close-price segments of
the embedded daily data. Only bars before the first validation window are used, so the
validation and test windows of the default spec stay unseen. Deterministic for a given seed
(single thread). At the end it prints test MAE% next to persistence.

    .venv/bin/python scripts/train_tiny_toto.py --out forecast_core/weights/toto-tiny
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from forecast_core.forecasters import Persistence
from forecast_core.metrics import mae_pct
from forecast_core.sources import EmbeddedSource
from forecast_core.toto import TotoConfig, TotoForecaster, TotoModel
from forecast_core.windows import TEST, WindowSpec, build_windows

TINY = TotoConfig(embed_dim=48, num_layers=3, num_heads=4, mlp_hidden_dim=96, spacewise_every_n_layers=3,
                  spacewise_first=False, k_components=8, dropout=0.0)
SPEC = WindowSpec(horizon=64, n_val=8, n_test=8, context=512)
SEGMENT_PATCHES = 9


def training_series(spec: WindowSpec) -> list[np.ndarray]:
    """Close prices of each embedded symbol, cut before its first validation window's target."""
    source, out = EmbeddedSource(), []
    for symbol in source.symbols():
        frame = source.load(symbol)
        first_origin = build_windows(frame, spec, symbol).origins.min()
        out.append(frame["close"].to_numpy(np.float64)[:first_origin])
    return out


def sample_batch(series: list[np.ndarray], size: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """Random segments, augmented so 6 symbols' history is not memorised: the segment's daily
    log-returns are mirrored with probability 1/2 and scaled by a factor in [0.5, 2]."""
    rows = []
    for _ in range(size):
        s = series[rng.integers(len(series))]
        start = rng.integers(0, len(s) - length + 1)
        returns = np.diff(np.log(s[start : start + length]))
        returns *= rng.choice([-1.0, 1.0]) * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        rows.append(s[start] * np.exp(np.concatenate([[0.0], np.cumsum(returns)])))
    return torch.as_tensor(np.stack(rows))[:, None, :]


def nll(model: TotoModel, batch: torch.Tensor) -> torch.Tensor:
    """Mean NLL (scaled space) of patches 1..N-1, each predicted from the patches before it."""
    mixture, loc, scale = model(batch)
    p = model.config.patch_size
    target = batch.unflatten(-1, (-1, p))[:, :, 1:]
    z = ((target - loc[..., :-1, None]) / scale[..., :-1, None]).float()
    return -mixture.map(lambda t: t[:, :, :-1]).log_prob(z).mean()


def evaluate(model: TotoModel, spec: WindowSpec, num_samples: int = 256) -> dict:
    """Mean test MAE% over symbols x test windows: Toto median / mean of samples, and persistence."""
    source, toto = EmbeddedSource(), TotoForecaster(model, context_length=spec.context)
    scores = {"toto_median": [], "toto_mean": [], "persistence": []}
    for symbol in source.symbols():
        test = build_windows(source.load(symbol), spec, symbol).split(TEST)
        paths = toto.sample_paths(test.batch, num_samples)
        scores["toto_median"].append(mae_pct(np.median(paths, axis=1), test.targets))
        scores["toto_mean"].append(mae_pct(paths.mean(axis=1), test.targets))
        scores["persistence"].append(mae_pct(Persistence().sample_paths(test.batch)[:, 0], test.targets))
    return {k: float(np.concatenate(v).mean()) for k, v in scores.items()}


def training_run(description: str, out: str, steps: int, lr: float) -> tuple[argparse.Namespace, np.random.Generator]:
    """The tiny scripts' shared command line (``--out --steps --batch-size --lr --seed``, these defaults)
    and their deterministic start: one CPU thread, torch seeded; returns the arguments and the crop RNG."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    return args, np.random.default_rng(args.seed)


def main() -> None:
    args, rng = training_run(__doc__, "forecast_core/weights/toto-tiny", steps=600, lr=3e-3)
    series = training_series(SPEC)
    model = TotoModel(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps)
    length = SEGMENT_PATCHES * TINY.patch_size
    began = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = nll(model, sample_batch(series, args.batch_size, length, rng))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == 1:
            print(f"step {step:5d}  nll {loss.item():.4f}  {time.perf_counter() - began:.0f}s", flush=True)
    model.eval()
    model.save(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"saved {args.out} ({params:,} parameters) after {time.perf_counter() - began:.0f}s of training")
    scores = evaluate(model, SPEC)
    print(f"test MAE% (spec {SPEC.as_dict()}, 256 samples, 6 symbols x {SPEC.n_test} windows): "
          + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
