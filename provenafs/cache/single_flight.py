"""``SingleFlight``: N concurrent callers for one key cause one call, and share its outcome.

The block cache (one GET per block), the credential broker (one credential call per dataset)
and the catalog (one fetch per record, listing or probe) all use it. The caller that finds no
call in flight for its key leads: it runs its ``fetch``; callers that come while it runs wait
and receive the same value, or the same exception (a failure is shared, never cached here). If
the leader is cancelled, the waiters wake and one of them leads a new call with its own
``fetch``, so a cancelled reader never fails the others.

Trio thread only (its table is not locked). It knows nothing of what it fetches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclasses.dataclass
class _Flight(Generic[V]):
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    has_value: bool = False
    value: V | None = None
    error: Exception | None = None


class SingleFlight(Generic[K, V]):
    """One ``fetch`` per key at a time; concurrent callers for the key share its outcome."""

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}
        self.calls = 0  # fetches led
        self.joined = 0  # callers that waited for another's fetch

    def __contains__(self, key: K) -> bool:
        """Whether a fetch of *key* is in flight now (``run`` would wait for it)."""
        return key in self._flights

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        """The outcome of the fetch of *key* in flight, else of ``fetch()`` run now."""
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, fetch)
            self.joined += 1
            await flight.done.wait()
            if flight.has_value:
                return flight.value  # type: ignore[return-value]
            if flight.error is not None:
                raise flight.error
            # the leader was cancelled: go round, and one waiter leads a new fetch

    async def _lead(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        self.calls += 1
        try:
            value = await fetch()
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            flight.has_value = True
            return value
        finally:
            del self._flights[key]
            flight.done.set()
