"""Compiled Toto / Kronos: compile where it is measured to help, persist the compile cache, verify it.

Why: ``torch.compile`` costs tens of seconds per process even for the tiny checkpoints, its speed-up
depends on the device and model size (the README's "Compiled models" has the measurements), and the
users' guide once shipped a compiled model that was far less accurate than eager. So compilation is
measured, checked against eager forecasts, and cached per key; nothing here needs Dagster.

Mechanism. The model's hot methods (:data:`TARGETS`) are replaced on the instance by
``torch.compile`` wrappers (the model files stay untouched; :func:`make_eager` removes them).
Inductor writes everything it builds (FX graphs, AOT-autograd entries, C++ kernels and their
``.so``) into ``TORCHINDUCTOR_CACHE_DIR``; while the probe forecasts run, that directory is
redirected (``torch._inductor.runtime.cache_dir_utils.temporary_cache_dir``) to the key directory's
``inductor/`` folder, which is then the persisted cache. A warm start copies it to a private temp
directory (so concurrent steps never write into the shared copy) and runs the same probe: inductor
finds every graph and kernel there and skips lowering and C++ compilation. (The alternative,
``torch.compiler.save_cache_artifacts`` "Mega-Cache", stores no compiled ``.so``: measured on the
tiny Toto's smallest probe, a warm start from it took 2.2 s to load plus 15.7 s to compile, against
3.0 s from the inductor directory, and 27 s cold.)

Layout: ``<root>/<kind>/<model-id-slug>/<key>/{manifest.json, inductor/...}``, ``root`` =
``$HPO_COMPILED_DIR`` or ``./compiled_models``. ``key`` hashes every field of :class:`CacheKey`
(weights revision, torch and Python version, device, dtype, compile mode, probe shapes, the model
code). ``manifest.json`` (written atomically, last) records the key, the measurements (eager vs
compiled seconds, cold compile and warm start seconds, parity error) and size + sha256 of every
cache file, so a truncated or edited file is detected before torch reads it.

Policies (the model resources' ``compile`` field): ``off`` = eager. ``auto`` = warm-start a cache
whose manifest says compiling helped and matched eager, else eager with the reason (it never
compiles cold inside a step: materialize the ``toto_model`` / ``kronos_model`` asset for that).
``on`` = warm-start, or build the cache on the fly on a miss, mismatch or corruption. Every warm
start re-runs the parity probe; a compiled model that disagrees with eager is dropped for eager.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
import pandas as pd
import torch

from .files import atomic_write_text
from .forecasters import ContextBatch

log = logging.getLogger(__name__)

FORMAT = 1
ENV_DIR = "HPO_COMPILED_DIR"
MANIFEST, INDUCTOR = "manifest.json", "inductor"
POLICIES = ("auto", "on", "off")
# Defaults of the model runtimes' settings: largest |compiled - eager| on the probe paths relative to the mean
# price, and the probe speed-up auto needs before it compiles.
PARITY_TOLERANCE, MIN_SPEEDUP = 1e-3, 1.1
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Methods replaced by compiled wrappers: the per-step hot path of each engine (Toto: the transformer
# layers and the last-position head; Kronos: one decoding step and the two heads).
TARGETS = {"toto": ("_run_layers", "_head"), "kronos": ("extend", "s1_logits", "s2_logits")}
CODE_DIRS = {"toto": "toto", "kronos": "kronos"}
PROBE_SEED = 20240601


@dataclass(frozen=True)
class ProbeShape:
    """The probe batch: what is compiled, timed and compared (windows x context bars, horizon, samples)."""

    windows: int
    context: int
    horizon: int
    samples: int

    def __post_init__(self) -> None:
        bad = {k: v for k, v in dataclasses.asdict(self).items() if not (isinstance(v, int) and v >= 1)}
        if bad:
            raise ValueError(f"probe shape fields must be integers >= 1, got {bad}")


# Sweep-like shapes (context 512, H 64); every probe also runs a 1-window batch, which is what a
# sweep times per config (size-1 dims are specialised by torch.compile, so they need their own graph).
DEFAULT_PROBES = {"toto": ProbeShape(4, 512, 64, 256), "kronos": ProbeShape(2, 512, 64, 8)}


class CacheProblem(Exception):
    """The cache for a key cannot be used; the message says which file/field and what to do."""


class CacheMissing(CacheProblem):
    """No cache directory for this key (never built, or built for another key)."""


class CacheInvalid(CacheProblem):
    """A cache directory exists but is corrupt or was made for another key."""


# ----------------------------------------------------------------------------------------------
# Keys, directories, manifests


def default_compiled_dir() -> str:
    """``$HPO_COMPILED_DIR``, else ``compiled_models/`` in the working directory (like HPO_STORAGE_DIR)."""
    return os.environ.get(ENV_DIR) or os.path.join(os.getcwd(), "compiled_models")


def bundled_model_ids() -> dict[Path, str]:
    from .kronos.forecaster import DEFAULT_TINY, DEFAULT_TINY_TOKENIZER
    from .toto import DEFAULT_TINY_DIR

    return {Path(DEFAULT_TINY_DIR).resolve(): "bundled:toto-tiny", Path(DEFAULT_TINY).resolve(): "bundled:kronos-tiny",
            Path(DEFAULT_TINY_TOKENIZER).resolve(): "bundled:kronos-tiny-tokenizer"}


def model_id_for(source: str | Path) -> str:
    """A stable id: ``bundled:...`` for the shipped checkpoints (their path depends on the install),
    the absolute path of another local directory, else the Hugging Face repo id as given."""
    path = Path(source).expanduser()
    if path.is_dir():
        return bundled_model_ids().get(path.resolve(), str(path.resolve()))
    return str(source)


def model_slug(model_id: str) -> str:
    """Directory name for a model id: ``Datadog/Toto-Open-Base-1.0`` -> ``Datadog--Toto-Open-Base-1.0``."""
    first = model_id.split("+")[0]  # Kronos ids are "model+tokenizer"; the model names the folder
    if first.startswith("/"):
        first = f"local-{Path(first).name}-{hashlib.sha256(first.encode()).hexdigest()[:8]}"
    return re.sub(r"[^A-Za-z0-9._-]+", "--", first).strip("-") or "model"


def code_version(kind: str) -> str:
    """Hash of the engine's source files: a code change may change the compiled graphs and their speed."""
    digest = hashlib.sha256()
    for path in sorted((Path(__file__).parent / CODE_DIRS[kind]).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def device_name(device: str) -> str:
    """What the compiled kernels were built for: the CPU's vector ISA, or the GPU model."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return f"{torch.cuda.get_device_name(index)} sm_{major}{minor}"
    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"


@dataclass(frozen=True)
class CacheKey:
    """Everything that invalidates a compile cache (and the measurements stored beside it)."""

    kind: str
    model_id: str
    revision: str
    torch_version: str
    python: str
    device: str
    device_name: str
    dtype: str
    compile_mode: str
    dynamic: bool
    shapes: dict
    targets: list
    code: str

    @classmethod
    def current(cls, kind: str, model_id: str, revision: str, device: str, dtype: str, compile_mode: str,
                probe: ProbeShape, dynamic: bool = True) -> "CacheKey":
        if kind not in TARGETS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(TARGETS)}")
        if compile_mode not in MODES:
            raise ValueError(f"unknown compile mode {compile_mode!r}; use one of {', '.join(MODES)}")
        return cls(kind, model_id, revision, torch.__version__, platform.python_version(), device,
                   device_name(device), dtype, compile_mode, dynamic, dataclasses.asdict(probe),
                   list(TARGETS[kind]), code_version(kind))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def digest(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def probe(self) -> ProbeShape:
        return ProbeShape(**self.shapes)

    def directory(self, root: str | Path) -> Path:
        return Path(root) / self.kind / model_slug(self.model_id) / self.digest


def file_table(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file under ``folder``, by relative path."""
    table = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        table[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return table


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


REQUIRED = ("format", "key", "digest", "created_at", "decision", "reason", "parity", "files")


def read_manifest(directory: Path, key: CacheKey, verify_files: bool = True) -> dict:
    """The manifest of ``key``'s cache, checked: readable JSON, made for this key, every file intact.

    Raises :class:`CacheMissing` when there is no cache for the key (naming caches of the same model
    that exist for other keys, and the fields that differ) and :class:`CacheInvalid` otherwise.
    """
    path = Path(directory) / MANIFEST
    rebuild = f"rebuild it: materialize the {key.kind}_model asset (or set the resource's compile='on')"
    if not Path(directory).is_dir():
        raise CacheMissing(f"no compiled cache for key {key.digest} at {directory}{_other_keys(directory, key)}; "
                           f"build it: materialize the {key.kind}_model asset (or set compile='on')")
    if not path.is_file():
        raise CacheInvalid(f"{path} is missing (build interrupted?); {rebuild}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheInvalid(f"{path} is not readable JSON ({exc}); {rebuild}") from exc
    if not isinstance(manifest, dict):
        raise CacheInvalid(f"{path} must hold a JSON object, found {type(manifest).__name__}; {rebuild}")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise CacheInvalid(f"{path} lacks fields {missing}; {rebuild}")
    if manifest["format"] != FORMAT:
        raise CacheInvalid(f"{path}: format {manifest['format']!r}, this code reads format {FORMAT}; {rebuild}")
    diff = _key_diff(manifest["key"], key.to_dict())
    if diff or manifest["digest"] != key.digest:
        raise CacheInvalid(f"{path} was made for another key ({diff or 'digest ' + str(manifest['digest'])} "
                           f"vs current {key.digest}); {rebuild}")
    if verify_files:
        files = manifest["files"]
        if not isinstance(files, dict):
            raise CacheInvalid(f"{path}: field 'files' must map paths to size and sha256; {rebuild}")
        for rel, expect in files.items():
            target = Path(directory) / INDUCTOR / rel
            if not target.is_file():
                raise CacheInvalid(f"cache file {target} listed in {path} is missing; {rebuild}")
            size = target.stat().st_size
            if size != expect.get("bytes"):
                raise CacheInvalid(f"cache file {target} has {size} bytes, {path} says {expect.get('bytes')} "
                                   f"(truncated or replaced); {rebuild}")
            if _sha256(target) != expect.get("sha256"):
                raise CacheInvalid(f"cache file {target} does not match its sha256 in {path}; {rebuild}")
    return manifest


def _key_diff(found, wanted: dict) -> str:
    if not isinstance(found, dict):
        return "field 'key' is not an object"
    names = sorted(set(found) | set(wanted))
    return "; ".join(f"{n}: {found.get(n)!r} in the manifest, {wanted.get(n)!r} now" for n in names
                     if found.get(n) != wanted.get(n))


def _other_keys(directory: Path, key: CacheKey) -> str:
    """Caches of the same model built for other keys, and how they differ (e.g. an older torch)."""
    others = []
    parent = Path(directory).parent
    for manifest in sorted(parent.glob(f"*/{MANIFEST}")) if parent.is_dir() else []:
        try:
            found = json.loads(manifest.read_text()).get("key", {})
        except (OSError, ValueError, AttributeError):
            continue
        diff = _key_diff(found, key.to_dict())
        if diff:
            others.append(f"{manifest.parent.name} ({diff})")
    return f" (caches for other keys: {' | '.join(others[:3])})" if others else ""


def intact_files(directory: Path) -> list[str]:
    """Cache files of a rejected cache that still match the size and sha256 its manifest lists.

    A rebuild starts from these: inductor names its entries by a hash of everything they depend
    on, so an entry made for another key is a cache miss, never a wrong kernel. Without a readable
    manifest nothing can be verified, and nothing is reused."""
    try:
        files = json.loads((Path(directory) / MANIFEST).read_text())["files"]
        listed = list(files.items())
    except Exception:  # unreadable or garbage manifest
        return []
    keep = []
    for rel, expect in listed:
        target = Path(directory) / INDUCTOR / rel
        try:
            if (target.is_file() and target.stat().st_size == expect["bytes"]
                    and _sha256(target) == expect["sha256"]):
                keep.append(rel)
        except (OSError, TypeError, KeyError):
            continue
    return keep


def write_manifest(directory: Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically (temp file + rename): readers see the old or the new one."""
    return atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------------
# Compiling in place, probes, parity


def compile_in_place(kind: str, model: torch.nn.Module, mode: str = "default", dynamic: bool = True) -> None:
    """Replace the model's hot methods (``TARGETS[kind]``) by ``torch.compile`` wrappers, on this instance."""
    for name in TARGETS[kind]:
        method = getattr(type(model), name, None)
        if method is None:
            raise AttributeError(f"{type(model).__name__} has no method {name!r}: forecast_core/compiled.py "
                                 f"TARGETS[{kind!r}] is out of date with forecast_core/{CODE_DIRS[kind]}/")
        # Compile the undecorated function: torch.no_grad()'s wrapper code is shared by every decorated
        # method, so compiling it would make their graphs evict each other (measured: endless recompiles).
        inner = inspect.unwrap(method).__get__(model, type(model))
        setattr(model, name, _no_grad(torch.compile(inner, mode=None if mode == "default" else mode,
                                                    dynamic=dynamic)))


def _no_grad(fn):
    """Run ``fn`` without autograd (the targets are inference-only; some are ``@torch.no_grad`` methods)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)

    return run


def make_eager(kind: str, model: torch.nn.Module) -> None:
    """Drop the compiled wrappers: the class's eager methods apply again."""
    for name in TARGETS[kind]:
        model.__dict__.pop(name, None)


def is_compiled(kind: str, model: torch.nn.Module) -> bool:
    return any(name in model.__dict__ for name in TARGETS[kind])


def probe_batch(shape: ProbeShape, windows: int | None = None, seed: int = PROBE_SEED) -> ContextBatch:
    """A fixed synthetic batch (geometric random walks, business days; fixed seeds per window)."""
    w = shape.windows if windows is None else windows
    n = shape.context + shape.horizon
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (w, shape.context)), axis=1))
    spread = np.exp(np.abs(rng.normal(0, 0.005, (w, shape.context))))
    volume = rng.integers(1_000, 100_000, (w, shape.context)).astype(np.float64)
    values = np.stack([close, close * spread, close / spread, close, volume, volume * close], axis=-1)
    stamps = np.tile(pd.bdate_range("2020-01-01", periods=n).to_numpy(dtype="datetime64[ns]")[None], (w, 1))
    return ContextBatch(values, stamps[:, : shape.context], stamps[:, shape.context:],
                        np.arange(w, dtype=np.int64) + seed)


def probes(shape: ProbeShape) -> list[ContextBatch]:
    """The probe batch, plus its single-window variant when the probe has several windows."""
    return [probe_batch(shape)] + ([probe_batch(shape, windows=1)] if shape.windows > 1 else [])


def run_probes(forecaster, shape: ProbeShape) -> list[np.ndarray]:
    return [np.asarray(forecaster.sample_paths(batch, shape.samples)) for batch in probes(shape)]


def parity_error(compiled: list[np.ndarray], eager: list[np.ndarray]) -> float:
    """Largest |compiled - eager| over every probe path, relative to the mean |eager| price (inf on NaN)."""
    worst = 0.0
    for c, e in zip(compiled, eager):
        if c.shape != e.shape or not np.isfinite(c).all():
            return math.inf
        worst = max(worst, float(np.abs(c - e).max() / max(np.abs(e).mean(), 1e-12)))
    return worst


def time_both(kind: str, forecaster, shape: ProbeShape, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` seconds of one probe forecast, eager and compiled, alternating so that both
    see the same machine load (a shared 2-core machine is never quiet). The model ends compiled."""
    model, batch = forecaster.model, probe_batch(shape)
    wrappers = {name: model.__dict__[name] for name in TARGETS[kind]}
    best = [math.inf, math.inf]
    for _ in range(max(1, repeats)):
        for side in (0, 1):
            make_eager(kind, model) if side == 0 else model.__dict__.update(wrappers)
            began = time.perf_counter()
            forecaster.sample_paths(batch, shape.samples)
            best[side] = min(best[side], time.perf_counter() - began)
    return best[0], best[1]


def _inductor_dir(directory: Path):
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    directory.mkdir(parents=True, exist_ok=True)
    return temporary_cache_dir(str(directory))


# ----------------------------------------------------------------------------------------------
# Outcomes: what a resource runs and why


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
    make_eager(kind, model)
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


def _manifest(key: CacheKey, measured: dict, error: float | None, tolerance: float, min_speedup: float,
              files: dict, created_at: str | None = None) -> dict:
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


def prepare(kind: str, forecaster, key: CacheKey | None, root: str | Path, policy: str = "auto",
            tolerance: float = PARITY_TOLERANCE, min_speedup: float = MIN_SPEEDUP, repeats: int = 3) -> Outcome:
    """What a model resource runs: see the module docstring for the policies. A cache problem never
    raises; the outcome says what happened and why."""
    if policy not in POLICIES:
        raise ValueError(f"compile={policy!r} is not one of {', '.join(POLICIES)}")
    model = forecaster.model
    if policy == "off":
        return _eager(kind, model, policy, "eager: compile='off'")
    directory = key.directory(root)
    try:
        manifest = read_manifest(directory, key)
    except CacheProblem as exc:
        if policy == "auto":
            (log.info if isinstance(exc, CacheMissing) else log.warning)("%s: %s; running eager", kind, exc)
            return _eager(kind, model, policy, f"eager: {exc}", key=key, directory=directory, problem=str(exc))
        log.warning("%s: %s; compiling now (compile='on')", kind, exc)
        return build(kind, forecaster, key, root, tolerance, min_speedup, repeats, policy=policy, problem=str(exc))
    if policy == "auto" and manifest["decision"] != "compiled":
        return _eager(kind, model, policy, f"eager: {directory / MANIFEST} says {manifest['reason']}",
                      key=key, directory=directory, manifest=manifest)
    outcome = warm_start(kind, forecaster, key, directory, manifest, tolerance, policy=policy)
    if policy == "on" and outcome.parity_error is None:  # torch could not use the files: build them again
        return build(kind, forecaster, key, root, tolerance, min_speedup, repeats, policy=policy,
                     problem=outcome.reason)
    return outcome


def warm_start(kind: str, forecaster, key: CacheKey, directory: Path, manifest: dict, tolerance: float,
               policy: str = "auto", repeats: int = 0) -> Outcome:
    """Compile from a verified cache (a private copy of it) and check parity on the probe.

    ``repeats`` > 0 also times eager vs compiled (what the model asset re-measures)."""
    model, shape = forecaster.model, key.probe
    make_eager(kind, model)
    eager = run_probes(forecaster, shape)
    measured = {}
    private = Path(tempfile.mkdtemp(prefix=f"hpo-{kind}-inductor-"))
    try:
        shutil.copytree(Path(directory) / INDUCTOR, private, dirs_exist_ok=True)
        compile_in_place(kind, model, key.compile_mode, key.dynamic)
        with _inductor_dir(private):
            began = time.perf_counter()
            compiled = run_probes(forecaster, shape)
            measured["warm_start_seconds"] = time.perf_counter() - began
            if repeats:
                measured["eager_seconds"], measured["compiled_seconds"] = time_both(kind, forecaster, shape, repeats)
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


def build(kind: str, forecaster, key: CacheKey, root: str | Path, tolerance: float = PARITY_TOLERANCE,
          min_speedup: float = MIN_SPEEDUP, repeats: int = 3, policy: str = "on", problem: str = "") -> Outcome:
    """Compile into a fresh cache, time eager vs compiled, check parity, persist (manifest last).

    After a cache ``problem`` the verified files of the rejected cache seed the new one (see
    :func:`intact_files`); otherwise the compile is cold.

    The model stays compiled when parity holds and either the speed-up reached ``min_speedup`` or
    the policy is ``on``. ``torch.compiler.reset()`` first, so the build really compiles (and writes
    every kernel): other compiled functions of this process recompile on their next call."""
    model, shape = forecaster.model, key.probe
    directory = key.directory(root)
    make_eager(kind, model)
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
        compile_in_place(kind, model, key.compile_mode, key.dynamic)
        with _inductor_dir(staging / INDUCTOR):
            began = time.perf_counter()
            compiled = run_probes(forecaster, shape)
            first = time.perf_counter() - began
            measured["cold_compile_seconds" if not reused else "rebuild_compile_seconds"] = first
            measured["eager_seconds"], measured["compiled_seconds"] = time_both(kind, forecaster, shape, repeats)
        measured["speedup"] = measured["eager_seconds"] / measured["compiled_seconds"]
    except Exception as exc:  # no C++ compiler, unsupported op, ...: recorded, and eager is used
        log.warning("%s: torch.compile failed: %r", kind, exc)
        compiled, measured["error"] = None, f"torch.compile failed ({exc!r})"
    error = None if compiled is None else parity_error(compiled, eager)
    (staging / INDUCTOR).mkdir(parents=True, exist_ok=True)
    manifest = _manifest(key, measured, error, tolerance, min_speedup, file_table(staging / INDUCTOR))
    write_manifest(staging, manifest)
    installed = _install(staging, directory)
    kw = dict(key=key, directory=directory if installed else None, cache="cold", manifest=manifest,
              parity_error=error, parity_tolerance=tolerance, measured=dict(measured), problem=problem)
    if error is None or not error <= tolerance or (manifest["decision"] != "compiled" and policy != "on"):
        return _eager(kind, model, policy, f"eager: {manifest['reason']}", **kw)
    note = f" (built now: {problem})" if problem else ""
    return Outcome(kind, policy, True, f"compiled: {manifest['reason']}{note}", **kw)


def reverify(kind: str, forecaster, key: CacheKey, root: str | Path, tolerance: float = PARITY_TOLERANCE,
             min_speedup: float = MIN_SPEEDUP, repeats: int = 3) -> Outcome:
    """The model asset: warm-start a valid cache and re-measure it (speed, parity), or build it.

    On a valid cache the manifest is rewritten with these measurements (its files are unchanged)."""
    repeats = max(1, repeats)
    directory = key.directory(root)
    try:
        manifest = read_manifest(directory, key)
    except CacheMissing:
        return build(kind, forecaster, key, root, tolerance, min_speedup, repeats, policy="auto")
    except CacheInvalid as exc:
        log.warning("%s: %s; rebuilding", kind, exc)
        return build(kind, forecaster, key, root, tolerance, min_speedup, repeats, policy="auto", problem=str(exc))
    outcome = warm_start(kind, forecaster, key, directory, manifest, tolerance, policy="auto", repeats=repeats)
    if outcome.parity_error is None:  # torch could not use the files: build them again
        return build(kind, forecaster, key, root, tolerance, min_speedup, repeats, policy="auto",
                     problem=outcome.reason)
    measured = {**manifest.get("measured", {}), **outcome.measured, "repeats": repeats,
                "threads": torch.get_num_threads()}
    measured["speedup"] = measured["eager_seconds"] / measured["compiled_seconds"]
    manifest = _manifest(key, measured, outcome.parity_error, tolerance, min_speedup, manifest["files"],
                         created_at=manifest["created_at"])
    write_manifest(directory, manifest)
    outcome.manifest, outcome.measured = manifest, measured
    if manifest["decision"] == "compiled":
        outcome.reason = f"compiled: warm start in {measured['warm_start_seconds']:.2f}s, {manifest['reason']}"
    else:
        make_eager(kind, forecaster.model)
        outcome.compiled, outcome.reason = False, f"eager: {manifest['reason']}"
    return outcome


def _install(staging: Path, directory: Path) -> bool:
    """Move a finished build into place; if a concurrent build got there first, ours is dropped."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    old = directory.parent / f".{directory.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        if directory.exists():
            os.replace(directory, old)
        os.replace(staging, directory)
        return True
    except OSError as exc:
        log.warning("could not install the compile cache %s (%s); another process installed one", directory, exc)
        shutil.rmtree(staging, ignore_errors=True)
        return directory.is_dir()
    finally:
        shutil.rmtree(old, ignore_errors=True)
