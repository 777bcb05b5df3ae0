"""The store's data dir is its Unix user's alone (issue 10 item 3), whatever the umask.

A private seeded ``provenafs serve`` is started (and its admin commands run) under umask 000, the
most permissive there is; every directory under the data dir must still be 0700 and every file
0600: the registry and its SQLite side files, the seed manifest, the realm key and tokens, and
everything SeaweedFS writes. A second Unix user (``tests/users.py``) then tries to read them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalStore, start_local_store
from tests.users import run_as_other

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def store() -> Iterator[LocalStore]:
    # pytest's own temp dirs are 0700: the other user could not even try. The data dir sits in a
    # directory everyone may enter, as a home directory often is.
    parent = Path(tempfile.mkdtemp(prefix="provenafs-privacy-"))
    parent.chmod(0o755)
    data_dir = parent / "data"
    previous = os.umask(0)
    try:
        running = start_local_store(data_dir)
        try:
            # the admin commands write too: tokens, offline tokens (the auth dir), users
            running.token("alice")
            running.token("alice", offline=True)
            added = running.serve_cli("user", "add", "dora", "--roles", "r,w")
            assert added.returncode == 0, added.stderr
        except BaseException:
            running.stop()
            raise
    finally:
        os.umask(previous)
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(parent, ignore_errors=True)


def not_private(root: Path, *, running: bool = False) -> list[str]:
    """Every path under *root* (itself included) that is not a 0700 dir or a 0600 file.

    While weed runs, the ``*.vif`` files it made during the run are 0644: weed ``fchmod``s them so
    itself, whatever its umask. They sit in 0700 directories, and a stop tightens them.
    """
    found = []
    for path in [root, *root.rglob("*")]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # weed's temporary files come and go
            continue
        wanted = 0o700 if stat.S_ISDIR(mode) else 0o600 if stat.S_ISREG(mode) else None
        if running and path.suffix == ".vif" and stat.S_IMODE(mode) == 0o644:
            wanted = 0o644
        if wanted is None or stat.S_IMODE(mode) != wanted or path.lstat().st_uid != os.geteuid():
            found.append(f"{oct(mode)} {path.relative_to(root.parent)}")
    return found


def weeds_sockets(store: LocalStore) -> list[Path]:
    ports = {
        str(port)
        for port in json.loads((store.data_dir / "s3" / "ports.json").read_text()).values()
    }
    return [
        path
        for path in Path("/tmp").glob("seaweedfs-*.sock")
        if path.stem.rsplit("-", 1)[-1] in ports
    ]


def test_every_file_of_a_running_store_is_private(store: LocalStore) -> None:
    data_dir = store.data_dir
    names = {path.name for path in data_dir.rglob("*")}
    # what the walk must see to mean anything: the registry with its WAL, the seed manifest, the
    # realm key, weed's keys, config, certificates and volumes
    assert {"registry.sqlite", "registry.sqlite-wal", "seed-manifest.json"} <= names
    assert {"realm-key.pem", "secrets.json", "security.toml", "grpc-key.pem"} <= names
    assert any(name.endswith(".dat") for name in names)
    assert not_private(data_dir, running=True) == []


def test_another_user_can_read_nothing_of_the_store(store: LocalStore) -> None:
    data_dir = store.data_dir
    # the other user can act at all, and reach the data dir's parent
    assert run_as_other("ls", str(data_dir.parent)).stdout.split() == ["data", "data-serve.log"]
    for target in (
        data_dir / "registry.sqlite",
        data_dir / "seed-manifest.json",
        data_dir / "s3" / "secrets.json",
        data_dir / "auth" / "realm-key.pem",
    ):
        assert target.exists()
        attempt = run_as_other("cat", str(target))
        assert attempt.returncode != 0, target
        assert "Permission denied" in attempt.stderr
        assert attempt.stdout == ""
    listing = run_as_other("ls", str(data_dir))
    assert listing.returncode != 0
    assert "Permission denied" in listing.stderr


def test_another_user_cannot_reach_weed_behind_s3(store: LocalStore) -> None:
    sockets = weeds_sockets(store)
    assert sockets
    for path in sockets:
        attempt = run_as_other(
            "curl", "-sS", "--max-time", "10", "--unix-socket", str(path), "http://weed/"
        )
        assert attempt.returncode != 0, path
        assert "ermission denied" in attempt.stderr or "Couldn't connect" in attempt.stderr, path
    ports = json.loads((store.data_dir / "s3" / "ports.json").read_text())
    bucket = store.discovery()["bucket"]
    for url in (
        f"http://127.0.0.1:{ports['master']}/dir/assign",
        f"http://127.0.0.1:{ports['filer']}/buckets/{bucket}/?pretty=y",
    ):
        answer = run_as_other(
            "curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", url
        )
        assert answer.stdout == "404", (url, answer.stdout, answer.stderr)


def test_nothing_private_is_left_behind_after_a_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    previous = os.umask(0)
    try:
        running = start_local_store(data_dir, seed=False)
    finally:
        os.umask(previous)
    sockets = weeds_sockets(running)
    assert httpx.get(running.base_url + "/", timeout=10).status_code == 200
    running.stop()
    assert running.process.returncode == 0
    assert not_private(data_dir) == []
    assert [path for path in sockets if path.exists()] == []


def test_a_data_dir_an_older_version_left_readable_is_tightened_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    start_local_store(data_dir, seed=False).stop()
    for path in [data_dir, *data_dir.rglob("*")]:  # as before the store kept its files private
        path.chmod(0o755 if path.is_dir() else 0o644)
    running = start_local_store(data_dir, seed=False)
    try:
        assert not_private(data_dir, running=True) == []
    finally:
        running.stop()
