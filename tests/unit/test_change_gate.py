"""ChangeGate: changes share a dataset's gate, a push holds it alone, waiters leave no trace."""

from __future__ import annotations

import trio
import trio.testing

from provenafs.write.change_gate import ChangeGate
from tests.unit.fakes import run

A = "10378.1/1"
B = "10378.1/2"


def test_a_push_waits_for_changes_in_flight_and_new_changes_wait_for_it() -> None:
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

    async def main() -> None:
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

    run(main)
    assert order == ["first in", "first out", "push in", "push out", "second in", "second out"]
    assert gate.statistics() == {"changes": 0, "pushes": 0}


def test_changes_share_the_gate_and_other_datasets_are_not_held() -> None:
    gate = ChangeGate()
    inside: list[str] = []

    async def main() -> None:
        async with gate.change(A), gate.change(A):  # two tasks' worth of shared holds
            inside.append("both")
            async with gate.change(B):
                inside.append("other dataset")
            with trio.move_on_after(1) as scope:
                await gate.begin_push(B)  # nothing of B in flight: no wait
            assert not scope.cancelled_caught
            gate.end_push(B)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert inside == ["both", "other dataset"]


def test_a_cancelled_push_leaves_the_gate_open() -> None:
    gate = ChangeGate()

    async def main() -> None:
        async with gate.change(A):
            with trio.move_on_after(1):
                await gate.begin_push(A)  # waits for the change held above: cancelled
            assert not gate.busy(A)
            async with gate.change(A):  # a second change gets in at once
                pass
        async with gate.push(A):
            assert gate.busy(A)
        assert not gate.busy(A)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
