"""Filling a new dataset from a local directory, resumably: ``provenafs new --from DIR``.

``local_files(DIR)`` lists what goes up: every regular file (dot files too) under its path
relative to DIR, and each empty directory as a zero-byte ``dir/`` marker; symlinks and special
files are left out, and so is a top-level ``metadata.json`` (the data store's own copy).
``DatasetUploader.upload`` writes them under the dataset's prefix with its write credentials:
files up to ``part_size`` in one PUT, larger ones as multipart uploads whose parts go in
parallel with the small files (at most ``parallel`` requests, half of them for parts of large
files and half for small files, so that both progress together; as many parts in memory);
every PUT and part is checked against the MD5 S3 answers, and at the end the prefix is listed
and every key's size compared.

``UploadJournal`` makes it resumable. It is a JSON-lines file (0600, in a 0700 directory of
the user's private state dir) that records, before the mint, that a mint was asked for (and
its name and time), then the minted handle and prefix, then each finished file (size, mtime and
ETag), each multipart upload begun (its upload id and part size) and each finished part. A line
is written (``write(2)``) as soon as its step is done, so after a ``kill -9`` a rerun of the
same command reads it back, skips every file and part already there and sends only the rest,
once: a file whose size or mtime changed since is sent again. (Lines are fsynced at most every
``SYNC_INTERVAL`` seconds: after a power loss the last moments' files may go twice.) A
multipart upload S3 no longer knows is begun again. The journal is removed once every key is
verified.

Trio; file reads and hashing of large parts run in worker threads. Never logs a credential.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar

import trio

from provenafs.api.models import Credentials
from provenafs.storage.blobstore import (
    AccessDeniedError,
    ExpiredCredentialsError,
    NoSuchKeyError,
    WritableBlobStore,
    multipart_etag,
)
from provenafs.write.draft_entries import METADATA_FILE
from provenafs.write.publish import DEFAULT_PART_SIZE, is_md5_etag

__all__ = [
    "METADATA_FILE",
    "DatasetUploader",
    "LocalFile",
    "UploadError",
    "UploadJournal",
    "UploadProgress",
    "local_files",
]

log = logging.getLogger(__name__)

MAX_PARTS = 9000  # S3 allows 10,000 parts: larger files get larger parts
SYNC_INTERVAL = 0.5
_T = TypeVar("_T")


class UploadError(Exception):
    """The upload cannot go on; the message says why (the journal keeps what was done)."""


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """One file (or empty directory marker, ``key`` ending in ``/``) to upload."""

    key: str  # relative to the dataset's prefix
    path: Path | None  # None for a directory marker
    size: int
    mtime_ns: int


def local_files(root: Path) -> tuple[list[LocalFile], list[str]]:
    """What ``root`` uploads, sorted by key, and what it leaves out (relative paths)."""
    found: list[LocalFile] = []
    skipped: list[str] = []
    for directory, subdirs, names in os.walk(root):
        subdirs.sort()
        base = Path(directory)
        relative = base.relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        entries = 0
        for name in sorted(names):
            path = base / name
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                skipped.append(prefix + name)
                continue
            if not prefix and name == METADATA_FILE:
                skipped.append(name)  # the data store's own copy of the metadata
                continue
            entries += 1
            found.append(LocalFile(prefix + name, path, info.st_size, info.st_mtime_ns))
        for name in list(subdirs):
            if (base / name).is_symlink():
                subdirs.remove(name)
                skipped.append(prefix + name)
        if prefix and not entries and not subdirs:
            found.append(LocalFile(prefix, None, 0, 0))
    found.sort(key=lambda f: f.key)
    return found, skipped


@dataclasses.dataclass
class _Multipart:
    upload_id: str
    part_size: int
    size: int
    mtime_ns: int
    parts: dict[int, str] = dataclasses.field(default_factory=dict)  # number -> ETag


class UploadJournal:
    """What an upload has done so far, on disk (module docstring)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self.mint_requested: dict[str, Any] | None = None
        self.minted: dict[str, str] | None = None
        self.files: dict[str, tuple[int, int, str]] = {}  # key -> (size, mtime_ns, etag)
        self.uploads: dict[str, _Multipart] = {}
        self._file: TextIO | None = None
        self._synced = clock()
        if path.exists():
            self._replay()

    def _replay(self) -> None:
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: what it said is done again
            if not isinstance(entry, dict):
                continue
            kind = entry.get("kind")
            if kind == "mint_requested":
                self.mint_requested = entry
            elif kind == "minted":
                self.minted = {k: str(entry[k]) for k in ("handle", "bucket", "prefix")}
            elif kind == "file":
                self.files[entry["key"]] = (entry["size"], entry["mtime_ns"], entry["etag"])
                self.uploads.pop(entry["key"], None)
            elif kind == "upload":
                self.uploads[entry["key"]] = _Multipart(
                    entry["upload_id"], entry["part_size"], entry["size"], entry["mtime_ns"]
                )
            elif kind == "part" and entry.get("key") in self.uploads:
                self.uploads[entry["key"]].parts[int(entry["number"])] = entry["etag"]

    def _append(self, entry: Mapping[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()  # a kill -9 now loses nothing this line says
        if entry.get("kind") in ("mint_requested", "minted") or (
            self._clock() - self._synced >= SYNC_INTERVAL
        ):
            os.fsync(self._file.fileno())
            self._synced = self._clock()

    def record_mint_requested(self, name: str, at: float) -> None:
        self.mint_requested = {"kind": "mint_requested", "name": name, "at": at}
        self._append(self.mint_requested)

    def record_minted(self, handle: str, bucket: str, prefix: str) -> None:
        self.minted = {"handle": handle, "bucket": bucket, "prefix": prefix}
        self._append({"kind": "minted", **self.minted})

    def record_file(self, item: LocalFile, etag: str) -> None:
        self.files[item.key] = (item.size, item.mtime_ns, etag)
        self.uploads.pop(item.key, None)
        entry = {"key": item.key, "size": item.size, "mtime_ns": item.mtime_ns, "etag": etag}
        self._append({"kind": "file", **entry})

    def record_upload(self, item: LocalFile, upload_id: str, part_size: int) -> _Multipart:
        upload = _Multipart(upload_id, part_size, item.size, item.mtime_ns)
        self.uploads[item.key] = upload
        self._append(
            {
                "kind": "upload",
                "key": item.key,
                "upload_id": upload_id,
                "part_size": part_size,
                "size": item.size,
                "mtime_ns": item.mtime_ns,
            }
        )
        return upload

    def record_part(self, key: str, number: int, etag: str) -> None:
        self.uploads[key].parts[number] = etag
        self._append({"kind": "part", "key": key, "number": number, "etag": etag})

    def done(self, item: LocalFile) -> bool:
        """Whether *item* was uploaded as it is now (same size and mtime)."""
        known = self.files.get(item.key)
        return known is not None and known[:2] == (item.size, item.mtime_ns)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


@dataclasses.dataclass
class UploadProgress:
    """Counts of one run (``*_sent``: what this run sent, not what an earlier run did)."""

    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    files_sent: int = 0
    parts_sent: int = 0
    bytes_sent: int = 0


def _read_part(path: Path, offset: int, length: int) -> tuple[bytes, bytes]:
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(length)
    return data, hashlib.md5(data).digest()  # noqa: S324 (S3's ETag is an MD5)


def _part_size(size: int, minimum: int) -> int:
    return max(minimum, math.ceil(size / MAX_PARTS))


class DatasetUploader:
    """Uploads local files into one dataset's prefix, recording each step (module docstring)."""

    def __init__(
        self,
        store: WritableBlobStore,
        credentials: Callable[[], Awaitable[Credentials]],
        renew: Callable[[], None],
        *,
        bucket: str,
        prefix: str,
        journal: UploadJournal,
        part_size: int = DEFAULT_PART_SIZE,
        parallel: int = 8,
        progress: Callable[[UploadProgress], None] | None = None,
    ) -> None:
        self._store = store
        self._credentials = credentials
        self._renew = renew
        self._bucket = bucket
        self._prefix = prefix
        self._journal = journal
        self._part_size = part_size
        # Small files and parts of large files take turns: half the requests each (one shared
        # slot when there is only one), so neither kind waits for all of the other.
        self._slots = trio.CapacityLimiter(max(1, parallel - parallel // 2))
        self._part_slots = self._slots if parallel < 2 else trio.CapacityLimiter(parallel // 2)
        self._listener = progress
        self.progress = UploadProgress()

    async def upload(self, files: list[LocalFile]) -> UploadProgress:
        """Send what the journal does not hold yet, then verify every key; the counts."""
        counts = self.progress
        counts.files_total = len(files)
        counts.bytes_total = sum(f.size for f in files)
        pending = []
        for item in files:
            if self._journal.done(item):
                counts.files_done += 1
                counts.bytes_done += item.size
            else:
                pending.append(item)
        self._report()
        async with trio.open_nursery() as nursery:
            for item in pending:
                nursery.start_soon(self._upload_one, item)
        await self._verify(files)
        return counts

    async def _upload_one(self, item: LocalFile) -> None:
        if item.path is None or item.size <= self._part_size:
            async with self._slots:
                if item.path is None:
                    data, digest = b"", hashlib.md5(b"").digest()  # noqa: S324
                else:
                    data, digest = await trio.to_thread.run_sync(
                        _read_part, item.path, 0, item.size
                    )
                self._check_unchanged(item, len(data))
                etag = await self._with_credentials(
                    lambda c: self._store.put_object(c, self._bucket, self._prefix + item.key, data)
                )
            self._check_etag(item.key, etag, digest.hex())
            self.progress.files_sent += 1
            self.progress.bytes_sent += len(data)
        else:
            etag = await self._multipart(item)
        self._journal.record_file(item, etag)
        self.progress.files_done += 1
        self.progress.bytes_done += item.size if item.size <= self._part_size else 0
        self._report()

    async def _multipart(self, item: LocalFile) -> str:
        assert item.path is not None
        path = item.path
        key = self._prefix + item.key
        upload = self._journal.uploads.get(item.key)
        if upload is not None and (upload.size, upload.mtime_ns) != (item.size, item.mtime_ns):
            stale = upload.upload_id  # the file changed since: drop its parts, begin again
            await self._with_credentials(
                lambda c: self._store.abort_multipart(c, self._bucket, key, stale)
            )
            upload = None
        if upload is not None:
            already = sum(
                min(upload.part_size, item.size - (n - 1) * upload.part_size) for n in upload.parts
            )
            self.progress.bytes_done += already
        for attempt in (1, 2):
            if upload is None:
                upload_id = await self._with_credentials(
                    lambda c: self._store.create_multipart(c, self._bucket, key)
                )
                upload = self._journal.record_upload(
                    item, upload_id, _part_size(item.size, self._part_size)
                )
            try:
                return await self._send_parts(item, path, key, upload)
            except NoSuchKeyError:
                if attempt == 2:
                    raise
                log.info("the upload of %s is gone from S3: beginning it again", item.key)
                upload = None
        raise AssertionError("unreachable")

    async def _send_parts(self, item: LocalFile, path: Path, key: str, upload: _Multipart) -> str:
        count = math.ceil(item.size / upload.part_size)
        digests: dict[int, bytes] = {}

        async def send(number: int) -> None:
            offset = (number - 1) * upload.part_size
            length = min(upload.part_size, item.size - offset)
            async with self._part_slots:
                data, digest = await trio.to_thread.run_sync(_read_part, path, offset, length)
                self._check_unchanged(item, -1)
                etag = await self._with_credentials(
                    lambda c: self._store.upload_part(
                        c, self._bucket, key, upload.upload_id, number=number, data=data
                    )
                )
            self._check_etag(f"{item.key} part {number}", etag, digest.hex())
            digests[number] = digest
            self._journal.record_part(item.key, number, etag)
            self.progress.parts_sent += 1
            self.progress.bytes_sent += length
            self.progress.bytes_done += length
            self._report()

        async with trio.open_nursery() as nursery:
            for number in range(1, count + 1):
                if number not in upload.parts:
                    nursery.start_soon(send, number)
        parts = [(number, upload.parts[number]) for number in range(1, count + 1)]
        etag = await self._with_credentials(
            lambda c: self._store.complete_multipart(c, self._bucket, key, upload.upload_id, parts)
        )
        expected = multipart_etag([bytes.fromhex(part_etag) for _, part_etag in parts])
        self._check_etag(item.key, etag, expected)
        return etag

    def _check_unchanged(self, item: LocalFile, length: int) -> None:
        assert item.path is not None or length == 0
        if item.path is None:
            return
        info = item.path.stat()
        if (info.st_size, info.st_mtime_ns) != (item.size, item.mtime_ns) or length not in (
            -1,
            item.size,
        ):
            raise UploadError(f"{item.key} changed while it was uploaded: run the command again")

    @staticmethod
    def _check_etag(what: str, etag: str, expected: str) -> None:
        multipart = "-" in etag and "-" in expected
        if (is_md5_etag(etag) or multipart) and etag.lower() != expected.lower():
            raise UploadError(f"{what}: S3 stored other bytes than were sent")

    async def _verify(self, files: list[LocalFile]) -> None:
        listing = await self._with_credentials(
            lambda c: self._store.list_prefix(c, self._bucket, self._prefix, delimiter=None)
        )
        landed = {info.key: info.size for info in listing.objects}
        missing = [f.key for f in files if landed.get(self._prefix + f.key) != f.size]
        if missing:
            shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
            raise UploadError(f"{len(missing)} files did not land as sent: {shown}")

    async def _with_credentials(self, op: Callable[[Credentials], Awaitable[_T]]) -> _T:
        """*op* with the dataset's write credentials; once more with new ones if S3 refuses."""
        try:
            return await op(await self._credentials())
        except (ExpiredCredentialsError, AccessDeniedError):
            self._renew()
            return await op(await self._credentials())

    def _report(self) -> None:
        if self._listener is not None:
            self._listener(self.progress)


def journal_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The journal's entries (for tests and ``--status``): one dict per line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                yield entry
