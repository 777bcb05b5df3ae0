"""``SpillArea`` and ``SpillFile``: unnamed private files, bounded, closed only when idle."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from provenafs.cache import spill
from provenafs.cache.spill import SpillArea

MiB = 1 << 20


async def test_parts_are_readable_once_written_and_the_file_has_no_name(tmp_path: Path) -> None:
    area = SpillArea(tmp_path / "spill", 16 * MiB)
    data = os.urandom(3 * MiB + 7)

    file = area.open(len(data), MiB)
    assert file is not None
    assert not file.holds(0, 1)
    assert await file.write(MiB, data[MiB : 2 * MiB])
    assert file.holds(MiB, 2 * MiB) and not file.holds(MiB - 1, MiB + 1)
    assert await file.read(MiB + 5, MiB + 9) == data[MiB + 5 : MiB + 9]  # inline
    for start in (0, 2 * MiB, 3 * MiB):
        assert await file.write(start, data[start : start + MiB])
    assert file.holds(0, len(data))
    assert await file.read(0, len(data)) == data  # in a thread
    file.close()
    assert not file.holds(0, 1)
    assert stat.S_IMODE((tmp_path / "spill").stat().st_mode) == 0o700
    assert list((tmp_path / "spill").iterdir()) == []
    assert area.statistics()["bytes"] == 0


def test_the_area_refuses_what_does_not_fit(tmp_path: Path) -> None:
    area = SpillArea(tmp_path / "spill", 10 * MiB)
    first = area.open(6 * MiB, MiB)
    assert first is not None
    assert area.open(6 * MiB, MiB) is None
    first.close()
    second = area.open(6 * MiB, MiB)
    assert second is not None
    second.close()
    assert area.statistics()["refused"] == 1 and area.statistics()["files"] == 2


def test_no_spill_file_that_would_leave_under_2_gib_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Disk:
        f_frsize, f_blocks, f_bavail = 4096, 100 << 18, 2100 * 256  # 100 GiB, 2100 MiB free

    monkeypatch.setattr(os, "statvfs", lambda path: Disk())
    area = SpillArea(tmp_path / "spill", 1 << 30)
    assert area.open(60 * MiB, MiB) is None  # 2040 MiB would be left
    fits = area.open(40 * MiB, MiB)
    assert fits is not None
    fits.close()
    assert area.statistics()["refused"] == 1


async def test_close_during_a_write_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = SpillArea(tmp_path / "spill", 16 * MiB)
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "close", close)
    # The write stays in its thread until the file is closed (not a race with the thread).
    closing = threading.Event()
    real_pwrite = spill._pwrite_all_blocking

    def held_pwrite(fd: int, data: bytes, offset: int) -> None:
        closing.wait(30)
        real_pwrite(fd, data, offset)

    monkeypatch.setattr(spill, "_pwrite_all_blocking", held_pwrite)

    file = area.open(2 * MiB, MiB)
    assert file is not None
    spill_fd = file._fd
    async with trio.open_nursery() as nursery:
        results: list[bool] = []

        async def write() -> None:
            results.append(await file.write(0, bytes(MiB)))

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        file.close()  # the write is in its thread: the descriptor must stay open
        assert spill_fd not in closed
        closing.set()
    assert results == [False]  # closed meanwhile: the part does not count
    assert closed.count(spill_fd) == 1
    assert area.statistics()["bytes"] == 0


async def test_a_failed_write_drops_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = SpillArea(tmp_path / "spill", 16 * MiB)

    def full_disk(fd: int, data: bytes, offset: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill, "_pwrite_all_blocking", full_disk)

    file = area.open(2 * MiB, MiB)
    assert file is not None
    assert not await file.write(0, bytes(MiB))
    assert not file.holds(0, 1)
    assert area.statistics()["write_errors"] == 1
    assert area.statistics()["bytes"] == 0
