"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The temp file sits beside the target as ``.NAME.w<pid>@<host>.<random>.tmp`` (never matched by
``*.parquet`` or ``*.json`` globs); a writer killed mid-write leaves only such a file, which
:func:`remove_stale_temp_files` clears once its writer is gone. Written files get the usual permissions (``0o666``
minus the umask), not the private ``0o600`` of a temp file.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

import pandas as pd

TEMP_SUFFIX = ".tmp"
_HOST = socket.gethostname()
_TEMP_NAME = re.compile(r"\.w(?P<pid>\d+)@(?P<host>.*)\.[A-Za-z0-9_]+\.tmp$")


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


_NEW_FILE_MODE = 0o666 & ~_umask()  # read once at import, before any thread could race on the umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.w{os.getpid()}@{_HOST}.", suffix=TEMP_SUFFIX,
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _NEW_FILE_MODE)  # mkstemp makes 0o600: other users and services could not read it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host still runs (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def remove_stale_temp_files(folder: Path, older_than_seconds: float = 3600.0) -> list[Path]:
    """Delete temp files of :func:`atomic_write` in ``folder`` left by writers killed mid-write.

    A temp file goes when the process that wrote it (named in the file) is gone from this host,
    or when it is older than ``older_than_seconds`` (writers on other hosts, older name formats);
    a write in flight is never disturbed. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_seconds
    removed = []
    for tmp in folder.glob(f".*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.search(tmp.name)
        try:
            orphan = bool(match) and match["host"] == _HOST and not process_alive(int(match["pid"]))
            if tmp.is_file() and (orphan or tmp.stat().st_mtime < cutoff):
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            continue
    return removed
