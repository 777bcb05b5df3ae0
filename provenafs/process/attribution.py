"""Which run a process belongs to, read from ``/proc`` once per process.

The kernel names the calling thread of each open (``Caller.pid``, in the daemon's pid
namespace; 0 when it cannot be named). ``ProcessAttribution.resolve`` answers from a bounded
cache keyed by pid and checked against the inode number of ``/proc/<pid>`` (one ``stat``,
about 3 µs: procfs makes a new inode, with a new number, for every process, so a recycled pid
is a new process) when it was last checked more than 0.1 s ago (no pid is recycled faster than
the kernel can fork through the whole pid space). A process seen for the first time is
resolved from ``/proc/<pid>/stat`` (command name, parent, start time) and:

1. its parent is a process already resolved to an open run (and still the same process, by
   its ``/proc`` inode) that is not itself a run's root: it is of that run, read from the
   cache without a thread hop (each command a script of the run starts); else
2. ``/proc/<pid>/environ`` holds ``PROVENAFS_RUN=<run id>`` of an open run (the variable
   survives double forks, ``setsid`` and reparenting to init); else
3. an ancestor, walking ``PPid`` up, is a run's root process (the ``provenafs run`` that
   started it, matched by pid and start time);

and in both cases only when the caller's uid is the run's uid: another user's process, even
with the variable forged, never joins a run. A process that is gone, or whose ``/proc`` entry
cannot be read, is unattributed.

``environ`` is read in a worker thread with a timeout: the kernel takes the target's memory
map lock to read it, and a thread of that process may hold it while it waits on this very
mount (a page fault on a mapped file). ``stat`` needs no such lock. A negative answer is
kept only until the next run starts (a process may belong to it). Trio thread only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import trio

from provenafs.core.types import Caller

__all__ = [
    "RUN_ENV",
    "Attribution",
    "ProcessAttribution",
    "ProcessInfo",
    "RunIdentity",
    "read_stat",
]

log = logging.getLogger(__name__)

RUN_ENV = "PROVENAFS_RUN"
_ENV_MARK = RUN_ENV.encode() + b"="
_CACHE_SIZE = 4096
_MAX_ANCESTORS = 64
_ENVIRON_TIMEOUT = 2.0
_ENVIRON_LIMIT = 1 << 20
# A process seen this recently is not checked again: its pid cannot have been recycled since,
# which takes its exit and the kernel handing out every other pid (pid_max, at least 32768
# forks) in between.
_RECHECK_AFTER = 0.1


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    """What ``/proc/<pid>/stat`` says of one process (or thread)."""

    pid: int
    comm: str
    ppid: int
    start: int  # clock ticks after boot: with the pid, names the process uniquely


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    """What attribution needs of an open run."""

    run_id: str
    uid: int
    root_pid: int
    root_start: int


class Attribution(NamedTuple):
    """A caller resolved: its run (None: none) and its command name ("" if unknown)."""

    run_id: str | None
    comm: str


_UNKNOWN = Attribution(None, "")


def read_stat(pid: int, proc: Path = Path("/proc")) -> ProcessInfo | None:
    """``/proc/<pid>/stat`` parsed, or None when the process is gone or unreadable."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    head, _, tail = raw.rpartition(b")")  # the command name may hold spaces and ")"
    fields = tail.split()
    if len(fields) < 20 or b"(" not in head:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    try:
        return ProcessInfo(pid, comm, int(fields[1]), int(fields[19]))
    except ValueError:
        return None


def _environ_run_blocking(path: str) -> str | None:
    """The ``PROVENAFS_RUN`` value in an ``environ`` file (NUL-separated), or None."""
    try:
        with open(path, "rb") as file:
            data = file.read(_ENVIRON_LIMIT)
    except OSError:
        return None
    for entry in data.split(b"\0"):
        if entry.startswith(_ENV_MARK):
            return entry[len(_ENV_MARK) :].decode("utf-8", "replace") or None
    return None


@dataclasses.dataclass
class _Seen:
    """What is known of one process: the ``/proc/<pid>`` inode it had, its run and name."""

    inode: int
    run_id: str | None
    comm: str
    start: int  # its start time (clock ticks after boot): with its pid, names it among roots
    generation: int  # the run generation a negative answer was found in
    checked: float  # monotonic time the inode was last compared


