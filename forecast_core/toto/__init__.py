"""Toto (Datadog's Toto-Open-Base-1.0) inference for tuning: see :mod:`.forecaster` for the API."""

from .forecaster import DEFAULT_TINY_DIR, TOTO_BASE_REPO, GridForecast, RunInfo, TotoForecaster, load_toto
from .model import TotoConfig, TotoModel

__all__ = [
    "DEFAULT_TINY_DIR", "TOTO_BASE_REPO", "GridForecast", "RunInfo", "TotoConfig", "TotoForecaster", "TotoModel",
    "load_toto",
]
