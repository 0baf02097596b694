"""Finding model weights and loading them strictly.

A checkpoint is a directory with ``config.json`` + ``model.safetensors`` (the Hugging Face layout).
It is found, in order: a local directory path; the Hugging Face cache or hub at a pinned revision
(``HF_HUB_OFFLINE=1`` keeps it to the cache). Without network and without a cached copy the error
says exactly how to provide the weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or does not match the model built from its config."""


def resolve_checkpoint(source: str | Path, revision: str | None = None) -> Path:
    """Return a local directory holding ``config.json`` and ``model.safetensors``.

    ``source`` is a local directory, or a Hugging Face repo id such as ``Datadog/Toto-Open-Base-1.0``
    fetched at ``revision`` (a commit hash pins it) through the local cache.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
        if missing:
            raise CheckpointError(f"checkpoint directory {path} lacks {', '.join(missing)}")
        return path
    if path.exists() or str(source).count("/") != 1:
        raise CheckpointError(
            f"checkpoint {source!r} is neither a directory with {CONFIG_FILE} + {WEIGHTS_FILE} "
            "nor a Hugging Face repo id of the form owner/name"
        )
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo_id=str(source), revision=revision, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]
        )
    except Exception as exc:  # offline, unknown repo, revision not cached, ...
        raise CheckpointError(
            f"could not get {source}@{revision or 'main'} from the Hugging Face cache or hub ({exc}). "
            f"Without network, either copy a checkpoint directory ({CONFIG_FILE} + {WEIGHTS_FILE}) "
            f"and pass its path, or on a connected machine run "
            f"`huggingface-cli download {source} --revision {revision or 'main'}` and copy "
            "~/.cache/huggingface/hub here (HF_HUB_OFFLINE=1 then uses it)."
        ) from exc
    return Path(local)


def read_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read model config {path}: {exc}") from exc


def load_strict(module: torch.nn.Module, directory: Path, rename: Mapping[str, str] | None = None,
                computed_suffixes: tuple[str, ...] = ()) -> None:
    """Load ``model.safetensors`` into ``module``; every key must match, and mismatches are named.

    ``rename`` maps checkpoint key prefixes to the module's (for alternative published layouts).
    ``computed_suffixes``: checkpoint keys ending so are values the module computes itself (e.g.
    rotary frequencies some exports include); they are dropped, never silently loaded or required.
    """
    path = Path(directory) / WEIGHTS_FILE
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read weights {path}: {exc}") from exc
    for old, new in (rename or {}).items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith(computed_suffixes)}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if wrong:
            parts.append(
                "shape mismatches "
                + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:10])
            )
        raise CheckpointError(f"{path} does not match the model built from its config.json: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def save_checkpoint(module: torch.nn.Module, config: dict, directory: Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (the layout :func:`resolve_checkpoint` reads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    return directory


def checkpoint_revision(directory: Path) -> str:
    """What pins a checkpoint's numbers: the Hugging Face commit of a cache snapshot, else a content hash."""
    directory = Path(directory).resolve()
    if directory.parent.name == "snapshots" and len(directory.name) == 40:
        return directory.name
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"
