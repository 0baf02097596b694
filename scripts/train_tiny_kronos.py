"""Train the tiny Kronos tokenizer and model shipped as the offline default (CPU, a few minutes).

Data: the embedded daily bars (6 symbols). Only bars before each symbol's first *validation* window
origin are used for training, so validation and test targets are never seen. Each training sequence
is a random crop, z-scored per column over the crop and clipped to +-5 (what the predictor does to a
context). Stage 1 trains the tokenizer (reconstruction from s1+s2 and from s1 alone, prices weighted
4x volume/amount, plus BSQ commitment; upstream's entropy penalty is not used). Stage 2 freezes it, tokenises crops and trains
the model with next-token cross-entropy on s1 and on s2 given the true next s1 (teacher forcing).
Finally it reports test MAE% next to persistence on the project's window spec.

    python scripts/train_tiny_kronos.py            # writes forecast_core/weights/kronos-tiny/
    python scripts/train_tiny_kronos.py --out /tmp/tiny --steps-tokenizer 50 --steps-model 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from forecast_core.aggregate import aggregate
from forecast_core.checkpoints import save_checkpoint
from forecast_core.forecasters import PRICE_COLUMNS, Persistence
from forecast_core.kronos.forecaster import (KronosForecaster, KronosSamplingConfig, load_kronos, normalize,
                                             time_features)
from forecast_core.kronos.model import Kronos, KronosConfig
from forecast_core.kronos.tokenizer import KronosTokenizer, TokenizerConfig
from forecast_core.metrics import mae_pct
from forecast_core.sources import EmbeddedSource
from forecast_core.windows import TEST, WindowSpec, build_windows

TOKENIZER = TokenizerConfig(d_in=6, d_model=32, n_heads=2, ff_dim=64, n_enc_layers=3, n_dec_layers=3,
                            s1_bits=8, s2_bits=8, group_size=4)
MODEL = KronosConfig(s1_bits=8, s2_bits=8, n_layers=2, d_model=64, n_heads=4, ff_dim=128,
                     ffn_dropout_p=0.1, attn_dropout_p=0.0, resid_dropout_p=0.1, token_dropout_p=0.0)
SPEC = WindowSpec()  # horizon 64, 8 validation + 8 test windows, context 512
CLIP = 5.0
COLUMN_WEIGHTS = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.25, 0.25])  # prices matter more than volume/amount


def training_series() -> list[tuple[np.ndarray, np.ndarray]]:
    """(values [n, 6], time features [n, 5]) per symbol, cut before its first validation origin."""
    source = EmbeddedSource()
    series = []
    for symbol in source.symbols():
        frame = source.load(symbol)
        first_origin = int(build_windows(frame, SPEC, symbol).origins[0])
        frame = frame.iloc[:first_origin]
        series.append((frame.loc[:, list(PRICE_COLUMNS)].to_numpy(np.float64),
                       time_features(frame["timestamp"].to_numpy("datetime64[ns]"))))
    return series


def crops(series, rng: np.random.Generator, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, each z-scored over itself and clipped like a forecast context."""
    values, stamps = [], []
    for _ in range(batch):
        v, s = series[rng.integers(len(series))]
        lo = rng.integers(0, len(v) - length + 1)
        values.append(v[lo:lo + length])
        stamps.append(s[lo:lo + length])
    x, _, _ = normalize(np.stack(values), CLIP)
    return torch.from_numpy(x), torch.from_numpy(np.stack(stamps))


def train_tokenizer(series, rng, steps: int, log_every: int) -> KronosTokenizer:
    tok = KronosTokenizer(TOKENIZER)
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for step in range(steps):
        x, _ = crops(series, rng, 16, 128)
        pre, full, commit = tok.reconstruct(x)
        error = lambda y: ((y - x) ** 2 * COLUMN_WEIGHTS).mean()  # noqa: E731
        loss = error(full) + 0.5 * error(pre) + commit
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"tokenizer step {step:5d} loss {loss.item():.4f}", flush=True)
    return tok.eval()


def train_model(series, tok: KronosTokenizer, rng, steps: int, length: int, log_every: int) -> Kronos:
    model = Kronos(MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    for step in range(steps):
        x, stamp = crops(series, rng, 8, length + 1)
        s1, s2 = tok.encode(x)
        s1_logits, s2_logits = model(s1[:, :-1], s2[:, :-1], stamp[:, :-1], s1[:, 1:])
        loss = (F.cross_entropy(s1_logits.flatten(0, 1), s1[:, 1:].flatten())
                + F.cross_entropy(s2_logits.flatten(0, 1), s2[:, 1:].flatten())) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"model step {step:5d} loss {loss.item():.4f}", flush=True)
    return model.eval()


def evaluate(out: Path, samples: int) -> None:
    """Test MAE% (mean of the sample paths) of the saved checkpoint vs persistence, per symbol."""
    model, tok = load_kronos(out / "model", out / "tokenizer")
    config = KronosSamplingConfig(sample_count=samples)  # upstream defaults: T 1.0, top_p 0.9, ctx 512
    kronos = KronosForecaster(model, tok, config)
    source = EmbeddedSource()
    rows = []
    for symbol in source.symbols():
        windows = build_windows(source.load(symbol), SPEC, symbol).split(TEST)
        point = aggregate(kronos.sample_paths(windows.batch, samples), "mean", sample_axis=1)
        naive = Persistence().sample_paths(windows.batch)[:, 0]
        rows.append((symbol, mae_pct(point, windows.targets).mean(), mae_pct(naive, windows.targets).mean()))
        print(f"{symbol:5s} test MAE% kronos-tiny {rows[-1][1]:6.2f}  persistence {rows[-1][2]:6.2f}", flush=True)
    print(f"mean  test MAE% kronos-tiny {np.mean([r[1] for r in rows]):6.2f}  "
          f"persistence {np.mean([r[2] for r in rows]):6.2f}  ({len(rows)} symbols x {SPEC.n_test} test windows, "
          f"H {SPEC.horizon}, context {SPEC.context}, {samples} samples, mean aggregate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "forecast_core/weights/kronos-tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-tokenizer", type=int, default=1000)
    parser.add_argument("--steps-model", type=int, default=600)
    parser.add_argument("--length", type=int, default=512, help="model training sequence length")
    parser.add_argument("--eval-samples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: deterministic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    series = training_series()
    tok = train_tokenizer(series, rng, args.steps_tokenizer, log_every=250)
    save_checkpoint(tok, TOKENIZER.to_dict(), args.out / "tokenizer")
    model = train_model(series, tok, rng, args.steps_model, args.length, log_every=250)
    save_checkpoint(model, MODEL.to_dict(), args.out / "model")
    print(f"trained in {time.perf_counter() - started:.0f} s; wrote {args.out}", flush=True)
    evaluate(args.out, args.eval_samples)


if __name__ == "__main__":
    main()
