"""Device and dtype names from configuration, checked against what this machine has; device leases.

When several CUDA devices are visible, each model step process leases one of them: an exclusive,
non-blocking ``flock`` on one lock file per device index, held as long as the process lives. The
kernel drops the lock when the process ends however it ends (kill -9 included), so no lease can go
stale, and with the accelerator pool limit at one slot per visible device a free device exists
whenever Dagster starts a step of that pool. Torch is imported lazily: the lease needs no torch.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

DTYPE_NAMES = ("float32", "bfloat16", "float16")
LOCK_DIR_ENV = "HPO_DEVICE_LOCK_DIR"


class DeviceBusyError(RuntimeError):
    """Every visible device is leased by another process."""


def visible_device_count() -> int:
    """CUDA devices this process may use (honours CUDA_VISIBLE_DEVICES); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(requested: str = "auto") -> str:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    import torch

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


def resolve_dtype(name: str):
    import torch

    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; use one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def claim_device(requested: str = "auto", *, device_count: int | None = None, prefix: str = "cuda",
                 lock_dir: str | os.PathLike | None = None) -> str:
    """The device a model step should use: with ``auto`` and more than one visible device, a leased
    ``{prefix}:{index}`` so concurrent steps on one machine never share a device; otherwise the same
    answer as :func:`resolve_device`. ``device_count`` and ``prefix`` are injectable for tests."""
    if requested.strip().lower() != "auto":
        return resolve_device(requested)
    count = visible_device_count() if device_count is None else device_count
    if count > 1:
        return lease_device(count, prefix, lock_dir).device
    if device_count is not None:  # injected: no torch question to ask
        return prefix if count == 1 else "cpu"
    return resolve_device("auto")


@dataclass
class DeviceLease:
    """An exclusive lock on one device index, held by this process through ``fd``."""

    device: str
    index: int
    path: Path
    fd: int
    pid: int

    def release(self) -> None:
        """Give the device back before the process ends (the kernel does it at exit anyway)."""
        _LEASES.pop((str(self.path.parent), self.device.split(":")[0]), None)
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


# One lease per (lock dir, prefix) per process: both model resources of one process share a device.
_LEASES: dict[tuple[str, str], DeviceLease] = {}


def _forget_inherited_leases() -> None:
    """A forked child holds its parent's lock through inherited descriptors; drop them so the parent's
    lease ends with the parent, and let the child lease its own device if it needs one."""
    for lease in list(_LEASES.values()):
        try:
            os.close(lease.fd)
        except OSError:
            pass
    _LEASES.clear()


os.register_at_fork(after_in_child=_forget_inherited_leases)


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "hpo-device-locks")


def _lock_ids(count: int, prefix: str) -> list[str]:
    """Lock file ids per visible index: the physical ids from CUDA_VISIBLE_DEVICES when it lists them,
    so processes that see different subsets of the GPUs still lock the same physical device."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if prefix == "cuda" and len(visible) >= count:
        return visible[:count]
    return [str(i) for i in range(count)]


def lease_device(count: int, prefix: str = "cuda", lock_dir: str | os.PathLike | None = None) -> DeviceLease:
    """Lease the first free device of ``count`` by ``flock(LOCK_EX | LOCK_NB)`` on
    ``{lock_dir}/{prefix}-{id}.lock``; the lease lasts as long as this process (or ``release()``).
    Raises :class:`DeviceBusyError` naming the holders when every device is taken."""
    if count < 1:
        raise ValueError(f"device count {count} must be at least 1")
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    held = _LEASES.get((str(directory), prefix))
    if held is not None and held.pid == os.getpid():
        return held
    directory.mkdir(parents=True, exist_ok=True)
    ids = _lock_ids(count, prefix)
    for index, device_id in enumerate(ids):
        path = directory / f"{prefix}-{device_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for the busy error and for people reading the dir
        lease = DeviceLease(f"{prefix}:{index}", index, path, fd, os.getpid())
        _LEASES[(str(directory), prefix)] = lease
        return lease
    holders = ", ".join(f"{prefix}:{i} pid {_holder(directory / f'{prefix}-{d}.lock')}" for i, d in enumerate(ids))
    raise DeviceBusyError(
        f"all {count} {prefix} devices are leased by other processes ({holders}; lock files in {directory}). "
        f"Run at most {count} model processes at once, or ask for an explicit '{prefix}:N' device to share "
        f"one on purpose.")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
