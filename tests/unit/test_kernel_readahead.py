"""``kernel_readahead``: the readahead knob of the mount's device, which ``find_mount`` names."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from provenafs.process.kernel_readahead import set_readahead
from provenafs.process.mounts import find_mount

MOUNTINFO = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
91 22 0:52 / /tmp/my\\040data rw,nosuid,nodev,relatime shared:50 - fuse.provenafs provenafs rw
95 22 0:55 / /tmp/mnt rw,nosuid,nodev,relatime shared:52 - fuse.provenafs provenafs rw
97 95 0:58 / /tmp/mnt rw,nosuid,nodev,relatime shared:54 - fuse.provenafs provenafs rw
"""


def test_the_device_is_the_newest_mount_at_the_path_with_escapes_undone(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)

    def device(path: str) -> str | None:
        entry = find_mount(Path(path), mountinfo)
        return None if entry is None else entry.device

    assert device("/tmp/my data") == "0:52"
    assert device("/tmp/mnt") == "0:58"  # mounted over 0:55
    assert device("/tmp/elsewhere") is None


@pytest.fixture
def bdi(tmp_path: Path) -> Path:
    root = tmp_path / "bdi"
    (root / "0:58").mkdir(parents=True)
    (root / "0:58" / "read_ahead_kb").write_text("128\n")
    return root


def test_set_readahead_writes_the_devices_knob(bdi: Path) -> None:
    assert set_readahead("0:58", 1024, bdi_root=bdi) == 1024
    assert (bdi / "0:58" / "read_ahead_kb").read_text() == "1024\n"


def test_a_knob_that_cannot_be_written_keeps_its_value_and_the_log_says_how(
    bdi: Path, caplog: pytest.LogCaptureFixture
) -> None:
    knob = bdi / "0:58" / "read_ahead_kb"
    knob.unlink()
    knob.mkdir()  # writing fails even as root
    with caplog.at_level(logging.INFO, logger="provenafs.process.kernel_readahead"):
        assert set_readahead("0:58", 1024, bdi_root=bdi) is None
    assert f"echo 1024 > {knob}" in caplog.text
