"""The local data store's registry: one SQLite file holding what Provena keeps in DynamoDB.

It stores dataset records as complete ``ItemDataset`` JSON (history newest first, reasons exactly
as docs/API.md §4.1), versioning chains (§5), locks and their history (§6), release status and
approvals (§3.10), access settings (§8.3), local users with realm roles, groups and the release
reviewer list. Handles come from a counter (``10378.1/<n>``). What access settings grant is
``access.py``'s to say, how a record changes ``records.py``'s: the registry only stores the results.

It must not talk to S3, check realm roles or know about HTTP: the façade in ``datastore.py`` does
that and maps the exceptions below to status codes. It must not import from the mount side.

Concurrency: one connection per ``Registry``, guarded by a lock (the server calls it from many
threads); WAL mode and ``BEGIN IMMEDIATE`` make read-modify-write steps atomic across processes,
so the ``provenafs serve`` admin subcommands can act on the same file while the server runs.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provenafs.server.access import (
    DEFAULT_GENERAL_ROLES,
    METADATA_VISIBLE_ROLES,
    AccessSettings,
    item_roles,
    ordered_roles,
)
from provenafs.server.models import (
    ITEM_ROLES,
    CollectionFormat,
    DatasetDomainInfo,
    HistoryEntry,
    ItemDataset,
    ReleaseHistoryEntry,
    ReleaseStatus,
    S3Location,
    SortOptions,
    SortType,
    VersioningInfo,
    WorkflowLinks,
)
from provenafs.server.private_files import create_private
from provenafs.server.records import with_collection_format, with_history

__all__ = [
    "DEFAULT_GENERAL_ROLES",
    "FIRST_HANDLE_NUMBER",
    "HANDLE_PREFIX",
    "AccessSettings",
    "DatasetPage",
    "InvalidPaginationKey",
    "InvalidRequest",
    "ItemIsSeed",
    "ItemNotDataset",
    "ItemPage",
    "LockEvent",
    "NotDesignatedReviewer",
    "NotLatestVersion",
    "Registry",
    "RegistryError",
    "UnknownItem",
    "UserAccount",
    "dataset_s3_location",
    "sanitize_handle",
]

HANDLE_PREFIX = "10378.1"
FIRST_HANDLE_NUMBER = 1932274

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    item_subtype TEXT NOT NULL,
    record_type TEXT NOT NULL,
    document TEXT NOT NULL,
    created_timestamp INTEGER NOT NULL,
    updated_timestamp INTEGER NOT NULL,
    display_name TEXT,
    release_timestamp INTEGER,
    access_info_uri TEXT
);
CREATE TABLE IF NOT EXISTS access (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, general TEXT NOT NULL, groups TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (id TEXT PRIMARY KEY, locked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lock_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, action_type TEXT NOT NULL,
    username TEXT NOT NULL, email TEXT, reason TEXT NOT NULL, timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY, email TEXT, roles TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (group_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL, username TEXT NOT NULL, PRIMARY KEY (group_id, username)
);
CREATE TABLE IF NOT EXISTS reviewers (reviewer_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS user_links (username TEXT PRIMARY KEY, person_id TEXT NOT NULL);
"""

# sort type -> (column, name of the attribute in the opaque pagination key)
_SORT_COLUMNS: dict[SortType, tuple[str, str]] = {
    SortType.UPDATED_TIME: ("updated_timestamp", "updated_timestamp"),
    SortType.CREATED_TIME: ("created_timestamp", "created_timestamp"),
    SortType.DISPLAY_NAME: ("display_name", "display_name"),
    SortType.RELEASE_TIMESTAMP: ("release_timestamp", "release_timestamp"),
    SortType.ACCESS_INFO_URI_BEGINS_WITH: ("access_info_uri", "access_info_uri"),
}


class RegistryError(Exception):
    """Base of registry refusals; ``str(exc)`` is the detail a client may see."""


class UnknownItem(RegistryError):
    """No item has this id."""


class ItemNotDataset(RegistryError):
    """The id names an item that is not a dataset (an organisation, a person...)."""


class ItemIsSeed(RegistryError):
    """The dataset is still an incomplete seed item."""


class NotLatestVersion(RegistryError):
    """Only the latest version of a chain may be versioned."""


