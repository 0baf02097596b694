"""Import Datadog's ``toto-2`` 2.0.0 from ``.upstream/toto2`` for the Toto 2.0 parity tests.

`make test` installs it there with the few packages it imports that the project lacks, all without
their pins and ignoring its ``Requires-Python >= 3.12`` (its code parses on 3.11): UPSTREAM_TOTO2 in
the Makefile. Nothing upstream lands in the project's environment.

The only shim: ``gluonts.torch/__init__`` imports Lightning (unused by Toto 2.0), so that package is
registered without running its ``__init__``, with the one name ``toto2`` imports from it
(``PyTorchPredictor``) taken from its own submodule.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

from benchmarks.upstream.toto import on_path

UPSTREAM_DIR = Path(__file__).resolve().parents[2] / ".upstream" / "toto2"
INSTALL_HINT = f"upstream toto-2 not installed in {UPSTREAM_DIR}; run `make .upstream/.installed`"


def available() -> bool:
    return (UPSTREAM_DIR / "toto2" / "model.py").is_file() and (UPSTREAM_DIR / "dd_unit_scaling").is_dir()


def import_upstream():
    """Return upstream's ``toto2`` package (``Toto2Model``, ``Toto2ModelConfig``)."""
    package = on_path(UPSTREAM_DIR)
    if not hasattr(package, "PyTorchPredictor"):
        package.PyTorchPredictor = importlib.import_module("gluonts.torch.model.predictor").PyTorchPredictor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module("toto2")


def upstream_twin(ours):
    """An upstream ``Toto2Model`` built from our config with our weights (strict load)."""
    toto2 = import_upstream()
    theirs = toto2.Toto2Model(toto2.Toto2ModelConfig(**ours.config.to_dict()))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.to(ours.dtype).eval()


def upstream_forecast(theirs, context, horizon, decode_block_size=None, cap_k=0.0):
    """Upstream quantiles ``[9, batch, variates, horizon]`` for a fully observed ``[B, V, T]`` context."""
    import torch

    inputs = {
        "target": context.clone(),
        "target_mask": torch.ones_like(context, dtype=torch.bool),
        "series_ids": torch.zeros(context.shape[:-1], dtype=torch.long),
    }
    return theirs.forecast(inputs, horizon, decode_block_size=decode_block_size, quantile_real_cap_k=cap_k)
