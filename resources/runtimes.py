"""Model runtimes: Toto, Toto 2.0 and Kronos loaded once per step process and kept resident across trials."""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar

from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from forecast_core.checkpoints import checkpoint_revision, resolve_checkpoint
from forecast_core.compiled.cache import CacheKey, default_compiled_dir, model_id_for
from forecast_core.compiled.parity import DEFAULT_PROBES, ProbeShape
from forecast_core.compiled.policy import (
    MIN_SPEEDUP, PARITY_TOLERANCE, POLICIES, CompileSettings, Outcome, prepare, reverify,
)
from forecast_core.compiled.wrappers import MODES
from forecast_core.device import DeviceBusyError, claim_device, resolve_dtype
from forecast_core.kronos.forecaster import (
    DEFAULT_TINY,
    DEFAULT_TINY_TOKENIZER,
    KronosForecaster,
    kronos_revision,
    load_kronos,
)
from forecast_core.pretraining import Cutoff, bundled_model_id, load_registry, parse_date
from forecast_core.toto import DEFAULT_TINY_DIR, TotoForecaster, load_toto
from forecast_core.toto.forecaster import DEFAULT_SAMPLES_PER_BATCH
from forecast_core.toto2 import DEFAULT_TINY_DIR as TOTO2_TINY_DIR
from forecast_core.toto2 import Toto2Model, load_toto2


class _Pretrained(ConfigurableResource):
    """A model runtime whose pretraining cutoff can be overridden in its configuration."""

    pretraining_cutoff: str = Field(default="", description="ISO date (YYYY-MM-DD): the last date this runtime's "
                                    "model may have seen in pretraining, overriding forecast_core/data/"
                                    "pretraining_cutoffs.json (empty: use the registry)")

    @field_validator("pretraining_cutoff")
    @classmethod
    def _iso_cutoff(cls, value: str) -> str:
        if value:
            parse_date(value, "pretraining_cutoff")  # raises ValueError naming the field and value
        return value

    def _cutoff_of(self, source: str, symbol: str) -> Cutoff:
        model_id = bundled_model_id(source)
        overrides = {model_id: self.pretraining_cutoff} if self.pretraining_cutoff else None
        return load_registry(overrides).lookup(model_id, symbol)


class _ResidentModel(_Pretrained):
    """A forecaster loaded on first use in a step and reused by every trial of the step.

    Loading waits for the first use, so a step that only reads the configuration (the selection
    statistics: ``cutoff``) never loads weights or claims a device.

    Compilation (forecast_core/compiled/) is decided on first use of ``forecaster``, so a step
    that never forecasts never compiles; ``compile_report`` says what was decided and why.
    """

    kind: ClassVar[str] = ""

    compile: str = Field(default="auto", description="auto: warm-start the compile cache where the model asset "
                         "measured a speed-up and parity, else eager | on: also compile (and persist) on the fly | "
                         "off: eager")
    compile_mode: str = Field(default="default", description="torch.compile mode: default | reduce-overhead | "
                              "max-autotune | max-autotune-no-cudagraphs")
    compiled_dir: str = Field(default_factory=default_compiled_dir,
                              description="compile cache root (default: $HPO_COMPILED_DIR or ./compiled_models)")
    parity_tolerance: float = Field(default=PARITY_TOLERANCE, description="largest |compiled - eager| on the probe paths, "
                                    "relative to the mean price, before compiled forecasts are rejected")
    min_speedup: float = Field(default=MIN_SPEEDUP, description="auto compiles only when the probe ran this much faster")
    probe_windows: int = Field(default=0, description="probe batch windows (0: the model's default)")
    probe_context: int = Field(default=0, description="probe context bars (0: the model's default)")
    probe_horizon: int = Field(default=0, description="probe horizon (0: the model's default)")
    probe_samples: int = Field(default=0, description="probe sample paths (0: the model's default)")
    _forecaster: object = PrivateAttr(default=None)
    _revision: str = PrivateAttr(default="")
    _compiled: object = PrivateAttr(default=None)

    @field_validator("compile", "compile_mode")
    @classmethod
    def _known_choice(cls, value: str, info: ValidationInfo) -> str:
        choices = {"compile": POLICIES, "compile_mode": MODES}[info.field_name]
        if value not in choices:
            raise ValueError(f"{info.field_name}={value!r}: use one of {', '.join(choices)}")
        return value

    def cutoff(self, symbol: str) -> Cutoff:
        """What this runtime's model (for Kronos: the model, not the tokenizer) may have seen of ``symbol``."""
        return self._cutoff_of(self.source, symbol)

    def _load(self) -> None:
        raise NotImplementedError

    def _loaded(self):
        if self._forecaster is None:
            self._load()
        return self._forecaster

    @property
    def forecaster(self):
        self._loaded()
        if self._compiled is None:
            key = self.compile_key() if self.compile != "off" else None
            outcome = prepare(self.kind, self._forecaster, key, self.compile_settings())
            if self.compile == "auto" and outcome.problem and not outcome.compiled:  # no usable cache: say how
                outcome = dataclasses.replace(outcome, reason=f"{outcome.reason} (in Dagster: materialise the "
                                              f"{self.kind}_model asset, or set this resource's compile='on')")
            self._compiled = outcome
            get_dagster_logger().info(f"{self.kind}: {self._compiled.reason}")
        return self._forecaster

    @property
    def compile_report(self) -> dict:
        """How the forecaster runs (compiled or eager) and why; empty before its first use."""
        return self._compiled.metadata() if self._compiled is not None else {}

    def probe_shape(self) -> ProbeShape:
        default = DEFAULT_PROBES[self.kind]
        return ProbeShape(self.probe_windows or default.windows, self.probe_context or default.context,
                          self.probe_horizon or default.horizon, self.probe_samples or default.samples)

    def compile_key(self) -> CacheKey:
        """Everything the compile cache depends on, for the loaded weights and this configuration."""
        weight = next(self._loaded().model.parameters())
        return CacheKey.current(self.kind, self._model_id(), self._revision, str(weight.device),
                                str(weight.dtype).removeprefix("torch."), self.compile_mode, self.probe_shape())

    def compile_settings(self) -> CompileSettings:
        return CompileSettings(self.compile, self.compiled_dir, self.parity_tolerance, self.min_speedup)

    def build_compiled(self) -> Outcome:
        """The model asset: measure and persist (or re-verify) the compile cache, then use its decision."""
        self._loaded()
        if self.compile == "off":
            self._compiled = prepare(self.kind, self._forecaster, None, self.compile_settings())
        else:
            self._compiled = reverify(self.kind, self._forecaster, self.compile_key(), self.compile_settings())
        return self._compiled

    def _model_id(self) -> str:
        raise NotImplementedError

    @property
    def model_revision(self) -> str:
        """Commit or content hash of the loaded weights: part of every trial's identity."""
        self._loaded()
        return self._revision


