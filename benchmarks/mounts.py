"""Fresh, cold mounts of each column (provenafs, s3fs, rclone), through the one mount harness.

``MountFactory.mount`` makes a new mount for one measurement in a scratch directory of its own
and tears it down afterwards, with ``provenafs.testing`` (``start_mount`` for provenafs with its
own config and cache home and an offline token; ``start_mount_command`` for the peers); it keeps
the daemons' peak RSS for row 10. ``unavailable_columns`` says which columns cannot run here.

What it must not do: touch a mount it did not make, or wait for a mount itself (the harness
does), or fold the peak RSS of a mount with non-default options into row 10.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from benchmarks.data import MountTarget
from benchmarks.peers import PeerConfig
from benchmarks.report import KIB, MOUNT_COLUMNS, PEERS, PROVENAFS, RCLONE_FULL, RCLONE_OFF, S3FS
from provenafs.testing import (
    MountNotReady,
    MountProcess,
    start_mount,
    start_mount_command,
    stop_mount,
)

MOUNT_TIMEOUT = 60.0


@dataclasses.dataclass
class RunningMount:
    """A mount this bench made, and where its target appears."""

    column: str
    daemon: MountProcess
    dataset_root: Path

    @property
    def mountpoint(self) -> Path:
        return self.daemon.path

    def peak_rss_bytes(self) -> int | None:
        """The daemon's VmHWM (peak resident set), read while it runs."""
        return self.memory_bytes("VmHWM")

    def memory_bytes(self, field: str) -> int | None:
        """A size from the daemon's ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), while it runs."""
        try:
            status = Path(f"/proc/{self.daemon.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", status, re.MULTILINE)
        return None if match is None else int(match.group(1)) * KIB


class MountFailed(Exception):
    """The mount did not become ready; the message is one line and says why (no secrets)."""


def provenafs_options(column: str, extra_options: Sequence[str]) -> str | None:
    """The ``-o`` string of a provenafs mount (None: default settings, as users get them).

    Extra options are for provenafs only; asking for them on a peer is a ValueError.
    """
    if extra_options and column != PROVENAFS:
        raise ValueError(f"extra -o options are for provenafs mounts only, not {column}")
    return ",".join(extra_options) or None


class MountFactory:
    """Makes fresh mounts of each column of one local store; remembers the daemons' peak RSS."""

    def __init__(
        self,
        *,
        base_url: str,
        peers: PeerConfig,
        scratch: Path,
        provenafs_token: str,
    ) -> None:
        self._base_url = base_url
        self._peers = peers
        self._scratch = scratch
        self._provenafs_token = provenafs_token
        self._count = 0
        self.peak_rss: dict[str, int] = {}

    @contextlib.contextmanager
    def mount(
        self, column: str, target: MountTarget, *, extra_options: Sequence[str] = ()
    ) -> Iterator[RunningMount]:
        """A fresh, cold mount of column showing target; unmounted and stopped on exit.

        ``extra_options`` are more provenafs ``-o`` options; such a mount's peak RSS is not
        folded into ``peak_rss``, which is about default settings (row 10).
        """
        options = provenafs_options(column, extra_options)
        self._count += 1
        base = self._scratch / f"m{self._count:04d}-{column}"
        mountpoint = base / "mnt"
        cache = base / "cache"
        mountpoint.mkdir(parents=True)
        cache.mkdir(mode=0o700)
        log_path = base / "daemon.log"
        try:
            if column == PROVENAFS:
                token_env = {"PROVENAFS_OFFLINE_TOKEN": self._provenafs_token}
                daemon = start_mount(
                    self._base_url,
                    mountpoint,
                    token_env=token_env,
                    options=options,
                    home=base / "home",
                    log_path=log_path,
                    timeout=MOUNT_TIMEOUT,
                )
                root = mountpoint / target.path
            else:
                argv = self._peers.command(column, target.prefix, mountpoint, cache)
                daemon = start_mount_command(
                    argv, mountpoint, log_path=log_path, cwd=base, timeout=MOUNT_TIMEOUT
                )
                root = mountpoint
        except MountNotReady as exc:
            shutil.rmtree(base, ignore_errors=True)
            raise MountFailed(exc.summary) from exc
        running = RunningMount(column, daemon, root)
        try:
            yield running
        finally:
            rss = running.peak_rss_bytes()
            if rss is not None and not extra_options:
                self.peak_rss[column] = max(self.peak_rss.get(column, 0), rss)
            stop_mount(daemon)
            shutil.rmtree(base, ignore_errors=True)


def fuse_available() -> bool:
    return Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None


def unavailable_columns(*, provenafs: bool, peers: bool, rclone: str | None) -> dict[str, str]:
    """Columns that cannot run on this machine, with the reason."""
    reasons: dict[str, str] = {}
    if not fuse_available():
        for column in MOUNT_COLUMNS:
            reasons[column] = "no /dev/fuse or fusermount3"
    if not provenafs:
        reasons.setdefault(PROVENAFS, "provenafs mount is not available")
    if not peers:
        for column in PEERS:
            reasons.setdefault(column, "peers not requested (--no-peers)")
    if shutil.which("s3fs") is None:
        reasons.setdefault(S3FS, "s3fs not installed (scripts/bench-peers-setup)")
    if rclone is None:
        for column in (RCLONE_OFF, RCLONE_FULL):
            reasons.setdefault(column, "rclone not installed (scripts/bench-peers-setup)")
    return reasons


def provenafs_mount_available() -> bool:
    """Whether ``provenafs mount --help`` runs (the mount command exists in this checkout)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "provenafs", "mount", "--help"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
