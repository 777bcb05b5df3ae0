"""``PublishScheduler``: when drafts publish, one at a time per dataset, and what is known of it.

It serialises publishes (and in-place pushes) per dataset with one lock each (the outermost
lock of the write path, ``provenafs.write``), remembers what each publish did for status and
for callers that commit a draft just published, resumes interrupted publishes at start (in
place: every draft), and publishes a draft on its own once it has had no open writer and no
change for the quiet delay (backing off after a failure). ``Publisher`` does the publishing.

Trio thread only; ``run`` belongs in the mount's nursery. Never logs a credential.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from provenafs.write.publish import (
    NothingToPublishError,
    Publisher,
    PublishError,
    PublishFailure,
    PublishProgress,
)

__all__ = ["PublishScheduler"]

log = logging.getLogger(__name__)

_RECENT_FAILURES = 20


class PublishScheduler:
    """Serialises publishes per dataset, tracks them for status, and publishes quiet drafts."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        publish_delay: float = 300.0,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 5.0,
    ) -> None:
        self.publisher = publisher
        self.publish_delay = publish_delay
        self._clock = clock
        self._poll = poll_interval
        self._locks: dict[str, trio.Lock] = collections.defaultdict(trio.Lock)
        self._in_progress: dict[str, PublishProgress] = {}
        self._failures: collections.deque[PublishFailure] = collections.deque(
            maxlen=_RECENT_FAILURES
        )
        self._published: dict[str, str] = {}  # old handle -> new handle, this session
        self._retry_after: dict[str, float] = {}
        # In place, a draft outlives a successful push while a pushed file is still open: the
        # time of its last change then, so the quiet-delay publisher does not push it again.
        self._pushed_change: dict[str, float] = {}
        # Drafts the quiet delay leaves alone (a run's outputs: published when the run ends,
        # or kept when it fails); ``commit`` still publishes them when asked.
        self.held: Callable[[str], bool] = lambda handle: False

    async def commit(
        self,
        handle: str,
        reason: str | None = None,
        progress: Callable[[PublishProgress], None] | None = None,
    ) -> str:
        """Publish ``handle``'s draft now (after any publish of it in flight); the new handle.

        A dataset whose draft was published moments ago (by another caller, or by a resume or
        the quiet delay) raises ``NothingToPublishError`` naming that new handle.
        """
        async with self._locks[handle]:
            if self.publisher.draft_store.get(handle) is None and handle in self._published:
                published = self._published[handle]
                raise NothingToPublishError(
                    f"the draft of {handle} was already published as {published}", published
                )

            def listen(snapshot: PublishProgress) -> None:
                self._in_progress[handle] = snapshot
                if progress is not None:
                    progress(snapshot)

            draft = self.publisher.draft_store.get(handle)
            last_change = None if draft is None else draft.summary().last_change

            try:
                new_handle = await self.publisher.publish(handle, reason, listen)
            except NothingToPublishError:
                raise
            except PublishError as exc:
                self._record_failure(handle, str(exc))
                raise
            except Exception as exc:
                self._record_failure(handle, f"{type(exc).__name__}: {exc}")
                raise PublishError(
                    f"publishing {handle} failed: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                self._in_progress.pop(handle, None)
            self._published[handle] = new_handle
            self._retry_after.pop(handle, None)
            if last_change is not None:
                self._pushed_change[handle] = last_change
            if new_handle == handle:
                log.debug("pushed the changes of %s into it (in place)", handle)
            else:
                log.info("published %s as %s", handle, new_handle)
            return new_handle

    def _record_failure(self, handle: str, cause: str) -> None:
        draft = self.publisher.draft_store.get(handle)
        new_handle = None if draft is None else draft.new_version_id
        self._failures.append(PublishFailure(handle, new_handle, cause, self._clock()))
        self._retry_after[handle] = self._clock() + max(self.publish_delay, 30.0)
        log.error("publishing %s failed: %s", handle, cause)

    # -- background ------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume interrupted publishes, then publish drafts that stay quiet (until cancelled)."""
        for draft in list(self.publisher.draft_store.drafts()):
            interrupted = draft.new_version_id is not None or draft.version_request is not None
            if interrupted or self.publisher.in_place:
                await self._publish_quietly(draft.handle, "resuming an interrupted publish")
        if self.publish_delay <= 0:
            return
        while True:
            await trio.sleep(min(self._poll, self.publish_delay))
            for handle in self.due():
                await self._publish_quietly(handle, "quiet for the publish delay")

    def due(self) -> list[str]:
        """Drafts quiet (no open writer, no change) for the publish delay, not backing off,
        not held."""
        now = self._clock()
        found = []
        for draft in self.publisher.draft_store.drafts():
            if not draft.is_quiet() or draft.handle in self._in_progress:
                continue
            if draft.summary().last_change + self.publish_delay > now:
                continue
            if self._retry_after.get(draft.handle, 0.0) > now:
                continue
            if self._pushed_change.get(draft.handle) == draft.summary().last_change:
                continue  # pushed in place, nothing changed since (a pushed file is open)
            if self.held(draft.handle):
                continue
            found.append(draft.handle)
        return found

    async def _publish_quietly(self, handle: str, why: str) -> None:
        log.info("publishing %s: %s", handle, why)
        try:
            await self.commit(handle)
        except NothingToPublishError as exc:
            log.info("%s", exc)
        except PublishError:
            pass  # recorded (and logged) by commit; retried after a back-off

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Drafts, publishes in flight with their progress, recent failures (JSON-ready)."""
        drafts = []
        for draft in self.publisher.draft_store.drafts():
            summary = draft.summary()
            drafts.append(dataclasses.asdict(summary))
        return {
            "drafts": drafts,
            "publishing": [dataclasses.asdict(p) for p in self._in_progress.values()],
            "failures": [dataclasses.asdict(f) for f in self._failures],
            "published": dict(self._published),
            "publish_delay": self.publish_delay,
            "in_place": self.publisher.in_place,
        }

    def pending(self) -> list[str]:
        return [draft.handle for draft in self.publisher.draft_store.drafts()]
