"""The mount-side commands without a kernel: argument cleaning, refusals, failed starts.

Failed background starts spawn the real daemon (``python -m provenafs mount ... -f``); it stops
before mounting anything, so no FUSE is needed.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from provenafs.mount_options import parse_mount_args
from provenafs.process import commands, daemon, mounts


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PROVENAFS_OFFLINE_TOKEN", raising=False)
    monkeypatch.setenv("PROVENAFS_TOKEN", "not-a-real-token")


def test_fstab_only_options_and_helper_flags_are_dropped() -> None:
    args = [
        "http://127.0.0.1:8750",
        "/mnt/p",
        "-n",
        "-s",
        "-N",
        "ns",
        "-t",
        "fuse.provenafs",
        "-o",
        "rw,_netdev,noauto,user,x-systemd.automount,defaults,comment=x,cache_size=2G,nofail",
    ]
    assert commands.strip_fstab_options(args) == [
        "http://127.0.0.1:8750",
        "/mnt/p",
        "-o",
        "rw,cache_size=2G",
    ]
    assert commands.strip_fstab_options(["/mnt/p", "-o_netdev", "-f"]) == ["/mnt/p", "-f"]


def test_cleaned_fstab_arguments_parse() -> None:
    cleaned = commands.strip_fstab_options(
        ["http://h:1", "/mnt/p", "-o", "ro,_netdev,x-systemd.requires=network-online.target"]
    )
    options = parse_mount_args(cleaned)
    assert options.read_only is True
    assert options.source == "http://h:1"
    assert options.mountpoint == Path("/mnt/p")


def test_fuse_mount_options_name_the_source_and_keep_a_url_whole() -> None:
    options = parse_mount_args(["http://h:1/a,b", "/mnt/p", "-o", "ro,allow_other,nosuid"])
    fuse_options = daemon.fuse_mount_options(options)
    assert "fsname=http://h:1/a%2Cb" in fuse_options
    assert {"subtype=provenafs", "auto_unmount", "ro", "allow_other"} <= fuse_options
    assert "default_permissions" not in fuse_options  # the core decides (EROFS vs EACCES)
    assert "nosuid" in fuse_options
    assert all(option.isascii() for option in fuse_options)


def test_set_id_bits_and_devices_never_take_effect_unless_asked() -> None:
    """Kept modes may carry set-user-ID bits someone else published: nosuid by default."""
    plain = daemon.fuse_mount_options(parse_mount_args(["http://h:1", "/mnt/p"]))
    assert {"nosuid", "nodev"} <= plain
    asked = daemon.fuse_mount_options(parse_mount_args(["http://h:1", "/mnt/p", "-o", "suid,dev"]))
    assert {"suid", "dev"} <= asked and not {"nosuid", "nodev"} & asked


def test_bad_mount_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main("mount", ["ftp://h", "/mnt/p"]) == 2
    assert "SOURCE must be an http(s) URL" in capsys.readouterr().err
    assert commands.main("mount", ["http://h:1", "/mnt/p", "-o", "bogus=1"]) == 2
    assert "unknown mount option 'bogus'" in capsys.readouterr().err


def test_umount_and_status_refuse_what_is_not_a_provenafs_mount(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main("umount", [str(tmp_path)]) == 1
    assert "is not mounted" in capsys.readouterr().err
    assert commands.main("umount", ["/proc"]) == 1
    assert "is not a provenafs mount (it is proc)" in capsys.readouterr().err
    assert commands.main("status", [str(tmp_path)]) == 1
    assert "is not a provenafs mount" in capsys.readouterr().err


def test_background_mount_reports_a_missing_mountpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    assert commands.main("mount", ["http://127.0.0.1:1", str(missing)]) == 1
    assert f"mountpoint {missing} does not exist" in capsys.readouterr().err


def test_background_mount_reports_a_non_empty_mountpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "something").write_text("x")
    assert commands.main("mount", ["http://127.0.0.1:1", str(tmp_path)]) == 1
    assert "is not empty" in capsys.readouterr().err


def test_background_mount_reports_an_unreachable_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"http://127.0.0.1:{_unused_port()}"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    assert commands.main("mount", [source, str(mountpoint)]) == 1
    error = capsys.readouterr().err
    assert f"cannot reach the data store at {source}" in error
    assert "not-a-real-token" not in error
    assert mounts.find_mount(mountpoint) is None


def test_mountinfo_parsing_unescapes_paths(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.provenafs http://h:1 rw\n"
        "37 35 98:0 / /mnt/c rw shared:2 - ext4 /dev/sda1 rw\n"
    )
    entry = mounts.find_mount(Path("/mnt/a b"), mountinfo)
    assert entry == mounts.MountEntry(Path("/mnt/a b"), "fuse.provenafs", "http://h:1")
    assert mounts.find_mount(Path("/mnt/c"), mountinfo) == mounts.MountEntry(
        Path("/mnt/c"), "ext4", "/dev/sda1"
    )
    assert mounts.find_mount(Path("/mnt"), mountinfo) is None


def test_status_summary_names_cache_calls_and_expiries() -> None:
    document = {
        "version": "0.1.0",
        "read_only": True,
        "open_files": 2,
        "open_directories": 1,
        "block_cache": {"bytes": 3 << 20, "max_bytes": 64 << 20, "hits": 5, "misses": 7},
        "data_store_calls": {"fetch_dataset": 4, "list_page": 2, "retries": 1},
        "credentials": {"held": 1, "read_calls": 3, "write_calls": 0, "failures": 0},
        "credential_expiries": {"10378.1/1932274 read": "2026-01-01T00:00:00+00:00"},
    }
    assert commands._summary(document) == [
        "  version 0.1.0, read-only",
        "  open files: 2, open directories: 1",
        "  block cache: 3.0 MiB of 64.0 MiB, 5 hits, 7 misses, 0.0 MiB fetched",
        "  data store calls: 6, retries: 1",
        "  credentials: 1 held, 3 read / 0 write requests, 0 failures",
        "    10378.1/1932274 read: expires 2026-01-01T00:00:00+00:00",
        "  drafts: none",
    ]


def test_status_summary_names_only_the_soonest_credential_expiries() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    expiries = {
        f"10378.1/{n} read": (start + dt.timedelta(minutes=6000 - n)).isoformat()
        for n in range(6000)
    }
    lines = commands._summary({"credential_expiries": expiries})
    named = [line for line in lines if "expires" in line]
    assert named == [
        f"    10378.1/{n} read: expires {expiries[f'10378.1/{n} read']}"
        for n in range(5999, 5999 - commands.STATUS_EXPIRIES_SHOWN, -1)
    ]
    assert f"    ... and {6000 - commands.STATUS_EXPIRIES_SHOWN} more (--json lists all)" in lines
    assert len(lines) < 20


def test_log_path_is_per_mountpoint_and_private(tmp_path: Path) -> None:
    first = mounts.log_path_for(Path("/mnt/one"))
    assert first != mounts.log_path_for(Path("/mnt/two"))
    assert first == mounts.log_path_for(Path("/mnt/one"))
    assert first.parent == tmp_path / "cache" / "provenafs" / "logs"


def test_login_and_status_do_not_load_the_fuse_daemon(tmp_path: Path) -> None:
    """``provenafs login`` and ``provenafs status`` run without pyfuse3, boto3 or the core: a
    fresh interpreter runs ``status`` (of a directory that is no mount) and ``login --help``,
    then lists which of the heavy modules it loaded."""
    heavy = (
        "pyfuse3",
        "boto3",
        "provenafs.process.daemon",
        "provenafs.fuse_ops",
        "provenafs.storage.s3",
    )
    script = (
        "import contextlib, io, json, sys\n"
        "from provenafs import cli\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        f"    assert cli.main(['status', {str(tmp_path)!r}]) == 1\n"
        "    assert cli.main(['login', '--help']) == 0\n"
        f"print(json.dumps([name for name in {heavy!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
