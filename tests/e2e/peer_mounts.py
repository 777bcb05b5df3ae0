"""s3fs-fuse and ``rclone mount`` over the local store's S3, for the interoperability tests.

Each mounts one key prefix of the store's bucket with the admin S3 keys
(``DATA_DIR/s3-admin.json``), written 0600 into a private 0700 directory, in the foreground
as a child process; the ``with`` block's end unmounts it with ``fusermount3 -u`` and waits for
that process by PID. A tool that is missing skips the test, except under ``CI=true`` where
``scripts/setup`` installs both (s3fs from Debian, rclone from PyPI into ``.venv``), so it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provenafs.testing import MountNotReady, start_mount_command, stop_mount
from tests.conftest import IN_CI, LocalStore

__all__ = ["rclone_mount", "require_peer", "s3fs_mount"]

MOUNT_TIMEOUT = 60.0


def require_peer(name: str) -> str:
    """The peer's executable (rclone from the project's .venv first), else skip or fail."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is missing under CI=true (scripts/setup installs it)")
        pytest.skip(f"{name} is not installed (scripts/setup installs it)")
    return found


def _private_file(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@contextlib.contextmanager
def _mounted(argv: list[str], mountpoint: Path, log: Path) -> Iterator[Path]:
    """The peer mounted through the harness (provenafs.testing); unmounted, and stopped by
    PID, when the block ends."""
    try:
        mount = start_mount_command(argv, mountpoint, log_path=log, timeout=MOUNT_TIMEOUT)
    except MountNotReady as refused:
        pytest.fail(f"{argv[0]} did not mount: {refused}")
    try:
        yield mountpoint
    finally:
        stop_mount(mount)


def _admin(store: LocalStore) -> dict[str, str]:
    admin: dict[str, str] = json.loads((store.data_dir / "s3-admin.json").read_text())
    return admin


@contextlib.contextmanager
def s3fs_mount(store: LocalStore, prefix: str, mountpoint: Path, secrets: Path) -> Iterator[Path]:
    """s3fs over ``bucket:/prefix`` (read-write), as its users mount a Provena dataset."""
    s3fs = require_peer("s3fs")
    admin = _admin(store)
    passwd = secrets / "s3fs-passwd"
    _private_file(passwd, f"{admin['access_key_id']}:{admin['secret_access_key']}\n")
    options = [
        f"url={admin['endpoint_url']}",
        "use_path_request_style",
        f"passwd_file={passwd}",
        f"endpoint={admin.get('region', 'ap-southeast-2')}",
    ]
    argv = [s3fs, f"{admin['bucket']}:/{prefix.strip('/')}", str(mountpoint)]
    argv += ["-f", "-o", ",".join(options)]
    with _mounted(argv, mountpoint, secrets / "s3fs.log") as mounted:
        yield mounted


@contextlib.contextmanager
def rclone_mount(store: LocalStore, prefix: str, mountpoint: Path, secrets: Path) -> Iterator[Path]:
    """``rclone mount`` of ``bucket/prefix``, read-only, with its own link convention on."""
    rclone = require_peer("rclone")
    admin = _admin(store)
    config = secrets / "rclone.conf"
    _private_file(
        config,
        "[store]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {admin['access_key_id']}\n"
        f"secret_access_key = {admin['secret_access_key']}\n"
        f"endpoint = {admin['endpoint_url']}\nregion = {admin.get('region', 'ap-southeast-2')}\n"
        "force_path_style = true\n",
    )
    remote = f"store:{admin['bucket']}/{prefix.strip('/')}"
    argv = [rclone, "mount", remote, str(mountpoint), "--config", str(config), "--read-only"]
    argv += ["--links", "--cache-dir", str(secrets / "rclone-cache")]
    with _mounted(argv, mountpoint, secrets / "rclone.log") as mounted:
        yield mounted
