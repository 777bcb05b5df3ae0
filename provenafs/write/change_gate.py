"""``ChangeGate``: per dataset, changes run side by side, an in-place push runs alone.

With ``-o writes=in-place`` a push reads a snapshot of the dataset's draft and then forgets the
entries it wrote (``Draft.settle``). A change landing in between (a rename carrying a file the
push deletes, a write into a file being uploaded) would be lost or copied from a key that is
gone. So every operation that changes a dataset's draft holds the gate ``shared`` for its
whole length, and a push holds it ``exclusive``: it waits for the changes in flight, and
changes that arrive meanwhile wait for it (writer preference, so a stream of changes cannot
starve a push).

Rules: trio thread only. Shared holds must not nest in one task (a nested one would wait for a
push that waits for the outer one), and a task must not push while it holds the gate shared
(the push would wait for itself): both are asserted, per task. Cancellation while waiting
leaves no trace.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator

import trio
import trio.lowlevel

__all__ = ["ChangeGate"]


class ChangeGate:
    """Shared holds for changes, exclusive holds for pushes, per dataset handle."""

    def __init__(self) -> None:
        self._changes: collections.Counter[str] = collections.Counter()
        self._holders: dict[str, set[trio.lowlevel.Task]] = collections.defaultdict(set)
        self._pushing: set[str] = set()
        self._wakeups: dict[str, trio.Event] = {}

    @contextlib.asynccontextmanager
    async def change(self, handle: str) -> AsyncIterator[None]:
        """Hold *handle*'s gate shared: wait while a push of it runs or waits."""
        task = trio.lowlevel.current_task()
        assert task not in self._holders.get(handle, ()), "lock order: shared holds must not nest"
        while handle in self._pushing:
            await self._wakeup(handle).wait()
        self._changes[handle] += 1
        self._holders[handle].add(task)
        try:
            yield
        finally:
            self._holders[handle].discard(task)
            if not self._holders[handle]:
                del self._holders[handle]
            self._changes[handle] -= 1
            if self._changes[handle] <= 0:
                del self._changes[handle]
                self._wake(handle)

    async def begin_push(self, handle: str) -> None:
        """Hold *handle*'s gate alone (until ``end_push``): new changes wait, and so does this
        call, for the changes in flight."""
        assert not self.holds(handle), "lock order: no push while this task holds the gate"
        while handle in self._pushing:
            await self._wakeup(handle).wait()
        self._pushing.add(handle)
        try:
            while self._changes[handle] > 0:
                await self._wakeup(handle).wait()
        except BaseException:
            self.end_push(handle)
            raise

    def end_push(self, handle: str) -> None:
        self._pushing.discard(handle)
        self._wake(handle)

    @contextlib.asynccontextmanager
    async def push(self, handle: str) -> AsyncIterator[None]:
        """``begin_push`` .. ``end_push`` as a context."""
        await self.begin_push(handle)
        try:
            yield
        finally:
            self.end_push(handle)

    def holds(self, handle: str) -> bool:
        """Whether the calling task holds *handle*'s gate shared."""
        holders = self._holders.get(handle)
        return holders is not None and trio.lowlevel.current_task() in holders

    def busy(self, handle: str) -> bool:
        """A push of *handle* runs or waits."""
        return handle in self._pushing

    def statistics(self) -> dict[str, int]:
        return {"changes": sum(self._changes.values()), "pushes": len(self._pushing)}

    def _wakeup(self, handle: str) -> trio.Event:
        return self._wakeups.setdefault(handle, trio.Event())

    def _wake(self, handle: str) -> None:
        event = self._wakeups.pop(handle, None)
        if event is not None:
            event.set()
