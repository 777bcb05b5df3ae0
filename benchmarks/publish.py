"""Publish throughput: ``provenafs commit`` of 512 MiB unchanged + 64 MiB new, beside raw boto3.

``python -m benchmarks.publish`` (scripts/bench-publish) starts its own private ``provenafs serve
--seed`` on 127.0.0.1 (``provenafs.server.testing``), mints a dataset as alice and puts 512 MiB
into it with the store's admin S3 keys, mounts it read-write (``publish_delay=0``, through
``provenafs.testing``), and then, ``--runs`` times: writes a fresh 64 MiB file into the latest
version through the mount (removing the previous run's), and times ``provenafs commit`` of it,
which copies the 512 MiB from the old version to the new one (ranged GETs, multipart PUTs) and
uploads the 64 MiB. Beside it, on the same server, raw boto3 with the admin keys:

- ``stream copy``: what publishing must do, client-side: each object read with GET and written
  with ``upload_fileobj`` (s3transfer, 8 threads), plus ``upload_file`` of the 64 MiB;
- ``server copy``: ``copy`` (CopyObject/UploadPartCopy), the bound a publisher cannot use
  (Provena has no copy across datasets: one credential set never spans two prefixes).

Medians are printed as a table and, with ``--json FILE``, stored. What it must not do: leave a
process or mount behind (everything it starts is stopped by PID, the mount unmounted with
``fusermount3 -u``), or print a secret.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.data import DataStoreApi, S3Admin
from benchmarks.mounts import fuse_available
from benchmarks.report import MIB
from provenafs.server.testing import LocalStoreProcess, start_local_store
from provenafs.testing import isolated_environment, start_mount, stop_mount

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

PROVENAFS = [sys.executable, "-m", "provenafs"]
ROWS = {
    "commit": "provenafs commit (stream copy + upload, verify)",
    "stream_copy": "raw boto3 stream copy (GET + upload_fileobj)",
    "server_copy": "raw boto3 server-side copy (not possible across datasets)",
}


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def mint(store: LocalStoreProcess, name: str) -> tuple[str, str]:
    """A new dataset of alice's with the metadata of a seeded one: (handle, S3 prefix)."""
    api = DataStoreApi(store.base_url, store.token("alice"))
    try:
        some = store.manifest()["datasets"]["reef-temperatures"]["handle"]
        collection = dict(api.fetch(some)["item"]["collection_format"])
        collection["dataset_info"] = {**collection["dataset_info"], "name": name}
        return api.mint(collection)
    finally:
        api.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-publish", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--unchanged-mib", type=int, default=512)
    parser.add_argument("--new-mib", type=int, default=64)
    parser.add_argument("--files", type=int, default=4, help="the unchanged MiB in this many files")
    parser.add_argument("--json", type=Path, help="write the results here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not fuse_available():
        print("bench-publish: needs /dev/fuse and fusermount3", file=sys.stderr)
        return 1
    scratch = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    results: dict[str, list[float]] = {key: [] for key in ROWS}
    try:
        store = start_local_store(scratch / "data", log_path=scratch / "serve.log")
        try:
            measure(store, scratch, args, results)
        finally:
            store.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report(args, results)
    return 0


def measure(
    store: LocalStoreProcess,
    scratch: Path,
    args: argparse.Namespace,
    results: dict[str, list[float]],
) -> None:
    admin = S3Admin.load(store.data_dir)
    s3, bucket = admin.client(pool=16), admin.bucket
    handle, prefix = mint(store, "publish bench")
    size = args.unchanged_mib * MIB // args.files
    for index in range(args.files):
        s3.put_object(Bucket=bucket, Key=f"{prefix}part-{index}.bin", Body=os.urandom(size))
    new_file = scratch / "new.bin"
    new_file.write_bytes(os.urandom(args.new_mib * MIB))

    # raw boto3 on the same server
    for run in range(args.runs):
        target = f"bench-copy/{run}/"

        def stream_copy(target: str = target) -> None:
            for index in range(args.files):
                body = s3.get_object(Bucket=bucket, Key=f"{prefix}part-{index}.bin")["Body"]
                s3.upload_fileobj(body, bucket, f"{target}part-{index}.bin")
            s3.upload_file(str(new_file), bucket, f"{target}new.bin")

        def server_copy(target: str = target) -> None:
            for index in range(args.files):
                source: CopySourceTypeDef = {"Bucket": bucket, "Key": f"{prefix}part-{index}.bin"}
                s3.copy(source, bucket, f"{target}server-{index}.bin")
            s3.upload_file(str(new_file), bucket, f"{target}server-new.bin")

        results["stream_copy"].append(timed(stream_copy))
        results["server_copy"].append(timed(server_copy))
    s3.close()

    # provenafs commit through a real mount
    home = scratch / "home"
    token_env = {
        "PROVENAFS_OFFLINE_TOKEN": store.token("alice", offline=True),
        "XDG_STATE_HOME": str(home / "state"),
    }
    mountpoint = scratch / "mnt"
    mount = start_mount(
        store.base_url,
        mountpoint,
        token_env=token_env,
        options="rw,publish_delay=0",
        home=home,
        log_path=scratch / "daemon.log",
    )
    env = isolated_environment(home, token_env)
    try:
        latest = handle
        previous_new: str | None = None
        for run in range(args.runs):
            directory = mountpoint / latest
            if previous_new:
                (directory / previous_new).unlink()
            previous_new = f"new-{run}.bin"
            shutil.copyfile(new_file, directory / previous_new)
            started = time.perf_counter()
            result = subprocess.run(
                [*PROVENAFS, "commit", str(directory), "-m", f"bench run {run}"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.perf_counter() - started
            if result.returncode != 0:
                raise RuntimeError(f"commit failed: {result.stderr[-2000:]}")
            latest = result.stdout.strip().splitlines()[-1]
            results["commit"].append(elapsed)
    finally:
        stop_mount(mount)


def report(args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    total_mib = args.unchanged_mib + args.new_mib
    summary = {}
    print(f"{args.unchanged_mib} MiB unchanged + {args.new_mib} MiB new, {args.runs} runs, medians")
    for key, title in ROWS.items():
        seconds = statistics.median(results[key])
        summary[key] = {"seconds": seconds, "mib_per_s": total_mib / seconds, "runs": results[key]}
        print(f"  {title:62s} {seconds:6.2f} s  {total_mib / seconds:7.1f} MiB/s")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