class TotoRuntime(_ResidentModel):
    """Toto weights (local dir or Hugging Face repo id at a pinned revision), device and chunk size."""

    source: str = Field(default_factory=lambda: os.environ.get("HPO_TOTO_SOURCE", str(DEFAULT_TINY_DIR)),
                        description="checkpoint dir or repo id, e.g. Datadog/Toto-Open-Base-1.0 "
                                    "(default: $HPO_TOTO_SOURCE or the bundled tiny checkpoint)")
    revision: str = Field(default="", description="Hugging Face commit to pin (empty: main / local dir)")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(default="float32", description="float32 | bfloat16 | float16")
    samples_per_batch: int = Field(default=DEFAULT_SAMPLES_PER_BATCH, description="sample chunk size: memory/speed only, never results")

    def pinned_revision(self) -> str:
        """The revision ``model_revision`` will report, found without loading the weights."""
        return checkpoint_revision(resolve_checkpoint(self.source, self.revision or None))

    def _load(self) -> None:
        directory = resolve_checkpoint(self.source, self.revision or None)
        model = load_toto(directory, device=_claim(self.device), dtype=resolve_dtype(self.dtype))
        self._forecaster = TotoForecaster(model, samples_per_batch=self.samples_per_batch)
        self._revision = checkpoint_revision(directory)

    kind: ClassVar[str] = "toto"

    def _model_id(self) -> str:
        return model_id_for(self.source)


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

    def pinned_revision(self) -> str:
        """The revision ``model_revision`` will report, found without loading the weights."""
        return kronos_revision(resolve_checkpoint(self.source, self.revision or None),
                               resolve_checkpoint(self.tokenizer_source, self.tokenizer_revision or None))

    def _load(self) -> None:
        model_dir = resolve_checkpoint(self.source, self.revision or None)
        tokenizer_dir = resolve_checkpoint(self.tokenizer_source, self.tokenizer_revision or None)
        model, tokenizer = load_kronos(model_dir, tokenizer_dir, device=_claim(self.device))
        self._forecaster = KronosForecaster(model, tokenizer, max_rows=self.max_rows)
        self._revision = kronos_revision(model_dir, tokenizer_dir)

    kind: ClassVar[str] = "kronos"

    def _model_id(self) -> str:
        return f"{model_id_for(self.source)}+{model_id_for(self.tokenizer_source)}"


