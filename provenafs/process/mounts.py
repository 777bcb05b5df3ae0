"""Where a mount is and where its daemon logs: facts about mounts that need no daemon.

``find_mount`` reads ``/proc/self/mountinfo``; ``log_path_for`` names the per-mountpoint log
of a background daemon; ``READY_FD_ENV`` names the readiness pipe between ``provenafs mount``
and the daemon it starts. The commands (``status``, ``umount``, ``login``) and the tests use
these without loading the FUSE daemon (pyfuse3, the core). This module must stay that light:
standard library only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.parse
from pathlib import Path

__all__ = [
    "FSTYPE",
    "READY_FD_ENV",
    "MountEntry",
    "find_mount",
    "log_path_for",
    "mount_containing",
    "provenafs_mounts",
]

FSTYPE = "fuse.provenafs"
READY_FD_ENV = "PROVENAFS_READY_FD"  # set by `provenafs mount` for a daemon it starts


@dataclasses.dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``."""

    mountpoint: Path
    fstype: str
    source: str
    device: str = dataclasses.field(default="", compare=False)  # MAJ:MIN


def _unescape_mountinfo(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    return (
        field.encode("latin-1")
        .decode("unicode_escape")
        .encode("latin-1")
        .decode("utf-8", "surrogateescape")
    )


def _mount_entries(mountinfo: Path) -> list[MountEntry]:
    """Every line of ``mountinfo`` that parses, in order (stacked mounts: the top one last)."""
    entries = []
    for line in mountinfo.read_text(errors="surrogateescape").splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if len(fields) < separator + 3 or len(fields) < 5:
            continue
        entries.append(
            MountEntry(
                Path(_unescape_mountinfo(fields[4])),
                fields[separator + 1],
                _unescape_mountinfo(fields[separator + 2]),
                device=fields[2],
            )
        )
    return entries


def find_mount(
    mountpoint: Path, mountinfo: Path = Path("/proc/self/mountinfo")
) -> MountEntry | None:
    """The mount whose mountpoint is exactly ``mountpoint`` (the last one, if stacked)."""
    wanted = Path(os.path.abspath(mountpoint))
    found = [entry for entry in _mount_entries(mountinfo) if entry.mountpoint == wanted]
    return found[-1] if found else None


def provenafs_mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[MountEntry]:
    """Every provenafs mount (the top one where mounts are stacked), with its source as the
    data store URL it was mounted from."""
    top = {entry.mountpoint: entry for entry in _mount_entries(mountinfo)}
    return [
        dataclasses.replace(entry, source=urllib.parse.unquote(entry.source))
        for entry in top.values()
        if entry.fstype == FSTYPE
    ]


def mount_containing(path: Path) -> Path | None:
    """The provenafs mountpoint that *path* lies in (the path itself or a parent), if any."""
    for candidate in (path, *path.parents):
        entry = find_mount(candidate)
        if entry is not None:
            return candidate if entry.fstype == FSTYPE else None
    return None


def log_path_for(mountpoint: Path) -> Path:
    """``~/.cache/provenafs/logs/<hash of the mountpoint>.log``: one log per mountpoint."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(mountpoint))).hexdigest()[:16]
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "provenafs" / "logs" / f"{digest}.log"
