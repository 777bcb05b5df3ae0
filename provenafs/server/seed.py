"""``provenafs serve --seed``: realistic sample users, datasets and files, loaded idempotently.

Everything goes through the same ``DataStore`` façade the HTTP routes use (mint, update, version,
release), so seeded records look exactly like records made by a client. Each dataset is recorded
in the registry's meta table once its files are uploaded, so seeding twice adds nothing and an
interrupted seeding resumes into the same handles. Writes ``DATA_DIR/seed-manifest.json``.

File contents are deterministic (a seeded PRNG), so the manifest's sizes and hashes are stable.
This module must not import from the mount side, and must not run at import time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from provenafs.server.access import REALM_ADMIN, REALM_READ, REALM_WRITE
from provenafs.server.datastore import DataStore
from provenafs.server.entities import EntityRegistry
from provenafs.server.jobs import JobStore
from provenafs.server.models import (
    ActionApprovalRequest,
    CollectionFormat,
    ReleaseApprovalRequest,
    VersionRequest,
)
from provenafs.server.private_files import write_private
from provenafs.server.seed_entities import seed_entities

__all__ = [
    "ADMIN_ROLES",
    "ORGANISATION_ID",
    "PERSON_ID",
    "USER_ROLES",
    "SeedCaller",
    "sample_collection_format",
    "seed_store",
]

log = logging.getLogger(__name__)

ORGANISATION_ID = "10378.1/1925605"
PERSON_ID = "10378.1/1925606"
LICENSE = "https://creativecommons.org/licenses/by/4.0/"
USER_ROLES: tuple[str, ...] = (REALM_READ, REALM_WRITE)
ADMIN_ROLES: tuple[str, ...] = (
    REALM_READ,
    REALM_WRITE,
    REALM_ADMIN,
    "sys-admin-read",
    "sys-admin-write",
    "sys-admin-admin",
)
SEED_USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("alice@example.org", USER_ROLES),
    "bob": ("bob@example.org", USER_ROLES),
    "carol": ("carol@example.org", USER_ROLES),
    "admin": ("admin@example.org", ADMIN_ROLES),
}
SEED_GROUPS: dict[str, tuple[str, ...]] = {"reef-team": ("alice", "carol")}
BIG_BINARY_BYTES = 64 << 20
MANY_FILES_COUNT = 1100
ALL_WRITE_ROLES = ("metadata-read", "metadata-write", "dataset-data-read", "dataset-data-write")


@dataclasses.dataclass(frozen=True)
class SeedCaller:
    """A local user acting through the façade (the ``Caller`` protocol), with no token."""

    username: str
    email: str | None
    roles: tuple[str, ...]
    token: str = dataclasses.field(default="", repr=False)


def sample_collection_format(
    name: str,
    *,
    description: str | None = None,
    keywords: tuple[str, ...] = ("sample",),
    user_metadata: Mapping[str, str] | None = None,
    access_uri: str | None = None,
) -> CollectionFormat:
    """A valid ``CollectionFormat`` for *name* (reposited unless *access_uri* is given)."""
    access: dict[str, Any] = {"reposited": True, "uri": None, "description": None}
    if access_uri is not None:
        access = {"reposited": False, "uri": access_uri, "description": "Hosted externally."}
    no = {"relevant": False, "obtained": False}
    return CollectionFormat.model_validate(
        {
            "associations": {
                "organisation_id": ORGANISATION_ID,
                "data_custodian_id": PERSON_ID,
                "point_of_contact": "data-team@example.org",
            },
            "approvals": {
                "ethics_registration": no,
                "ethics_access": no,
                "indigenous_knowledge": no,
                "export_controls": no,
            },
            "dataset_info": {
                "name": name,
                "description": description or f"Sample dataset '{name}' for provenafs.",
                "access_info": access,
                "publisher_id": ORGANISATION_ID,
                "created_date": {"relevant": True, "value": "2024-08-09"},
                "published_date": {"relevant": True, "value": "2024-09-01"},
                "license": LICENSE,
                "temporal_info": {
                    "duration": {"begin_date": "2023-01-01", "end_date": "2023-12-31"},
                    "resolution": "PT1H",
                },
                "formats": ["csv", "json"],
                "keywords": list(keywords),
                "user_metadata": dict(user_metadata) if user_metadata else None,
            },
        }
    )


# --------------------------------------------------------------------------- file contents


def _csv(rows: int, seed: int) -> bytes:
    rng = random.Random(seed)  # noqa: S311 (sample data)
    lines = ["timestamp,logger,temperature_c"]
    lines += [
        f"2023-01-01T{h % 24:02d}:00:00Z,L{h % 12:02d},{20 + rng.random() * 8:.3f}"
        for h in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def _reef_files() -> dict[str, bytes]:
    return {
        "README.md": b"# Reef logger temperatures\n\nHourly readings from 12 loggers.\n",
        "raw/loggers-2023.csv": _csv(2000, 1),
        "raw/2023/01/day-01.csv": _csv(24, 2),
        "raw/2023/01/day-02.csv": _csv(24, 3),
        "processed/summary.json": json.dumps(
            {"loggers": 12, "mean_c": 24.1, "units": "degC"}, indent=2
        ).encode(),
        "données été/mesures à Cairns.csv": _csv(10, 4),
        "notes with spaces.txt": "Names with spaces and ünïcödé work.\n".encode(),
        "empty.dat": b"",
    }


def _big_binary() -> dict[str, bytes]:
    blob = random.Random(1932274).randbytes(BIG_BINARY_BYTES)  # noqa: S311 (sample data)
    return {"blob.bin": blob, "README.txt": b"64 MiB of deterministic pseudo-random bytes.\n"}


def _version_files(version: int) -> Callable[[], dict[str, bytes]]:
    def files() -> dict[str, bytes]:
        found = {"readings.csv": _csv(100 * version, 10 + version)}
        if version >= 2:
            found["docs/notes.md"] = f"Notes for version {version}.\n".encode()
        if version >= 3:
            found["extra/new.txt"] = b"Added in version 3.\n"
        return found

    return files


def _many_files() -> dict[str, bytes]:
    return {f"files/{n:04d}.txt": f"file {n}\n".encode() for n in range(MANY_FILES_COUNT)}


def _small(label: str) -> Callable[[], dict[str, bytes]]:
    return lambda: {"data.csv": _csv(50, len(label)), "about.txt": f"{label}\n".encode()}


@dataclasses.dataclass(frozen=True)
class _SeedDataset:
    name: str
    owner: str
    display_name: str
    files: Callable[[], dict[str, bytes]]
    dirs: tuple[str, ...] = ()
    general: tuple[str, ...] | None = None
    groups: Mapping[str, tuple[str, ...]] | None = None
    locked: bool = False
    released: bool = False
    metadata_updates: tuple[str, ...] = ()
    previous: str | None = None  # seed name of the version this one follows
    access_uri: str | None = None


def _plan() -> list[_SeedDataset]:
    return [
        _SeedDataset(
            "reef-temperatures",
            "alice",
            "Reef logger temperatures 2023",
            _reef_files,
            dirs=("raw/empty/",),
        ),
        _SeedDataset("big-binary", "bob", "Large binary sample", _big_binary),
        _SeedDataset("versioned-v1", "alice", "Versioned survey", _version_files(1)),
        _SeedDataset(
            "versioned-v2", "alice", "Versioned survey", _version_files(2), previous="versioned-v1"
        ),
        _SeedDataset(
            "versioned-v3", "alice", "Versioned survey", _version_files(3), previous="versioned-v2"
        ),
        _SeedDataset("locked", "alice", "Locked dataset", _small("locked"), locked=True),
        _SeedDataset("released", "bob", "Released dataset", _small("released"), released=True),
        _SeedDataset("private-bob", "bob", "Bob's private dataset", _small("private"), general=()),
        _SeedDataset(
            "history",
            "carol",
            "CTD casts with history",
            _small("history"),
            metadata_updates=("Fix description typo", "Add keywords"),
            access_uri="https://data.example.org/ctd-casts",
        ),
        _SeedDataset("many-files", "bob", "Many small files", _many_files),
        _SeedDataset(
            "metadata-only",
            "bob",
            "Metadata visible, data private",
            _small("metadata-only"),
            general=("metadata-read",),
        ),
        _SeedDataset(
            "group-shared",
            "carol",
            "Reef team shared dataset",
            _small("group"),
            general=(),
            groups={"reef-team": ALL_WRITE_ROLES},
        ),
    ]


# --------------------------------------------------------------------------- seeding


def _caller(datastore: DataStore, username: str) -> SeedCaller:
    account = datastore.registry.get_user(username)
    assert account is not None, username
    return SeedCaller(account.username, account.email, account.realm_roles)


def _seed_accounts(datastore: DataStore) -> None:
    registry = datastore.registry
    for username, (email, roles) in SEED_USERS.items():
        if registry.get_user(username) is None:
            registry.add_user(username, email, roles)
    existing = registry.list_groups()
    for group, members in SEED_GROUPS.items():
        if group not in existing:
            registry.set_group(group, members)
    registry.put_entity(ORGANISATION_ID, "ORGANISATION", "Example Research Organisation")
    registry.put_entity(PERSON_ID, "PERSON", "Example Data Custodian")
    if registry.get_meta("seed:incomplete-item") is None:
        handle = registry.create_seed_dataset("admin")
        registry.set_meta("seed:incomplete-item", handle)


def _upload(
    datastore: DataStore, pool: ThreadPoolExecutor, prefix: str, files: Mapping[str, bytes]
) -> None:
    def put(item: tuple[str, bytes]) -> None:
        datastore.objects.put_object(prefix + item[0], item[1])

    for _ in pool.map(put, files.items()):
        pass


def _seed_dataset(
    datastore: DataStore, plan: _SeedDataset, handles: Mapping[str, str], pool: ThreadPoolExecutor
) -> dict[str, Any]:
    registry = datastore.registry
    owner = _caller(datastore, plan.owner)
    started = registry.get_meta(f"seed-started:{plan.name}")
    if started is not None:
        handle = started
    elif plan.previous is None:
        collection_format = sample_collection_format(
            plan.display_name,
            keywords=("sample", plan.name),
            user_metadata={"seed": plan.name},
            access_uri=plan.access_uri,
        )
        minted = datastore.mint(owner, collection_format)
        assert minted.handle is not None, minted.status.details
        handle = minted.handle
    else:
        request = VersionRequest(id=handles[plan.previous], reason=f"Seeded {plan.name}")
        handle = datastore.version(owner, request).new_version_id
    registry.set_meta(f"seed-started:{plan.name}", handle)
    item = registry.fetch_dataset(handle)
    files = plan.files()
    _upload(datastore, pool, item.s3.path, {**files, **dict.fromkeys(plan.dirs, b"")})
    for reason in plan.metadata_updates:
        changed = item.collection_format.model_copy(deep=True)
        changed.dataset_info.description = f"{changed.dataset_info.description} ({reason})"
        datastore.update_metadata(owner, handle, reason, changed)
    if plan.general is not None or plan.groups is not None:
        registry.set_access(handle, general=plan.general, groups=plan.groups)
    if plan.released:
        admin = _caller(datastore, "admin")
        reviewer = registry.linked_person("admin")
        assert reviewer is not None
        datastore.request_release(
            owner, ReleaseApprovalRequest(dataset_id=handle, approver_id=reviewer, notes="Seeded")
        )
        datastore.action_release(
            admin, ActionApprovalRequest(dataset_id=handle, approve=True, notes="Seeded")
        )
    if plan.locked:
        registry.set_locked(
            handle, True, username=owner.username, email=owner.email, reason="Seeded lock"
        )
    return {
        "handle": handle,
        "display_name": plan.display_name,
        "owner": plan.owner,
        "files": {
            path: {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            for path, body in sorted(files.items())
        },
        "dirs": list(plan.dirs),
    }


def seed_store(
    datastore: DataStore, data_dir: Path, entities: EntityRegistry | None = None
) -> dict[str, Any]:
    """Load the sample users, their Persons, the run template and datasets (once) and write
    ``seed-manifest.json``."""
    registry = datastore.registry
    _seed_accounts(datastore)
    if entities is None:
        entities = EntityRegistry(registry, JobStore(registry))
    provenance = seed_entities(
        entities,
        {user: email for user, (email, _) in SEED_USERS.items()},
        organisation_id=ORGANISATION_ID,
        custodian_id=PERSON_ID,
    )
    datasets: dict[str, Any] = {}
    handles: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="seed-upload") as pool:
        for plan in _plan():
            done = registry.get_meta(f"seed:{plan.name}")
            if done is None:
                entry = _seed_dataset(datastore, plan, handles, pool)
                registry.set_meta(f"seed:{plan.name}", json.dumps(entry))
                log.info("seeded %s as %s", plan.name, entry["handle"])
            else:
                entry = json.loads(done)
            datasets[plan.name] = entry
            handles[plan.name] = entry["handle"]
    users = {
        account.username: {
            "email": account.email,
            "realm_roles": list(account.realm_roles),
            "groups": list(account.groups),
        }
        for account in registry.list_users()
    }
    manifest = {
        "datasets": datasets,
        "users": users,
        "groups": {g: list(m) for g, m in registry.list_groups().items()},
        "incomplete_dataset": registry.get_meta("seed:incomplete-item"),
        "non_dataset_ids": [ORGANISATION_ID, PERSON_ID],
        **provenance,
    }
    write_private(
        data_dir / "seed-manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    )
    return manifest
