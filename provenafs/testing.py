"""Run FUSE mounts as child processes, for tests and benchmarks: start, wait until mounted, stop.

The one harness that tests and benchmarks mount with. ``start_mount`` runs ``python -m provenafs
mount SOURCE MNT -f`` with a private config and cache home and exactly one token in its
environment; ``start_mount_command`` runs any FUSE daemon in the foreground (s3fs, rclone). Both
wait until ``/proc/self/mountinfo`` lists the mountpoint with the expected filesystem type and its
root answers ``stat``, while watching that the daemon still runs; ``stop_mount`` unmounts with
``fusermount3 -u`` (retried while busy), stops the daemon by PID (waiting, then SIGTERM, then
SIGKILL) and lazily unmounts (``-z``) what a dead daemon left.

It sits at the package's top, beside ``provenafs.server.testing``, because it sees the mount the
way a user does (a command and a mountpoint): it depends on no mount module, so moving the
mount's internals never moves it. What it must not do: import the mount's modules (pyfuse3
above all, so importing it costs nothing and needs no FUSE) or ``provenafs.server``, signal a
process it did not start, or write a token anywhere but the daemon's environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

FSTYPE = "fuse.provenafs"
READY_TIMEOUT = 60.0
TOKEN_VARIABLES = frozenset({"PROVENAFS_TOKEN", "PROVENAFS_OFFLINE_TOKEN"})


class MountNotReady(RuntimeError):
    """The daemon exited or its mount did not appear in time.

    ``summary`` is one line (which daemon, why); the message adds the tail of the daemon's log.
    """

    def __init__(self, summary: str, log_tail: str) -> None:
        super().__init__(f"{summary}\n{log_tail}")
        self.summary = summary


@dataclasses.dataclass
class MountProcess:
    """A FUSE daemon running in the foreground, and where it mounts."""

    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    fstype_prefix: str = FSTYPE
    name: str = "provenafs"  # what messages call the daemon

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_mounted(self) -> bool:
        """Whether ``path`` is mounted with the expected filesystem type."""
        fstype = mounted_fstype(self.path)
        return fstype is not None and fstype.startswith(self.fstype_prefix)


def mounted_fstype(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The filesystem type mounted exactly at ``path`` (the top one if stacked), or None."""
    wanted = os.path.abspath(path)
    found: str | None = None
    try:
        lines = mountinfo.read_text(errors="surrogateescape").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        separator = fields.index("-", 6)
        if separator + 1 < len(fields) and _unescape(fields[4]) == wanted:
            found = fields[separator + 1]
    return found


def _unescape(field: str) -> str:
    r"""A mountinfo path field with its octal escapes (``\040`` for a space) decoded."""
    if "\\" not in field:
        return field
    raw = field.encode(errors="surrogateescape")
    out = bytearray()
    index = 0
    while index < len(raw):
        octal = raw[index + 1 : index + 4]
        if raw[index : index + 1] == b"\\" and len(octal) == 3 and octal.isdigit():
            out.append(int(octal, 8))
            index += 4
        else:
            out.append(raw[index])
            index += 1
    return bytes(out).decode(errors="surrogateescape")


def isolated_environment(home: Path, token_env: Mapping[str, str]) -> dict[str, str]:
    """A mount daemon's environment: private config, cache and state dirs (each home has drafts
    of its own: a mount locks its draft store), and only ``token_env``'s token.

    ``token_env`` may also carry other variables the daemon needs (``XDG_STATE_HOME``).
    """
    env = {key: value for key, value in os.environ.items() if key not in TOKEN_VARIABLES}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_CACHE_HOME"] = str(home / "cache")
    env["XDG_STATE_HOME"] = str(home / "state")
    env.update(token_env)
    return env


def start_mount(
    source: str,
    mountpoint: Path,
    *,
    token_env: Mapping[str, str],
    options: str | None = None,
    home: Path | None = None,
    log_path: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> MountProcess:
    """Mount ``source`` (a data store URL) at ``mountpoint`` with ``provenafs mount -f``.

    ``token_env`` holds the token variable (``PROVENAFS_OFFLINE_TOKEN``; empty for a logged-in
    config under ``home``); ``options`` is the ``-o`` string. ``home`` holds the daemon's config
    and cache dirs (default: ``MNT-home`` beside the mountpoint), ``log_path`` its output
    (default: ``MNT-daemon.log`` beside it).
    """
    if home is None:
        home = mountpoint.parent / f"{mountpoint.name}-home"
    home.mkdir(parents=True, exist_ok=True)
    if log_path is None:
        log_path = mountpoint.parent / f"{mountpoint.name}-daemon.log"
    argv = [sys.executable, "-m", "provenafs", "mount", source, str(mountpoint), "-f"]
    if options:
        argv += ["-o", options]
    return start_mount_command(
        argv,
        mountpoint,
        log_path=log_path,
        env=isolated_environment(home, token_env),
        fstype_prefix=FSTYPE,
        name="provenafs",
        timeout=timeout,
    )


def start_mount_command(
    argv: Sequence[str],
    mountpoint: Path,
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    fstype_prefix: str = "fuse",
    name: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> MountProcess:
    """Run a FUSE daemon that stays in the foreground, and wait until its mount is ready.

    Raises MountNotReady (after stopping the daemon) if it exits or its mount does not appear
    within ``timeout`` seconds; an interrupt while waiting stops it too.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    mount = MountProcess(mountpoint, process, log_path, fstype_prefix, name or Path(argv[0]).name)
    try:
        wait_until_mounted(mount, timeout)
    except BaseException:
        stop_mount(mount)
        raise
    return mount


def wait_until_mounted(mount: MountProcess, timeout: float = READY_TIMEOUT) -> None:
    """Block until ``mount.path`` is mounted with its type and its root answers ``stat``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mount.process.poll() is not None:
            raise MountNotReady(
                f"{mount.name} daemon exited {mount.process.returncode}: {_last_line(mount)}",
                mount.log_text()[-4000:],
            )
        if mount.is_mounted():
            os.stat(mount.path)  # the first request: answered once the daemon serves
            return
        time.sleep(0.05)
    raise MountNotReady(f"{mount.name} not mounted after {timeout:.0f} s", mount.log_text()[-4000:])


def _last_line(mount: MountProcess) -> str:
    lines = [line for line in mount.log_text().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def stop_mount(mount: MountProcess) -> None:
    """Unmount with ``fusermount3 -u`` (retried while busy), then stop the daemon by PID.

    The daemon normally exits once unmounted; one that does not gets SIGTERM, then SIGKILL.
    A mount still present after that (its daemon died) is detached with ``fusermount3 -u -z``.
    """
    for attempt in range(10):
        if mounted_fstype(mount.path) is None:
            break
        if attempt:
            time.sleep(0.3)  # busy: a reader killed a moment ago may still hold a file
        _fusermount("-u", mount.path)
    process = mount.process
    for sig, wait in ((None, 15.0), (signal.SIGTERM, 15.0), (signal.SIGKILL, 15.0)):
        if process.poll() is not None:
            break
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    if mounted_fstype(mount.path) is not None:
        _fusermount("-u", "-z", mount.path)


def _fusermount(*args: str | Path) -> None:
    subprocess.run(["fusermount3", *map(str, args)], capture_output=True, check=False, timeout=60)
