"""``-o allow_other`` never lends the owner's identity (issue 10 item 5), seen from outside.

Root mounts with alice's token and ``allow_other``; a second Unix user (``tests/users.py``)
then tries everything through the mount with coreutils, getfattr and setfattr: read, list,
write, create, truncate, remove, rename, mkdir, symlink, xattrs, a presigned URL, the status
file and a sidecar edit. Each is refused with ``EACCES`` (read from the tool's message) and
nothing changes: no draft, no version, no S3 object, no metadata edit. With
``file_mode=0644,dir_mode=0755`` the other user reads, and still changes nothing. Then the
roles swap: the mount belongs to the other user (``uid=``), and root, whom the kernel's
``default_permissions`` lets past every mode bit, is refused by the mount itself, down to
``provenafs commit``.

The mountpoints sit in a directory everyone may enter (pytest's temp dirs are 0700); the
daemons' homes and logs stay in private ones.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenafs import testing
from tests.conftest import LocalStore, require_fuse
from tests.e2e.writes_support import (
    PROVENAFS,
    Dataset,
    StoreApi,
    mount_environment,
    private_store,
    s3_tree,
)
from tests.users import other_user, run_as_other

pytestmark = [pytest.mark.fuse, pytest.mark.s3]

SECRET = b"alice's private readings\n"
BASE_OPTIONS = "rw,publish_delay=0,on_unmount=refuse,allow_other"
ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.EINVAL, errno.ENOTSUP)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("other-users") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def api(store: LocalStore) -> StoreApi:
    return StoreApi(store)


@pytest.fixture(scope="module")
def open_dir() -> Iterator[Path]:
    """A directory every user may enter, for the mountpoints."""
    parent = Path(tempfile.mkdtemp(prefix="provenafs-other-users-"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


class AliceMount:
    """A mount of the store by root with alice's offline token; its home and log are private."""

    def __init__(self, store: LocalStore, mountpoint: Path, home: Path, options: str):
        require_fuse()
        self.env = mount_environment(store, home, "alice")
        token_env = {
            key: self.env[key]
            for key in ("PROVENAFS_OFFLINE_TOKEN", "XDG_STATE_HOME", "XDG_DATA_HOME")
        }
        self.home = home
        self.process = testing.start_mount(
            store.base_url,
            mountpoint,
            token_env=token_env,
            options=options,
            home=home,
            log_path=home / "daemon.log",
        )
        self.path = mountpoint

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PROVENAFS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json", str(self.path))
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def draft_dirs(self) -> list[Path]:
        """Draft directories on disk (the store's root holds one per dataset with a draft)."""
        return [p for p in (self.home / "state").rglob("journal")]

    def stop(self) -> None:
        testing.stop_mount(self.process)


@contextlib.contextmanager
def alice_mount(
    store: LocalStore, open_dir: Path, tmp_path: Path, name: str, options: str
) -> Iterator[AliceMount]:
    mounted = AliceMount(store, open_dir / name, tmp_path / f"{name}-home", options)
    try:
        yield mounted
    finally:
        mounted.stop()


def other_errno(*argv: str) -> int | None:
    """Run *argv* as the other user: None if it succeeded, else the errno its message names."""
    result = run_as_other(*argv)
    if result.returncode == 0:
        return None
    for code in ERRNOS:
        if os.strerror(code) in result.stderr:
            return code
    raise AssertionError(f"{argv} failed without a known errno: {result.stderr!r}")


