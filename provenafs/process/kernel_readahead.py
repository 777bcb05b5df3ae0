"""Sets how far the kernel reads ahead in the mount's files (its backing device's readahead).

A FUSE mount starts with the kernel's default readahead of 128 KiB, so a sequential reader's
bytes reach the daemon as 128 KiB requests; with 1 MiB the kernel sends 1 MiB requests (FUSE
negotiates up to 256 pages a request), an eighth of the per-request work for the same bytes.
The knob is ``/sys/class/bdi/MAJ:MIN/read_ahead_kb``, writable by root only: the mount sets it
where it may and says how to set it by hand where it may not.

The caller names the device as ``/proc/self/mountinfo`` does (``mounts.find_mount``), never
from a ``stat`` of the mountpoint (that would be a request to the daemon's own, possibly not yet
serving, session). It must not touch anything but that one file of the mount's own device.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["set_readahead"]

log = logging.getLogger(__name__)

_BDI_ROOT = Path("/sys/class/bdi")


def set_readahead(device: str, kib: int, *, bdi_root: Path = _BDI_ROOT) -> int | None:
    """Make the kernel read ahead ``kib`` KiB in the files of device ``device`` (``MAJ:MIN``,
    as ``/proc/self/mountinfo`` names it); the readahead now in force (KiB), or None if it
    cannot be read. Never raises: where the file may not be written (not root), the readahead
    stays as it was, and the log says how to change it."""
    knob = bdi_root / device / "read_ahead_kb"
    try:
        knob.write_text(f"{kib}\n")
    except OSError as exc:
        current = _read_kib(knob)
        log.info(
            "kernel readahead stays at %s KiB (%s); for faster sequential reads, as root: "
            "echo %d > %s",
            "?" if current is None else current,
            exc.strerror or type(exc).__name__,
            kib,
            knob,
        )
        return current
    log.info("kernel readahead %d KiB", kib)
    return _read_kib(knob)


def _read_kib(knob: Path) -> int | None:
    try:
        return int(knob.read_text().strip())
    except (OSError, ValueError):
        return None
