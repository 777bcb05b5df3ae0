"""Files and directories of the data store that only its own Unix user may read.

Every file the store writes holds something private (keys, tokens, records, access settings), so
each is created 0600 from its first byte and every directory is 0700, whatever the umask. Writes
are atomic (a temporary file renamed over the target), so a crash leaves the old or the new text.

It must not log what it writes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "create_private", "private_dir", "tighten", "write_private"]

PRIVATE_UMASK = 0o077  # for the store's own process and its children: nothing for group or others


def private_dir(path: Path) -> Path:
    """Create *path* (and parents) if needed and make it 0700; returns *path*."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_private(path: Path) -> None:
    """Create *path* empty with mode 0600 unless it exists, and make it 0600 either way."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    os.chmod(path, 0o600)


def write_private(path: Path, data: str | bytes) -> None:
    """Write *data* (text as UTF-8) to *path* with mode 0600 from the first byte, atomically."""
    body = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def tighten(root: Path) -> None:
    """Take every group and other permission off *root* and everything under it.

    For what others wrote with looser modes: a data dir of an older version, and SeaweedFS's
    ``*.vif`` volume files, which weed itself ``fchmod``s to 0644 whatever its umask.
    """
    for directory, _, files in os.walk(root):
        for path in [Path(directory), *(Path(directory) / name for name in files)]:
            with contextlib.suppress(FileNotFoundError):  # weed's temporary files come and go
                mode = path.lstat().st_mode
                if mode & 0o077 and not stat.S_ISLNK(mode):
                    os.chmod(path, stat.S_IMODE(mode) & 0o700)
