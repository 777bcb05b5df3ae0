"""Frozen value records the data store API answers with, as the mount sees them.

Parsing from JSON happens in ``provenafs.api`` only; other layers receive these types. They must
not carry behaviour beyond small derived properties, and never print a secret in ``repr``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = [
    "Credentials",
    "DatasetPage",
    "DatasetRecord",
    "Discovery",
    "RegistryItem",
    "S3Location",
    "VersionCreated",
    "VersioningInfo",
    "collection_part",
]


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Temporary S3 credentials scoped to one dataset's prefix (STS session)."""

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(repr=False)
    expiry: dt.datetime  # timezone-aware, as advertised by the data store


@dataclasses.dataclass(frozen=True)
class S3Location:
    bucket_name: str
    path: str  # "datasets/10378-1-1932274/" (trailing slash)
    s3_uri: str


@dataclasses.dataclass(frozen=True)
class VersioningInfo:
    previous_version: str | None
    version: int
    reason: str | None
    next_version: str | None


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    """One dataset version's registry record.

    From a fetch, ``roles`` and ``locked`` are the caller's item roles and the lock flag and
    ``document`` is the whole fetch result (``item``, ``roles``, ``locked``, without ``status``).
    From a list page they are ``None`` and ``document`` holds only ``item``.
    """

    handle: str
    display_name: str
    s3: S3Location
    release_status: str  # NOT_RELEASED / PENDING / RELEASED
    versioning: VersioningInfo | None
    owner_username: str
    created_timestamp: int
    updated_timestamp: int
    roles: frozenset[str] | None
    locked: bool | None
    document: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    @property
    def is_latest(self) -> bool:
        return self.versioning is None or self.versioning.next_version is None

    @property
    def collection_format(self) -> CollectionFormat:
        item = self.document.get("item")
        return CollectionFormat.from_json(
            item.get("collection_format") if isinstance(item, Mapping) else None
        )

    @property
    def keywords(self) -> tuple[str, ...]:
        """``dataset_info.keywords`` (text entries only)."""
        found = collection_part(self.document, "dataset_info").get("keywords")
        return tuple(k for k in found if isinstance(k, str)) if isinstance(found, list) else ()

    @property
    def user_metadata(self) -> Mapping[str, str]:
        """``dataset_info.user_metadata``: free key/value text pairs."""
        found = collection_part(self.document, "dataset_info").get("user_metadata")
        if not isinstance(found, Mapping):
            return {}
        return {str(k): v for k, v in found.items() if isinstance(v, str)}

    @property
    def release_approver(self) -> str | None:
        """The Person id asked to review (or who reviewed) the release, if any."""
        item = self.document.get("item")
        value = item.get("release_approver") if isinstance(item, Mapping) else None
        return value if isinstance(value, str) and value else None

    @property
    def release_timestamp(self) -> int | None:
        """When the release was last requested or reviewed (Unix seconds), if ever."""
        item = self.document.get("item")
        value = item.get("release_timestamp") if isinstance(item, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def collection_part(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``item.collection_format.<key>`` of a record's document (``dataset_info``,
    ``associations``, ...); empty where the document has none."""
    item = document.get("item")
    cf = item.get("collection_format") if isinstance(item, Mapping) else None
    found = cf.get(key) if isinstance(cf, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def without_nulls(value: Any) -> Any:
    """*value* with every null field of every mapping dropped (lists keep their items): the
    data store stores and compares metadata this way (``exclude_none``)."""
    if isinstance(value, Mapping):
        return {str(k): without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [without_nulls(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class CollectionFormat:
    """A dataset's ``collection_format`` (its editable metadata) as the data store keeps it:
    JSON without null fields, so two that the data store would store alike compare equal."""

    fields: Any = dataclasses.field(repr=False)  # a JSON object, or None when absent

    @classmethod
    def from_json(cls, value: Any) -> CollectionFormat:
        return cls(without_nulls(value))


@dataclasses.dataclass(frozen=True)
class DatasetPage:
    """One page of ``POST /registry/items/list``; ``pagination_key`` None means no more pages."""

    items: tuple[DatasetRecord, ...]
    pagination_key: Mapping[str, Any] | None = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Discovery:
    """What ``GET /.well-known/provenafs`` names (the local data store); None fields are unknown."""

    s3_endpoint_url: str | None
    region: str
    realm_url: str | None
    # the whole document (the other services' URLs are in it too); empty when there is none
    document: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class VersionCreated:
    new_version_id: str
    version_job_session_id: str


@dataclasses.dataclass(frozen=True)
class RegistryItem:
    """Any registry item the caller may fetch: its raw ``document`` (read-only), and the fields
    the mount shows of People and organisations where it is one."""

    id: str
    subtype: str
    display_name: str
    document: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    orcid: str | None = None
    name: str | None = None  # an organisation's name
    ror: str | None = None
