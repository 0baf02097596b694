"""Small random Kronos configs for tests, and upstream Kronos (test-only install) when present.

Upstream is ``kronos-model-arch==0.1.0``, which `make test` installs without its pins into
``.upstream/kronos`` together with einops (UPSTREAM_KRONOS in the Makefile).

It installs a top-level package named ``model``; it is imported from that directory only.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from forecast_core.kronos.model import Kronos, KronosConfig
from forecast_core.kronos.tokenizer import KronosTokenizer, TokenizerConfig

UPSTREAM_DIR = Path(__file__).resolve().parents[2] / ".upstream" / "kronos"
SKIP_REASON = f"upstream Kronos not installed in {UPSTREAM_DIR}: run `make .upstream/.installed`"

TOKENIZER_KWARGS = dict(d_in=6, d_model=32, n_heads=4, ff_dim=64, n_enc_layers=3, n_dec_layers=3,
                        ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=5, s2_bits=5,
                        beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=5)
MODEL_KWARGS = dict(s1_bits=5, s2_bits=5, n_layers=2, d_model=32, n_heads=4, ff_dim=64, ffn_dropout_p=0.0,
                    attn_dropout_p=0.0, resid_dropout_p=0.0, token_dropout_p=0.0, learn_te=True)


def upstream_module():
    """Upstream's ``model`` package, or None when it is not installed for tests."""
    if not (UPSTREAM_DIR / "model" / "__init__.py").is_file():
        return None
    if str(UPSTREAM_DIR) not in sys.path:
        sys.path.insert(0, str(UPSTREAM_DIR))
    return importlib.import_module("model")


def random_ours(seed: int = 0, model_kwargs: dict = MODEL_KWARGS, tokenizer_kwargs: dict = TOKENIZER_KWARGS):
    """Our model and tokenizer with random weights (eval mode)."""
    torch.manual_seed(seed)
    tok = KronosTokenizer(TokenizerConfig.from_dict(tokenizer_kwargs)).eval()
    model = Kronos(KronosConfig.from_dict(model_kwargs)).eval()
    return model, tok


def random_pair(seed: int = 0, model_kwargs: dict = MODEL_KWARGS, tokenizer_kwargs: dict = TOKENIZER_KWARGS):
    """(upstream model, upstream tokenizer, our model, our tokenizer) sharing random weights."""
    up = upstream_module()
    torch.manual_seed(seed)
    up_tok = up.KronosTokenizer(**tokenizer_kwargs).eval()
    up_model = up.Kronos(**model_kwargs).eval()
    model, tok = random_ours(seed, model_kwargs, tokenizer_kwargs)
    model.load_state_dict(up_model.state_dict(), strict=True)
    tok.load_state_dict(up_tok.state_dict(), strict=True)
    return up_model, up_tok, model, tok
