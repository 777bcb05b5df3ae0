"""The bench's datasets in the local store: created once per data dir through the data store API.

``prepare_data`` mints the bench datasets (a large one, one of small files in folders, one of
medium files, and tiny ones filling a handle prefix) as the owner of a seeded dataset, copying
its metadata, and uploads their bytes straight to S3 with the store's admin keys
(``DATA_DIR/s3-admin.json``); ``DATA_DIR/bench-manifest.json`` records them so that a later run
with the same sizes reuses them. ``DataStoreApi`` holds the few routes the bench calls.

What it must not do: print or store a secret (the admin keys stay in ``S3Admin``, whose repr
hides the secret key), or change a dataset it did not create.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx
from botocore.config import Config

from benchmarks.probe import WorkloadError
from benchmarks.report import MIB, Sizes
from provenafs.server.testing import LocalStoreProcess

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class S3Admin:
    """The store's admin S3 access (from ``DATA_DIR/s3-admin.json``); repr hides the secret."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    bucket: str
    region: str

    @staticmethod
    def load(data_dir: Path) -> S3Admin:
        raw = json.loads((data_dir / "s3-admin.json").read_text())
        return S3Admin(
            str(raw["endpoint_url"]),
            str(raw["access_key_id"]),
            str(raw["secret_access_key"]),
            str(raw["bucket"]),
            str(raw.get("region") or "us-east-1"),
        )

    def client(self, pool: int = 32) -> S3Client:
        config = Config(
            max_pool_connections=pool,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=config,
        )


@dataclasses.dataclass(frozen=True)
class MountTarget:
    """What a measurement looks at: a path under a provenafs mount, and the S3 prefix it is.

    ``path`` is a dataset's handle or a handle prefix; the peers mount ``prefix`` (a key prefix
    with a trailing slash) of the bucket, which holds the same objects.
    """

    path: str
    prefix: str


@dataclasses.dataclass(frozen=True)
class BenchDataset:
    """One dataset the bench created: its handle, S3 prefix (with trailing slash) and files."""

    handle: str
    prefix: str
    files: tuple[str, ...]

    @property
    def target(self) -> MountTarget:
        return MountTarget(self.handle, self.prefix)


@dataclasses.dataclass(frozen=True)
class BenchData:
    """The bench datasets, the user that owns them, and the sizes they were made with."""

    user: str
    large: BenchDataset  # large.bin, pair-0.bin, pair-1.bin
    small: BenchDataset  # small files in ten folders
    medium: BenchDataset  # medium files
    roots: tuple[str, ...]  # handles of the tiny datasets that fill a prefix
    sizes: Sizes

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> BenchData:
        def dataset(item: Mapping[str, Any]) -> BenchDataset:
            return BenchDataset(str(item["handle"]), str(item["prefix"]), tuple(item["files"]))

        return BenchData(
            str(raw["user"]),
            dataset(raw["large"]),
            dataset(raw["small"]),
            dataset(raw["medium"]),
            tuple(raw["roots"]),
            Sizes(**raw["sizes"]),
        )


class DataStoreApi:
    """The few data store routes the bench needs (fetch, mint, list), with a bearer token."""

    def __init__(self, base_url: str, token: str) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    def close(self) -> None:
        self._http.close()

    def fetch(self, handle: str) -> dict[str, Any]:
        response = self._http.get("/registry/items/fetch-dataset", params={"handle_id": handle})
        if response.status_code != 200:
            raise RuntimeError(f"fetch {handle}: HTTP {response.status_code}")
        result: dict[str, Any] = response.json()
        return result

    def mint(self, collection_format: Mapping[str, Any]) -> tuple[str, str]:
        """Mint a dataset; returns (handle, S3 prefix with trailing slash)."""
        response = self._http.post("/register/mint-dataset", json=collection_format)
        body = response.json() if response.status_code == 200 else {}
        status = body.get("status") or {}
        if response.status_code != 200 or not status.get("success") or not body.get("handle"):
            raise RuntimeError(
                f"mint: HTTP {response.status_code} {str(status.get('details', ''))[:200]}"
            )
        handle = str(body["handle"])
        location = body.get("s3_location") or {}
        prefix = str(location.get("path") or f"datasets/{sanitize_handle(handle)}/")
        return handle, prefix if prefix.endswith("/") else prefix + "/"

    def list_all(self, page_size: int = 100) -> int:
        """Walk every page of the dataset list; returns the number of datasets."""
        key: Any = None
        count = 0
        while True:
            body = {"sort_by": None, "pagination_key": key, "page_size": page_size}
            response = self._http.post("/registry/items/list", json=body)
            if response.status_code != 200:
                raise WorkloadError(f"list: HTTP {response.status_code}")
            page = response.json()
            count += len(page.get("items") or [])
            key = page.get("pagination_key")
            if key is None:
                return count


