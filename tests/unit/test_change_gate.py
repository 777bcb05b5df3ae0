"""ChangeGate: changes share a dataset's gate, a push holds it alone, waiters leave no trace."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from provenafs.write.change_gate import ChangeGate

A = "10378.1/1"
B = "10378.1/2"


async def test_a_push_waits_for_changes_in_flight_and_new_changes_wait_for_it() -> None:
    gate = ChangeGate()
    order: list[str] = []
    release_change = trio.Event()

    async def change(name: str, hold: trio.Event | None = None) -> None:
        async with gate.change(A):
            order.append(f"{name} in")
            if hold is not None:
                await hold.wait()
            order.append(f"{name} out")

    async def push() -> None:
        async with gate.push(A):
            order.append("push in")
            await trio.testing.wait_all_tasks_blocked()
            order.append("push out")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change, "first", release_change)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(push)
        await trio.testing.wait_all_tasks_blocked()
        assert gate.busy(A)
        nursery.start_soon(change, "second")  # arrives while the push waits: it waits too
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["first in"]
        release_change.set()
    assert order == ["first in", "first out", "push in", "push out", "second in", "second out"]
    assert gate.statistics() == {"changes": 0, "pushes": 0}


async def test_changes_share_the_gate_and_other_datasets_are_not_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ChangeGate()
    inside: list[str] = []

    second_in, done = trio.Event(), trio.Event()

    async def second() -> None:
        async with gate.change(A):
            second_in.set()
            await done.wait()

    async with trio.open_nursery() as nursery, gate.change(A):  # two tasks' holds at once
        nursery.start_soon(second)
        await second_in.wait()
        inside.append("both")
        assert gate.statistics()["changes"] == 2
        async with gate.change(B):
            inside.append("other dataset")
        with trio.move_on_after(1) as scope:
            await gate.begin_push(B)  # nothing of B in flight: no wait
        assert not scope.cancelled_caught
        gate.end_push(B)
        done.set()
    assert inside == ["both", "other dataset"]


async def test_the_lock_order_is_asserted_per_task(autojump_clock: trio.testing.MockClock) -> None:
    """A shared hold inside a shared hold of the same task, or a push inside one, would wait
    for itself: both fail at once instead of hanging; other tasks and datasets are free."""
    gate = ChangeGate()

    assert not gate.holds(A)
    async with gate.change(A):
        assert gate.holds(A) and not gate.holds(B)
        with pytest.raises(AssertionError, match="must not nest"):
            async with gate.change(A):
                pass
        with pytest.raises(AssertionError, match="no push while"):
            await gate.begin_push(A)
        async with gate.change(B):  # another dataset's gate nests freely
            pass
    assert not gate.holds(A)
    async with gate.push(A):  # and once let go, the same task may push
        pass
    assert gate.statistics() == {"changes": 0, "pushes": 0}


async def test_a_cancelled_push_leaves_the_gate_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = ChangeGate()

    held, let_go = trio.Event(), trio.Event()

    async def change() -> None:
        async with gate.change(A):
            held.set()
            await let_go.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change)
        await held.wait()
        with trio.move_on_after(1):
            await gate.begin_push(A)  # waits for the change held by the task: cancelled
        assert not gate.busy(A)
        async with gate.change(A):  # a second change gets in at once
            pass
        let_go.set()
    async with gate.push(A):
        assert gate.busy(A)
    assert not gate.busy(A)
