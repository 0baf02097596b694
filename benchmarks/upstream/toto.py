"""Import Datadog's ``toto-ts`` 0.2.0 from ``.upstream/toto`` for parity tests and the benchmark.

`make test` installs it there with the few packages it imports, all without their exact pins
(UPSTREAM_TOTO in the Makefile), so nothing upstream lands in the project's environment.

The only shim: ``gluonts.torch/__init__`` imports Lightning (unused by Toto), so that package is
registered without running its ``__init__``; its submodules import normally.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from pathlib import Path

UPSTREAM_DIR = Path(__file__).resolve().parents[2] / ".upstream" / "toto"
INSTALL_HINT = (
    f"upstream toto-ts not installed in {UPSTREAM_DIR}; run `make .upstream/.installed`"
)


def available() -> bool:
    return (UPSTREAM_DIR / "toto" / "model" / "toto.py").is_file()


def on_path(folder: Path) -> types.ModuleType:
    """Put an upstream folder on sys.path and register ``gluonts.torch`` without its ``__init__``."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    if "gluonts.torch" not in sys.modules:
        import gluonts

        package = types.ModuleType("gluonts.torch")
        package.__path__ = [os.path.join(os.path.dirname(gluonts.__file__), "torch")]
        sys.modules["gluonts.torch"] = package
    return sys.modules["gluonts.torch"]


def import_upstream():
    """Return (Toto class, TotoForecaster class, MaskedTimeseries) from the upstream package."""
    on_path(UPSTREAM_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toto = importlib.import_module("toto.model.toto")
        forecaster = importlib.import_module("toto.inference.forecaster")
        dataset = importlib.import_module("toto.data.util.dataset")
    return toto.Toto, forecaster.TotoForecaster, dataset.MaskedTimeseries


def upstream_twin(ours):
    """An upstream ``Toto`` built from our config with our weights (strict load)."""
    Toto, _, _ = import_upstream()
    theirs = Toto(**ours.config.to_dict())
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.to(ours.dtype).eval()


def masked_series(series):
    """Wrap ``[B, V, T]`` float32 values as upstream's ``MaskedTimeseries`` (timestamps unused)."""
    import torch

    _, _, MaskedTimeseries = import_upstream()
    b, v, t = series.shape
    return MaskedTimeseries(
        series=series,
        padding_mask=torch.ones_like(series, dtype=torch.bool),
        id_mask=torch.zeros_like(series, dtype=torch.int),
        timestamp_seconds=torch.zeros((b, v, t), dtype=torch.int),
        time_interval_seconds=torch.full((b, v), 86400, dtype=torch.int),
    )
