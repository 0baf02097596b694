"""Device and dtype names from configuration, checked against what this machine has."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    name = requested.strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but this torch build sees no CUDA device; use cpu or auto")
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from exc
    return name


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None
