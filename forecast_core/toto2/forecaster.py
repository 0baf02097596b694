"""Toto 2.0 as a forecaster over :class:`~forecast_core.forecasters.ContextBatch` windows.

API::

    model = load_toto2("Datadog/Toto-2.0-22m", revision=COMMIT)      # or a local directory
    toto2 = Toto2Forecaster(model, columns=("close",), context_length=None, decode_block_size=None)
    q = toto2.quantiles(batch)      # [windows, 9, horizon] close quantiles, levels QUANTILE_LEVELS

Deterministic: the same windows give the same quantiles (no sampling, no seed; ``batch.seeds`` is
unused). Each window sees only its context: the last ``context_length`` bars (default: the longest
whole number of patches the batch holds). ``columns`` are the series fed as variates (the close must
be one of them; its quantiles are returned): ``("close",)`` univariate, ``("open", "high", "low",
"close")`` or with ``"volume"`` multivariate. Contexts whose mean |close| is below
:data:`forecast_core.forecasters.MIN_PRICE_LEVEL` are lifted by a power of two and the quantiles
divided back (exact in floating point), as the other engines do.
"""

from __future__ import annotations

import numpy as np
import torch

from forecast_core.forecasters import PRICE_COLUMNS, ContextBatch

from .model import QUANTILE_CAP_K, QUANTILE_LEVELS, Toto2Model

UNIVARIATE = ("close",)
OHLC = ("open", "high", "low", "close")
OHLCV = ("open", "high", "low", "close", "volume")


class Toto2Forecaster:
    def __init__(self, model: Toto2Model, columns: tuple[str, ...] = UNIVARIATE, context_length: int | None = None,
                 decode_block_size: int | None = None, quantile_cap_k: float = QUANTILE_CAP_K, name: str = "toto2"):
        p = model.config.patch_size
        unknown = [c for c in columns if c not in PRICE_COLUMNS]
        if unknown or "close" not in columns or len(set(columns)) != len(columns):
            raise ValueError(f"{name}: columns {columns} must be distinct names from {PRICE_COLUMNS} "
                             "including 'close'")
        if context_length is not None and (context_length < p or context_length % p):
            raise ValueError(f"{name}: context_length {context_length} must be a positive multiple of the "
                             f"patch size {p}")
        if decode_block_size is not None and (decode_block_size < p or decode_block_size % p):
            raise ValueError(f"{name}: decode_block_size {decode_block_size} must be None or a positive "
                             f"multiple of the patch size {p}")
        self.model = model.eval()
        self.columns = tuple(columns)
        self.context_length = context_length
        self.decode_block_size = decode_block_size
        self.quantile_cap_k = quantile_cap_k
        self.name = name
        self.levels = QUANTILE_LEVELS

    def quantiles(self, batch: ContextBatch) -> np.ndarray:
        """Close quantiles ``[windows, len(QUANTILE_LEVELS), horizon]`` (float64, price units)."""
        batch, factor = batch.lifted()
        context = self._context(batch)
        out = self.model.forecast(context, batch.horizon, decode_block_size=self.decode_block_size,
                                  quantile_cap_k=self.quantile_cap_k)
        close = out[:, :, self.columns.index("close")].permute(1, 0, 2)
        return close.double().cpu().numpy() / factor[:, None, None]

    def _context(self, batch: ContextBatch) -> torch.Tensor:
        p = self.model.config.patch_size
        length = self.context_length or (batch.context_length // p) * p
        if length < p or length > batch.context_length:
            raise ValueError(f"{self.name}: needs a context of {self.context_length or f'at least {p}'} bars "
                             f"(a multiple of the patch size {p}); the batch has {batch.context_length}")
        values = batch.values[:, -length:, [PRICE_COLUMNS.index(c) for c in self.columns]]
        if not np.isfinite(values).all():
            raise ValueError(f"{self.name}: context values of {self.columns} contain NaN or inf; clean the data "
                             "first")
        return torch.as_tensor(values.transpose(0, 2, 1).copy(), device=self.model.device).to(self.model.dtype)
