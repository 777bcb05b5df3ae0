"""CredentialBroker with a counting fake client and a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.lowlevel

from provenafs.api.errors import UnavailableError
from provenafs.api.models import Credentials
from provenafs.storage.credentials import CredentialBroker, refresh_margin

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class CountingClient:
    """Mints credentials living ``lifetime`` seconds; yields so that callers overlap."""

    def __init__(self, clock: FakeClock, lifetime: float = 8 * 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = {"read": 0, "write": 0}
        self.fail_next = 0

    async def _mint(self, kind: str, handle: str) -> Credentials:
        self.calls[kind] += 1
        await trio.sleep(0.001)
        if self.fail_next:
            self.fail_next -= 1
            raise UnavailableError("data store down")
        n = self.calls[kind]
        expiry = dt.datetime.fromtimestamp(self.clock() + self.lifetime, dt.UTC)
        return Credentials(f"{kind}-{handle}-{n}", "secret", "session", expiry)

    async def read_credentials(self, handle: str) -> Credentials:
        return await self._mint("read", handle)

    async def write_credentials(self, handle: str) -> Credentials:
        return await self._mint("write", handle)


def test_refresh_margin() -> None:
    assert refresh_margin(8 * 3600) == 300
    assert refresh_margin(60) == 12
    assert refresh_margin(3) == 1
    assert refresh_margin(-5) == 1


async def test_concurrent_readers_cause_one_call() -> None:
    clock = FakeClock()
    client = CountingClient(clock)
    broker = CredentialBroker(client, clock=clock)
    got: list[str] = []

    async def reader() -> None:
        got.append((await broker.read("10378.1/1")).access_key_id)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(reader)
    for _ in range(10):
        await reader()
    assert client.calls == {"read": 1, "write": 0}
    assert set(got) == {"read-10378.1/1-1"}
    stats = broker.statistics()
    assert stats["read_calls"] == 1
    assert stats["hits"] == 10
    assert stats["held"] == 1


async def test_read_and_write_and_handles_are_separate() -> None:
    clock = FakeClock()
    client = CountingClient(clock)
    broker = CredentialBroker(client, clock=clock)

    assert (await broker.read("a")).access_key_id == "read-a-1"
    assert (await broker.write("a")).access_key_id == "write-a-1"
    assert (await broker.read("b")).access_key_id == "read-b-2"
    assert client.calls == {"read": 2, "write": 1}
    assert set(broker.expiries()) == {("a", "read"), ("a", "write"), ("b", "read")}


@pytest.mark.parametrize(("lifetime", "margin"), [(8 * 3600, 300), (10, 2), (3, 1)])
async def test_refreshed_ahead_of_expiry(lifetime: float, margin: float) -> None:
    clock = FakeClock()
    client = CountingClient(clock, lifetime=lifetime)
    broker = CredentialBroker(client, clock=clock)

    await broker.read("h")
    clock.now += lifetime - margin - 0.01
    await broker.read("h")
    assert client.calls["read"] == 1
    clock.now += 0.02
    await broker.read("h")
    assert client.calls["read"] == 2


async def test_invalidate_forces_a_new_call() -> None:
    clock = FakeClock()
    client = CountingClient(clock)
    broker = CredentialBroker(client, clock=clock)

    first = await broker.read("h")
    await broker.write("h")
    broker.invalidate("h")
    second = await broker.read("h")
    assert first.access_key_id != second.access_key_id
    assert client.calls == {"read": 2, "write": 1}
    assert broker.statistics()["invalidations"] == 2


async def test_failure_reaches_every_waiter_and_is_not_cached() -> None:
    clock = FakeClock()
    client = CountingClient(clock)
    client.fail_next = 1
    broker = CredentialBroker(client, clock=clock)
    failures: list[Exception] = []

    async def reader() -> None:
        try:
            await broker.read("h")
        except UnavailableError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(reader)
    assert (await broker.read("h")).access_key_id == "read-h-2"
    assert len(failures) == 5
    assert client.calls["read"] == 2


async def test_cancelled_leader_hands_over_to_a_waiter() -> None:
    clock = FakeClock()
    client = CountingClient(clock)
    broker = CredentialBroker(client, clock=clock)
    got: list[str] = []

    async with trio.open_nursery() as nursery:
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await broker.read("h")

        async def follow() -> None:
            got.append((await broker.read("h")).access_key_id)

        nursery.start_soon(lead)
        await trio.lowlevel.checkpoint()
        nursery.start_soon(follow)
        await trio.lowlevel.checkpoint()
        leader.cancel()
    assert got == ["read-h-2"]


async def test_outage_keeps_valid_credentials_and_retries_later() -> None:
    clock = FakeClock()
    client = CountingClient(clock, lifetime=100)
    broker = CredentialBroker(client, clock=clock)

    first = await broker.read("h")
    clock.now += 85  # inside the 20 s refresh margin
    client.fail_next = 1
    assert await broker.read("h") == first  # renewal failed: still valid, still used
    assert await broker.read("h") == first  # and no new call before the retry delay
    assert client.calls["read"] == 2
    clock.now += 6
    second = await broker.read("h")
    assert second != first
    assert client.calls["read"] == 3
    clock.now += 101
    client.fail_next = 1
    with pytest.raises(UnavailableError):  # expired: the outage shows
        await broker.read("h")
    assert broker.statistics()["kept_during_outage"] == 1


async def test_held_credentials_are_bounded_and_leave_at_expiry() -> None:
    clock = FakeClock()
    client = CountingClient(clock, lifetime=600)
    broker = CredentialBroker(client, clock=clock, max_held=8)
    for n in range(100):
        await broker.read(f"10378.1/{n}")
    assert broker.statistics()["held"] == 8
    assert {handle for handle, _ in broker.expiries()} == {f"10378.1/{n}" for n in range(92, 100)}
    await broker.read("10378.1/99")  # still held: no call
    assert client.calls["read"] == 100
    clock.now += 600  # every set has expired: nothing is kept
    assert broker.statistics()["held"] == 0
    assert broker.expiries() == {}
    await broker.read("10378.1/99")
    assert client.calls["read"] == 101
