"""What the POSIX tests compare: a tree's entries with their type, mode, mtime and bytes.

``snapshot(root)`` walks a tree with ``lstat`` (never following a link) and records, per
relative path, what ``stat`` says of it (type, permission bits, mtime in nanoseconds) and its
content (a file's bytes, a link's target). Helpers only: no mounts, no data store.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["Entry", "differences", "snapshot"]


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir" or "link"
    mode: int  # permission bits
    mtime_ns: int
    content: bytes  # a file's bytes, a link's target, b"" for a directory


def snapshot(root: Path, *, skip: Callable[[str], bool] = lambda path: False) -> dict[str, Entry]:
    """Every entry under *root* (not *root* itself), by path relative to it."""
    found: dict[str, Entry] = {}
    for directory, subdirs, names in os.walk(root):
        relative_dir = os.path.relpath(directory, root)
        for name in sorted([*subdirs, *names]):
            relative = name if relative_dir == "." else f"{relative_dir}/{name}"
            if skip(relative):
                continue
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                kind, content = "link", os.fsencode(os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                kind, content = "dir", b""
            else:
                kind, content = "file", path.read_bytes()
            found[relative] = Entry(kind, stat.S_IMODE(info.st_mode), info.st_mtime_ns, content)
        subdirs[:] = [
            d for d in subdirs if not skip(d if relative_dir == "." else f"{relative_dir}/{d}")
        ]
    return found


def differences(
    expected: dict[str, Entry],
    actual: dict[str, Entry],
    *,
    fields: tuple[str, ...] = ("kind", "mode", "mtime_ns", "content"),
    kinds: tuple[str, ...] = ("file", "dir", "link"),
    mtime_unit: int = 1,
) -> list[str]:
    """What differs between two snapshots, in the given fields, for entries of *kinds*
    (mtimes compared in units of ``mtime_unit`` nanoseconds)."""
    problems = []
    for path in sorted(set(expected) | set(actual)):
        want, got = expected.get(path), actual.get(path)
        if want is None or got is None:
            problems.append(f"{path}: {'missing' if got is None else 'unexpected'}")
            continue
        if want.kind not in kinds:
            continue
        for field in fields:
            left, right = getattr(want, field), getattr(got, field)
            if field == "mtime_ns":
                left, right = left // mtime_unit, right // mtime_unit
            if left != right:
                problems.append(f"{path}: {field} {left!r} != {right!r}")
    return problems
