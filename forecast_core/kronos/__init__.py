"""Kronos inference (tokenizer + model) written for this project, loading the published checkpoints.

Modules: :mod:`.layers` (blocks and the shared-prefix KV cache), :mod:`.tokenizer`, :mod:`.model`,
:mod:`.sampling` (per-row temperature/top-k/top-p and the two random-number orders), and
:mod:`.forecaster` (the predictor behind the Forecaster protocol; its docstring documents the API).
"""

from .forecaster import (DEFAULT_REFRESH_EVERY, DEFAULT_TINY, DEFAULT_TINY_TOKENIZER, KronosForecaster,
                         KronosSamplingConfig, frame_to_batch, load_kronos)
from .model import Kronos, KronosConfig
from .tokenizer import KronosTokenizer, TokenizerConfig

__all__ = [
    "DEFAULT_REFRESH_EVERY", "DEFAULT_TINY", "DEFAULT_TINY_TOKENIZER", "Kronos", "KronosConfig",
    "KronosForecaster", "KronosSamplingConfig", "KronosTokenizer", "TokenizerConfig", "frame_to_batch",
    "load_kronos",
]
