"""A second local Unix user for tests of what other users of the machine can and cannot do.

``other_user()`` makes sure the account ``provenafs-other`` exists (created with ``useradd`` on
first use, which needs root, as in CI) and returns it; ``run_as_other`` runs a command as that
user with ``runuser``. Without root and without the account a test skips, except under CI=true,
where that is a failure. Tests run as the other user only tools any user may run (coreutils,
curl): the project's interpreter may live under a home directory the other user cannot enter.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pwd
import shutil
import subprocess

import pytest

from tests.conftest import IN_CI

__all__ = ["OTHER_USER", "OtherUser", "other_user", "run_as_other"]

OTHER_USER = "provenafs-other"


@dataclasses.dataclass(frozen=True)
class OtherUser:
    name: str
    uid: int
    gid: int


@functools.cache
def _ensure_account() -> OtherUser | str:
    """The account, created if missing; a reason string when that is impossible here."""
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        if os.geteuid() != 0:
            return f"needs root to create the Unix user {OTHER_USER}"
        if shutil.which("useradd") is None:
            return "needs useradd to create a second Unix user"
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
            check=True,
            capture_output=True,
            timeout=60,
        )
        entry = pwd.getpwnam(OTHER_USER)
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "needs root and runuser to act as a second Unix user"
    return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def other_user() -> OtherUser:
    """The second Unix user (made once per session); skips (fails under CI=true) if impossible."""
    found = _ensure_account()
    if isinstance(found, OtherUser):
        return found
    if IN_CI:
        pytest.fail(f"second-user tests must run under CI=true: {found}")
    pytest.skip(found)


def run_as_other(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *argv* as the second user, from ``/`` with a clean environment; never raises on exit."""
    user = other_user()
    return subprocess.run(
        ["runuser", "-u", user.name, "--", "env", "-i", "PATH=/usr/bin:/bin", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
    )
