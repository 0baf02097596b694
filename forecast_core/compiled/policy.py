"""The compile policies, and what a model runtime runs under them.

``off`` = eager. ``auto`` = warm-start a cache whose manifest says compiling helped and matched
eager, else eager with the reason; it never compiles cold (build the cache first: :func:`reverify`
or policy ``on``). ``on`` = warm-start, or build the cache now on a miss, mismatch or corruption.
Every warm start re-runs the parity probe; a compiled model that disagrees with eager is dropped
for eager. A cache problem never raises: the :class:`Outcome` says what happened and why.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .cache import (
    FORMAT, INDUCTOR, MANIFEST, CacheInvalid, CacheKey, CacheMissing, CacheProblem, file_table, inductor_cache_dir,
    install, intact_files, read_manifest, write_manifest,
)
from .parity import PROBE_SEED, parity_error, run_probes, time_both
from .wrappers import compile_in_place, make_eager

log = logging.getLogger(__name__)

POLICIES = ("auto", "on", "off")
# Largest |compiled - eager| on the probe paths relative to the mean price, and the probe speed-up
# auto needs before it compiles (the defaults of the model runtimes' settings).
PARITY_TOLERANCE, MIN_SPEEDUP = 1e-3, 1.1


@dataclass(frozen=True)
class CompileSettings:
    """How to compile: the policy, the cache root, and what counts as matching eager and helping.

    ``repeats``: timed probe forecasts per side when measuring (best kept)."""

    policy: str
    root: str | Path
    parity_tolerance: float = PARITY_TOLERANCE
    min_speedup: float = MIN_SPEEDUP
    repeats: int = 3

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"compile policy {self.policy!r} is not one of {', '.join(POLICIES)}")


@dataclass
class Outcome:
    """How a model ended up (compiled or eager), why, and what was measured on the way."""

    kind: str
    policy: str
    compiled: bool
    reason: str
    key: CacheKey | None = None
    directory: Path | None = None
    cache: str = "none"  # none | warm | cold (built now)
    manifest: dict | None = None
    parity_error: float | None = None
    parity_tolerance: float | None = None
    measured: dict = field(default_factory=dict)  # seconds timed in this process, speed-up
    problem: str = ""  # a cache problem met on the way (missing, mismatch, corrupt), if any

    @property
    def parity_passed(self) -> bool | None:
        if self.parity_error is None:
            return None
        return self.parity_error <= (self.parity_tolerance or 0.0)

    def metadata(self) -> dict:
        """Flat JSON-able fields for Dagster metadata and logs."""
        out = {"compile_policy": self.policy, "compiled": self.compiled, "reason": self.reason,
               "cache": self.cache}
        if self.key is not None:
            out.update(cache_key=self.key.digest, compile_mode=self.key.compile_mode, torch=self.key.torch_version,
                       device=self.key.device, dtype=self.key.dtype, probe=json.dumps(self.key.shapes))
        if self.directory is not None:
            out["cache_dir"] = str(self.directory)
        if self.problem:
            out["cache_problem"] = self.problem
        if self.parity_error is not None:
            out.update(parity_error=self.parity_error, parity_tolerance=self.parity_tolerance,
                       parity_passed=bool(self.parity_passed))
        recorded = (self.manifest or {}).get("measured", {})
        for name in ("eager_seconds", "compiled_seconds", "speedup", "cold_compile_seconds", "rebuild_compile_seconds",
                     "reused_files", "warm_start_seconds"):
            value = self.measured.get(name, recorded.get(name))
            if value is not None:
                out[name] = value
        if self.manifest:
            out["manifest_decision"] = self.manifest.get("decision")
        return out


def _eager(kind, model, policy, reason, **kw) -> Outcome:
    make_eager(model)
    return Outcome(kind, policy, False, reason, **kw)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def decide(measured: dict, error: float | None, tolerance: float, min_speedup: float) -> tuple[str, str]:
    """Compiled only when it matched eager on the probe and was measured to help."""
    if error is None:
        return "eager", measured.get("error", "nothing was compiled")
    if not error <= tolerance:
        return "eager", (f"compiled forecasts differ from eager by {error:.3g} (relative), above the tolerance "
                         f"{tolerance:.3g}")
    if not measured["speedup"] >= min_speedup:
        return "eager", (f"compiling did not help: {measured['compiled_seconds']:.4f}s compiled vs "
                         f"{measured['eager_seconds']:.4f}s eager per probe forecast ({measured['speedup']:.2f}x "
                         f"< {min_speedup}x)")
    return "compiled", f"{measured['speedup']:.2f}x faster than eager, parity error {error:.3g}"


def manifest_for(key: CacheKey, measured: dict, error: float | None, settings: CompileSettings, files: dict,
                 created_at: str | None = None) -> dict:
    """The manifest of a build or re-verification: the key, the measurements and the decision they give."""
    tolerance, min_speedup = settings.parity_tolerance, settings.min_speedup
    decision, reason = decide(measured, error, tolerance, min_speedup)
    return {
        "format": FORMAT, "key": key.to_dict(), "digest": key.digest, "model_id": key.model_id,
        "revision": key.revision, "torch_version": key.torch_version, "device": key.device, "dtype": key.dtype,
        "compile_mode": key.compile_mode, "shapes": key.shapes, "created_at": created_at or _now(),
        "checked_at": _now(), "measured": measured, "min_speedup": min_speedup,
        "parity": {"error": error, "tolerance": tolerance, "passed": None if error is None else error <= tolerance,
                   "seed": PROBE_SEED},
        "decision": decision, "reason": reason, "files": files,
    }


def prepare(kind: str, forecaster, key: CacheKey | None, settings: CompileSettings) -> Outcome:
    """What a model runtime runs under ``settings.policy`` (see the module docstring); ``key`` may be
    None only under ``off``. A cache problem never raises; the outcome says what happened and why."""
    model, policy = forecaster.model, settings.policy
    if policy == "off":
        return _eager(kind, model, policy, "eager: compile='off'")
    directory = key.directory(settings.root)
    try:
        manifest = read_manifest(directory, key)
    except CacheProblem as exc:
        if policy == "auto":
            (log.info if isinstance(exc, CacheMissing) else log.warning)("%s: %s; running eager", kind, exc)
            return _eager(kind, model, policy, f"eager: {exc}", key=key, directory=directory, problem=str(exc))
        log.warning("%s: %s; compiling now (compile='on')", kind, exc)
        return build(kind, forecaster, key, settings, problem=str(exc))
    if policy == "auto" and manifest["decision"] != "compiled":
        return _eager(kind, model, policy, f"eager: {directory / MANIFEST} says {manifest['reason']}",
                      key=key, directory=directory, manifest=manifest)
    outcome = warm_start(kind, forecaster, key, manifest, settings)
    if policy == "on" and outcome.parity_error is None:  # torch could not use the files: build them again
        return build(kind, forecaster, key, settings, problem=outcome.reason)
    return outcome


def warm_start(kind: str, forecaster, key: CacheKey, manifest: dict, settings: CompileSettings,
               timed: bool = False) -> Outcome:
    """Compile from ``key``'s verified cache (a private copy of it) and check parity on the probe.

    ``timed`` also times eager vs compiled, best of ``settings.repeats`` (what the model asset re-measures)."""
    model, shape, policy = forecaster.model, key.probe, settings.policy
    tolerance, directory = settings.parity_tolerance, key.directory(settings.root)
    make_eager(model)
    eager = run_probes(forecaster, shape)
    measured = {}
    private = Path(tempfile.mkdtemp(prefix=f"hpo-{kind}-inductor-"))
    try:
        shutil.copytree(directory / INDUCTOR, private, dirs_exist_ok=True)
        compile_in_place(model, key.compile_mode, key.dynamic)
        with inductor_cache_dir(private):
            began = time.perf_counter()
            compiled = run_probes(forecaster, shape)
            measured["warm_start_seconds"] = time.perf_counter() - began
            if timed:
                measured["eager_seconds"], measured["compiled_seconds"] = time_both(forecaster, shape,
                                                                                    settings.repeats)
    except Exception as exc:  # torch could not use the cache (or compile at all): eager is always safe
        log.warning("%s: warm start from %s failed: %r", kind, directory, exc)
        return _eager(kind, model, policy, f"eager: warm start from {directory} failed ({exc!r}); rebuild it",
                      key=key, directory=directory, manifest=manifest, measured=measured, problem=repr(exc))
    finally:
        shutil.rmtree(private, ignore_errors=True)  # loaded kernels stay mapped; later compiles use the default dir
    error = parity_error(compiled, eager)
    kw = dict(key=key, directory=directory, cache="warm", manifest=manifest, parity_error=error,
              parity_tolerance=tolerance, measured=measured)
    if not error <= tolerance:
        log.warning("%s: compiled forecasts differ from eager by %.3g > %.3g; running eager", kind, error, tolerance)
        return _eager(kind, model, policy, f"eager: compiled forecasts differ from eager by {error:.3g} "
                      f"(relative), above the tolerance {tolerance:.3g}", **kw)
    return Outcome(kind, policy, True, f"compiled: warm start from {directory} in "
                   f"{measured['warm_start_seconds']:.2f}s, parity error {error:.3g}", **kw)


def build(kind: str, forecaster, key: CacheKey, settings: CompileSettings, problem: str = "") -> Outcome:
    """Compile into a fresh cache, time eager vs compiled, check parity, persist (manifest last).

    After a cache ``problem`` the verified files of the rejected cache seed the new one (see
    :func:`.cache.intact_files`); otherwise the compile is cold.

    The model stays compiled when parity holds and either the speed-up reached ``min_speedup`` or
    the policy is ``on``. ``torch.compiler.reset()`` first, so the build really compiles (and writes
    every kernel): other compiled functions of this process recompile on their next call."""
    model, shape, policy, repeats = forecaster.model, key.probe, settings.policy, settings.repeats
    tolerance, directory = settings.parity_tolerance, key.directory(settings.root)
    make_eager(model)
    eager = run_probes(forecaster, shape)
    measured = {"repeats": repeats, "threads": torch.get_num_threads()}
    staging = directory.parent / f".{directory.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    reused = intact_files(directory) if problem else []
    for rel in reused:
        (staging / INDUCTOR / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(directory / INDUCTOR / rel, staging / INDUCTOR / rel)
    measured["reused_files"] = len(reused)
    compiled = None
    try:
        torch.compiler.reset()
        compile_in_place(model, key.compile_mode, key.dynamic)
        with inductor_cache_dir(staging / INDUCTOR):
            began = time.perf_counter()
            compiled = run_probes(forecaster, shape)
            first = time.perf_counter() - began
            measured["cold_compile_seconds" if not reused else "rebuild_compile_seconds"] = first
            measured["eager_seconds"], measured["compiled_seconds"] = time_both(forecaster, shape, repeats)
        measured["speedup"] = measured["eager_seconds"] / measured["compiled_seconds"]
    except Exception as exc:  # no C++ compiler, unsupported op, ...: recorded, and eager is used
        log.warning("%s: torch.compile failed: %r", kind, exc)
        compiled, measured["error"] = None, f"torch.compile failed ({exc!r})"
    error = None if compiled is None else parity_error(compiled, eager)
    (staging / INDUCTOR).mkdir(parents=True, exist_ok=True)
    manifest = manifest_for(key, measured, error, settings, file_table(staging / INDUCTOR))
    write_manifest(staging, manifest)
    installed = install(staging, directory)
    kw = dict(key=key, directory=directory if installed else None, cache="cold", manifest=manifest,
              parity_error=error, parity_tolerance=tolerance, measured=dict(measured), problem=problem)
    matched = error is not None and error <= tolerance
    if not (matched and (manifest["decision"] == "compiled" or policy == "on")):
        return _eager(kind, model, policy, f"eager: {manifest['reason']}", **kw)
    note = f" (built now: {problem})" if problem else ""
    return Outcome(kind, policy, True, f"compiled: {manifest['reason']}{note}", **kw)


def reverify(kind: str, forecaster, key: CacheKey, settings: CompileSettings) -> Outcome:
    """The model asset: warm-start a valid cache and re-measure it (speed, parity), or build it.

    Runs as ``auto`` whatever ``settings.policy`` says (the manifest's decision stands), with at least
    one timed repeat. On a valid cache the manifest is rewritten with these measurements (its files
    are unchanged)."""
    settings = dataclasses.replace(settings, policy="auto", repeats=max(1, settings.repeats))
    directory = key.directory(settings.root)
    try:
        manifest = read_manifest(directory, key)
    except CacheMissing:
        return build(kind, forecaster, key, settings)
    except CacheInvalid as exc:
        log.warning("%s: %s; rebuilding", kind, exc)
        return build(kind, forecaster, key, settings, problem=str(exc))
    outcome = warm_start(kind, forecaster, key, manifest, settings, timed=True)
    if outcome.parity_error is None:  # torch could not use the files: build them again
        return build(kind, forecaster, key, settings, problem=outcome.reason)
    measured = {**manifest.get("measured", {}), **outcome.measured, "repeats": settings.repeats,
                "threads": torch.get_num_threads()}
    measured["speedup"] = measured["eager_seconds"] / measured["compiled_seconds"]
    manifest = manifest_for(key, measured, outcome.parity_error, settings, manifest["files"],
                            created_at=manifest["created_at"])
    write_manifest(directory, manifest)
    outcome.manifest, outcome.measured = manifest, measured
    if manifest["decision"] == "compiled":
        outcome.reason = f"compiled: warm start in {measured['warm_start_seconds']:.2f}s, {manifest['reason']}"
    else:
        make_eager(forecaster.model)
        outcome.compiled, outcome.reason = False, f"eager: {manifest['reason']}"
    return outcome