def choose_template(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """A seed dataset to copy metadata from, and its owner (the bench user): (handle, owner)."""
    datasets = manifest.get("datasets") or {}
    for entry in datasets.values():
        if entry.get("handle") and entry.get("owner"):
            return str(entry["handle"]), str(entry["owner"])
    raise RuntimeError("the seed manifest names no dataset with an owner")


def put_random_object(client: S3Client, bucket: str, key: str, size: int) -> None:
    """Upload size random bytes (multipart in 8 MiB parts above 8 MiB)."""
    part_size = 8 * MIB
    if size <= part_size:
        client.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def upload(number: int) -> CompletedPartTypeDef:
        offset = (number - 1) * part_size
        body = os.urandom(min(part_size, size - offset))
        etag = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]
        return {"ETag": etag, "PartNumber": number}

    count = (size + part_size - 1) // part_size
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(upload, range(1, count + 1)))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


class Minter:
    """Mints datasets as the owner of a seeded dataset, with a copy of its metadata.

    Safe to call from several threads (one HTTP client, connection pool included).
    """

    def __init__(self, store: LocalStoreProcess) -> None:
        template_handle, self.user = choose_template(store.manifest())
        self.api = DataStoreApi(store.base_url, store.token(self.user))
        try:
            self._template = dict(self.api.fetch(template_handle)["item"]["collection_format"])
        except BaseException:
            self.api.close()
            raise

    def mint(self, name: str, keywords: Sequence[str] | None = None) -> tuple[str, str]:
        """A new dataset called ``name`` (with ``keywords`` instead of the template's, if
        given): (handle, S3 prefix with trailing slash)."""
        collection = json.loads(json.dumps(self._template))
        collection["dataset_info"]["name"] = name
        if keywords is not None:
            collection["dataset_info"]["keywords"] = list(keywords)
        return self.api.mint(collection)

    def close(self) -> None:
        self.api.close()


def prepare_data(server: LocalStoreProcess, admin: S3Admin, sizes: Sizes, say: Say) -> BenchData:
    """Create (or reuse, from ``DATA_DIR/bench-manifest.json``) the bench datasets."""
    manifest_path = server.data_dir / "bench-manifest.json"
    if manifest_path.exists():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            existing = BenchData.from_json(json.loads(manifest_path.read_text()))
            if existing.sizes == sizes:
                say(f"reusing the bench datasets in {manifest_path}")
                return existing
    minter = Minter(server)
    user = minter.user
    client = admin.client()
    try:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")

        def dataset(name: str, files: Mapping[str, int]) -> BenchDataset:
            handle, prefix = minter.mint(f"bench {name} {stamp}")
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                uploads = [
                    pool.submit(put_random_object, client, admin.bucket, prefix + path, size)
                    for path, size in files.items()
                ]
                for future in uploads:
                    future.result()
            return BenchDataset(handle, prefix, tuple(files))

        say(f"creating the bench datasets as user {user!r} (large, small, medium files)")
        large = dataset(
            "large",
            {
                "large.bin": sizes.large_file,
                "pair-0.bin": sizes.pair_file,
                "pair-1.bin": sizes.pair_file,
            },
        )
        small_files = {
            f"d{index % 10:02d}/f{index:04d}.bin": sizes.small_file_size
            for index in range(sizes.small_files)
        }
        small = dataset("small files", small_files)
        medium = dataset(
            "medium files",
            {f"m{index:03d}.bin": sizes.medium_file_size for index in range(sizes.medium_files)},
        )
        say(f"minting {sizes.root_datasets} tiny datasets for the root listing")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            names = [f"bench root {index:04d} {stamp}" for index in range(sizes.root_datasets)]
            roots = tuple(handle for handle, _ in pool.map(minter.mint, names))
    finally:
        minter.close()
        client.close()
    data = BenchData(user, large, small, medium, roots, sizes)
    manifest_path.write_text(json.dumps(data.to_json(), indent=2) + "\n")
    return data


def sanitize_handle(handle: str) -> str:
    """The S3 folder of a handle, as the data store names it: ``10378.1/7`` → ``10378-1-7``."""
    return handle.replace(".", "-").replace("/", "-")