def other_changes(mnt: Path, dataset: Dataset) -> dict[str, list[str]]:
    """Every change (and the presigned URL) the other user tries, by what it is."""
    directory = mnt / dataset.handle
    secret = str(directory / "secret.csv")
    sidecar = str(mnt / f"{dataset.handle}.json")
    return {
        "create": ["sh", "-c", 'echo x > "$0"', str(directory / "new.txt")],
        "append": ["sh", "-c", 'echo x >> "$0"', secret],
        "truncate": ["truncate", "-s", "0", secret],
        "utimes": ["touch", "-d", "2001-01-01", secret],
        "unlink": ["rm", "-f", secret],
        "rename": ["mv", secret, str(directory / "moved.csv")],
        "mkdir": ["mkdir", str(directory / "new-dir")],
        "symlink": ["ln", "-s", "secret.csv", str(directory / "link")],
        "setxattr": ["setfattr", "-n", "user.provena.reason", "-v", "mine", sidecar],
        "sidecar edit": ["sh", "-c", 'echo "{}" > "$0"', sidecar],
        "access settings edit": [
            "sh",
            "-c",
            'echo \'{"general": ["metadata-read"]}\' > "$0"',
            str(mnt / f"{dataset.handle}.access.json"),
        ],
        "presigned URL": ["getfattr", "-n", "user.provena.presigned_url", secret],
    }


def snapshot(api: StoreApi, dataset: Dataset) -> tuple[object, ...]:
    record = api.record(dataset.handle)["item"]
    return (
        s3_tree(api, dataset.s3_prefix),
        api.versions_after(dataset.handle),
        record["history"],
        record["updated_timestamp"],
        api.access_settings(dataset.handle),
    )


def assert_nothing_changed(
    mounted: AliceMount, api: StoreApi, dataset: Dataset, before: tuple[object, ...]
) -> None:
    assert snapshot(api, dataset) == before
    status = mounted.status()
    assert status["drafts"] == [] and status["failures"] == []
    assert mounted.draft_dirs() == []


def test_another_user_can_do_nothing_through_a_default_allow_other_mount(
    store: LocalStore, api: StoreApi, open_dir: Path, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"secret.csv": SECRET})
    before = snapshot(api, dataset)
    with alice_mount(store, open_dir, tmp_path, "default", BASE_OPTIONS) as mounted:
        mnt = mounted.path
        assert (mnt / dataset.handle / "secret.csv").read_bytes() == SECRET  # the owner reads
        reads = {
            "read": ["cat", str(mnt / dataset.handle / "secret.csv")],
            "list the root": ["ls", str(mnt)],
            "list the dataset": ["ls", str(mnt / dataset.handle)],
            "read the sidecar": ["cat", str(mnt / f"{dataset.handle}.json")],
            "read the status file": ["cat", str(mnt / ".provenafs" / "status.json")],
            "xattr": ["getfattr", "-n", "user.provena.handle", str(mnt / dataset.handle)],
        }
        attempts = {**reads, **other_changes(mnt, dataset)}
        got = {what: other_errno(*argv) for what, argv in attempts.items()}
        assert got == dict.fromkeys(attempts, errno.EACCES)
        # The mountpoint itself answers stat: it shares nothing.
        shown = run_as_other("stat", "-c", "%a %u", str(mnt))
        assert shown.stdout.split() == ["500", "0"], shown
        assert_nothing_changed(mounted, api, dataset, before)
        assert "allow_other" in super_options(mnt)
        # kept set-user-ID bits and device numbers never take effect, root's mount included
        assert {"nosuid", "nodev"} <= mount_flags(mnt)
        assert "default_permissions" not in super_options(mnt)  # the mount refuses, alone


def test_mode_options_let_another_user_read_but_never_change(
    store: LocalStore, api: StoreApi, open_dir: Path, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"secret.csv": SECRET})
    before = snapshot(api, dataset)
    options = f"{BASE_OPTIONS},file_mode=0644,dir_mode=0755"
    with alice_mount(store, open_dir, tmp_path, "shared", options) as mounted:
        mnt = mounted.path
        directory = mnt / dataset.handle
        read = run_as_other("cat", str(directory / "secret.csv"))
        assert read.returncode == 0 and read.stdout.encode() == SECRET, read
        listed = run_as_other("ls", str(directory))
        assert listed.stdout.split() == ["metadata.json", "secret.csv"], listed
        sidecar = run_as_other("cat", str(mnt / f"{dataset.handle}.json"))
        assert sidecar.returncode == 0 and dataset.name in sidecar.stdout, sidecar
        handle = run_as_other(
            "getfattr", "--only-values", "-n", "user.provena.handle", str(directory)
        )
        assert handle.stdout == dataset.handle, handle
        assert other_errno("cat", str(mnt / ".provenafs" / "status.json")) == errno.EACCES
        changes = other_changes(mnt, dataset)
        got = {what: other_errno(*argv) for what, argv in changes.items()}
        assert got == dict.fromkeys(changes, errno.EACCES)
        assert_nothing_changed(mounted, api, dataset, before)
        assert {"allow_other", "default_permissions"} <= super_options(mnt)


