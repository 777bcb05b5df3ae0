"""``CredentialBroker``: per-dataset S3 credentials, fetched once and refreshed ahead of expiry.

Every S3 call of the mount asks the broker for the dataset's read (or write) credentials. The
broker calls the data store only when it holds none, or when what it holds is near its advertised
``expiry``: less than max(1 s, 20% of the lifetime seen at issue), capped at 5 minutes, remains.
So 8-hour credentials are renewed 5 minutes early and a ``--credential-ttl`` of a few seconds
still works. Fetches are single-flight: N concurrent readers of a dataset cause one API call, and
a failure reaches every waiter without being cached. If the data store is unreachable while
the credentials held have not yet expired, they keep being used (renewal is retried every few
seconds), so cached and in-flight reads survive an outage. ``invalidate`` drops a dataset's
credentials after S3 refused them (``ExpiredCredentialsError``/``AccessDeniedError``), so the
next call mints new ones; ``call`` runs an S3 operation that way: once more with new credentials
if S3 refuses the ones held.

What it holds is bounded: at most ``max_held`` credential sets (the least recently used go
first), and a set is dropped once its ``expiry`` has passed, so datasets no longer in use cost
nothing however many were touched (``ls -l`` of thousands of datasets, say).

It runs on the trio thread only (its tables are not locked) and never logs a secret.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol, TypeVar

import cachetools

from provenafs.api.errors import UnavailableError
from provenafs.api.models import Credentials
from provenafs.cache.single_flight import SingleFlight
from provenafs.storage.blobstore import AccessDeniedError, ExpiredCredentialsError

__all__ = ["CredentialBroker", "CredentialSource", "refresh_margin"]

log = logging.getLogger(__name__)

Kind = Literal["read", "write"]
T = TypeVar("T")
_MAX_MARGIN = 300.0
_MIN_MARGIN = 1.0
_MARGIN_FRACTION = 0.2
OUTAGE_RETRY_SECONDS = 5.0
MAX_HELD = 1024  # credential sets (dataset, kind) held at once


class CredentialSource(Protocol):
    """What the broker needs from ``DataStoreClient``."""

    async def read_credentials(self, handle: str) -> Credentials: ...

    async def write_credentials(self, handle: str) -> Credentials: ...


def refresh_margin(lifetime: float) -> float:
    """How long before expiry credentials with this lifetime (seconds) are renewed."""
    return min(_MAX_MARGIN, max(_MIN_MARGIN, _MARGIN_FRACTION * lifetime))


@dataclasses.dataclass(frozen=True)
class _Held:
    credentials: Credentials
    renew_at: float  # clock seconds


def _expires_at(key: tuple[str, Kind], held: _Held, now: float) -> float:
    return held.credentials.expiry.timestamp()


class CredentialBroker:
    """Read and write credentials per dataset handle, cached until shortly before expiry."""

    def __init__(
        self,
        client: CredentialSource,
        *,
        clock: Callable[[], float] = time.time,
        max_held: int = MAX_HELD,
    ) -> None:
        self._client = client
        self._clock = clock
        # Least recently used first out; each set leaves at its advertised expiry.
        self._held: cachetools.TLRUCache[tuple[str, Kind], _Held] = cachetools.TLRUCache(
            max_held, _expires_at, timer=clock
        )
        self._flights: SingleFlight[tuple[str, Kind], Credentials] = SingleFlight()
        self._stats: collections.Counter[str] = collections.Counter(
            dict.fromkeys(("read_calls", "write_calls", "hits", "failures", "invalidations"), 0)
        )

    async def read(self, handle: str) -> Credentials:
        """Read-scoped credentials for ``handle``'s prefix."""
        return await self._get(handle, "read", self._client.read_credentials)

    async def write(self, handle: str) -> Credentials:
        """Write-scoped credentials for ``handle``'s prefix."""
        return await self._get(handle, "write", self._client.write_credentials)

    async def call(
        self,
        handle: str,
        kind: Kind,
        op: Callable[[Credentials], Awaitable[T]],
        *,
        on_renew: Callable[[], None] | None = None,
    ) -> T:
        """*op* with *handle*'s credentials of *kind*; if S3 refuses them (expired, or revoked
        since they were fetched), once more with new ones (``on_renew`` is told first)."""
        get = self.read if kind == "read" else self.write
        try:
            return await op(await get(handle))
        except (ExpiredCredentialsError, AccessDeniedError) as exc:
            log.info("S3 refused the %s credentials of %s (%s); renewing", kind, handle, exc)
            if on_renew is not None:
                on_renew()
            self.invalidate(handle)
            return await op(await get(handle))

    def invalidate(self, handle: str) -> None:
        """Forget ``handle``'s credentials (both kinds): S3 refused them."""
        for kind in ("read", "write"):
            if self._held.pop((handle, kind), None) is not None:
                self._stats["invalidations"] += 1

    def expiries(self) -> Mapping[tuple[str, str], dt.datetime]:
        """The advertised expiry of every credential set held, by (handle, kind)."""
        self._held.expire()
        return {key: held.credentials.expiry for key, held in self._held.items()}

    def statistics(self) -> Mapping[str, int]:
        """Counts: ``read_calls``/``write_calls`` (API calls), ``hits``, ``waits``, ``failures``,
        ``invalidations``, ``kept_during_outage``, and ``held`` (credential sets cached now)."""
        self._held.expire()
        return {**self._stats, "waits": self._flights.joined, "held": len(self._held)}

    async def _get(
        self, handle: str, kind: Kind, fetch: Callable[[str], Awaitable[Credentials]]
    ) -> Credentials:
        key = (handle, kind)
        held = self._held.get(key)
        if held is not None and self._clock() < held.renew_at:
            self._stats["hits"] += 1
            return held.credentials
        return await self._flights.run(key, lambda: self._call(key, fetch))

    async def _call(
        self, key: tuple[str, Kind], fetch: Callable[[str], Awaitable[Credentials]]
    ) -> Credentials:
        held = self._held.get(key)  # a cancelled leader's waiters come round again
        if held is not None and self._clock() < held.renew_at:
            self._stats["hits"] += 1
            return held.credentials
        self._stats[f"{key[1]}_calls"] += 1
        issued = self._clock()
        try:
            credentials = await fetch(key[0])
        except UnavailableError:
            self._stats["failures"] += 1
            held, now = self._held.get(key), self._clock()
            if held is None or held.credentials.expiry.timestamp() <= now:
                raise
            # the data store is down but what we hold is still valid: keep serving with it,
            # and try again a little later rather than on every call
            expires = held.credentials.expiry.timestamp()
            self._held[key] = _Held(held.credentials, min(expires, now + OUTAGE_RETRY_SECONDS))
            self._stats["kept_during_outage"] += 1
            return held.credentials
        except Exception:
            self._stats["failures"] += 1
            raise
        expires = credentials.expiry.timestamp()
        self._held[key] = _Held(credentials, expires - refresh_margin(expires - issued))
        return credentials