class ProcessAttribution:
    """Resolves callers to open runs (see the module docstring)."""

    def __init__(
        self,
        proc: Path = Path("/proc"),
        cache_size: int = _CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc = proc
        self._clock = clock
        self._cache_size = cache_size
        self._runs: dict[str, RunIdentity] = {}
        self._roots: dict[tuple[int, int], str] = {}
        self._generation = 0  # bumped by every run start: negative answers go stale
        self._cache: dict[int, _Seen] = {}
        self.resolved = 0  # processes resolved (cache misses)

    # -- runs ------------------------------------------------------------------------------

    def add_run(self, run: RunIdentity) -> None:
        self._runs[run.run_id] = run
        self._roots[(run.root_pid, run.root_start)] = run.run_id
        self._generation += 1

    def remove_run(self, run_id: str) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self._roots.pop((run.root_pid, run.root_start), None)

    def process(self, pid: int) -> ProcessInfo | None:
        return read_stat(pid, self._proc)

    # -- resolving -------------------------------------------------------------------------

    async def resolve(self, caller: Caller, *, fresh_comm: bool = False) -> Attribution:
        """The open run *caller* belongs to (if its uid is the run's), and its command name
        (read afresh with *fresh_comm*: an ``exec`` keeps the process but changes its name)."""
        pid = caller.pid
        if pid <= 0:
            return _UNKNOWN
        now = self._clock()
        seen = self._cache.get(pid)
        if seen is not None and seen.run_id is None and seen.generation != self._generation:
            seen = None  # a run started since: look again
        resolved_now = False
        if seen is None or now - seen.checked > _RECHECK_AFTER:
            try:
                # The inode of /proc/<pid> is made afresh for every process: it tells a
                # recycled pid from the process cached, for one stat (no text to generate).
                inode = os.stat(f"{self._proc}/{pid}").st_ino
            except OSError:
                return _UNKNOWN
            if seen is not None and seen.inode == inode:
                seen.checked = now
            else:
                seen = await self._resolve_new(pid, inode, now)
                if seen is None:
                    return _UNKNOWN
                resolved_now = True  # its comm was read just now
        comm = seen.comm
        if fresh_comm and not resolved_now:
            info = read_stat(pid, self._proc)
            comm = info.comm if info is not None else comm
        return Attribution(self._checked(seen.run_id, caller.uid), comm)

    async def _resolve_new(self, pid: int, inode: int, now: float) -> _Seen | None:
        info = read_stat(pid, self._proc)
        if info is None:
            return None
        generation = self._generation
        run_id = self._parents_run(info)
        if run_id is None:
            run_id = await self._find_run(info)
        seen = _Seen(inode, run_id, info.comm, info.start, generation, now)
        self.resolved += 1
        if len(self._cache) >= self._cache_size:
            self._cache.clear()  # bounded: the processes still opening files come back
        self._cache[pid] = seen
        return seen

    def _checked(self, run_id: str | None, uid: int) -> str | None:
        """*run_id* if that run is open and *uid* is its user's."""
        if run_id is None:
            return None
        run = self._runs.get(run_id)
        return run_id if run is not None and run.uid == uid else None

    def _parents_run(self, info: ProcessInfo) -> str | None:
        """The open run of *info*'s parent, if the cache knows it and the parent is still that
        process and no run's root (a nested ``provenafs run``: its children name their run)."""
        parent = self._cache.get(info.ppid)
        if parent is None or parent.run_id not in self._runs:
            return None
        if (info.ppid, parent.start) in self._roots:
            return None
        try:
            same = os.stat(f"{self._proc}/{info.ppid}").st_ino == parent.inode
        except OSError:
            return None
        return parent.run_id if same else None

    async def _find_run(self, info: ProcessInfo) -> str | None:
        if not self._runs:
            return None
        path = f"{self._proc}/{info.pid}/environ"
        named = None
        with trio.move_on_after(_ENVIRON_TIMEOUT) as scope:
            named = await trio.to_thread.run_sync(
                _environ_run_blocking, path, abandon_on_cancel=True
            )
        if scope.cancelled_caught:
            log.warning("pid %d: its environment could not be read in time", info.pid)
        if named is not None and named in self._runs:
            return named
        current: ProcessInfo | None = info
        for _ in range(_MAX_ANCESTORS):
            if current is None:
                return None
            found = self._roots.get((current.pid, current.start))
            if found is not None:
                return found
            if current.ppid <= 1:
                return None
            current = read_stat(current.ppid, self._proc)
        return None