def _default_toto2_checkpoints() -> list[str]:
    listed = os.environ.get("HPO_TOTO2_CHECKPOINTS", "")
    return [c.strip() for c in listed.split(",") if c.strip()] or [str(TOTO2_TINY_DIR)]


class Toto2Runtime(_Pretrained):
    """Toto 2.0 checkpoints (local dirs or repo ids at pinned revisions): the sizes the sweep compares.

    The sweep scores every listed checkpoint (an accuracy vs latency choice); the first is the one
    whose default config is the reference a tuned config must beat. Each loads on first use and
    stays resident for the step. No compile cache: the engine runs eager.
    """

    checkpoints: list[str] = Field(default_factory=_default_toto2_checkpoints,
                                   description="checkpoint dirs or repo ids, e.g. Datadog/Toto-2.0-22m, "
                                               "Datadog/Toto-2.0-313m (default: $HPO_TOTO2_CHECKPOINTS, comma-"
                                               "separated, or the bundled tiny checkpoint); the first is the default")
    revisions: dict[str, str] = Field(default_factory=dict, description="Hugging Face commit to pin per repo id "
                                      "in checkpoints (missing: main / local dir)")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    dtype: str = Field(default="float32", description="float32 | bfloat16 | float16")

    _models: dict = PrivateAttr(default_factory=dict)
    _device: object = PrivateAttr(default=None)
    _revision: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _distinct_labels(self) -> "Toto2Runtime":
        if not self.checkpoints:
            raise ValueError("toto2 checkpoints: list at least one checkpoint (a directory or a repo id)")
        labels = [bundled_model_id(c) for c in self.checkpoints]
        twins = sorted({label for label in labels if labels.count(label) > 1})
        if twins:
            raise ValueError(f"toto2 checkpoints: {twins} listed more than once")
        unknown = sorted(set(self.revisions) - set(self.checkpoints))
        if unknown:
            raise ValueError(f"toto2 revisions: {unknown} are not in checkpoints {self.checkpoints}")
        return self

    @property
    def labels(self) -> list[str]:
        """The checkpoint labels trials and config files name (repo ids; ``bundled:toto2-tiny``)."""
        return [bundled_model_id(c) for c in self.checkpoints]

    def _source(self, label: str) -> str:
        by_label = dict(zip(self.labels, self.checkpoints))
        if label not in by_label:
            raise ValueError(f"toto2 checkpoint {label!r} is not in the runtime's checkpoints {self.labels}; add "
                             "it to the toto2 resource's checkpoints (or $HPO_TOTO2_CHECKPOINTS)")
        return by_label[label]

    def model(self, label: str) -> Toto2Model:
        """The loaded checkpoint ``label`` (loaded on first use, then kept)."""
        if label not in self._models:
            source = self._source(label)
            if self._device is None:
                self._device = _claim(self.device)
            self._models[label] = load_toto2(source, self.revisions.get(source) or None, device=self._device,
                                             dtype=resolve_dtype(self.dtype))
        return self._models[label]

    def loaders(self) -> dict:
        """{label: load it}, in the configured order (the first is the default's)."""
        return {label: (lambda label=label: self.model(label)) for label in self.labels}

    @property
    def model_revision(self) -> str:
        """Every listed checkpoint's commit or content hash (no weights are loaded): part of every trial's
        identity, so adding or replacing a checkpoint re-scores the sweep."""
        if not self._revision:
            pinned = {label: resolve_checkpoint(source, self.revisions.get(source) or None)
                      for label, source in zip(self.labels, self.checkpoints)}
            self._revision = ";".join(f"{label}@{checkpoint_revision(path)}" for label, path in pinned.items())
        return self._revision

    def pinned_revision(self) -> str:
        return self.model_revision  # never loads weights

    def cutoff(self, symbol: str) -> Cutoff:
        """The latest pretraining cutoff among the checkpoints (unknown if any is): a window counts as
        out-of-sample only if no listed checkpoint may have seen it."""
        cutoffs = [self._cutoff_of(source, symbol) for source in self.checkpoints]
        unknown = [c for c in cutoffs if not c.known]
        if unknown:
            return unknown[0]
        seen = [c for c in cutoffs if c.seen_through is not None]
        return max(seen, key=lambda c: c.seen_through) if seen else cutoffs[0]


def _claim(device: str) -> str:
    """:func:`claim_device`, with the Dagster way to keep within the devices when all are leased."""
    try:
        return claim_device(device)
    except DeviceBusyError as exc:
        raise DeviceBusyError(f"{exc} (in Dagster: keep the 'accelerator' pool limit at the device count, "
                              "`dagster instance concurrency set accelerator N`, or set this resource's "
                              "device to an explicit one)") from None
