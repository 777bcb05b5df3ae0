"""Shared fixtures: the real local data store (``provenafs serve --seed``) in a subprocess.

Every test that needs a data store uses ``local_store``: one server per test session, started by
PID, stopped by PID (``provenafs.server.testing``, the harness benchmarks and the demo use too).
Servers bind to 127.0.0.1 only. Tests that need their own, private server (restart, faults, short
credential TTLs) call ``start_local_store`` themselves.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from provenafs.server.testing import LocalStoreProcess, free_port, start_local_store

__all__ = ["IN_CI", "LocalStore", "free_port", "require_fuse", "start_local_store"]

IN_CI = os.environ.get("CI", "").lower() == "true"

# The harness's running store, under the name the tests use.
LocalStore = LocalStoreProcess


@pytest.fixture(scope="session")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    """The shared seeded local data store (read it freely; private changes need a private one)."""
    store = start_local_store(tmp_path_factory.mktemp("store") / "data")
    try:
        yield store
    finally:
        store.stop()


def require_fuse() -> None:
    """Skip when FUSE is unavailable, except under CI=true, where that is a failure."""
    if os.path.exists("/dev/fuse") and shutil.which("fusermount3"):
        return
    if IN_CI:
        pytest.fail("FUSE tests must run under CI=true, but /dev/fuse or fusermount3 is missing")
    pytest.skip("needs /dev/fuse and fusermount3")
