"""Toto 2.0 (Datadog's Toto-2.0 checkpoints) inference: quantile forecasts from a ContextBatch."""

from .forecaster import OHLC, OHLCV, UNIVARIATE, Toto2Forecaster
from .loader import COMPUTED_BUFFERS, DEFAULT_TINY_DIR, TOTO2_REPOS, load_toto2, save_toto2
from .model import QUANTILE_LEVELS, Toto2Config, Toto2ConfigError, Toto2Model

__all__ = [
    "COMPUTED_BUFFERS", "DEFAULT_TINY_DIR", "OHLC", "OHLCV", "QUANTILE_LEVELS", "TOTO2_REPOS", "UNIVARIATE", "Toto2Config",
    "Toto2ConfigError", "Toto2Forecaster", "Toto2Model", "load_toto2", "save_toto2",
]
