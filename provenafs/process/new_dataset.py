"""``provenafs new NAME [--metadata FILE] [--from DIR]`` and ``provenafs new --init``.

``new --init`` writes the user's defaults for new datasets to
``~/.config/provenafs/new-dataset.json`` (0600): the data store, organisation, publisher,
licence, data custodian, point of contact and approvals. What the arguments do not name is
taken from the newest dataset the user owns (else the newest one they may see), and the
custodian is the user's linked Person; nothing is asked interactively.

``new NAME`` builds a ``collection_format`` from those defaults (the name from the argument,
today as the created date, ``--description``, ``--keyword``), merged with ``--metadata FILE``
(a ``collection_format``, or a sidecar or item holding one), has the data store validate it
(``/metadata/validate-metadata``: a refusal names the field and nothing is minted), mints it
(``/register/mint-dataset``) and prints the handle as the last line of stdout. With ``--from
DIR`` it then uploads DIR into the new dataset (``write.dataset_upload``: parallel, multipart
for large files, a progress line on a terminal, resumable: running the same command again
after a crash resumes into the same dataset and sends only what is missing).

The upload goes straight to S3 with the dataset's write credentials, from this process: no
mount is needed (the token comes from the environment or ``provenafs login``, as for a mount),
the bytes are read once from DIR rather than copied into a mount's draft first, and nothing
waits on a daemon. Mounts of the same data store are then told to forget what they held of the
dataset (control op ``forget``), so it shows its files at once.

Must not print a token or credential; its journal and config are private files.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from provenafs.api import errors as api_errors
from provenafs.api.account import Identity
from provenafs.api.client import DataStoreClient, discover
from provenafs.api.logins import config_dir, token_source_for, write_private_json
from provenafs.api.models import CollectionFormat, DatasetRecord
from provenafs.api.realm import RefreshingToken
from provenafs.api.registry import RegistryClient
from provenafs.api.services import service_urls
from provenafs.api.token_urls import InsecureUrlError, check_token_urls
from provenafs.mount_options import DEFAULT_SOURCE
from provenafs.process import control_socket
from provenafs.process.mounts import provenafs_mounts
from provenafs.storage.blobstore import BlobError
from provenafs.storage.credentials import CredentialBroker
from provenafs.storage.s3 import S3BlobStore
from provenafs.write.dataset_upload import (
    DatasetUploader,
    UploadError,
    UploadJournal,
    UploadProgress,
    local_files,
)
from provenafs.write.drafts import default_state_dir, mkdir_private

__all__ = ["CONFIG_NAME", "journal_path", "main"]

CONFIG_NAME = "new-dataset.json"
_USAGE_EXIT = 2
_NOT_RELEVANT = {"relevant": False, "obtained": False}
_APPROVALS = ("ethics_registration", "ethics_access", "indigenous_knowledge", "export_controls")
_COLLECTION_KEYS = frozenset({"associations", "approvals", "dataset_info"})
_ADOPT_WINDOW = 120  # seconds: a dataset minted this long before the journaled request


class NewDatasetError(Exception):
    """``provenafs new`` cannot go on; the message is for the user."""


def _say(message: str) -> None:
    print(f"provenafs new: {message}", file=sys.stderr, flush=True)


# --- the config file ----------------------------------------------------------------------


def config_path() -> Path:
    return config_dir() / CONFIG_NAME


def load_config() -> dict[str, Any]:
    try:
        loaded = json.loads(config_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise NewDatasetError(f"cannot read {config_path()}: {exc}") from None
    return loaded if isinstance(loaded, dict) else {}


def write_config(values: Mapping[str, Any]) -> Path:
    path = config_path()
    write_private_json(path, values)
    return path


def _source(given: str | None, config: Mapping[str, Any]) -> str:
    """``--source``, else the config's, else the one data store this user has mounted."""
    if given:
        return given.rstrip("/")
    if isinstance(config.get("source"), str) and config["source"]:
        return str(config["source"]).rstrip("/")
    sources = {entry.source.rstrip("/") for entry in provenafs_mounts()}
    if len(sources) == 1:
        return sources.pop()
    if len(sources) > 1:
        raise NewDatasetError(
            f"several data stores are mounted ({', '.join(sorted(sources))}): "
            "name one with --source"
        )
    return DEFAULT_SOURCE


# --- talking to the data store ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Connection:
    client: DataStoreClient
    registry: RegistryClient
    store: S3BlobStore


