"""SingleFlight: one call per key at a time, its value or its failure shared, never cached, and
a cancelled leader handing the call to a waiter (the block cache, the credential broker and the
catalog rely on exactly this)."""

from __future__ import annotations

import trio
import trio.testing

from provenafs.cache.single_flight import SingleFlight


async def test_concurrent_callers_share_one_call_and_its_value() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = trio.Event()
    calls = 0
    results: list[int] = []

    async def fetch() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    async def get() -> None:
        results.append(await flight.run("k", fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        assert "k" in flight and "other" not in flight
        release.set()
    assert results == [1] * 5
    assert (calls, flight.calls, flight.joined) == (1, 1, 4)
    assert "k" not in flight
    assert await flight.run("k", fetch) == 2  # nothing cached: the next call fetches again


async def test_a_failure_reaches_every_waiter_and_is_not_cached() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = trio.Event()
    failures: list[BaseException] = []

    async def broken() -> int:
        await release.wait()
        raise OSError("down")

    async def get() -> None:
        try:
            await flight.run("k", broken)
        except OSError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert len(failures) == 3 and len({id(exc) for exc in failures}) == 1  # the same failure

    async def works() -> int:
        return 9

    assert await flight.run("k", works) == 9  # the failure was not kept


async def test_single_flight_reruns_after_the_leader_is_cancelled() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    started = trio.Event()
    release = trio.Event()
    results: list[int] = []

    async def slow() -> int:
        started.set()
        await release.wait()
        return 7

    async with trio.open_nursery() as nursery:
        leader_scope = trio.CancelScope()

        async def leader() -> None:
            with leader_scope:
                await flight.run("k", slow)

        async def follower() -> None:
            results.append(await flight.run("k", slow))

        nursery.start_soon(leader)
        await started.wait()
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        leader_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert results == [7]
    assert flight.calls == 2
