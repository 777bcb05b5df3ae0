"""``hold_draft_root``: one holder of a draft root at a time, named to the one refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from provenafs.write.draft_root_lock import DraftRootInUseError, hold_draft_root, lock_path_for


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    root = tmp_path / "state" / "drafts" / "0123456789abcdef"
    with hold_draft_root(root, "/mnt/first"):
        with pytest.raises(DraftRootInUseError) as refused, hold_draft_root(root, "/mnt/second"):
            pass
        message = str(refused.value)
        assert "/mnt/first" in message and str(root) in message and "state_dir" in message
        assert "/mnt/second" not in lock_path_for(root).read_text()
    # let go: the next mount gets it
    with hold_draft_root(root, "/mnt/second"):
        assert "/mnt/second" in lock_path_for(root).read_text()


def test_the_lock_file_sits_beside_the_root_and_is_private(tmp_path: Path) -> None:
    root = tmp_path / "state" / "provenafs" / "drafts" / "abc"
    with hold_draft_root(root, "/mnt/p"):
        path = lock_path_for(root)
        assert path.parent == root.parent and not root.exists()  # never inside the store
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for directory in (path.parent, path.parent.parent, tmp_path / "state"):
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_other_roots_are_independent(tmp_path: Path) -> None:
    with hold_draft_root(tmp_path / "a", "/mnt/a"), hold_draft_root(tmp_path / "b", "/mnt/b"):
        pass