@contextlib.asynccontextmanager
async def _connect(source: str, *, insecure_http: bool) -> AsyncIterator[_Connection]:
    """Clients of *source*, once every URL a token would go to is known to keep it private."""
    try:
        check_token_urls(source, {}, insecure_http=insecure_http)
        discovery = await discover(source)
        services = service_urls(source, discovery.document, {})
        others = {"the Keycloak realm": discovery.realm_url}
        others["the S3 endpoint"] = discovery.s3_endpoint_url
        check_token_urls(source, others | services.by_name(), insecure_http=insecure_http)
    except InsecureUrlError as exc:
        raise NewDatasetError(str(exc)) from exc
    tokens = token_source_for(source, discovery.realm_url)
    client = DataStoreClient(source, tokens)
    registry = RegistryClient(client, services, tokens)
    try:
        store = S3BlobStore(discovery.s3_endpoint_url, discovery.region)
        yield _Connection(client, registry, store)
    finally:
        with trio.CancelScope(shield=True):
            await registry.aclose()
            await client.aclose()
            if isinstance(tokens, RefreshingToken):
                await tokens.aclose()


# --- --init ---------------------------------------------------------------------------------


def _template(records: Sequence[DatasetRecord], username: str) -> Mapping[str, Any]:
    """The ``collection_format`` of the newest dataset the user owns, else the newest one."""
    ordered = sorted(records, key=lambda r: -r.updated_timestamp)
    for record in [r for r in ordered if r.owner_username == username] + ordered:
        fields = record.collection_format.fields
        if isinstance(fields, dict) and fields.get("associations"):
            return fields
    return {}


async def _init(args: argparse.Namespace) -> int:
    config = load_config()
    source = _source(args.source, config)
    async with _connect(source, insecure_http=args.insecure_http) as connection:
        identity = await connection.registry.whoami()
        page = await connection.client.list_page(None, page_size=50)
        template = _template(page.items, identity.username)
    associations = template.get("associations") or {}
    info = template.get("dataset_info") or {}
    values: dict[str, Any] = {
        "source": source,
        "organisation_id": args.organisation or associations.get("organisation_id"),
        "publisher_id": args.publisher or info.get("publisher_id"),
        "license": args.licence or info.get("license"),
        "data_custodian_id": args.custodian or identity.person_id,
        "point_of_contact": args.contact or identity.email,
        "approvals": {name: dict(_NOT_RELEVANT) for name in _APPROVALS},
    }
    missing = [key for key in ("organisation_id", "publisher_id", "license") if not values[key]]
    if missing:
        flags = {
            "organisation_id": "--organisation",
            "publisher_id": "--publisher",
            "license": "--licence",
        }
        raise NewDatasetError(
            "no dataset to take defaults from: give " + ", ".join(flags[m] for m in missing)
        )
    path = write_config({k: v for k, v in values.items() if v is not None})
    print(f"wrote {path}:")
    for key in (
        "source",
        "organisation_id",
        "publisher_id",
        "license",
        "data_custodian_id",
        "point_of_contact",
    ):
        print(f"  {key}: {values[key] or '-'}")
    return 0


# --- the metadata --------------------------------------------------------------------------


