"""Run the local data store (``python -m provenafs serve``) as a child process, for tests and tools.

The one harness that tests, benchmarks and ``scripts/demo`` start a local store with:
``start_local_store`` runs ``provenafs serve`` bound to 127.0.0.1 (on a free port unless told),
waits until ``GET /`` answers 200 while watching that the process still runs, and returns a
``LocalStoreProcess`` with token helpers; ``stop`` ends it by PID (SIGTERM, then SIGKILL) and
then ends whatever it had started (SeaweedFS) if that outlived it. ``python -m
provenafs.server.testing`` does the same from a shell: it prints the URL once the store answers
and stops it on SIGTERM or Ctrl-C.

What it must not do: import anything of the mount (it talks to the store over HTTP and its CLI
only), signal a process it did not start, or print a token or key (tokens are returned, never
logged).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

READY_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class LocalStoreProcess:
    """A running ``provenafs serve`` that this process started, and how to reach it."""

    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _tokens: dict[tuple[str, bool], str] = dataclasses.field(default_factory=dict, repr=False)

    def serve_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``provenafs serve ARGS... --data-dir DIR`` (admin commands) and return the result."""
        cmd = [sys.executable, "-m", "provenafs", "serve", *args, "--data-dir", str(self.data_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def token(self, user: str, *, offline: bool = False) -> str:
        """A token for a local user from ``serve token`` (cached: access tokens live an hour)."""
        cached = self._tokens.get((user, offline))
        if cached is not None:
            return cached
        done = self.serve_cli("token", user, *(["--offline"] if offline else []))
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            reason = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"provenafs serve token {user} exited {done.returncode}: {reason}")
        self._tokens[(user, offline)] = lines[-1]
        return lines[-1]

    def discovery(self) -> dict[str, Any]:
        """The store's ``/.well-known/provenafs`` document."""
        result: dict[str, Any] = httpx.get(f"{self.base_url}/.well-known/provenafs").json()
        return result

    def manifest(self) -> dict[str, Any]:
        """The seed manifest the server wrote: datasets by seed name, with handles and files."""
        result: dict[str, Any] = json.loads((self.data_dir / "seed-manifest.json").read_text())
        return result

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (the log holds no secrets)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def descendant_pids(self) -> list[int]:
        """Every process below the server (SeaweedFS and its helpers), while they run."""
        return descendants(self.process.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the server, SIGKILL it after ``timeout`` s, then end any child it left behind."""
        if self.process.poll() is not None:
            return
        children = [(pid, start_time(pid)) for pid in self.descendant_pids()]
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        # The server stops SeaweedFS itself, and SeaweedFS dies with it even on SIGKILL; a child
        # still running after that (the same PID and start time) is killed here, never orphaned.
        deadline = time.monotonic() + 15
        for pid, started in children:
            while started is not None and start_time(pid) == started:
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.1)


def start_local_store(
    data_dir: Path,
    *extra_args: str,
    seed: bool = True,
    port: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> LocalStoreProcess:
    """Start ``provenafs serve`` on 127.0.0.1 and wait until ``GET /`` answers 200.

    ``extra_args`` go to ``serve`` as they are (``--credential-ttl 3``, ``--fault ...``). The log
    goes to ``log_path`` (default: ``DATA_DIR-serve.log`` beside the data dir). Raises
    RuntimeError with the log's tail if the server exits or does not answer in time; the process
    is stopped first, also when waiting is interrupted.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = free_port()
    if log_path is None:
        log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    cmd = [sys.executable, "-m", "provenafs", "serve", "--data-dir", str(data_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    if seed:
        cmd.append("--seed")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    store = LocalStoreProcess(f"http://127.0.0.1:{port}", data_dir, process, log_path)
    try:
        wait_until_healthy(store, ready_timeout)
    except BaseException:
        store.stop()
        raise
    return store


def wait_until_healthy(store: LocalStoreProcess, timeout: float) -> None:
    """Block until ``GET /`` answers 200; RuntimeError if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.process.poll() is not None:
            raise RuntimeError(
                f"provenafs serve exited with {store.process.returncode}:\n{store.log_tail(60)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(store.base_url + "/", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"provenafs serve did not become healthy:\n{store.log_tail(60)}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from ``/proc/PID/task/TID/children``), parents first."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    pending.append(child)
    return found


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), or None once it is gone (or a zombie).

    A PID with the same start time is the same process; a recycled PID has a later one.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    if len(fields) < 20 or fields[0] == "Z":
        return None
    return int(fields[19])


class _Stop(Exception):
    """Raised from the SIGTERM handler so that ``finally`` stops the store."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m provenafs.server.testing``: run a local store until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m provenafs.server.testing",
        description="Start provenafs serve on 127.0.0.1, print its URL once it answers, and "
        "stop it (and everything it started) on SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--seed", action="store_true", help="load sample users and datasets")
    parser.add_argument("--log", type=Path, default=None, help="the server's log file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_stop)
    store: LocalStoreProcess | None = None
    try:
        store = start_local_store(
            args.data_dir.expanduser().resolve(), seed=args.seed, port=args.port, log_path=args.log
        )
        print(store.base_url, flush=True)
        code = store.process.wait()
        print(f"provenafs serve exited with {code}:\n{store.log_tail()}", file=sys.stderr)
        return 1
    except (_Stop, KeyboardInterrupt):
        return 0
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        if store is not None:
            store.stop()


if __name__ == "__main__":
    sys.exit(main())
