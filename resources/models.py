"""Model runtimes: Toto and Kronos loaded once per step process and kept resident across trials."""

from __future__ import annotations

import os

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from forecast_core.checkpoints import checkpoint_revision, resolve_checkpoint
from forecast_core.device import resolve_device, resolve_dtype
from forecast_core.kronos.forecaster import DEFAULT_TINY, DEFAULT_TINY_TOKENIZER, KronosForecaster, load_kronos
from forecast_core.toto import DEFAULT_TINY_DIR, TotoForecaster, load_toto


class _ResidentModel(ConfigurableResource):
    """A forecaster loaded once in ``setup_for_execution`` and reused by every trial of the step."""

    _forecaster: object = PrivateAttr(default=None)
    _revision: str = PrivateAttr(default="")

    @property
    def forecaster(self):
        if self._forecaster is None:
            raise RuntimeError(f"{type(self).__name__} used outside a Dagster step; call setup_for_execution first")
        return self._forecaster

    @property
    def model_revision(self) -> str:
        """Commit or content hash of the loaded weights: part of every trial's identity."""
        return self._revision


class TotoRuntime(_ResidentModel):
    """Toto weights (local dir or Hugging Face repo id at a pinned revision), device and chunk size."""

    source: str = Field(default_factory=lambda: os.environ.get("HPO_TOTO_SOURCE", str(DEFAULT_TINY_DIR)),
                        description="checkpoint dir or repo id, e.g. Datadog/Toto-Open-Base-1.0 "
                                    "(default: $HPO_TOTO_SOURCE or the bundled tiny checkpoint)")
    revision: str = Field(default="", description="Hugging Face commit to pin (empty: main / local dir)")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(default="float32", description="float32 | bfloat16 | float16")
    samples_per_batch: int = Field(default=512, description="sample chunk size: memory/speed only, never results")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        directory = resolve_checkpoint(self.source, self.revision or None)
        model = load_toto(directory, device=resolve_device(self.device), dtype=resolve_dtype(self.dtype))
        self._forecaster = TotoForecaster(model, samples_per_batch=self.samples_per_batch)
        self._revision = checkpoint_revision(directory)



class KronosRuntime(_ResidentModel):
    """Kronos model + tokenizer (local dirs or repo ids at pinned revisions) and device."""

    source: str = Field(default_factory=lambda: os.environ.get("HPO_KRONOS_SOURCE", DEFAULT_TINY),
                        description="model dir or repo id, e.g. NeoQuasar/Kronos-base")
    tokenizer_source: str = Field(
        default_factory=lambda: os.environ.get("HPO_KRONOS_TOKENIZER_SOURCE", DEFAULT_TINY_TOKENIZER),
        description="tokenizer dir or repo id, e.g. NeoQuasar/Kronos-Tokenizer-base")
    revision: str = Field(default="", description="model commit to pin")
    tokenizer_revision: str = Field(default="", description="tokenizer commit to pin")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    max_rows: int = Field(default=2048, description="rows decoded together: memory/speed only, never results")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        model_dir = resolve_checkpoint(self.source, self.revision or None)
        tokenizer_dir = resolve_checkpoint(self.tokenizer_source, self.tokenizer_revision or None)
        model, tokenizer = load_kronos(model_dir, tokenizer_dir, device=resolve_device(self.device))
        self._forecaster = KronosForecaster(model, tokenizer, max_rows=self.max_rows)
        self._revision = f"{checkpoint_revision(model_dir)}+{checkpoint_revision(tokenizer_dir)}"

