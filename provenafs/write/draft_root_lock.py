"""One mount per draft store: an ``flock`` on a draft root, held for the daemon's life.

Two mounts of the same source by the same user would share ``<state_dir>/drafts/<hash>``: both
would replay the same journals, both would append to them, and both could publish the same
draft. ``hold_draft_root`` takes an exclusive ``flock`` on ``<root>.lock`` (beside the root, so
the store never mistakes it for a draft) and keeps it until the ``with`` block ends; the
kernel lets go of it when the process dies, so a killed daemon never leaves a stale lock. A
second mount is refused (``DraftRootInUseError``, naming the mount that holds the lock) rather
than given a root of its own: drafts must survive a remount, and a second root would leave a
crash's drafts to whichever mount happened to get the first one. ``-o state_dir=`` gives a
mount a store of its own on purpose.

Blocking (one ``open`` and one ``flock``): call it before the trio loop or in a thread. It
never waits for the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from provenafs.write.drafts import mkdir_private

__all__ = ["DraftRootInUseError", "hold_draft_root", "lock_path_for"]

_MAX_HOLDER_BYTES = 4096


class DraftRootInUseError(Exception):
    """Another running mount holds the draft root; the message says which and what to do."""


def lock_path_for(root: Path) -> Path:
    return root.with_name(root.name + ".lock")


@contextlib.contextmanager
def hold_draft_root(root: Path, holder: str) -> Iterator[None]:
    """Hold the draft root *root* exclusively; *holder* (e.g. the mountpoint) is written into
    the lock file so that a refused mount can say who has it."""
    path = lock_path_for(root)
    mkdir_private(path.parent)  # as the draft store makes its root's parents: 0700
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(path, flags, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, _MAX_HOLDER_BYTES, 0).decode("utf-8", "replace").strip()
            raise DraftRootInUseError(
                f"another provenafs mount of this source ({other or 'unknown'}) uses the drafts "
                f"in {root}; unmount it first, or give this mount its own -o state_dir="
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, mounted at {holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # lets go of the lock
