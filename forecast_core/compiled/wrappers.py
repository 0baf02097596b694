"""An engine compiled in place: its hot methods replaced on one instance by ``torch.compile`` wrappers.

The engine class names what is worth compiling (``TotoModel.compile_targets()``,
``Kronos.compile_targets()``); the wrappers are instance attributes of the same names, so the
class, other instances and the model files stay eager, and :func:`make_eager` undoes it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def target_names(engine: type) -> list[str]:
    """The attribute names of an engine class's compile targets (part of the cache key)."""
    return [function.__name__ for function in engine.compile_targets()]


def compile_in_place(model: torch.nn.Module, mode: str = "default", dynamic: bool = True) -> None:
    """Replace the model's ``compile_targets()`` by ``torch.compile`` wrappers, on this instance."""
    for function in type(model).compile_targets():
        # Compile the undecorated function: torch.no_grad()'s wrapper code is shared by every decorated
        # method, so compiling it would make their graphs evict each other (measured: endless recompiles).
        inner = inspect.unwrap(function).__get__(model, type(model))
        setattr(model, function.__name__, _no_grad(torch.compile(inner, mode=None if mode == "default" else mode,
                                                                  dynamic=dynamic)))


def _no_grad(fn):
    """Run ``fn`` without autograd (the targets are inference-only; some are ``@torch.no_grad`` methods)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)

    return run


def make_eager(model: torch.nn.Module) -> dict[str, Callable]:
    """Drop the compiled wrappers (the class's eager methods apply again); returns them, to put back."""
    return {name: model.__dict__.pop(name) for name in target_names(type(model)) if name in model.__dict__}


def is_compiled(model: torch.nn.Module) -> bool:
    return any(name in model.__dict__ for name in target_names(type(model)))
