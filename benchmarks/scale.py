"""The big datasets of ``--scale``: built once into a cache, reused by every later run.

Each spec (``SPECS``) is one local store's data dir under the cache (``~/.cache/provenafs-bench``
or ``$XDG_CACHE_HOME/provenafs-bench``, or ``--scale-cache``)::

    scale-<spec>/            0700
      store/                 the store's data dir (registry, SeaweedFS volumes, s3-admin.json)
      serve.log              the store's log
      manifest.json          written last, atomically: the build is complete

A dir whose manifest is missing, of another format or of another spec is an unfinished or
outdated build: it is deleted and built again. A complete one is checked against the running
store (its first and last dataset fetched, its first and last object found) before use.

Datasets are minted through the data store API (``benchmarks.data.Minter``); objects are written
straight to S3 with the store's admin keys, many in parallel. Tiny objects hold their own key
(``d0003/0000123.bin\\n``), so a reader can check what it got; sized ones random bytes.
``python -m benchmarks.scale [SPEC...]`` builds (or checks) specs and prints how long each took.

What it must not do: print or store a secret outside the store's own 0700 data dir, reuse a
build it cannot check, or delete anything outside its ``scale-<spec>`` dirs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from benchmarks.data import DataStoreApi, Minter, S3Admin, Say
from benchmarks.report import KIB
from provenafs.server.testing import LocalStoreProcess, start_local_store

SCALE_FORMAT = 1  # bump when a builder changes what it makes: older caches are then rebuilt
MINT_THREADS = 8
PUT_THREADS = 32
PUT_BATCH = 200


@dataclasses.dataclass(frozen=True)
class ScaleSpec:
    """One big dataset shape: N tiny datasets under one handle prefix, or one dataset of N objects.

    Objects go into ``folders`` folders ``d0000/``, ``d0001/``, ... (contiguous runs of keys);
    ``object_size`` 0 means tiny (the key's own bytes).
    """

    name: str
    description: str
    datasets: int = 0
    objects: int = 0
    folders: int = 1
    object_size: int = 0
    keywords: int = 0  # tiny datasets get keyword "topicK" (K = index % keywords)

    def keywords_of(self, index: int) -> list[str] | None:
        """The keywords of tiny dataset ``index`` (None: the template's)."""
        return [f"topic{index % self.keywords}"] if self.keywords else None

    def key(self, index: int) -> str:
        """The key (under the dataset's prefix) of object ``index``."""
        per_folder = -(-self.objects // self.folders)
        return f"d{index // per_folder:04d}/{index:07d}.bin"

    def body(self, index: int) -> bytes:
        if self.object_size:
            return os.urandom(self.object_size)
        return f"{self.key(index)}\n".encode()


SPECS: dict[str, ScaleSpec] = {
    spec.name: spec
    for spec in (
        ScaleSpec("prefix-2000", "a handle prefix of 2,000 tiny datasets", datasets=2000),
        ScaleSpec("prefix-10000", "a handle prefix of 10,000 tiny datasets", datasets=10_000),
        ScaleSpec(
            "catalog-1000",
            "1,000 tiny datasets with 10 keywords (topic0 ... topic9)",
            datasets=1000,
            keywords=10,
        ),
        ScaleSpec("objects-10k", "10,000 tiny objects in 100 folders", objects=10_000, folders=100),
        ScaleSpec(
            "objects-100k", "100,000 tiny objects in 100 folders", objects=100_000, folders=100
        ),
        ScaleSpec(
            "objects-1m", "1,000,000 tiny objects in 1,000 folders", objects=1_000_000, folders=1000
        ),
        ScaleSpec("folder-20k", "one folder of 20,000 tiny objects", objects=20_000),
        ScaleSpec("folder-200k", "one folder of 200,000 tiny objects", objects=200_000),
        ScaleSpec("files-1000x64k", "1,000 files of 64 KiB", objects=1000, object_size=64 * KIB),
        ScaleSpec("files-10000x4k", "10,000 files of 4 KiB", objects=10_000, object_size=4 * KIB),
    )
}


@dataclasses.dataclass(frozen=True)
class ScaleDataset:
    handle: str
    prefix: str  # S3 key prefix, trailing slash


@dataclasses.dataclass(frozen=True)
class ScaleData:
    """A built spec: its datasets (one per tiny dataset, or the one holding the objects)."""

    spec: ScaleSpec
    user: str
    datasets: tuple[ScaleDataset, ...]
    built: str  # ISO time of the build
    build_seconds: float

    @property
    def handle_prefix(self) -> str:
        """The handle prefix the datasets sit under (``10378.1``)."""
        return self.datasets[0].handle.split("/", 1)[0]

    @property
    def s3_parent(self) -> str:
        """The S3 prefix that holds every dataset's folder (``datasets/``)."""
        return os.path.commonpath([d.prefix for d in self.datasets]).rstrip("/") + "/"

    def to_json(self) -> dict[str, Any]:
        return {"format": SCALE_FORMAT, **dataclasses.asdict(self)}

    @staticmethod
    def from_json(raw: dict[str, Any]) -> ScaleData:
        datasets = tuple(ScaleDataset(str(d["handle"]), str(d["prefix"])) for d in raw["datasets"])
        return ScaleData(
            ScaleSpec(**raw["spec"]),
            str(raw["user"]),
            datasets,
            str(raw["built"]),
            float(raw["build_seconds"]),
        )


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "provenafs-bench"


def spec_dir(cache: Path, spec: ScaleSpec) -> Path:
    return cache / f"scale-{spec.name}"


def load_manifest(root: Path, spec: ScaleSpec) -> ScaleData | None:
    """The manifest of a complete build of exactly this spec, or None."""
    try:
        raw = json.loads((root / "manifest.json").read_text())
        if raw.get("format") != SCALE_FORMAT:
            return None
        data = ScaleData.from_json(raw)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    expected = spec.datasets or 1
    if data.spec != spec or len(data.datasets) != expected:
        return None
    return data


@contextlib.contextmanager
def open_scale(
    cache: Path, spec: ScaleSpec, say: Say, *, rebuild: bool = False
) -> Iterator[tuple[LocalStoreProcess, ScaleData, bool]]:
    """The store of ``spec`` running on its cached data dir: (store, data, built now).

    Builds the spec first when the cache holds no complete build of it that checks out (or when
    ``rebuild``). The store is stopped on exit.
    """
    root = spec_dir(cache, spec)
    data = None if rebuild else load_manifest(root, spec)
    if data is not None:
        with cached_store(root, say) as store:
            if looks_complete(store, S3Admin.load(store.data_dir), data):
                say(f"scale {spec.name}: reusing the build of {data.built} ({root})")
                yield store, data, False
                return
        say(f"scale {spec.name}: the cached build does not check out")
    if root.exists():
        say(f"scale {spec.name}: removing the unfinished or outdated build in {root}")
        shutil.rmtree(root)
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.mkdir(mode=0o700)
    with cached_store(root, say) as store:
        data = build(store, S3Admin.load(store.data_dir), spec, say)
        write_manifest(root, data)
        yield store, data, True


@contextlib.contextmanager
def cached_store(root: Path, say: Say) -> Iterator[LocalStoreProcess]:
    """``provenafs serve`` on ``root/store`` (seeded on first use), stopped on exit."""
    store_dir = root / "store"
    seeded = (store_dir / "seed-manifest.json").exists()
    say(f"starting provenafs serve on {store_dir}")
    store = start_local_store(store_dir, seed=not seeded, log_path=root / "serve.log")
    try:
        yield store
    finally:
        store.stop()


def write_manifest(root: Path, data: ScaleData) -> None:
    temporary = root / "manifest.json.tmp"
    temporary.write_text(json.dumps(data.to_json(), indent=1) + "\n")
    temporary.replace(root / "manifest.json")


def looks_complete(store: LocalStoreProcess, admin: S3Admin, data: ScaleData) -> bool:
    """Whether the store still holds the build: first and last dataset, first and last object."""
    api = DataStoreApi(store.base_url, store.token(data.user))
    try:
        for dataset in (data.datasets[0], data.datasets[-1]):
            api.fetch(dataset.handle)
    except RuntimeError:
        return False
    finally:
        api.close()
    if not data.spec.objects:
        return True
    client = admin.client()
    try:
        for index in (0, data.spec.objects - 1):
            key = data.datasets[0].prefix + data.spec.key(index)
            client.head_object(Bucket=admin.bucket, Key=key)
    except ClientError:
        return False
    finally:
        client.close()
    return True


def build(store: LocalStoreProcess, admin: S3Admin, spec: ScaleSpec, say: Say) -> ScaleData:
    """Mint the spec's datasets and write its objects; returns what the manifest records."""
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    minter = Minter(store)
    try:
        if spec.datasets:
            datasets = mint_many(minter, spec, stamp, say)
        else:
            handle, prefix = minter.mint(f"scale {spec.name} {stamp}")
            datasets = (ScaleDataset(handle, prefix),)
            put_objects(admin, prefix, spec, say)
    finally:
        minter.close()
    seconds = time.monotonic() - started
    say(f"scale {spec.name}: built in {seconds:.0f} s")
    built = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return ScaleData(spec, minter.user, datasets, built, round(seconds, 1))


def mint_many(minter: Minter, spec: ScaleSpec, stamp: str, say: Say) -> tuple[ScaleDataset, ...]:
    say(f"scale {spec.name}: minting {spec.datasets:,} datasets")
    progress = Progress(spec.name, "datasets minted", spec.datasets, say)

    def mint(index: int) -> ScaleDataset:
        name = f"scale {spec.name} {index:05d} {stamp}"
        handle, prefix = minter.mint(name, spec.keywords_of(index))
        progress.add(1)
        return ScaleDataset(handle, prefix)

    with concurrent.futures.ThreadPoolExecutor(MINT_THREADS) as pool:
        return tuple(pool.map(mint, range(spec.datasets)))


def put_objects(admin: S3Admin, prefix: str, spec: ScaleSpec, say: Say) -> None:
    """Write the spec's objects under ``prefix`` with the admin keys, ``PUT_THREADS`` at a time."""
    say(f"scale {spec.name}: writing {spec.objects:,} objects under {prefix}")
    progress = Progress(spec.name, "objects written", spec.objects, say)
    writer = ObjectWriter(admin, PUT_THREADS)

    def put(first: int) -> None:
        for index in range(first, min(first + PUT_BATCH, spec.objects)):
            writer.put(prefix + spec.key(index), spec.body(index))
        progress.add(min(PUT_BATCH, spec.objects - first))

    try:
        with concurrent.futures.ThreadPoolExecutor(PUT_THREADS) as pool:
            for future in [pool.submit(put, first) for first in range(0, spec.objects, PUT_BATCH)]:
                future.result()
    finally:
        writer.close()


class ObjectWriter:
    """PUTs objects with the admin keys: botocore's SigV4 signer over a urllib3 connection pool.

    A boto3 ``put_object`` costs about 3 ms of CPU here, four times this, and a million objects
    are written on two cores; the signer and the pool are botocore's and boto3's own.
    """

    def __init__(self, admin: S3Admin, connections: int) -> None:
        self._admin = admin
        self._signer = S3SigV4Auth(
            Credentials(admin.access_key_id, admin.secret_access_key), "s3", admin.region
        )
        self._pool = urllib3.PoolManager(maxsize=connections)

    def put(self, key: str, body: bytes) -> None:
        """PUT one object (path-style URL), retried a few times on a failure."""
        url = f"{self._admin.endpoint_url}/{self._admin.bucket}/{urllib.parse.quote(key)}"
        for attempt in range(5):
            request = AWSRequest(method="PUT", url=url, data=body)
            self._signer.add_auth(request)
            try:
                response = self._pool.request(
                    "PUT", url, body=body, headers=dict(request.headers.items()), retries=False
                )
            except urllib3.exceptions.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.status == 200:
                    return
                problem = f"HTTP {response.status}"
            if attempt == 4:
                raise RuntimeError(f"PUT {key}: {problem}")
            time.sleep(0.5 * (attempt + 1))

    def close(self) -> None:
        self._pool.clear()


class Progress:
    """Counts finished items from many threads; says so every tenth of the way."""

    def __init__(self, name: str, what: str, total: int, say: Say) -> None:
        self._name, self._what, self._total, self._say = name, what, total, say
        self._done = 0
        self._next = max(1, total // 10)
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            if self._done < self._next and self._done < self._total:
                return
            self._next += max(1, self._total // 10)
            rate = self._done / max(time.monotonic() - self._started, 1e-6)
            self._say(
                f"scale {self._name}: {self._done:,}/{self._total:,} {self._what} ({rate:,.0f}/s)"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.scale [--cache DIR] [--rebuild] [SPEC...]``: build, or check."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Build (or check) the cached big datasets of scripts/bench --scale.",
        epilog="specs: " + "; ".join(f"{s.name}: {s.description}" for s in SPECS.values()),
    )
    parser.add_argument("specs", nargs="*", help="specs to build (default: all)")
    parser.add_argument("--cache", type=Path, default=None, help=f"default: {default_cache()}")
    parser.add_argument("--rebuild", action="store_true", help="build again even if cached")
    args = parser.parse_args(argv)
    unknown = [name for name in args.specs if name not in SPECS]
    if unknown:
        parser.error(f"unknown specs {', '.join(unknown)}; specs are {', '.join(SPECS)}")
    cache = args.cache or default_cache()
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[scale {time.monotonic() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    summary = []
    for name in args.specs or list(SPECS):
        spec = SPECS[name]
        with open_scale(cache, spec, say, rebuild=args.rebuild) as (_, data, built_now):
            state = "built now" if built_now else f"cached, built {data.built}"
            summary.append(f"{name:16s} {data.build_seconds:8.1f} s  ({state}) {spec.description}")
    print(f"build times ({cache}):")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
