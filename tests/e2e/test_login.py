"""``provenafs login`` with the real device flow of the local store, then a mount that uses it.

The user's approval is given with ``provenafs serve device approve CODE --user alice``, as an
administrator of a local store would; nothing here reads or prints a token.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from provenafs.process.mounts import find_mount
from tests.conftest import LocalStore, require_fuse
from tests.e2e.conftest import isolated_environment, start_mount, stop_mount

pytestmark = pytest.mark.fuse

PROVENAFS = [sys.executable, "-m", "provenafs"]


def test_login_mount_with_the_stored_login_then_logout(
    local_store: LocalStore, tmp_path: Path
) -> None:
    require_fuse()
    home = tmp_path / "home"
    env = isolated_environment(home, {})
    login = subprocess.Popen(
        [*PROVENAFS, "login", local_store.base_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert login.stdout is not None
        shown = login.stdout.readline() + login.stdout.readline()
        match = re.search(r"confirm the code (\S+?)\. Waiting", shown)
        assert match, shown
        approved = local_store.serve_cli("device", "approve", match.group(1), "--user", "alice")
        assert approved.returncode == 0, approved.stderr
        out, err = login.communicate(timeout=120)
    finally:
        if login.poll() is None:
            login.kill()
            login.wait(timeout=30)
    assert login.returncode == 0, err
    assert "Signed in to" in out

    tokens_file = home / "config" / "provenafs" / "tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    stored = json.loads(tokens_file.read_text())
    assert list(stored) == [local_store.base_url]
    secret = stored[local_store.base_url]["refresh_token"]
    assert secret not in shown + out + err

    mount = start_mount(local_store, tmp_path / "mnt", token_env={}, home=home)
    try:
        assert "by-name" in [p.name for p in mount.path.iterdir()]
        assert secret not in mount.log_text()
    finally:
        stop_mount(mount)

    logout = subprocess.run(
        [*PROVENAFS, "logout", local_store.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert logout.returncode == 0, logout.stderr
    assert "Signed out" in logout.stdout
    assert json.loads(tokens_file.read_text()) == {}

    refused = subprocess.run(
        [*PROVENAFS, "mount", local_store.base_url, str(mount.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1
    assert "not logged in" in refused.stderr
    assert find_mount(mount.path) is None
