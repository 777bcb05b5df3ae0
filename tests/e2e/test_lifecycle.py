"""Mounting and unmounting as users do it: background mounts, mount(8), umount, kill -9.

Each test makes its own mount point; daemons started in the background are found by PID (the
mount point is unique to the test) and stopped by PID if anything is left over.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from provenafs.process.mounts import FSTYPE, find_mount
from tests.conftest import LocalStore, free_port, require_fuse
from tests.e2e.conftest import isolated_environment, start_mount, stop_mount

pytestmark = pytest.mark.fuse

PROVENAFS = [sys.executable, "-m", "provenafs"]
HELPER_INSTALL_PATH = Path("/sbin/mount.fuse.provenafs")  # the only place mount(8) looks


def daemon_pids(mountpoint: Path) -> list[int]:
    """PIDs of provenafs daemons whose command line names ``mountpoint``."""
    wanted = os.fsencode(str(mountpoint))
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv and b"provenafs" in b" ".join(argv) and b"mount" in argv:
            pids.append(int(entry.name))
    return pids


def wait_for_exit(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    return False


def wait_until_unmounted(mountpoint: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find_mount(mountpoint) is None:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    """An empty directory; whatever gets mounted on it is unmounted and its daemon stopped."""
    require_fuse()
    path = tmp_path / "mnt"
    path.mkdir()
    try:
        yield path
    finally:
        if find_mount(path) is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False, timeout=60)
        for pid in daemon_pids(path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_for_exit(pid, 15):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def alice_env(store: LocalStore, tmp_path: Path) -> Mapping[str, str]:
    return isolated_environment(
        tmp_path, {"PROVENAFS_OFFLINE_TOKEN": store.token("alice", offline=True)}
    )


def run(
    args: list[str], env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def test_background_mount_returns_when_ready_then_status_and_umount(
    local_store: LocalStore, mountpoint: Path, tmp_path: Path
) -> None:
    env = alice_env(local_store, tmp_path)
    result = run([*PROVENAFS, "mount", local_store.base_url, str(mountpoint)], env)
    assert result.returncode == 0, result.stderr
    entry = find_mount(mountpoint)
    assert entry is not None
    assert entry.fstype == FSTYPE
    assert entry.source == local_store.base_url
    assert "by-name" in os.listdir(mountpoint)  # answers at once: no waiting after return
    [pid] = daemon_pids(mountpoint)

    status = run([*PROVENAFS, "status", str(mountpoint)], env)
    assert status.returncode == 0, status.stderr
    assert str(mountpoint) in status.stdout
    assert "block cache:" in status.stdout
    raw = run([*PROVENAFS, "status", str(mountpoint), "--json"], env)
    assert raw.returncode == 0, raw.stderr
    assert isinstance(json.loads(raw.stdout), dict)

    result = run([*PROVENAFS, "umount", str(mountpoint)], env)
    assert result.returncode == 0, result.stderr
    assert find_mount(mountpoint) is None
    assert wait_for_exit(pid), "the daemon kept running after umount"

    digest = hashlib.sha256(os.fsencode(str(mountpoint))).hexdigest()[:16]
    log_file = tmp_path / "cache" / "provenafs" / "logs" / f"{digest}.log"
    assert stat.S_IMODE(log_file.parent.stat().st_mode) == 0o700
    log_text = log_file.read_text()
    assert f"mounted {local_store.base_url} at {mountpoint}" in log_text
    assert f"unmounted {mountpoint}" in log_text


def test_background_mount_fails_clearly(
    local_store: LocalStore, mountpoint: Path, tmp_path: Path
) -> None:
    env = alice_env(local_store, tmp_path)
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = run([*PROVENAFS, "mount", unreachable, str(mountpoint)], env)
    assert result.returncode == 1
    assert f"cannot reach the data store at {unreachable}" in result.stderr
    assert find_mount(mountpoint) is None

    bad_token = isolated_environment(tmp_path, {"PROVENAFS_TOKEN": "not.a.token"})
    result = run([*PROVENAFS, "mount", local_store.base_url, str(mountpoint)], bad_token)
    assert result.returncode == 1
    assert "refused the token" in result.stderr
    assert "not.a.token" not in result.stderr
    assert find_mount(mountpoint) is None

    ok = run([*PROVENAFS, "mount", local_store.base_url, str(mountpoint)], env)
    assert ok.returncode == 0, ok.stderr
    again = run([*PROVENAFS, "mount", local_store.base_url, str(mountpoint)], env)
    assert again.returncode == 1
    assert "already mounted" in again.stderr
    assert run([*PROVENAFS, "umount", str(mountpoint)], env).returncode == 0


@pytest.fixture
def installed_helper() -> Iterator[Path]:
    """``/sbin/mount.fuse.provenafs``: mount(8) runs helpers from /sbin only, with no PATH."""
    venv_helper = Path(sys.executable).parent / "mount.fuse.provenafs"
    if not venv_helper.exists():
        pytest.fail(f"{venv_helper} is missing: install the project into the venv")
    created = False
    if not HELPER_INSTALL_PATH.exists():
        if os.geteuid() != 0:
            pytest.skip("installing the mount(8) helper needs root")
        HELPER_INSTALL_PATH.symlink_to(venv_helper)
        created = True
    try:
        yield HELPER_INSTALL_PATH
    finally:
        if created:
            HELPER_INSTALL_PATH.unlink()


def test_mount_t_fuse_provenafs_with_fstab_options(
    local_store: LocalStore, mountpoint: Path, tmp_path: Path, installed_helper: Path
) -> None:
    env = alice_env(local_store, tmp_path)
    command = ["mount", "-t", "fuse.provenafs", local_store.base_url, str(mountpoint)]
    command += ["-o", "_netdev,noauto,x-systemd.automount,nosuid,nodev,metadata_ttl=10"]
    result = run(command, env)
    assert result.returncode == 0, result.stderr + result.stdout
    entry = find_mount(mountpoint)
    assert entry is not None
    assert entry.fstype == FSTYPE
    assert "by-name" in os.listdir(mountpoint)
    result = run(["umount", str(mountpoint)], env)
    assert result.returncode == 0, result.stderr
    assert find_mount(mountpoint) is None


def test_kill_9_leaves_no_dead_mount(local_store: LocalStore, tmp_path: Path) -> None:
    mount = start_mount(local_store, tmp_path / "mnt")
    try:
        assert "by-name" in os.listdir(mount.path)
        mount.process.send_signal(signal.SIGKILL)
        mount.process.wait(timeout=30)
        assert wait_until_unmounted(mount.path), "auto_unmount left the mount behind"
        try:
            listing = os.listdir(mount.path)
        except OSError as exc:  # ENOTCONN: "Transport endpoint is not connected"
            pytest.fail(f"mountpoint unusable after kill -9: {errno.errorcode[exc.errno or 0]}")
        assert listing == []
    finally:
        stop_mount(mount)


def test_sigterm_unmounts_cleanly(local_store: LocalStore, tmp_path: Path) -> None:
    mount = start_mount(local_store, tmp_path / "mnt")
    try:
        assert "by-name" in os.listdir(mount.path)
        mount.process.send_signal(signal.SIGTERM)
        assert mount.process.wait(timeout=30) == 0
        assert find_mount(mount.path) is None
    finally:
        stop_mount(mount)
