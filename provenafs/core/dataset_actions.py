"""What ``provenafs release|review|lock|unlock|whoami|reviewers`` ask the mount's daemon to do.

Each action calls the registry or data store once (through ``RegistryServices``) and then
makes the mount forget what it held of the dataset (record, credentials, generated files, search
results, the review queue) and tells the kernel to drop its entries and attributes, so the
tree's permission bits and write refusals follow a release, a review or a lock at once.

- ``release``: asks a reviewer to review a dataset. The reviewer is a Person id on the
  reviewer list, or a username whose linked Person is on it, or the name or email of exactly
  one reviewer (``reviewers`` lists them with their names);
- ``review``: approves or rejects the dataset's pending release (its named reviewer only);
- ``lock``/``unlock`` with a reason; ``whoami``: username, realm roles, linked Person (and its
  name), whether the realm roles allow writes; ``forget``: drop what is cached of a dataset
  (after ``provenafs new`` filled it from outside the mount).

Answers are JSON-ready mappings for the control socket; failures rise as ``ActionError``
(a message for the user) or the API layer's exceptions. Trio thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from provenafs.api import errors as api_errors
from provenafs.core.catalog import Catalog
from provenafs.core.dataset_views import DatasetViews
from provenafs.core.discovery import Discovery
from provenafs.core.kernel_cache import KernelCache
from provenafs.core.namespace import split_handle
from provenafs.core.services import RegistryServices
from provenafs.core.status import StatusFile

__all__ = ["ActionError", "DatasetActions"]

log = logging.getLogger(__name__)

Action = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ActionError(ValueError):
    """An action cannot be done as asked; the message says why, for the user."""


def _text(message: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = message.get(key)
    if not isinstance(value, str) or (required and not value.strip()):
        raise ActionError(f"the request needs a non-empty {key!r}")
    return value.strip()


def _handle(message: Mapping[str, Any]) -> str:
    handle = _text(message, "handle")
    if split_handle(handle) is None:
        raise ActionError(f"{handle!r} is not a dataset handle")
    return handle


class DatasetActions:
    """The dataset actions of the control socket (module docstring)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        services: RegistryServices,
        discovery: Discovery,
        views: DatasetViews,
        kernel_cache: KernelCache,
        status: StatusFile,
        forget_credentials: Callable[[str], None],
    ) -> None:
        self._catalog = catalog
        self._forget_credentials = forget_credentials
        self._services = services
        self._discovery = discovery
        self._views = views
        self._kernel_cache = kernel_cache
        self._status = status

    def control_actions(self) -> dict[str, Action]:
        """The control socket's ops this module answers."""
        return {
            "whoami": self.whoami,
            "reviewers": self.reviewers,
            "release": self.release,
            "review": self.review,
            "lock": self.lock,
            "unlock": self.unlock,
            "forget": self.forget,
        }

    async def changed(self, handle: str) -> None:
        """*handle* changed outside the file tree (release, review, lock, access, upload)."""
        self._catalog.invalidate(handle)
        # Write credentials held from before a release or lock would still be taken by S3: the
        # data store decides again at the next change (docs/API.md §6).
        self._forget_credentials(handle)
        self._views.forget(handle)
        if self._discovery.search is not None:
            self._discovery.search.forget()
        self._discovery.forget_reviews()
        self._status.forget()
        self._kernel_cache.datasets_changed(handle)

    # --- identity ------------------------------------------------------------------------

    async def whoami(self, message: Mapping[str, Any]) -> dict[str, Any]:
        self._discovery.forget_identity()
        identity = await self._discovery.identity()
        assert identity is not None
        person_name = None
        if identity.person_id is not None:
            person_name = await self._name(identity.person_id)
        return {
            "username": identity.username,
            "email": identity.email,
            "realm_roles": list(identity.realm_roles),
            "person_id": identity.person_id,
            "person_name": person_name,
            "can_write": identity.can_write,
        }

    async def _name(self, item_id: str) -> str | None:
        try:
            return (await self._services.fetch_item(item_id)).display_name
        except (api_errors.NotFoundError, api_errors.PermissionDeniedError):
            return None

    # --- release and review --------------------------------------------------------------

    async def reviewers(self, message: Mapping[str, Any]) -> dict[str, Any]:
        return {"reviewers": await self._described(await self._services.reviewers())}

    async def _described(self, people: Sequence[str]) -> list[dict[str, Any]]:
        """Each Person's id, name and email (None where the caller may not fetch it)."""
        found = []
        for person in people:
            try:
                item = await self._services.fetch_item(person)
            except (api_errors.NotFoundError, api_errors.PermissionDeniedError):
                found.append({"id": person, "name": None, "email": None})
                continue
            found.append({"id": person, "name": item.display_name, "email": item.email})
        return found

    async def _reviewer(self, wanted: str) -> str:
        """The Person id *wanted* names (module docstring); ``ActionError`` if none or several.
        The list of reviewers is asked for once; their records only when a name must match."""
        listed = await self._services.reviewers()
        if wanted in listed:
            return wanted
        described: list[dict[str, Any]] | None = None
        if split_handle(wanted) is None:
            try:
                person = await self._services.linked_person(wanted)
            except api_errors.ApiError as exc:
                log.debug("no link lookup of %r: %s", wanted, exc)
                person = None
            if person is not None and person in listed:
                return person
            text = wanted.casefold()
            described = await self._described(listed)
            matches = [
                r["id"]
                for r in described
                if text in {str(r["name"] or "").casefold(), str(r["email"] or "").casefold()}
            ]
            if len(matches) == 1:
                return str(matches[0])
            if len(matches) > 1:
                raise ActionError(f"{wanted!r} names several reviewers: {', '.join(matches)}")
        if described is None:
            described = await self._described(listed)
        shown = ", ".join(f"{r['id']} ({r['name'] or '?'})" for r in described) or "none"
        raise ActionError(f"{wanted!r} is not a release reviewer (reviewers: {shown})")

    async def release(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = _handle(message)
        notes = _text(message, "notes")
        reviewer = await self._reviewer(_text(message, "to"))
        details = await self._services.request_release(handle, reviewer, notes)
        log.info("release of %s requested from %s", handle, reviewer)
        await self.changed(handle)
        return {"handle": handle, "reviewer": reviewer, "details": details}

    async def review(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = _handle(message)
        notes = _text(message, "notes")
        approve = message.get("approve")
        if not isinstance(approve, bool):
            raise ActionError("the request needs 'approve': true or false")
        details = await self._services.action_release(handle, approve=approve, notes=notes)
        log.info("release of %s %s", handle, "approved" if approve else "rejected")
        await self.changed(handle)
        record = await self._catalog.record(handle)
        return {"handle": handle, "release_status": record.release_status, "details": details}

    # --- locks and caches ----------------------------------------------------------------

    async def lock(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = _handle(message)
        await self._services.lock(handle, _text(message, "reason"))
        await self.changed(handle)
        return {"handle": handle, "locked": True}

    async def unlock(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = _handle(message)
        await self._services.unlock(handle, _text(message, "reason"))
        await self.changed(handle)
        return {"handle": handle, "locked": False}

    async def forget(self, message: Mapping[str, Any]) -> dict[str, Any]:
        handle = _handle(message)
        await self.changed(handle)
        return {"handle": handle}