def test_root_is_refused_on_a_mount_it_does_not_own(
    store: LocalStore, api: StoreApi, open_dir: Path, tmp_path: Path
) -> None:
    """``uid=`` names the owner; root passes every mode bit of the kernel, not the mount."""
    other = other_user()
    dataset = api.mint("alice", files={"secret.csv": SECRET})
    before = snapshot(api, dataset)
    options = f"{BASE_OPTIONS},uid={other.uid},gid={other.gid},file_mode=0644,dir_mode=0755"
    with alice_mount(store, open_dir, tmp_path, "theirs", options) as mounted:
        mnt = mounted.path
        directory = mnt / dataset.handle
        secret = directory / "secret.csv"
        sidecar = mnt / f"{dataset.handle}.json"
        assert secret.read_bytes() == SECRET  # shared: root reads
        attempts: dict[str, Any] = {
            "create": lambda: (directory / "new.txt").write_bytes(b"x"),
            "write": lambda: secret.open("r+b").close(),
            "truncate": lambda: os.truncate(secret, 0),
            "utimes": lambda: os.utime(secret, (1, 1)),
            "chmod": lambda: os.chmod(secret, 0o600),
            "unlink": secret.unlink,
            "rename": lambda: secret.rename(directory / "moved.csv"),
            "mkdir": (directory / "new-dir").mkdir,
            "symlink": lambda: (directory / "link").symlink_to("secret.csv"),
            "setxattr": lambda: os.setxattr(sidecar, "user.provena.reason", b"root's"),
            "sidecar edit": lambda: sidecar.write_text("{}"),
            "presigned URL": lambda: os.getxattr(secret, "user.provena.presigned_url"),
            "status file": (mnt / ".provenafs" / "status.json").read_bytes,
        }
        got = {}
        for what, attempt in attempts.items():
            try:
                attempt()
            except OSError as exc:
                got[what] = exc.errno
            else:
                got[what] = None
        assert got == dict.fromkeys(attempts, errno.EACCES)
        commit = mounted.cli("commit", str(directory), "-m", "root's commit")
        assert commit.returncode != 0 and "permission denied" in commit.stderr, commit
        assert mounted.draft_dirs() == []
        assert snapshot(api, dataset) == before
        # The owner, the other user, writes: the draft is theirs (made with alice's token).
        assert (
            run_as_other("sh", "-c", 'echo mine > "$0"', str(directory / "by-owner.txt")).returncode
            == 0
        )
        assert len(mounted.draft_dirs()) == 1


def super_options(mountpoint: Path) -> set[str]:
    """The options the kernel shows for the FUSE mount at *mountpoint* (mountinfo's last field)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == str(mountpoint) and "-" in fields:
            return set(fields[fields.index("-") + 3].split(","))
    raise AssertionError(f"{mountpoint} is not mounted")


def mount_flags(mountpoint: Path) -> set[str]:
    """The per-mount flags of *mountpoint* (mountinfo's sixth field: nosuid, nodev, ...)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        if fields[4] == str(mountpoint):
            return set(fields[5].split(","))
    raise AssertionError(f"{mountpoint} is not mounted")


def test_default_permissions_reaches_the_kernel_when_given(
    store: LocalStore, open_dir: Path, tmp_path: Path
) -> None:
    options = "rw,publish_delay=0,on_unmount=refuse,default_permissions"
    with alice_mount(store, open_dir, tmp_path, "kernel-checks", options) as mounted:
        assert "default_permissions" in super_options(mounted.path)
        assert "allow_other" not in super_options(mounted.path)
