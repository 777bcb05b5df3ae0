"""How measurements touch a mount: always from a child process, timed from outside.

A hung mount must not hang the bench, so every access to a mount runs in a child that can be
timed out and killed: commands (``dd``, ``ls``, ``cat``) through ``timed``/``run_checked``, and
what no command measures (time to first byte, many short reads, random reads) through the probe,
``python -m benchmarks.probe KIND ARGS...``, which prints one JSON object. Dropping the kernel's
caches before a cold measurement is here too.

What it must not do: import anything beyond the standard library (the probe must start fast),
or signal any process but the children it started.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WORKLOAD_TIMEOUT = 900.0


def probe_main(argv: Sequence[str]) -> int:
    """``python -m benchmarks.probe KIND ARGS...``: measure, print one JSON object on stdout."""
    kind = argv[0]
    if kind == "ttfb":
        started = time.perf_counter()
        fd = os.open(argv[1], os.O_RDONLY)
        try:
            first = os.read(fd, 1)
        finally:
            elapsed = time.perf_counter() - started
            os.close(fd)
        print(json.dumps({"seconds": elapsed, "bytes": len(first)}))
        return 0
    if kind == "head":
        paths = Path(argv[1]).read_text().splitlines()
        size = int(argv[2])
        total = 0
        started = time.perf_counter()
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                total += len(os.read(fd, size))
            finally:
                os.close(fd)
        print(json.dumps({"seconds": time.perf_counter() - started, "bytes": total}))
        return 0
    if kind == "random":
        path, seconds, block = argv[1], float(argv[2]), int(argv[3])
        fd = os.open(path, os.O_RDONLY)
        try:
            blocks = max(1, os.fstat(fd).st_size // block)
            rng = random.Random(1)  # noqa: S311 - a workload, not a secret
            count = 0
            started = time.perf_counter()
            deadline = started + seconds
            while time.perf_counter() < deadline:
                os.pread(fd, block, rng.randrange(blocks) * block)
                count += 1
            elapsed = time.perf_counter() - started
        finally:
            os.close(fd)
        print(json.dumps({"iops": count / elapsed, "reads": count}))
        return 0
    if kind == "timed":  # the best wall time of N runs of a command (row 12 runs it in a run)
        times = []
        for _ in range(int(argv[1])):
            started = time.perf_counter()
            done = subprocess.run(argv[2:], stdout=subprocess.DEVNULL, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                return done.returncode
        print(json.dumps({"seconds": min(times), "runs": len(times)}))
        return 0
    print(f"benchmarks.probe: unknown probe {kind!r}", file=sys.stderr)
    return 2


def run_probe(*args: str, timeout: float = WORKLOAD_TIMEOUT) -> dict[str, Any]:
    """Run the probe in a child process and return what it printed."""
    out = run_checked([sys.executable, "-m", "benchmarks.probe", *args], timeout, cwd=REPO)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def short_error(exc: BaseException) -> str:
    """One line about a failure, for the table (exception messages here carry no secrets)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


class WorkloadError(Exception):
    """A measurement failed; the message is short and safe to print."""


def run_checked(
    argv: Sequence[str], timeout: float = WORKLOAD_TIMEOUT, *, cwd: Path | None = None
) -> str:
    """Run argv, return its stdout; a non-zero exit or a timeout raises WorkloadError."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkloadError(f"{Path(argv[0]).name} timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise WorkloadError(f"{Path(argv[0]).name} exited {done.returncode}: {tail[0][:160]}")
    return done.stdout


def timed_together(paths: Sequence[Path]) -> float:
    """Seconds for one ``dd bs=1M`` per path, all running at once, to read them all."""
    started = time.perf_counter()
    readers = [
        subprocess.Popen(
            ["dd", f"if={path}", "of=/dev/null", "bs=1M"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for path in paths
    ]
    failures = []
    for reader in readers:
        try:
            _, err = reader.communicate(timeout=WORKLOAD_TIMEOUT)
        except subprocess.TimeoutExpired:
            reader.kill()
            reader.communicate()
            failures.append("dd timed out")
            continue
        if reader.returncode != 0:
            failures.append(f"dd exited {reader.returncode}: {err.decode()[-160:]}")
    elapsed = time.perf_counter() - started
    if failures:
        raise WorkloadError(failures[0])
    return elapsed


def timed(argv: Sequence[str], timeout: float = WORKLOAD_TIMEOUT) -> float:
    """Wall-clock seconds of a command whose output goes to /dev/null."""
    started = time.perf_counter()
    try:
        done = subprocess.run(
            list(argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkloadError(f"{Path(argv[0]).name} timed out after {timeout:.0f} s") from exc
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise WorkloadError(f"{Path(argv[0]).name} exited {done.returncode}: {tail[0][:160]}")
    return elapsed


def drop_kernel_caches() -> bool:
    """Flush dirty pages and drop the page, dentry and inode caches; False where not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(probe_main(sys.argv[1:]))