class InvalidRequest(RegistryError):
    """The request names something that does not exist or is in the wrong state."""


class InvalidPaginationKey(RegistryError):
    """The pagination key was not one this registry handed out."""


class NotDesignatedReviewer(RegistryError):
    """Only the reviewer a release request names may act on it."""


@dataclasses.dataclass(frozen=True)
class UserAccount:
    username: str
    email: str | None
    realm_roles: tuple[str, ...]
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LockEvent:
    action_type: str  # LOCK / UNLOCK
    username: str
    email: str | None
    reason: str
    timestamp: int


@dataclasses.dataclass(frozen=True)
class DatasetPage:
    """One list page: what survived the record-type and access filters, and the opaque key."""

    items: tuple[ItemDataset, ...]
    not_authorised_count: int
    unparsable_items: tuple[dict[str, Any], ...]
    pagination_key: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class ItemPage:
    """One page of raw item documents of one subtype, and the opaque key of the next page."""

    documents: tuple[dict[str, Any], ...]
    pagination_key: dict[str, Any] | None


def sanitize_handle(handle: str) -> str:
    """``10378.1/1932274`` → ``10378-1-1932274`` (§10)."""
    return handle.replace(".", "-").replace("/", "-")


def dataset_s3_location(bucket: str, handle: str) -> S3Location:
    """Where a dataset's files live: ``datasets/<sanitized handle>/`` in the shared bucket."""
    path = f"datasets/{sanitize_handle(handle)}/"
    return S3Location(bucket_name=bucket, path=path, s3_uri=f"s3://{bucket}/{path}")


def _now() -> int:
    return int(time.time())


