"""The harnesses tests, benchmarks and the demo start processes with: they wait, fail and clean up.

``provenafs.testing`` (mounts) is checked with stand-in daemons that exit or never mount, and a
hand-written mountinfo; ``provenafs.server.testing`` (the local store) with real servers: one
that cannot start, one stopped with its SeaweedFS, and the ``python -m`` entry the demo uses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from provenafs.server.testing import descendants, start_local_store, start_time
from provenafs.testing import (
    MountNotReady,
    isolated_environment,
    mounted_fstype,
    start_mount_command,
)


def test_the_mount_harness_imports_nothing_of_the_mount() -> None:
    code = "import sys, provenafs.testing; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = done.stdout.split()
    assert "provenafs.testing" in loaded
    assert [name for name in loaded if name.startswith("provenafs.")] == ["provenafs.testing"]
    assert not {"pyfuse3", "trio", "httpx", "boto3"} & set(loaded)


def test_mountinfo_lookup_decodes_escapes_and_takes_the_top_of_a_stack(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
        "90 22 0:50 / /tmp/with\\040space rw - fuse.provenafs http://x rw,user_id=0\n"
        "91 22 0:51 / /tmp/stacked rw - fuse.s3fs s3fs rw\n"
        "92 91 0:52 / /tmp/stacked rw master:3 - fuse.rclone bench: rw\n"
    )
    assert mounted_fstype(Path("/tmp/with space"), mountinfo) == "fuse.provenafs"
    assert mounted_fstype(Path("/tmp/stacked"), mountinfo) == "fuse.rclone"
    assert mounted_fstype(Path("/tmp/with"), mountinfo) is None
    assert mounted_fstype(Path("/tmp"), mountinfo) is None
    assert mounted_fstype(tmp_path, tmp_path / "missing") is None


def test_isolated_environment_holds_exactly_one_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVENAFS_TOKEN", "outer-access")
    monkeypatch.setenv("PROVENAFS_OFFLINE_TOKEN", "outer-offline")
    env = isolated_environment(tmp_path, {"PROVENAFS_OFFLINE_TOKEN": "mine"})
    assert env["PROVENAFS_OFFLINE_TOKEN"] == "mine"
    assert "PROVENAFS_TOKEN" not in env
    assert env["XDG_CONFIG_HOME"] == str(tmp_path / "config")
    assert env["XDG_CACHE_HOME"] == str(tmp_path / "cache")
    assert "PROVENAFS_OFFLINE_TOKEN" not in isolated_environment(tmp_path, {})


def test_a_daemon_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('cannot mount: no such bucket'); raise SystemExit(3)"]
    with pytest.raises(MountNotReady) as caught:
        start_mount_command(argv, tmp_path / "mnt", log_path=tmp_path / "log", name="fake")
    assert caught.value.summary == "fake daemon exited 3: cannot mount: no such bucket"
    assert "cannot mount" in str(caught.value)


def test_a_daemon_that_never_mounts_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    marker = f"never-mounts-{os.getpid()}"
    argv = [sys.executable, "-c", "import time; time.sleep(600)", marker]
    with pytest.raises(MountNotReady, match="not mounted after 1 s"):
        start_mount_command(argv, tmp_path / "mnt", log_path=tmp_path / "log", timeout=1)
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert marker.encode() not in cmdline, "the daemon was left running"


def test_a_store_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited with 2") as caught:
        start_local_store(tmp_path / "data", "--fault", "latency_ms=fast", seed=False)
    assert "--fault" in str(caught.value)


@pytest.mark.s3
def test_stop_ends_the_store_and_the_seaweedfs_it_started(tmp_path: Path) -> None:
    store = start_local_store(tmp_path / "data", seed=False)
    try:
        children = [(pid, start_time(pid)) for pid in store.descendant_pids()]
        weed = [pid for pid, _ in children if b"weed" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert weed, "the store runs SeaweedFS below it"
    finally:
        store.stop()
    assert store.process.returncode == 0
    assert all(start_time(pid) != started for pid, started in children)


@pytest.mark.s3
def test_python_m_entry_prints_the_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runner = subprocess.Popen(
        [sys.executable, "-m", "provenafs.server.testing", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None
        url = runner.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/", timeout=10).status_code == 200
        server_pid = descendants(runner.pid)[0]
        assert (data_dir / "server.json").exists()
    finally:
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=90) == 0
    assert start_time(server_pid) is None
    assert not (data_dir / "server.json").exists()  # the server shut down cleanly
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/", timeout=2)
