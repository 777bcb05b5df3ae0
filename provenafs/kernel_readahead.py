"""Sets how far the kernel reads ahead in the mount's files (its backing device's readahead).

A FUSE mount starts with the kernel's default readahead of 128 KiB, so a sequential reader's
bytes reach the daemon as 128 KiB requests; with 1 MiB the kernel sends 1 MiB requests (FUSE
negotiates up to 256 pages a request), an eighth of the per-request work for the same bytes.
The knob is ``/sys/class/bdi/MAJ:MIN/read_ahead_kb``, writable by root only: the mount sets it
where it may and says how to set it by hand where it may not.

The device is found in ``/proc/self/mountinfo``, never by a ``stat`` of the mountpoint (that
would be a request to the daemon's own, possibly not yet serving, session). It must not touch
anything but that one file of the mount's own device.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

__all__ = ["mount_device", "set_readahead"]

log = logging.getLogger(__name__)

_BDI_ROOT = Path("/sys/class/bdi")
_MOUNTINFO = Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """A mountinfo path field as a path (space, tab, newline and backslash come octal-escaped)."""
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mount_device(mountpoint: Path, mountinfo: str | None = None) -> str | None:
    """``MAJ:MIN`` of the newest mount at ``mountpoint``, or None if none is listed."""
    if mountinfo is None:
        try:
            mountinfo = _MOUNTINFO.read_text()
        except OSError:
            return None
    wanted = str(mountpoint)
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and _unescape(fields[4]) == wanted:
            found = fields[2]  # later lines are newer mounts over the same path
    return found


def set_readahead(mountpoint: Path, kib: int, *, bdi_root: Path = _BDI_ROOT) -> int | None:
    """Make the kernel read ahead ``kib`` KiB in the mount's files; the readahead now in force
    (KiB), or None if the mount's device is not found. Never raises: where the file may not be
    written (not root), the readahead stays as it was, and the log says how to change it."""
    device = mount_device(mountpoint)
    if device is None:
        log.info("kernel readahead left alone: %s not found in %s", mountpoint, _MOUNTINFO)
        return None
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
