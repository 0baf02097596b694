"""The compile cache on disk: keys, directories, manifests and their verification.

Layout: ``<root>/<kind>/<model-id-slug>/<key>/{manifest.json, inductor/...}``, ``root`` =
``$HPO_COMPILED_DIR`` or ``./compiled_models``. ``key`` hashes every field of :class:`CacheKey`
(weights revision, torch and Python version, device, dtype, compile mode, probe shapes, the model
code). ``inductor/`` is what inductor wrote while the build compiled (FX graphs, AOT-autograd
entries, C++ kernels and their ``.so``: see :func:`inductor_cache_dir`). ``manifest.json`` (written
atomically, last) records the key, the measurements and size + sha256 of every cache file, so a
truncated or edited file is detected before torch reads it. compiled_models/README.md lists its fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import platform
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files import atomic_write_text
from ..kronos.model import Kronos
from ..pretraining import bundled_checkpoints
from ..toto.model import TotoModel
from .parity import ProbeShape
from .wrappers import MODES, target_names

log = logging.getLogger(__name__)

FORMAT = 1
ENV_DIR = "HPO_COMPILED_DIR"
MANIFEST, INDUCTOR = "manifest.json", "inductor"
# The engine class of each kind: its compile targets and its package's source are part of the key.
ENGINES = {"toto": TotoModel, "kronos": Kronos}
REQUIRED = ("format", "key", "digest", "created_at", "decision", "reason", "parity", "files")


class CacheProblem(Exception):
    """The cache for a key cannot be used; the message says which file/field and what to do."""


class CacheMissing(CacheProblem):
    """No cache directory for this key (never built, or built for another key)."""


class CacheInvalid(CacheProblem):
    """A cache directory exists but is corrupt or was made for another key."""


def default_compiled_dir() -> str:
    """``$HPO_COMPILED_DIR``, else ``compiled_models/`` in the working directory (like HPO_STORAGE_DIR)."""
    return os.environ.get(ENV_DIR) or os.path.join(os.getcwd(), "compiled_models")


def model_id_for(source: str | Path) -> str:
    """A stable id: ``bundled:...`` for the shipped checkpoints (their path depends on the install),
    the absolute path of another local directory, else the Hugging Face repo id as given."""
    path = Path(source).expanduser()
    if path.is_dir():
        return bundled_checkpoints().get(path.resolve(), str(path.resolve()))
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
    for path in sorted(Path(inspect.getfile(ENGINES[kind])).parent.glob("*.py")):
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
        if kind not in ENGINES:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(ENGINES)}")
        if compile_mode not in MODES:
            raise ValueError(f"unknown compile mode {compile_mode!r}; use one of {', '.join(MODES)}")
        return cls(kind, model_id, revision, torch.__version__, platform.python_version(), device,
                   device_name(device), dtype, compile_mode, dynamic, dataclasses.asdict(probe),
                   target_names(ENGINES[kind]), code_version(kind))

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


def read_manifest(directory: Path, key: CacheKey, verify_files: bool = True) -> dict:
    """The manifest of ``key``'s cache, checked: readable JSON, made for this key, every file intact.

    Raises :class:`CacheMissing` when there is no cache for the key (naming caches of the same model
    that exist for other keys, and the fields that differ) and :class:`CacheInvalid` otherwise.
    """
    path = Path(directory) / MANIFEST
    rebuild = "rebuild it (policy 'on' rebuilds a rejected cache)"
    if not Path(directory).is_dir():
        raise CacheMissing(f"no compiled cache for key {key.digest} at {directory}{_other_keys(directory, key)}; "
                           "build it (policy 'on' builds a missing cache)")
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


def install(staging: Path, directory: Path) -> bool:
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


def inductor_cache_dir(directory: Path):
    """Context manager: inductor writes and reads its cache (``TORCHINDUCTOR_CACHE_DIR``) in ``directory``.

    What it builds meanwhile (FX graphs, AOT-autograd entries, C++ kernels and their ``.so``) is the
    persisted cache; compiling again from a copy of it skips lowering and C++ compilation."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    directory.mkdir(parents=True, exist_ok=True)
    return temporary_cache_dir(str(directory))