def _merged(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _metadata_file(path: Path) -> Mapping[str, Any]:
    """The ``collection_format`` in a JSON file: itself, or inside a sidecar or an item."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NewDatasetError(f"cannot read the metadata file {path}: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("item"), dict):
        document = document["item"]
    if isinstance(document, dict) and isinstance(document.get("collection_format"), dict):
        document = document["collection_format"]
    if not isinstance(document, dict) or not set(document) <= _COLLECTION_KEYS:
        raise NewDatasetError(
            f"{path} holds no collection_format (an object of associations, approvals and "
            "dataset_info, or a sidecar or item holding one)"
        )
    return document


def collection_format_for(
    name: str,
    config: Mapping[str, Any],
    *,
    description: str | None = None,
    keywords: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """The new dataset's ``collection_format``: the defaults, the file, then the arguments."""
    associations = {"organisation_id": config.get("organisation_id")}
    for key in ("data_custodian_id", "point_of_contact"):
        if config.get(key):
            associations[key] = config[key]
    approvals = config.get("approvals") or {n: dict(_NOT_RELEVANT) for n in _APPROVALS}
    base: dict[str, Any] = {
        "associations": associations,
        "approvals": approvals,
        "dataset_info": {
            "name": name,
            "description": name,
            "access_info": {"reposited": True},
            "publisher_id": config.get("publisher_id"),
            "created_date": {
                "relevant": True,
                "value": (today or dt.date.today()).isoformat(),
            },
            "published_date": {"relevant": False},
            "license": config.get("license"),
        },
    }
    document = _merged(base, metadata or {})
    info = document["dataset_info"]
    info["name"] = name
    if description:
        info["description"] = description
    if keywords:
        info["keywords"] = list(dict.fromkeys(keywords))
    return document


# --- minting and resuming ------------------------------------------------------------------


def journal_path(source: str, name: str, directory: Path | None) -> Path:
    """Where the journal of ``provenafs new NAME [--from DIR]`` against *source* lives."""
    where = "" if directory is None else os.path.abspath(directory)
    key = hashlib.sha256(f"{source.rstrip('/')}\0{name}\0{where}".encode()).hexdigest()[:24]
    return default_state_dir() / "new" / f"{key}.jsonl"


def _private_dirs(path: Path) -> None:
    """*path* and the state dir it is in, made 0700 (they are the user's alone)."""
    mkdir_private(path)
    default_state_dir().chmod(0o700)


async def _adopt(connection: _Connection, name: str, asked_at: float, me: str) -> str | None:
    """The dataset a mint whose answer was lost made: named *name*, owned by the caller, made
    no earlier than the journaled request; None when the mint made nothing."""
    found: list[DatasetRecord] = []
    for hit in await connection.registry.search_datasets(name, 50):
        try:
            record = await connection.client.fetch_dataset(hit.id)
        except api_errors.ApiError:
            continue
        made_after = record.created_timestamp >= asked_at - _ADOPT_WINDOW
        if record.display_name == name and record.owner_username == me and made_after:
            found.append(record)
    if not found:
        return None
    return max(found, key=lambda r: r.created_timestamp).handle


async def _minted(
    connection: _Connection,
    journal: UploadJournal,
    name: str,
    document: Mapping[str, Any],
    identity: Identity,
) -> tuple[str, str, str]:
    """(handle, bucket, prefix) of the dataset: the journal's, a lost mint's, or minted now."""
    if journal.minted is not None:
        known = journal.minted
        _say(f"resuming into {known['handle']}")
        return known["handle"], known["bucket"], known["prefix"]
    if journal.mint_requested is not None:
        adopted = await _adopt(
            connection, name, float(journal.mint_requested["at"]), identity.username
        )
        if adopted is not None:
            record = await connection.client.fetch_dataset(adopted)
            _say(f"adopting {adopted}: an earlier run minted it but did not record the answer")
            journal.record_minted(adopted, record.s3.bucket_name, record.s3.path)
            return adopted, record.s3.bucket_name, record.s3.path
    collection_format = CollectionFormat.from_json(document)
    try:
        await connection.registry.validate_metadata(collection_format)
    except api_errors.InvalidRequestError as exc:
        raise NewDatasetError(f"the metadata is not valid: {exc}") from None
    if identity.person_id is None:
        raise NewDatasetError(
            f"{identity.username} has no linked Person in the registry: minting needs one"
        )
    journal.record_mint_requested(name, time.time())
    minted = await connection.registry.mint(collection_format)
    journal.record_minted(minted.handle, minted.bucket, minted.path)
    return minted.handle, minted.bucket, minted.path


class _ProgressLine:
    """One rewritten line on a terminal, ten times a second at most; nothing otherwise."""

    def __init__(self, handle: str, enabled: bool) -> None:
        self._handle = handle
        self._enabled = enabled
        self._started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def show(self, progress: UploadProgress, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self._enabled or (now - self._last < 0.1 and not final):
            return
        self._last = now
        rate = progress.bytes_sent / max(now - self._started, 1e-6) / (1 << 20)
        sys.stderr.write(
            f"\r\x1b[Kuploading into {self._handle}: {progress.files_done}/"
            f"{progress.files_total} files, {progress.bytes_done / (1 << 20):.1f} of "
            f"{progress.bytes_total / (1 << 20):.1f} MiB, {rate:.1f} MiB/s"
        )
        sys.stderr.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


async def _upload(
    connection: _Connection,
    journal: UploadJournal,
    target: tuple[str, str, str],
    directory: Path,
    args: argparse.Namespace,
) -> UploadProgress:
    handle, bucket, prefix = target
    files, skipped = local_files(directory)
    for path in skipped:
        _say(f"left out {path} (not a regular file, or the data store's metadata.json)")
    broker = CredentialBroker(connection.client)
    line = _ProgressLine(handle, sys.stderr.isatty() and not args.quiet)
    uploader = DatasetUploader(
        connection.store,
        lambda: broker.write(handle),
        lambda: broker.invalidate(handle),
        bucket=bucket,
        prefix=prefix,
        journal=journal,
        parallel=args.parallel,
        progress=line.show,
    )
    try:
        progress = await uploader.upload(files)
    finally:
        line.show(uploader.progress, final=True)
        line.finish()
    return progress


def _tell_mounts(source: str, handle: str) -> list[Path]:
    """Mounts of *source* forget what they held of *handle*; their mountpoints."""
    told = []
    for entry in provenafs_mounts():
        if entry.source.rstrip("/") != source:
            continue
        with contextlib.suppress(control_socket.ControlError, OSError):
            for answer in control_socket.request(
                entry.mountpoint, {"op": "forget", "handle": handle}, timeout=30.0
            ):
                if answer.get("event") == "done":
                    told.append(entry.mountpoint)
    return told


async def _new(args: argparse.Namespace) -> int:
    config = load_config()
    source = _source(args.source, config)
    name = args.name.strip()
    if not name:
        raise NewDatasetError("the name must not be empty")
    directory = Path(args.from_dir) if args.from_dir else None
    if directory is not None and not directory.is_dir():
        raise NewDatasetError(f"{directory} is not a directory")
    if not config.get("organisation_id"):
        raise NewDatasetError(
            f"no defaults for new datasets yet: run `provenafs new --init` ({config_path()})"
        )
    metadata = _metadata_file(Path(args.metadata)) if args.metadata else None
    document = collection_format_for(
        name, config, description=args.description, keywords=args.keyword, metadata=metadata
    )
    path = journal_path(source, name, directory)
    _private_dirs(path.parent)
    journal = UploadJournal(path)
    try:
        async with _connect(source, insecure_http=args.insecure_http) as connection:
            identity = await connection.registry.whoami()
            handle, bucket, prefix = await _minted(connection, journal, name, document, identity)
            if directory is not None:
                progress = await _upload(
                    connection, journal, (handle, bucket, prefix), directory, args
                )
                _say(
                    f"uploaded {progress.files_sent} files and {progress.parts_sent} parts "
                    f"({progress.bytes_sent / (1 << 20):.1f} MiB) into {handle}; "
                    f"{progress.files_total} files in all"
                )
    finally:
        journal.close()
    journal.remove()
    for mountpoint in await trio.to_thread.run_sync(_tell_mounts, source, handle):
        _say(f"in the mount: {mountpoint / handle}")
    print(handle, flush=True)
    return 0


# --- the command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provenafs new",
        description="Mint a dataset (and fill it from a directory); prints its handle.",
    )
    parser.add_argument("name", nargs="?", help="the dataset's name")
    parser.add_argument("--init", action="store_true", help=f"write {CONFIG_NAME} and stop")
    parser.add_argument("--source", help="the data store URL (default: config, or the mount's)")
    parser.add_argument("--metadata", metavar="FILE", help="a collection_format (JSON)")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", help="upload DIR into it")
    parser.add_argument("--description", help="dataset_info.description (default: the name)")
    parser.add_argument("--keyword", action="append", default=[], help="a keyword (repeatable)")
    parser.add_argument("--parallel", type=int, default=8, help="requests at once (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain http to another machine (tokens would travel in clear)",
    )
    init = parser.add_argument_group("--init")
    init.add_argument("--organisation", metavar="ID", help="associations.organisation_id")
    init.add_argument("--publisher", metavar="ID", help="dataset_info.publisher_id")
    init.add_argument("--licence", "--license", dest="licence", metavar="URL")
    init.add_argument("--custodian", metavar="ID", help="a Person id (default: your own)")
    init.add_argument("--contact", metavar="EMAIL", help="point of contact (default: your email)")
    return parser


def main(args: Sequence[str]) -> int:
    parser = _parser()
    parsed = parser.parse_args(list(args))
    if not parsed.init and not parsed.name:
        parser.error("give a NAME, or --init")
    if parsed.parallel < 1:
        parser.error("--parallel must be at least 1")
    try:
        return trio.run(_init if parsed.init else _new, parsed)
    except NewDatasetError as exc:
        _say(str(exc))
        return 1
    except (api_errors.ApiError, UploadError, BlobError) as exc:
        _say(str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        _say("interrupted: run the same command again to resume")
        return 130
