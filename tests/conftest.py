"""Shared fixtures: the real local data store (``provenafs serve --seed``) in a subprocess.

Every test that needs a data store uses ``local_store``: one server per test session, started by
PID, stopped by PID. Servers bind to 127.0.0.1 only. Tests that need their own, private server
(restart, faults, short credential TTLs) call ``start_local_store`` themselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class LocalStore:
    """A running ``provenafs serve`` and how to reach it."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _tokens: dict[tuple[str, bool], str] = dataclasses.field(default_factory=dict, repr=False)

    def token(self, user: str, *, offline: bool = False) -> str:
        """A token for a local user (access tokens from ``serve token`` live an hour: cached)."""
        cached = self._tokens.get((user, offline))
        if cached is not None:
            return cached
        cmd = [sys.executable, "-m", "provenafs", "serve", "token", user]
        cmd += ["--data-dir", str(self.data_dir)]
        if offline:
            cmd.append("--offline")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        token = out.stdout.strip().splitlines()[-1]
        self._tokens[(user, offline)] = token
        return token

    def serve_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``provenafs serve ARGS... --data-dir DIR`` (admin commands) and return the result."""
        cmd = [sys.executable, "-m", "provenafs", "serve", *args, "--data-dir", str(self.data_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def discovery(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.base_url}/.well-known/provenafs").json()
        return result

    def manifest(self) -> dict[str, Any]:
        """The seed manifest the server wrote: datasets by seed name, with handles and files."""
        result: dict[str, Any] = json.loads((self.data_dir / "seed-manifest.json").read_text())
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def start_local_store(data_dir: Path, *extra_args: str, seed: bool = True) -> LocalStore:
    """Start ``provenafs serve`` on a free port and wait until ``GET /`` answers 200."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    cmd = [sys.executable, "-m", "provenafs", "serve", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    if seed:
        cmd.append("--seed")
    with log_path.open("ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    store = LocalStore(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"provenafs serve exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(store.base_url + "/", timeout=2).status_code == 200:
                return store
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    store.stop()
    raise RuntimeError(f"provenafs serve did not become healthy:\n{log_path.read_text()[-4000:]}")


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
