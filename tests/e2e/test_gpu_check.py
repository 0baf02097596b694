"""benchmarks/gpu_check.py stays runnable: its --quick mode (tiny configs, CPU) runs every section here.

The GPU run itself needs a lent device (see the script's docstring); this keeps the script from rotting
between such runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time

import pytest
from tests.support import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ACCEPTANCE_S = 60.0


def _gpu_check():
    if "gpu_check_under_test" not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check_under_test"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=180, check=False)
    return done, time.perf_counter() - start, out


def test_quick_mode_runs_every_section_in_under_a_minute(quick_run):
    done, seconds, out = quick_run
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert seconds < ACCEPTANCE_S, f"--quick took {seconds:.1f}s (acceptance: under {ACCEPTANCE_S:.0f}s)"
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is True and report["meta"]["device"] == "cpu"
    expected = [name for name, *_ in _gpu_check().SECTIONS]
    assert list(report["sections"]) == expected
    for name, section in report["sections"].items():
        assert section["status"] == "ok", f"{name}: {section['status']}"
        numbers = [r["value"] for r in section["rows"] if isinstance(r["value"], (int, float))]
        assert numbers, f"{name}: no measured numbers"
        assert all(math.isfinite(v) for v in numbers), f"{name}: non-finite values"
        texts = [r["value"] for r in section["rows"] if isinstance(r["value"], str)]
        assert not [t for t in texts if t.startswith(("non-finite", "error"))], f"{name}: {texts}"
    assert "total" in done.stdout and "== compile: ok" in done.stdout  # the table and progress lines


def test_quick_mode_measures_what_each_section_promises(quick_run):
    done, _, out = quick_run
    assert done.returncode == 0, done.stderr[-4000:]
    sections = json.loads(out.read_text())["sections"]
    metrics = {s: {r["metric"] for r in sections[s]["rows"]} for s in sections}
    assert {"seconds", "samples/s", "peak GPU memory"} <= metrics["toto"]
    assert {"speed-up batch vs calls", "seconds per call", "seconds per sample row",
            "predicted speed-up bound"} <= metrics["kronos"]
    assert {"max rel diff", "bound (max |a-b| / mean |b|)"} <= metrics["agreement"]
    assert {"symbols per CPU-hour", "CPUs for 3000 symbols in 8 h", "share in model calls"} <= metrics["tune"]
    assert {"eager seconds", "compiled seconds", "cold compile seconds", "warm start seconds",
            "parity error"} <= metrics["compile"]
    # without a GPU the agreement section compares the CPU with itself at other threads and chunk
    # sizes; Toto's mean forecast has no draws to flip, so it must agree within the stated bound
    bound = _gpu_check().AGREEMENT_BOUND
    mean = [r for r in sections["agreement"]["rows"] if r["name"].startswith("toto mean forecast")
            and r["metric"] == "max rel diff"]
    assert len(mean) == 1 and mean[0]["value"] <= bound, mean
    if (REPO / ".upstream" / ".installed").exists():  # `make test` installs upstream: compared, not skipped
        upstream = [r for s in ("toto", "kronos") for r in sections[s]["rows"]
                    if r["metric"] == "speed-up ours vs upstream"]
        assert upstream and all(isinstance(r["value"], float) for r in upstream), upstream
