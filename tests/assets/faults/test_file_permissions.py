"""File modes: atomic writes through a private temp file must still leave files other users can read."""

from __future__ import annotations

import os

import pytest
from dagster import DagsterInstance

from forecast_core.store import Storage
from tests.support import make_resources, materialize_prices

pytestmark = pytest.mark.slow


def test_written_files_are_readable_by_other_users(tmp_path, csv_dir):
    """Atomic writes go through a private temp file; the final file gets the usual 0o666 - umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert materialize_prices(DagsterInstance.ephemeral(), "AAA", make_resources(tmp_path / "st", csv_dir)).success
    prices = Storage(tmp_path / "st").prices_path("AAA")
    assert prices.stat().st_mode & 0o777 == 0o666 & ~umask
