"""The workloads: what each row measures, in every column, and the loop that runs them.

``Runner`` runs each chosen workload ``--runs`` times for every available column and records
values, failures (a failed run is a cell's footnote, not a crash) and unusable columns (a mount
that does not come up). ``ReadBench`` holds the workloads of rows 1-12 over the bench
datasets (``benchmarks.data``); ``ScaleBench`` the rows over the big cached datasets of
``--scale`` (``benchmarks.scale``). Raw boto3 with the admin keys is the reference column; every
access to a mount goes through a child process (``benchmarks.probe``) on a fresh mount
(``benchmarks.mounts``).

What it must not do: touch a mount it did not make, print a secret, or let one failed
measurement stop the others.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks.data import BenchData, BenchDataset, DataStoreApi, MountTarget, S3Admin, Say
from benchmarks.mounts import MountFactory, MountFailed, RunningMount
from benchmarks.probe import (
    REPO,
    WorkloadError,
    drop_kernel_caches,
    run_checked,
    run_probe,
    short_error,
    timed,
    timed_together,
)
from benchmarks.report import (
    BUDGET_MEMORY_CACHE,
    BUDGET_OPTIONS,
    BUDGET_PREFETCH,
    COLUMN_TITLES,
    KIB,
    MIB,
    PROVENAFS,
    RAW,
    ROWS_BY_ID,
    Results,
    budget_ratio,
    choose_fetched_bytes,
    find_fetched_bytes,
    prometheus_value,
)
from benchmarks.scale import ScaleData
from provenafs.server.testing import LocalStoreProcess

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

RUN_PAIRS = 5  # row 12: cats timed outside and inside a run, alternately ...
RUN_REPEATS = 3  # ... each the best of this many cats in a row (other load on the machine)

# A workload: its row group (for progress lines), the rows it fills, and the measurement of one
# column, which returns {row_id: value}.
Workload = tuple[str, tuple[str, ...], Callable[[str], dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    runs: int
    quick: bool
    only: frozenset[str]
    peers: bool
    data_dir: Path | None
    keep: bool
    json_path: Path
    provenafs: bool
    drop_caches: bool = True
    scale: bool = False
    scale_cache: Path | None = None


# ---------------------------------------------------------------------------------------------
# Raw boto3: the reference column
# ---------------------------------------------------------------------------------------------


def drain(body: Any, chunk: int = MIB) -> int:
    total = 0
    while True:
        data = body.read(chunk)
        if not data:
            return total
        total += len(data)


def raw_parallel_read(
    client: S3Client,
    bucket: str,
    key: str,
    size: int,
    *,
    parts: int = 8,
    part_size: int = 8 * MIB,
) -> int:
    """Read a whole object with `parts` concurrent ranged GETs of part_size; returns bytes."""

    def fetch(offset: int) -> int:
        end = min(size, offset + part_size) - 1
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{end}")
        return drain(response["Body"])

    with concurrent.futures.ThreadPoolExecutor(parts) as pool:
        return sum(pool.map(fetch, range(0, size, part_size)))


def raw_single_read(client: S3Client, bucket: str, key: str) -> int:
    return drain(client.get_object(Bucket=bucket, Key=key)["Body"])


# ---------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------


class Runner:
    """Runs workloads for every available column, ``options.runs`` times, into one Results."""

    def __init__(self, *, options: Options, results: Results, say: Say) -> None:
        self.options = options
        self.results = results
        self.say = say
        self.drop_allowed = options.drop_caches and drop_kernel_caches()

    def cold(self) -> None:
        """Before a cold measurement: drop the kernel's caches (S3 server's files included)."""
        if self.drop_allowed:
            drop_kernel_caches()

    def wants(self, group: str) -> bool:
        return not self.options.only or group in self.options.only

    def record(self, column: str, values: Mapping[str, float]) -> None:
        for row_id, value in values.items():
            self.results.cell(row_id, column).values.append(value)

    def record_error(self, column: str, row_ids: Sequence[str], message: str) -> None:
        for row_id in row_ids:
            self.results.cell(row_id, column).errors.append(message)

    def run(self, workloads: Sequence[Workload]) -> None:
        """Each workload with a chosen row, in every column that is available and applies."""
        for group, row_ids, workload in workloads:
            rows = [ROWS_BY_ID[r] for r in row_ids if self.wants(ROWS_BY_ID[r].group)]
            if not rows:
                continue
            for column in self.results.columns:
                if column in self.results.unavailable:
                    continue
                if not any(column in row.columns for row in rows):
                    continue
                for run in range(self.options.runs):
                    self.say(
                        f"row {group} {COLUMN_TITLES[column]}: run {run + 1}/{self.options.runs}"
                    )
                    try:
                        values = workload(column)
                    except MountFailed as exc:
                        self.results.unavailable[column] = f"mount failed: {exc}"
                        self.say(f"  {column}: mount failed: {exc}")
                        break
                    except Exception as exc:  # noqa: BLE001 - one failed run is a cell, not a crash
                        message = short_error(exc)
                        self.record_error(column, [row.row_id for row in rows], message)
                        self.say(f"  failed: {message}")
                        continue
                    wanted = {row.row_id for row in rows}
                    self.record(column, {k: v for k, v in values.items() if k in wanted})


def weed_metrics_url(store: LocalStoreProcess) -> str | None:
    """SeaweedFS's Prometheus endpoint, if the store started weed with ``-metricsPort``."""
    for pid in store.descendant_pids():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [arg.decode(errors="replace") for arg in args]
        if not any(Path(word).name == "weed" for word in words[:2]):
            continue
        for index, word in enumerate(words):
            name, _, value = word.lstrip("-").partition("=")
            if name in ("metricsPort", "s3.metricsPort"):
                port = value or (words[index + 1] if index + 1 < len(words) else "")
                if port.isdigit() and int(port) > 0:
                    return f"http://127.0.0.1:{port}/metrics"
    return None


