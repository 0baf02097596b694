"""Short config labels for tables, legends and the terminal: the knobs a person compares, tersely.

``toto[aggregate=median,num_samples=256]`` reads ``n=256 median``; a Kronos config
``T=0.63 p=0.81 k=0 ctx=128 clip=2.5 n=8 mean``; a Toto 2.0 config ``22m ctx=all 1pass close median``.
The full name (``Trial.name``) stays the identity in files and marts; a label is only for reading.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Mapping


def checkpoint_label(checkpoint: str) -> str:
    """``Datadog/Toto-2.0-22m`` -> ``22m``; ``bundled:toto2-tiny`` -> ``tiny``; a directory -> its name."""
    name = PurePath(checkpoint.removeprefix("bundled:")).name
    for prefix in ("Toto-2.0-", "toto2-"):
        name = name.removeprefix(prefix)
    return name or checkpoint


def short_label(model: str, knobs: Mapping | str) -> str:
    """A config's knobs in a few characters (``knobs``: the mapping or its JSON)."""
    k = json.loads(knobs) if isinstance(knobs, str) else dict(knobs)
    if model == "toto":
        return f"n={k['num_samples']} {k['aggregate']}"
    if model == "kronos":
        return (f"T={k['temperature']:g} p={k['top_p']:g} k={k['top_k']} ctx={k['max_context']} "
                f"clip={k['clip']:g} n={k['sample_count']} {k['aggregate']}")
    if model == "toto2":
        decoding = f"blk{k['decode_block_size']}" if k["decode_block_size"] else "1pass"
        return (f"{checkpoint_label(k['checkpoint'])} ctx={k['context_length'] or 'all'} {decoding} "
                f"{k['variates']} {k['aggregate']}")
    if model == "random_walk":
        return f"n={k.get('num_samples', 1)} {k.get('aggregate', 'median')}"
    return model