class Registry:
    """The SQLite registry at ``DATA_DIR/registry.sqlite``; see the module docstring."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # 0600 before SQLite opens it: its -wal, -shm and -journal files take the same mode
        create_private(path)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Registry:
        return cls(data_dir / "registry.sqlite")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----------------------------------------------------------------- transactions

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``): read-modify-write is atomic."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    # ----------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ----------------------------------------------------------------- users and groups

    def add_user(self, username: str, email: str | None, realm_roles: Sequence[str]) -> UserAccount:
        """Create or replace a local account."""
        if not username:
            raise InvalidRequest("A username must not be empty.")
        roles = list(dict.fromkeys(realm_roles))
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO users (username, email, roles) VALUES (?, ?, ?)",
                (username, email, json.dumps(roles)),
            )
        account = self.get_user(username)
        assert account is not None
        return account

    def get_user(self, username: str) -> UserAccount | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                return None
            groups = self._groups_of(db, username)
        return UserAccount(row["username"], row["email"], tuple(json.loads(row["roles"])), groups)

    def list_users(self) -> list[UserAccount]:
        with self._read() as db:
            names = [r["username"] for r in db.execute("SELECT username FROM users ORDER BY 1")]
        return [account for name in names if (account := self.get_user(name)) is not None]

    def lookup_user(self, username: str) -> tuple[str | None, list[str]] | None:
        """``(email, realm roles)`` of a local account, or None: the auth layer's ``UserLookup``."""
        account = self.get_user(username)
        return None if account is None else (account.email, list(account.realm_roles))

    def set_group(self, group_id: str, members: Sequence[str]) -> None:
        """Create a group or replace its members; every member must be a local user."""
        if not group_id:
            raise InvalidRequest("A group id must not be empty.")
        with self._write() as db:
            for member in members:
                if (
                    db.execute("SELECT 1 FROM users WHERE username = ?", (member,)).fetchone()
                    is None
                ):
                    raise InvalidRequest(f"Unknown user '{member}'.")
            db.execute("INSERT OR IGNORE INTO groups (group_id) VALUES (?)", (group_id,))
            db.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
            db.executemany(
                "INSERT INTO group_members (group_id, username) VALUES (?, ?)",
                [(group_id, m) for m in dict.fromkeys(members)],
            )

    def list_groups(self) -> dict[str, tuple[str, ...]]:
        with self._read() as db:
            groups: dict[str, list[str]] = {
                r["group_id"]: [] for r in db.execute("SELECT group_id FROM groups")
            }
            for row in db.execute("SELECT group_id, username FROM group_members ORDER BY 1, 2"):
                groups.setdefault(row["group_id"], []).append(row["username"])
        return {group: tuple(members) for group, members in sorted(groups.items())}

    @staticmethod
    def _groups_of(db: sqlite3.Connection, username: str) -> tuple[str, ...]:
        rows = db.execute(
            "SELECT group_id FROM group_members WHERE username = ? ORDER BY 1", (username,)
        )
        return tuple(r["group_id"] for r in rows)

    # ----------------------------------------------------------------- release reviewers

    def list_reviewers(self) -> list[str]:
        with self._read() as db:
            return [r["reviewer_id"] for r in db.execute("SELECT reviewer_id FROM reviewers")]

    def add_reviewer(self, reviewer_id: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO reviewers (reviewer_id) VALUES (?)", (reviewer_id,))

    def remove_reviewer(self, reviewer_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM reviewers WHERE reviewer_id = ?", (reviewer_id,))

    # ----------------------------------------------------------------- handles and raw items

    def allocate_handle(self) -> str:
        """Mint a new handle from the counter (never reused, survives restarts)."""
        with self._write() as db:
            return self._allocate_handle(db)

    @staticmethod
    def _allocate_handle(db: sqlite3.Connection) -> str:
        row = db.execute("SELECT value FROM meta WHERE key = 'next_handle'").fetchone()
        number = FIRST_HANDLE_NUMBER if row is None else int(row["value"])
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_handle', ?)", (str(number + 1),)
        )
        return f"{HANDLE_PREFIX}/{number}"

    def put_entity(self, item_id: str, subtype: str, display_name: str) -> None:
        """Store a non-dataset registry item (an organisation or person) if it is not there yet."""
        now = _now()
        document = {
            "display_name": display_name,
            "id": item_id,
            "item_category": "AGENT",
            "item_subtype": subtype,
            "record_type": "COMPLETE_ITEM",
            "created_timestamp": now,
            "updated_timestamp": now,
        }
        with self._write() as db:
            db.execute(
                "INSERT OR IGNORE INTO items (id, item_subtype, record_type, document,"
                " created_timestamp, updated_timestamp, display_name) VALUES (?,?,?,?,?,?,?)",
                (item_id, subtype, "COMPLETE_ITEM", json.dumps(document), now, now, display_name),
            )

    def create_seed_dataset(self, owner: str) -> str:
        """Mint a handle for an incomplete dataset (a seed item, as mint's first step does)."""
        now = _now()
        with self._write() as db:
            handle = self._allocate_handle(db)
            document = {
                "id": handle,
                "owner_username": owner,
                "created_timestamp": now,
                "updated_timestamp": now,
                "item_category": "ENTITY",
                "item_subtype": "DATASET",
                "record_type": "SEED_ITEM",
                "workflow_links": None,
                "versioning_info": None,
            }
            db.execute(
                "INSERT INTO items (id, item_subtype, record_type, document, created_timestamp,"
                " updated_timestamp) VALUES (?, 'DATASET', 'SEED_ITEM', ?, ?, ?)",
                (handle, json.dumps(document), now, now),
            )
            self._put_access(db, handle, AccessSettings(owner, DEFAULT_GENERAL_ROLES, {}))
            db.execute("INSERT OR REPLACE INTO locks (id, locked) VALUES (?, 0)", (handle,))
        return handle

    def complete_dataset(
        self,
        handle: str,
        collection_format: CollectionFormat,
        s3: S3Location,
        *,
        username: str,
        create_workflow_id: str,
    ) -> ItemDataset:
        """Turn a seed item into a complete dataset record (mint's step 5)."""
        now = _now()
        with self._write() as db:
            row = self._item_row(db, handle)
            if row["record_type"] != "SEED_ITEM":
                raise InvalidRequest(f"Item '{handle}' is already complete.")
            info = collection_format.dataset_info
            domain = DatasetDomainInfo(
                display_name=info.name,
                user_metadata=info.user_metadata,
                collection_format=collection_format,
                s3=s3,
                access_info_uri=info.access_info.uri,
            )
            item = ItemDataset(
                **dict(domain),
                history=[
                    HistoryEntry(
                        id=0,
                        timestamp=now,
                        reason="Initial record creation",
                        username=username,
                        item=domain,
                    )
                ],
                id=handle,
                owner_username=json.loads(row["document"])["owner_username"],
                created_timestamp=now,
                updated_timestamp=now,
                workflow_links=WorkflowLinks(create_activity_workflow_id=create_workflow_id),
                versioning_info=VersioningInfo(version=1),
            )
            self._put_item(db, item)
        return item

    # ----------------------------------------------------------------- reading datasets

    def fetch_dataset(self, handle: str) -> ItemDataset:
        """The complete dataset record; raises UnknownItem / ItemNotDataset / ItemIsSeed."""
        with self._read() as db:
            row = self._item_row(db, handle)
        return self._dataset_from_row(row)

    def _dataset_from_row(self, row: sqlite3.Row) -> ItemDataset:
        if row["item_subtype"] != "DATASET":
            raise ItemNotDataset(
                f"The item with id '{row['id']}' is not a dataset (it is a {row['item_subtype']})."
            )
        if row["record_type"] == "SEED_ITEM":
            raise ItemIsSeed(
                f"The requested dataset is an incomplete item (seed item) and cannot be used:"
                f" '{row['id']}'."
            )
        return ItemDataset.model_validate_json(row["document"])

    @staticmethod
    def _item_row(db: sqlite3.Connection, handle: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM items WHERE id = ?", (handle,)
        ).fetchone()
        if row is None:
            raise UnknownItem(f"No item with id '{handle}' exists in the registry.")
        return row

    def item_exists(self, handle: str) -> bool:
        with self._read() as db:
            return db.execute("SELECT 1 FROM items WHERE id = ?", (handle,)).fetchone() is not None

    def dataset_ids(self) -> list[str]:
        with self._read() as db:
            rows = db.execute("SELECT id FROM items WHERE item_subtype = 'DATASET' ORDER BY id")
            return [r["id"] for r in rows]

    # ----------------------------------------------------------------- writing datasets

    def _put_item(self, db: sqlite3.Connection, item: ItemDataset) -> None:
        db.execute(
            "INSERT OR REPLACE INTO items (id, item_subtype, record_type, document,"
            " created_timestamp, updated_timestamp, display_name, release_timestamp,"
            " access_info_uri) VALUES (?, 'DATASET', 'COMPLETE_ITEM', ?, ?, ?, ?, ?, ?)",
            (
                item.id,
                item.model_dump_json(),
                item.created_timestamp,
                item.updated_timestamp,
                item.display_name,
                item.release_timestamp,
                item.access_info_uri,
            ),
        )

    def _modify(self, db: sqlite3.Connection, handle: str) -> ItemDataset:
        return self._dataset_from_row(self._item_row(db, handle))

    def update_metadata(
        self, handle: str, collection_format: CollectionFormat, *, reason: str, username: str
    ) -> ItemDataset:
        """Replace the metadata and prepend a history entry with *reason* (§3.6)."""
        now = _now()
        with self._write() as db:
            item = with_collection_format(self._modify(db, handle), collection_format, now)
            item = with_history(item, reason, username, now)
            self._put_item(db, item)
        return item

    def revert_metadata(
        self, handle: str, history_id: int, *, reason: str, username: str
    ) -> ItemDataset:
        """Restore the metadata of history entry *history_id*, keeping the current ``s3`` (§3.7)."""
        now = _now()
        with self._write() as db:
            item = self._modify(db, handle)
            entry = next((e for e in item.history if e.id == history_id), None)
            if entry is None:
                raise InvalidRequest(
                    f"Could not find history entry with id {history_id} in item '{handle}'."
                )
            item = with_collection_format(item, entry.item.collection_format, now)
            item = with_history(
                item,
                f"Reverting dataset to history id {history_id}. Reason: {reason}.",
                username,
                now,
            )
            self._put_item(db, item)
        return item

    def create_version(
        self,
        handle: str,
        *,
        reason: str,
        username: str,
        bucket: str,
        job_session_id: str,
    ) -> ItemDataset:
        """Make the next version of *handle* (§5 steps 1 and 2) and return the new record.

        Only the registry changes here; the caller writes ``metadata.json`` at the new prefix.
        """
        now = _now()
        with self._write() as db:
            old = self._modify(db, handle)
            old_versioning = old.versioning_info or VersioningInfo(version=1)
            if old_versioning.next_version is not None:
                raise NotLatestVersion(
                    f"Cannot create a new version for an item ({handle}) which is not the latest"
                    f" version. Next version {old_versioning.next_version} already exists!"
                )
            new_id = self._allocate_handle(db)
            copied = old.model_copy(
                update={
                    "id": new_id,
                    "created_timestamp": now,
                    "updated_timestamp": now,
                    "owner_username": username,
                    "workflow_links": WorkflowLinks(version_activity_workflow_id=job_session_id),
                    "versioning_info": VersioningInfo(
                        previous_version=handle,
                        version=old_versioning.version + 1,
                        reason=reason,
                        next_version=None,
                    ),
                    "history": [
                        HistoryEntry(
                            id=0,
                            timestamp=now,
                            reason=f"New version of existing item (id={handle}).",
                            username=username,
                            item=old.domain_info(),
                        )
                    ],
                }
            )
            relocated = copied.model_copy(
                update={
                    "s3": dataset_s3_location(bucket, new_id),
                    "release_status": ReleaseStatus.NOT_RELEASED,
                    "release_history": [],
                    "release_approver": None,
                    "release_timestamp": None,
                    "user_metadata": None,
                }
            )
            new_item = with_history(
                relocated,
                "(System) Dataset S3 path updated to new version's storage location",
                username,
                now,
            )
            self._put_item(db, new_item)
            # the old item gets its successor written directly: no history, no timestamp bump
            old_linked = old.model_copy(
                update={
                    "versioning_info": old_versioning.model_copy(update={"next_version": new_id})
                }
            )
            self._put_item(db, old_linked)
            access = self._access(db, handle)
            self._put_access(db, new_id, dataclasses.replace(access, owner=username))
            db.execute("INSERT OR REPLACE INTO locks (id, locked) VALUES (?, 0)", (new_id,))
        return new_item

    # ----------------------------------------------------------------- locks

    def is_locked(self, handle: str) -> bool:
        with self._read() as db:
            row = db.execute("SELECT locked FROM locks WHERE id = ?", (handle,)).fetchone()
        return bool(row["locked"]) if row is not None else False

    def set_locked(
        self, handle: str, locked: bool, *, username: str, email: str | None, reason: str
    ) -> None:
        """Lock or unlock a dataset and record the event (REG ``/locks/lock|unlock``)."""
        with self._write() as db:
            self._modify(db, handle)
            db.execute("INSERT OR REPLACE INTO locks (id, locked) VALUES (?, ?)", (handle, locked))
            db.execute(
                "INSERT INTO lock_events (id, action_type, username, email, reason, timestamp)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (handle, "LOCK" if locked else "UNLOCK", username, email, reason, _now()),
            )

    def lock_history(self, handle: str) -> list[LockEvent]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM lock_events WHERE id = ? ORDER BY seq", (handle,))
            return [
                LockEvent(r["action_type"], r["username"], r["email"], r["reason"], r["timestamp"])
                for r in rows
            ]

    # ----------------------------------------------------------------- access and item roles

    def get_access(self, handle: str) -> AccessSettings:
        with self._read() as db:
            self._item_row(db, handle)
            return self._access(db, handle)

    @staticmethod
    def _access(db: sqlite3.Connection, handle: str) -> AccessSettings:
        row = db.execute("SELECT * FROM access WHERE id = ?", (handle,)).fetchone()
        if row is None:
            raise UnknownItem(f"No access settings for item '{handle}'.")
        groups = {g: tuple(r) for g, r in json.loads(row["groups"]).items()}
        return AccessSettings(row["owner"], tuple(json.loads(row["general"])), groups)

    @staticmethod
    def _put_access(db: sqlite3.Connection, handle: str, access: AccessSettings) -> None:
        db.execute(
            "INSERT OR REPLACE INTO access (id, owner, general, groups) VALUES (?, ?, ?, ?)",
            (
                handle,
                access.owner,
                json.dumps(list(access.general)),
                json.dumps({g: list(r) for g, r in access.groups.items()}),
            ),
        )

    def set_access(
        self,
        handle: str,
        *,
        owner: str | None = None,
        general: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> AccessSettings:
        """Change a dataset's access settings; None leaves a part as it is.

        A new owner also becomes the record's ``owner_username``.
        """
        for role in [*(general or ()), *(r for rs in (groups or {}).values() for r in rs)]:
            if role not in ITEM_ROLES:
                raise InvalidRequest(f"Unknown item role '{role}'. Known: {', '.join(ITEM_ROLES)}.")
        with self._write() as db:
            item = self._modify(db, handle)
            current = self._access(db, handle)
            if owner is not None and owner != current.owner:
                if (
                    db.execute("SELECT 1 FROM users WHERE username = ?", (owner,)).fetchone()
                    is None
                ):
                    raise InvalidRequest(f"Unknown user '{owner}'.")
                self._put_item(db, item.model_copy(update={"owner_username": owner}))
            for group in groups or {}:
                if (
                    db.execute("SELECT 1 FROM groups WHERE group_id = ?", (group,)).fetchone()
                    is None
                ):
                    raise InvalidRequest(f"Unknown group '{group}'.")
            updated = AccessSettings(
                owner=owner if owner is not None else current.owner,
                general=ordered_roles(general) if general is not None else current.general,
                groups=(
                    {g: ordered_roles(r) for g, r in groups.items()}
                    if groups is not None
                    else current.groups
                ),
            )
            self._put_access(db, handle, updated)
        return updated

    def item_roles(self, handle: str, username: str, realm_roles: Sequence[str]) -> tuple[str, ...]:
        """The caller's item roles on *handle*, exactly as §8.3 computes them (no expansion)."""
        with self._read() as db:
            access = self._access(db, handle)
            groups = self._groups_of(db, username)
        return item_roles(access, username, realm_roles, groups)

    # ----------------------------------------------------------------- release

    def request_release(
        self, handle: str, *, approver_id: str, requester: str, notes: str
    ) -> ItemDataset:
        """NOT_RELEASED → PENDING, naming the reviewer; adds no metadata history (§3.10)."""
        now = _now()
        with self._write() as db:
            item = self._modify(db, handle)
            if item.release_status != ReleaseStatus.NOT_RELEASED:
                raise InvalidRequest(
                    f"Dataset '{handle}' is in release state {item.release_status.value}; a"
                    " release can only be requested for a NOT_RELEASED dataset."
                )
            reviewers = {r["reviewer_id"] for r in db.execute("SELECT reviewer_id FROM reviewers")}
            if approver_id not in reviewers:
                raise InvalidRequest(f"The approver '{approver_id}' is not a system reviewer.")
            entry = ReleaseHistoryEntry(
                action="REQUEST",
                timestamp=now,
                approver=approver_id,
                requester=requester,
                notes=notes,
            )
            item = item.model_copy(
                update={
                    "release_status": ReleaseStatus.PENDING,
                    "release_approver": approver_id,
                    "release_timestamp": now,
                    "release_history": [*item.release_history, entry],
                    "updated_timestamp": now,
                }
            )
            self._put_item(db, item)
        return item

    def action_release(
        self, handle: str, *, approve: bool, reviewer: str, notes: str
    ) -> ItemDataset:
        """PENDING → RELEASED (approve) or NOT_RELEASED (reject), by the designated reviewer."""
        now = _now()
        with self._write() as db:
            item = self._modify(db, handle)
            if item.release_status != ReleaseStatus.PENDING:
                raise InvalidRequest(
                    f"Dataset '{handle}' is not pending review (state {item.release_status.value})."
                )
            if item.release_approver != reviewer:
                raise NotDesignatedReviewer(
                    "You are not the designated reviewer of this dataset's release request."
                )
            entry = ReleaseHistoryEntry(
                action="APPROVE" if approve else "REJECT",
                timestamp=now,
                approver=reviewer,
                requester=None,
                notes=notes,
            )
            item = item.model_copy(
                update={
                    "release_status": (
                        ReleaseStatus.RELEASED if approve else ReleaseStatus.NOT_RELEASED
                    ),
                    "release_timestamp": now,
                    "release_history": [*item.release_history, entry],
                    "updated_timestamp": now,
                }
            )
            self._put_item(db, item)
        return item

    # ----------------------------------------------------------------- listing

    def list_datasets(
        self,
        *,
        sort: SortOptions | None,
        pagination_key: Mapping[str, Any] | None,
        page_size: int,
        username: str,
        realm_roles: Sequence[str],
    ) -> DatasetPage:
        """One page of datasets as REG lists them (§3.2).

        ``page_size`` is the DynamoDB ``Limit``: applied before the record-type filter (seed
        items are dropped) and before access filtering, so pages may be short or empty while
        still carrying a pagination key.
        """
        sort_type = (sort.sort_type if sort else None) or SortType.UPDATED_TIME
        ascending = sort.ascending if sort else False
        column, key_name = _SORT_COLUMNS[sort_type]
        where = ["item_subtype = 'DATASET'"]
        params: list[Any] = []
        if sort_type == SortType.RELEASE_TIMESTAMP:
            where.append("release_timestamp IS NOT NULL")
        if sort_type == SortType.ACCESS_INFO_URI_BEGINS_WITH:
            prefix = sort.begins_with if sort and sort.begins_with else ""
            where.append("access_info_uri IS NOT NULL AND substr(access_info_uri, 1, ?) = ?")
            params += [len(prefix), prefix]
        if pagination_key is not None:
            last_id, last_value = pagination_key.get("id"), pagination_key.get(key_name)
            if not isinstance(last_id, str) or not isinstance(last_value, int | str):
                raise InvalidPaginationKey("The pagination key does not match the sort order.")
            where.append(f"({column}, id) {'>' if ascending else '<'} (?, ?)")
            params += [last_value, last_id]
        direction = "ASC" if ascending else "DESC"
        query = (
            f"SELECT * FROM items WHERE {' AND '.join(where)}"  # noqa: S608 (fixed column names)
            f" ORDER BY {column} {direction}, id {direction} LIMIT ?"
        )
        with self._read() as db:
            rows = db.execute(query, [*params, page_size]).fetchall()
            groups = self._groups_of(db, username)
            accesses = {row["id"]: self._access(db, row["id"]) for row in rows}
        items: list[ItemDataset] = []
        unparsable: list[dict[str, Any]] = []
        not_authorised = 0
        for row in rows:
            if row["record_type"] != "COMPLETE_ITEM":
                continue
            try:
                item = ItemDataset.model_validate_json(row["document"])
            except ValueError:
                unparsable.append(json.loads(row["document"]))
                continue
            roles = item_roles(accesses[row["id"]], username, realm_roles, groups)
            if METADATA_VISIBLE_ROLES.isdisjoint(roles):
                not_authorised += 1
                continue
            items.append(item)
        next_key: dict[str, Any] | None = None
        if len(rows) == page_size:
            last = rows[-1]
            next_key = {"id": last["id"], "item_subtype": "DATASET", key_name: last[column]}
        return DatasetPage(tuple(items), not_authorised, tuple(unparsable), next_key)

    # ----------------------------------------------------------------- other items, links

    # The entity, prov, job and search modules keep their own tables in this file and compose
    # several steps (a new handle, an item, a graph, a job's status) into one transaction.

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) on the registry's one connection."""
        with self._write() as db:
            yield db

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The registry's connection for reads, under its lock."""
        with self._read() as db:
            yield db

    def mint_handle(self, db: sqlite3.Connection) -> str:
        """A new handle inside the caller's transaction (the counter every item uses)."""
        return self._allocate_handle(db)

    @staticmethod
    def item_document(db: sqlite3.Connection, item_id: str) -> dict[str, Any] | None:
        """The stored record of any item (seed or complete, any subtype), or None."""
        row = db.execute("SELECT document FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            return None
        document: dict[str, Any] = json.loads(row["document"])
        return document

    def write_item(
        self,
        db: sqlite3.Connection,
        document: Mapping[str, Any],
        *,
        access: AccessSettings | None = None,
    ) -> None:
        """Insert or replace a non-dataset item; *access* (a new item) also seeds its access
        settings and an unlocked lock, as the registry's create does."""
        db.execute(
            "INSERT OR REPLACE INTO items (id, item_subtype, record_type, document,"
            " created_timestamp, updated_timestamp, display_name) VALUES (?,?,?,?,?,?,?)",
            (
                document["id"],
                document["item_subtype"],
                document["record_type"],
                json.dumps(document),
                document["created_timestamp"],
                document["updated_timestamp"],
                document.get("display_name"),
            ),
        )
        if access is not None:
            self._put_access(db, str(document["id"]), access)
            db.execute("INSERT OR REPLACE INTO locks (id, locked) VALUES (?, 0)", (document["id"],))

    def item_page(
        self,
        subtype: str,
        *,
        sort: SortOptions | None,
        pagination_key: Mapping[str, Any] | None,
        page_size: int,
        record_types: Sequence[str],
    ) -> ItemPage:
        """One page of *subtype* items as the registry's subtype list reads it (no access
        filtering: the caller evaluates roles); same sort keys and opaque key as datasets."""
        sort_type = (sort.sort_type if sort else None) or SortType.UPDATED_TIME
        ascending = sort.ascending if sort else False
        column, key_name = _SORT_COLUMNS[sort_type]
        marks = ",".join("?" for _ in record_types)
        where = ["item_subtype = ?", f"record_type IN ({marks})"]
        params: list[Any] = [subtype, *record_types]
        if pagination_key is not None:
            last_id, last_value = pagination_key.get("id"), pagination_key.get(key_name)
            if not isinstance(last_id, str) or not isinstance(last_value, int | str):
                raise InvalidPaginationKey("The pagination key does not match the sort order.")
            where.append(f"({column}, id) {'>' if ascending else '<'} (?, ?)")
            params += [last_value, last_id]
        direction = "ASC" if ascending else "DESC"
        query = (
            f"SELECT * FROM items WHERE {' AND '.join(where)}"  # noqa: S608 (fixed column names)
            f" ORDER BY {column} {direction}, id {direction} LIMIT ?"
        )
        with self._read() as db:
            rows = db.execute(query, [*params, page_size]).fetchall()
        next_key: dict[str, Any] | None = None
        if len(rows) == page_size:
            last = rows[-1]
            next_key = {"id": last["id"], "item_subtype": subtype, key_name: last[column]}
        return ItemPage(tuple(json.loads(row["document"]) for row in rows), next_key)

    def linked_person(self, username: str) -> str | None:
        """The Person a username is linked to (the auth API's link service), or None."""
        with self._read() as db:
            row = db.execute(
                "SELECT person_id FROM user_links WHERE username = ?", (username,)
            ).fetchone()
        return None if row is None else str(row["person_id"])

    def link_person(self, db: sqlite3.Connection, username: str, person_id: str) -> None:
        """Record the link inside the caller's transaction (checks are the caller's)."""
        db.execute(
            "INSERT OR REPLACE INTO user_links (username, person_id) VALUES (?, ?)",
            (username, person_id),
        )

    def datasets_reviewed_by(
        self,
        reviewer: str,
        *,
        release_status: str | None,
        ascending: bool,
        pagination_key: Mapping[str, Any] | None,
        page_size: int,
    ) -> ItemPage:
        """Complete datasets whose ``release_approver`` is *reviewer*, newest release first
        (the registry's approver index), optionally of one release status."""
        where = [
            "item_subtype = 'DATASET'",
            "record_type = 'COMPLETE_ITEM'",
            "json_extract(document, '$.release_approver') = ?",
        ]
        params: list[Any] = [reviewer]
        if release_status is not None:
            where.append("json_extract(document, '$.release_status') = ?")
            params.append(release_status)
        if pagination_key is not None:
            last_id, last_value = pagination_key.get("id"), pagination_key.get("release_timestamp")
            if not isinstance(last_id, str) or not isinstance(last_value, int):
                raise InvalidPaginationKey("The pagination key does not match the sort order.")
            where.append(f"(release_timestamp, id) {'>' if ascending else '<'} (?, ?)")
            params += [last_value, last_id]
        direction = "ASC" if ascending else "DESC"
        query = (
            f"SELECT * FROM items WHERE {' AND '.join(where)}"  # noqa: S608 (fixed column names)
            f" ORDER BY release_timestamp {direction}, id {direction} LIMIT ?"
        )
        with self._read() as db:
            rows = db.execute(query, [*params, page_size]).fetchall()
        next_key: dict[str, Any] | None = None
        if len(rows) == page_size:
            last = rows[-1]
            next_key = {
                "id": last["id"],
                "release_approver": reviewer,
                "release_timestamp": last["release_timestamp"],
            }
        return ItemPage(tuple(json.loads(row["document"]) for row in rows), next_key)