def timed_api_list(store: LocalStoreProcess, user: str, at_least: int) -> float:
    """Seconds to walk every page of the store's dataset list as ``user`` (the raw column of
    the listing rows); a list shorter than ``at_least`` is a WorkloadError."""
    api = DataStoreApi(store.base_url, store.token(user))
    try:
        started = time.perf_counter()
        count = api.list_all()
        elapsed = time.perf_counter() - started
    finally:
        api.close()
    if count < at_least:
        raise WorkloadError(f"the API listed {count} of {at_least} datasets")
    return elapsed


# ---------------------------------------------------------------------------------------------
# Rows 1-12: reads of the bench datasets (12: inside a run)
# ---------------------------------------------------------------------------------------------


class ReadBench:
    """The workloads of rows 1-12 over the bench datasets of one local store."""

    def __init__(
        self,
        *,
        runner: Runner,
        server: LocalStoreProcess,
        admin: S3Admin,
        data: BenchData,
        mounts: MountFactory | None,
    ) -> None:
        self.runner = runner
        self.server = server
        self.admin = admin
        self.data = data
        self.mounts = mounts
        self.client = admin.client()
        self.metrics_url = weed_metrics_url(server)
        self.tmp = Path(tempfile.mkdtemp(prefix="provenafs-bench-tmp-"))

    def close(self) -> None:
        self.client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> None:
        """Every chosen row, then row 10: the peak RSS of the default-settings mounts."""
        self.runner.run(
            [
                ("1", ("1-dd", "2-warm"), self.sequential_dd),
                ("1", ("1-cp",), self.sequential_cp),
                ("1", ("1-single",), self.single_get),
                ("3", ("3-pair",), self.concurrent_pair),
                ("4", ("4-ttfb", "4-open"), self.first_byte),
                ("5", ("5-lsR",), self.list_tree),
                ("6", ("6-cat",), self.cat_small),
                ("7", ("7-head", "7-bytes"), self.heads),
                ("8", ("8-rand",), self.random_reads),
                ("9", ("9-root",), self.root_listing),
                ("11", ("11-budget", "11-ratio"), self.budget_rss),
                ("12", ("12-run",), self.run_overhead),
            ]
        )
        if self.mounts is not None:
            for column, peak in self.mounts.peak_rss.items():
                self.runner.results.cell("10-rss", column).values.append(peak / MIB)

    def s3_sent_bytes(self) -> float | None:
        if self.metrics_url is None:
            return None
        try:
            text = httpx.get(self.metrics_url, timeout=5).text
        except httpx.HTTPError:
            return None
        return prometheus_value(
            text, "SeaweedFS_s3_bucket_traffic_sent_bytes_total", {"bucket": self.admin.bucket}
        )

    def key(self, dataset: BenchDataset, name: str) -> str:
        return dataset.prefix + name

    def sequential_dd(self, column: str) -> dict[str, float]:
        size = self.data.sizes.large_file
        if column == RAW:
            self.runner.cold()
            key = self.key(self.data.large, "large.bin")
            started = time.perf_counter()
            raw_parallel_read(self.client, self.admin.bucket, key, size)
            cold = size / MIB / (time.perf_counter() - started)
            return {"1-dd": cold, "2-warm": self.tmpfs_read(key, size)}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.large.target) as mount:
            path = mount.dataset_root / "large.bin"
            self.runner.cold()
            cold = size / MIB / timed(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
            warm = size / MIB / timed(["dd", f"if={path}", "of=/dev/null", "bs=1M"])
        return {"1-dd": cold, "2-warm": warm}

    def tmpfs_read(self, key: str, size: int) -> float:
        """The warm reference: dd of the same bytes from a file in /dev/shm (already in memory)."""
        shm = Path("/dev/shm")  # noqa: S108 - tmpfs: the warm reference reads from memory
        if not shm.is_dir():
            shm = self.tmp
        fd, name = tempfile.mkstemp(prefix="provenafs-bench-", dir=str(shm))
        try:
            with os.fdopen(fd, "wb") as out:
                self.client.download_fileobj(self.admin.bucket, key, out)
            timed(["dd", f"if={name}", "of=/dev/null", "bs=1M"])
            return size / MIB / timed(["dd", f"if={name}", "of=/dev/null", "bs=1M"])
        finally:
            os.unlink(name)

    def sequential_cp(self, column: str) -> dict[str, float]:
        size = self.data.sizes.large_file
        if column == RAW:
            self.runner.cold()
            started = time.perf_counter()
            raw_parallel_read(
                self.client, self.admin.bucket, self.key(self.data.large, "large.bin"), size
            )
            return {"1-cp": size / MIB / (time.perf_counter() - started)}
        assert self.mounts is not None
        target = self.tmp / "cp-target.bin"
        try:
            with self.mounts.mount(column, self.data.large.target) as mount:
                self.runner.cold()
                elapsed = timed(["cp", str(mount.dataset_root / "large.bin"), str(target)])
        finally:
            target.unlink(missing_ok=True)
        return {"1-cp": size / MIB / elapsed}

    def single_get(self, column: str) -> dict[str, float]:
        if column != RAW:
            return {}
        self.runner.cold()
        started = time.perf_counter()
        got = raw_single_read(
            self.client, self.admin.bucket, self.key(self.data.large, "large.bin")
        )
        return {"1-single": got / MIB / (time.perf_counter() - started)}

    def concurrent_pair(self, column: str) -> dict[str, float]:
        size = self.data.sizes.pair_file
        names = ("pair-0.bin", "pair-1.bin")
        if column == RAW:
            self.runner.cold()
            keys = [self.key(self.data.large, name) for name in names]
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                jobs = [
                    pool.submit(raw_parallel_read, self.client, self.admin.bucket, key, size)
                    for key in keys
                ]
                total = sum(job.result() for job in jobs)
            return {"3-pair": total / MIB / (time.perf_counter() - started)}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.large.target) as mount:
            self.runner.cold()
            elapsed = timed_together([mount.dataset_root / name for name in names])
        return {"3-pair": 2 * size / MIB / elapsed}

    def budget_rss(self, column: str) -> dict[str, float]:
        """Peak RSS of a mount with a configured budget, against budget + its idle RSS.

        Idle means mounted, the dataset listed and 4 KiB read from the end of a file (so the
        daemon's S3 client exists); then the sequential and the two-reader workloads run.
        """
        assert self.mounts is not None
        large = self.data.large
        size = self.data.sizes.large_file
        budget = BUDGET_MEMORY_CACHE + BUDGET_PREFETCH
        with self.mounts.mount(column, large.target, extra_options=BUDGET_OPTIONS) as mount:
            run_checked(["ls", "-l", str(mount.dataset_root)], timeout=60)
            last_page = f"skip={size // (4 * KIB) - 1}"
            dd_end = ["dd", f"if={mount.dataset_root / 'large.bin'}", "of=/dev/null", "bs=4k"]
            run_checked([*dd_end, "count=1", last_page], timeout=60)
            idle = mount.memory_bytes("VmRSS")
            self.runner.cold()
            timed(["dd", f"if={mount.dataset_root / 'large.bin'}", "of=/dev/null", "bs=1M"])
            self.runner.cold()
            timed_together([mount.dataset_root / f"pair-{n}.bin" for n in (0, 1)])
            peak = mount.peak_rss_bytes()
            status = json.loads(
                run_checked(["cat", str(mount.mountpoint / ".provenafs" / "status.json")], 30)
            )
        if idle is None or peak is None:
            raise WorkloadError("the daemon's /proc/PID/status could not be read")
        cache, prefetch = status["block_cache"], status["prefetch_budget"]
        if (cache["max_bytes"], prefetch["max_bytes"]) != (BUDGET_MEMORY_CACHE, BUDGET_PREFETCH):
            raise WorkloadError(f"the mount did not take -o {','.join(BUDGET_OPTIONS)}")
        self.runner.results.cell("11-budget", column).note = (
            f"idle mount {idle / MIB:.1f} MiB + budget {budget / MIB:g} MiB; status.json peaks: "
            f"cache {cache.get('peak_bytes', 0) / MIB:.1f} MiB, "
            f"prefetch {prefetch.get('peak', 0) / MIB:.1f} MiB"
        )
        return {"11-budget": peak / MIB, "11-ratio": budget_ratio(peak, idle, budget)}

    def first_byte(self, column: str) -> dict[str, float]:
        key = self.key(self.data.large, "large.bin")
        if column == RAW:
            self.client.head_object(Bucket=self.admin.bucket, Key=key)  # a warm connection
            self.runner.cold()
            started = time.perf_counter()
            body = self.client.get_object(Bucket=self.admin.bucket, Key=key)["Body"]
            body.read(1)
            elapsed = time.perf_counter() - started
            body.close()
            return {"4-ttfb": elapsed * 1000, "4-open": elapsed * 1000}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.large.target) as mount:
            self.runner.cold()
            result = run_probe("ttfb", str(mount.dataset_root / "large.bin"))
        with self.mounts.mount(column, self.data.large.target) as mount:
            (mount.dataset_root / "large.bin").stat()  # resolves records, credentials, listings
            self.runner.cold()
            opened = run_probe("ttfb", str(mount.dataset_root / "large.bin"))
        return {
            "4-ttfb": float(result["seconds"]) * 1000,
            "4-open": float(opened["seconds"]) * 1000,
        }

    def list_tree(self, column: str) -> dict[str, float]:
        if column == RAW:
            self.runner.cold()
            started = time.perf_counter()
            paginator = self.client.get_paginator("list_objects_v2")
            count = 0
            for page in paginator.paginate(Bucket=self.admin.bucket, Prefix=self.data.small.prefix):
                count += len(page.get("Contents", []))
            return {"5-lsR": time.perf_counter() - started}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.small.target) as mount:
            self.runner.cold()
            elapsed = timed(["ls", "-lR", str(mount.dataset_root)])
            listed = run_checked(["find", str(mount.dataset_root), "-type", "f"], timeout=300)
        found = len(listed.splitlines())
        if found < len(self.data.small.files):
            raise WorkloadError(f"ls -lR saw {found} of {len(self.data.small.files)} files")
        return {"5-lsR": elapsed}

    def cat_small(self, column: str) -> dict[str, float]:
        files = [name for name in self.data.small.files if name.endswith(".bin")]
        if column == RAW:
            self.runner.cold()
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda name: raw_single_read(
                            self.client, self.admin.bucket, self.key(self.data.small, name)
                        ),
                        files,
                    )
                )
            return {"6-cat": time.perf_counter() - started}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.small.target) as mount:
            self.runner.cold()
            elapsed = timed(["cat", *(str(mount.dataset_root / name) for name in files)])
        return {"6-cat": elapsed}

    def run_overhead(self, column: str) -> dict[str, float]:
        """The cost of attributing opens to a run: ``cat`` of the small files, warm (every open
        still reaches the daemon; no read does), timed inside ``provenafs run`` over timed
        outside it, alternately, each the best of a few; the ratio of the medians."""
        if column != PROVENAFS:
            return {}
        assert self.mounts is not None
        files = [name for name in self.data.small.files if name.endswith(".bin")]
        with self.mounts.mount(column, self.data.small.target) as mount:
            paths = [str(mount.dataset_root / name) for name in files]
            repeat = str(RUN_REPEATS)
            cat = [sys.executable, "-m", "benchmarks.probe", "timed", repeat, "cat", *paths]
            run = [sys.executable, "-m", "provenafs", "run", "--mount", str(mount.mountpoint)]
            run += ["--init-template", "--dry-run", "--model-version", "bench", "--", *cat]
            for _ in range(2):
                timed(["cat", *paths])  # warm: records, listings, pages
            outside, inside = [], []
            for _ in range(RUN_PAIRS):
                outside.append(float(run_probe("timed", repeat, "cat", *paths)["seconds"]))
                answer = run_checked(run, timeout=300, cwd=REPO)
                inside.append(float(json.loads(answer.strip().splitlines()[0])["seconds"]))
        self.runner.results.cell("12-run", column).note = (
            f"{len(files)} files: median {statistics.median(inside) * 1000:.0f} ms inside a run, "
            f"{statistics.median(outside) * 1000:.0f} ms outside"
        )
        return {"12-run": statistics.median(inside) / statistics.median(outside)}

    def heads(self, column: str) -> dict[str, float]:
        head = self.data.sizes.head_bytes
        files = self.data.medium.files
        if column == RAW:
            self.runner.cold()
            before = self.s3_sent_bytes()
            started = time.perf_counter()
            for name in files:
                response = self.client.get_object(
                    Bucket=self.admin.bucket,
                    Key=self.key(self.data.medium, name),
                    Range=f"bytes=0-{head - 1}",
                )
                drain(response["Body"])
            seconds = time.perf_counter() - started
            read = float(len(files) * head)
            status_bytes: int | None = None
        else:
            assert self.mounts is not None
            with self.mounts.mount(column, self.data.medium.target) as mount:
                list_file = self.tmp / "head-paths.txt"
                list_file.write_text("\n".join(str(mount.dataset_root / n) for n in files) + "\n")
                self.runner.cold()
                before = self.s3_sent_bytes()
                result = run_probe("head", str(list_file), str(head))
                seconds, read = float(result["seconds"]), float(result["bytes"])
                status_bytes = self.status_fetched_bytes(mount) if column == PROVENAFS else None
            # read after the unmount: prefetches still in flight at the end are counted too
        after = self.s3_sent_bytes()
        fetched, note = choose_fetched_bytes(
            metrics=None if before is None or after is None else after - before,
            status=status_bytes,
            read=read,
        )
        if fetched is None and column == RAW:
            fetched, note = read, "bytes asked for (SeaweedFS metrics not exposed)"
        self.runner.results.cell("7-bytes", column).note = note
        values = {"7-head": seconds}
        if fetched is not None:
            values["7-bytes"] = fetched / MIB
        return values

    def status_fetched_bytes(self, mount: RunningMount) -> int | None:
        try:
            text = run_checked(["cat", str(mount.mountpoint / ".provenafs" / "status.json")], 30)
            return find_fetched_bytes(json.loads(text))
        except (WorkloadError, ValueError):
            return None

    def random_reads(self, column: str) -> dict[str, float]:
        if column == RAW:
            return {}
        assert self.mounts is not None
        seconds = self.data.sizes.random_seconds
        with self.mounts.mount(column, self.data.large.target) as mount:
            path = mount.dataset_root / "large.bin"
            self.runner.cold()
            if shutil.which("fio"):
                return {"8-rand": self.fio(path, seconds)}
            result = run_probe("random", str(path), str(seconds), str(4 * KIB))
            self.runner.results.cell("8-rand", column).note = "fio not installed: Python pread loop"
            return {"8-rand": float(result["iops"])}

    def fio(self, path: Path, seconds: float) -> float:
        argv = [
            "fio",
            "--name=randread",
            f"--filename={path}",
            "--readonly",
            "--rw=randread",
            "--bs=4k",
            "--ioengine=psync",
            "--time_based",
            f"--runtime={seconds:g}",
            f"--size={self.data.sizes.large_file}",
            "--invalidate=0",
            "--output-format=json",
        ]
        out = run_checked(argv, timeout=seconds + 300)
        start = out.find("{")
        report = json.loads(out[start:]) if start >= 0 else {}
        job = (report.get("jobs") or [{}])[0]
        if job.get("error"):
            raise WorkloadError(f"fio error {job['error']}")
        return float(job["read"]["iops"])

    def root_listing(self, column: str) -> dict[str, float]:
        prefix = self.data.roots[0].split("/")[0] if self.data.roots else "10378.1"
        if column == RAW:
            return {"9-root": timed_api_list(self.server, self.data.user, len(self.data.roots))}
        if column != PROVENAFS:
            return {}
        assert self.mounts is not None
        with self.mounts.mount(column, self.data.large.target) as mount:
            self.runner.cold()
            elapsed = timed(["ls", str(mount.mountpoint / prefix)])
            listed = run_checked(["ls", str(mount.mountpoint / prefix)], timeout=300).split()
        names = {handle.split("/", 1)[1] for handle in self.data.roots if "/" in handle}
        missing = names - set(listed)
        if missing:
            raise WorkloadError(f"ls missed {len(missing)} of {len(names)} root datasets")
        return {"9-root": elapsed}


