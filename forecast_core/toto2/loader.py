"""Loading and saving Toto 2.0 checkpoints (``config.json`` + ``model.safetensors``), strictly.

Sources are found like every other engine's (:func:`forecast_core.checkpoints.resolve_checkpoint`):
a local directory, or a Hugging Face repo id such as ``Datadog/Toto-2.0-22m`` at a pinned revision
through the local cache (``HF_HUB_OFFLINE=1`` keeps it there; without network and cache the error
says how to provide the weights). Every weight must be present with its shape; missing, unexpected
and mis-shaped keys are named. Upstream's loader drops nothing and ignores unknown ``config.json``
keys; here they are ignored too (they cannot change the network upstream builds) and logged.

Sharded checkpoints (``model.safetensors.index.json``) are not read: the shared resolver fetches a
single ``model.safetensors``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from forecast_core.checkpoints import (
    CheckpointError, load_strict, read_config, resolve_checkpoint, save_checkpoint,
)

from .model import Toto2Config, Toto2ConfigError, Toto2Model, residual_tau

log = logging.getLogger(__name__)

TOTO2_REPOS = tuple(f"Datadog/Toto-2.0-{size}" for size in ("4m", "22m", "313m", "1B", "2.5B"))
# The offline default: trained by scripts/train_tiny_toto2.py on the embedded data (its README).
DEFAULT_TINY_DIR = Path(__file__).resolve().parents[1] / "weights" / "toto2-tiny"
# Buffers this implementation computes itself and that a checkpoint may carry: dropped (and logged)
# when present, never required. Upstream keeps its rotary tables out of checkpoints, so none is known
# today; the residual taus are stored by upstream and are loaded, then checked against the rule.
COMPUTED_BUFFERS: tuple[str, ...] = ()
TAU_RTOL = 1e-6


def config_from_checkpoint(directory: Path) -> Toto2Config:
    raw = read_config(directory)
    try:
        config, ignored = Toto2Config.from_dict(raw)
    except (Toto2ConfigError, TypeError) as exc:
        raise CheckpointError(f"{Path(directory) / 'config.json'}: {exc}") from exc
    if ignored:
        log.info("toto2: %s: ignoring config keys %s (upstream ignores them too)", directory, ignored)
    return config


def load_toto2(source: str | Path, revision: str | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float32) -> Toto2Model:
    """Build the network from ``config.json`` and load ``model.safetensors`` strictly."""
    directory = resolve_checkpoint(source, revision)
    model = Toto2Model(config_from_checkpoint(directory))
    load_strict(model, directory, computed_suffixes=COMPUTED_BUFFERS)
    _check_residual_taus(model, directory)
    return model.to(device=device, dtype=dtype).eval()


def save_toto2(model: Toto2Model, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that upstream ``toto-2`` and :func:`load_toto2` read."""
    return save_checkpoint(model, model.config.to_dict(), Path(directory))


def _check_residual_taus(model: Toto2Model, directory: Path) -> None:
    c = model.config
    wrong = []
    for i, layer in enumerate(model.transformer.layers):
        for name, index in (("attn_tau", 2 * i), ("mlp_tau", 2 * i + 1)):
            expected = residual_tau(index, 2 * c.num_layers, c.residual_mult, c.residual_attn_ratio)
            stored = float(getattr(layer, name))
            if abs(stored - expected) > TAU_RTOL * abs(expected):
                wrong.append(f"transformer.layers.{i}.{name}: {stored} vs {expected}")
    if wrong:
        raise CheckpointError(f"{directory}: stored residual taus disagree with config.json (residual_mult, "
                              f"residual_attn_ratio, num_layers): {wrong[:5]}")
