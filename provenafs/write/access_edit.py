"""Access settings edits through ``<handle>.access.json``: one ``PUT …/auth/configuration``.

``AccessEditor.commit`` takes what a program wrote into the file (the filesystem commits it at
``flush`` through the same buffer and handle as a sidecar edit, so ``close()`` reports the
outcome) and sends it as the dataset's new access settings (docs/API.md §22). The file holds

    {"owner": "alice", "general": ["metadata-read"], "groups": {"reef-team": [...]},
     "by_role": {"admin": ["owner:alice"], ...}}

and accepts the same shape back: ``general`` (roles for every registry user) and ``groups``
(roles per group) are editable; ``owner`` must stay as it is (the registry never changes an
owner); ``by_role`` is the inverse view and may be left out, or hold what the current or the
new settings imply. Roles must be dataset roles (``DATASET_ROLES``). Outcomes, as for metadata
edits (``write.metadata_edit``):

- the same settings: success, no call;
- invalid UTF-8 or JSON, not an object, an unknown key, a role that is no dataset role, a
  changed owner or ``by_role``: ``EINVAL``, nothing sent;
- a caller without item role ``admin`` (the registry's 401): ``EACCES``; a refusal of the
  content (400): ``EINVAL``; data store unreachable: ``EIO``. Nothing changes on any failure.

On success ``on_changed(handle)`` lets the filesystem drop what it cached of the dataset.
Never logs the document; trio thread only.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from provenafs.api.errors import ApiError
from provenafs.api.registry import DATASET_ROLES, AccessSettings
from provenafs.errors import FsError, to_errno
from provenafs.write.metadata_edit import parse_document

__all__ = ["ACCESS_KEYS", "AccessApi", "AccessEditor", "access_document"]

log = logging.getLogger(__name__)

ACCESS_KEYS = frozenset({"owner", "general", "groups", "by_role"})


class AccessApi(Protocol):
    """The part of ``RegistryClient`` access edits use."""

    async def access_settings(self, handle: str) -> AccessSettings: ...

    async def put_access_settings(self, handle: str, settings: AccessSettings) -> None: ...


def access_document(settings: AccessSettings) -> dict[str, Any]:
    """What ``<handle>.access.json`` shows of *settings* (sorted, the inverse view included)."""
    return {
        "owner": settings.owner,
        "general": sorted(settings.general),
        "groups": {group: sorted(roles) for group, roles in sorted(settings.groups.items())},
        "by_role": settings.by_role(),
    }


def _roles(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise FsError(errno.EINVAL, f"{where} must be a list of role names")
    unknown = sorted(set(value) - set(DATASET_ROLES))
    if unknown:
        raise FsError(
            errno.EINVAL,
            f"{where}: {', '.join(unknown)} is no dataset role (roles: {', '.join(DATASET_ROLES)})",
        )
    return tuple(dict.fromkeys(value))


def _canonical(
    settings: AccessSettings,
) -> tuple[str, frozenset[str], Mapping[str, frozenset[str]]]:
    return (
        settings.owner,
        frozenset(settings.general),
        {group: frozenset(roles) for group, roles in settings.groups.items() if roles},
    )


def settings_from_document(document: Mapping[str, Any], current: AccessSettings) -> AccessSettings:
    """The settings a written document asks for; ``EINVAL`` for anything it may not say."""
    unknown = sorted(set(document) - ACCESS_KEYS)
    if unknown:
        raise FsError(errno.EINVAL, f"unknown fields: {', '.join(unknown)}")
    owner = document.get("owner", current.owner)
    if owner != current.owner:
        raise FsError(
            errno.EINVAL, f"owner: the owner of a dataset cannot change (it is {current.owner})"
        )
    general = _roles("general", document.get("general", list(current.general)))
    raw_groups = document.get("groups", {g: list(r) for g, r in current.groups.items()})
    if not isinstance(raw_groups, dict):
        raise FsError(errno.EINVAL, "groups must be an object of group ids to role lists")
    groups = {str(group): _roles(f"groups.{group}", roles) for group, roles in raw_groups.items()}
    settings = AccessSettings(owner=current.owner, general=general, groups=groups)
    if "by_role" in document and document["by_role"] not in (
        current.by_role(),
        settings.by_role(),
    ):
        raise FsError(
            errno.EINVAL,
            "by_role is derived from owner, general and groups: edit those (or leave it out)",
        )
    return settings


class AccessEditor:
    """Commits written ``<handle>.access.json`` files as access settings (module docstring)."""

    def __init__(
        self,
        api: AccessApi,
        *,
        on_changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._api = api
        self._on_changed = on_changed
        self.counts = {"commits": 0, "unchanged": 0, "rejected": 0}

    async def commit(self, handle: str, data: bytes, reason: str | None) -> None:
        """Send *data*, the new content of *handle*'s access file (*reason*: unused, the
        registry keeps no reason for access changes)."""
        try:
            document = parse_document(data)
            current = await self._api.access_settings(handle)
            settings = settings_from_document(document, current)
        except ApiError as exc:
            raise self._rejected(handle, FsError(to_errno(exc), str(exc))) from exc
        except FsError as exc:
            raise self._rejected(handle, exc) from None
        if _canonical(settings) == _canonical(current):
            self.counts["unchanged"] += 1
            return
        try:
            await self._api.put_access_settings(handle, settings)
        except ApiError as exc:
            failure = FsError(to_errno(exc), f"the registry refused the access settings: {exc}")
            raise self._rejected(handle, failure) from exc
        self.counts["commits"] += 1
        log.info("access settings of %s updated", handle)
        if self._on_changed is not None:
            await self._on_changed(handle)

    def _rejected(self, handle: str, failure: FsError) -> FsError:
        self.counts["rejected"] += 1
        level = logging.ERROR if failure.errno == errno.EIO else logging.WARNING
        log.log(level, "access settings edit of %s refused: %s", handle, failure)
        return failure