# ---------------------------------------------------------------------------------------------
# Scale rows: the big cached datasets of --scale
# ---------------------------------------------------------------------------------------------

# The spec (benchmarks.scale.SPECS) each scale row group measures (issue 13's other groups:
# benchmarks.scale_walks, which imports this module; __main__ joins the two tables).
SCALE_ROW_SPECS = {"s1": "prefix-2000", "s2": "catalog-1000"}
SEARCH_QUERY = "catalog"  # every dataset of catalog-1000 is named "scale catalog-1000 ..."
SEARCH_HITS = 25  # what search/ shows at most
FACET_KEYWORD = "topic3"


class ScaleBench:
    """The scale rows over one built spec, on that spec's own store."""

    def __init__(
        self,
        *,
        runner: Runner,
        store: LocalStoreProcess,
        data: ScaleData,
        mounts: MountFactory | None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.data = data
        self.mounts = mounts

    def run(self) -> None:
        from benchmarks.scale_walks import ScaleWalks  # noqa: PLC0415 - it imports this module

        workloads: list[Workload] = [
            ("s1", ("s1-prefix",), self.prefix_listing),
            ("s2", ("s2-search",), self.search_listing),
            ("s2", ("s2-facet",), self.facet_listing),
        ]
        spec = self.data.spec.name
        walks = ScaleWalks(runner=self.runner, store=self.store, data=self.data, mounts=self.mounts)
        self.runner.run([w for w in workloads if SCALE_ROW_SPECS[w[0]] == spec] + walks.workloads())

    def prefix_listing(self, column: str) -> dict[str, float]:
        """``ls -l`` of the handle prefix (peers: of the S3 folder of every dataset), cold."""
        datasets = self.data.datasets
        if column == RAW:
            return {"s1-prefix": timed_api_list(self.store, self.data.user, len(datasets))}
        assert self.mounts is not None
        target = MountTarget(self.data.handle_prefix, self.data.s3_parent)
        with self.mounts.mount(column, target) as mount:
            self.runner.cold()
            elapsed = timed(["ls", "-l", str(mount.dataset_root)])
            listed = set(run_checked(["ls", str(mount.dataset_root)], timeout=300).split())
        if column == PROVENAFS:
            expected = {dataset.handle.split("/", 1)[1] for dataset in datasets}
        else:
            expected = {dataset.prefix.rstrip("/").rsplit("/", 1)[-1] for dataset in datasets}
        missing = expected - listed
        if missing:
            raise WorkloadError(f"ls missed {len(missing)} of {len(expected)} datasets")
        return {"s1-prefix": elapsed}

    def search_listing(self, column: str) -> dict[str, float]:
        """``ls -l search/<query>/``, cold: one search and a fetch of each hit (raw: the same
        calls a client makes, eight fetches at a time, as the mount does)."""
        if column == RAW:
            return {"s2-search": timed_api_search(self.store, self.data.user, SEARCH_QUERY)}
        assert self.mounts is not None
        target = MountTarget(f"search/{SEARCH_QUERY}", self.data.s3_parent)
        with self.mounts.mount(column, target) as mount:
            self.runner.cold()
            elapsed = timed(["ls", "-l", str(mount.dataset_root)])
            listed = run_checked(["ls", str(mount.dataset_root)]).splitlines()
        if len(listed) != SEARCH_HITS:
            raise WorkloadError(f"search/ listed {len(listed)} hits, not {SEARCH_HITS}")
        return {"s2-search": elapsed}

    def facet_listing(self, column: str) -> dict[str, float]:
        """``ls -l by-keyword/<kw>/``, cold: one walk of the dataset list (raw: the walk)."""
        expected = self.data.spec.datasets // max(1, self.data.spec.keywords)
        if column == RAW:
            seconds = timed_api_list(self.store, self.data.user, len(self.data.datasets))
            return {"s2-facet": seconds}
        assert self.mounts is not None
        target = MountTarget(f"by-keyword/{FACET_KEYWORD}", self.data.s3_parent)
        with self.mounts.mount(column, target) as mount:
            self.runner.cold()
            elapsed = timed(["ls", "-l", str(mount.dataset_root)])
            listed = run_checked(["ls", str(mount.dataset_root)]).splitlines()
        if len(listed) != expected:
            raise WorkloadError(f"by-keyword listed {len(listed)} datasets, not {expected}")
        return {"s2-facet": elapsed}


def timed_api_search(store: LocalStoreProcess, user: str, query: str) -> float:
    """Seconds for one search of datasets and a fetch of each hit (eight at a time)."""
    token = store.token(user)
    with httpx.Client(
        base_url=store.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        started = time.perf_counter()
        params = {"query": query, "subtype_filter": "DATASET", "record_limit": str(SEARCH_HITS)}
        answer = http.get("/search/entity-registry", params=params)
        if answer.status_code != 200:
            raise WorkloadError(f"search: HTTP {answer.status_code}")
        hits = [hit["id"] for hit in answer.json().get("results") or []]

        def fetch(handle: str) -> int:
            return http.get(
                "/registry/items/fetch-dataset", params={"handle_id": handle}
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(fetch, hits))
        elapsed = time.perf_counter() - started
    if len(hits) != SEARCH_HITS or set(codes) != {200}:
        raise WorkloadError(f"search: {len(hits)} hits, fetches answered {sorted(set(codes))}")
    return elapsed
