"""Forecasting core: models, sampling, aggregation, backtest windows, metrics and search.

Plain Python (no Dagster), so the CLI, the Dagster assets and the tests all run the same code.
"""

from __future__ import annotations

import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("toto-kronos-hpo")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit (with ``+dirty`` for uncommitted changes) when available."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"
