"""The scale rows of issue 13 beyond s1: big prefixes, walks, big folders, small files, deep reads.

Each group of rows (``WALK_ROW_SPECS``) runs over one cached spec of ``benchmarks.scale`` on its
own store: ``ls``/``ls -l`` of a prefix of 10,000 datasets and of ``by-name/`` (raw: the data
store's list walk), ``find``/``ls -lR``/``du -s`` of 10,000 to 1,000,000 objects with the warm
re-walk, its S3 requests and the daemon's peak RSS (raw: a LIST of every key), ``ls -f`` and
``ls -l`` of one folder of 20,000 or 200,000 objects, ``xargs -P 8 cat`` of many small files
(raw: eight threads of GETs) and the first byte of a deep file on a fresh mount (raw: one GET).
Every mount is fresh and the kernel's caches are dropped before each cold measurement.

A command that runs past ``SCALE_TIMEOUT`` fails its cell, and that column is not asked again
for the same rows in later runs (a peer that lists 100,000 objects with a HEAD each would
otherwise take the bench's whole half hour). The 1,000,000-object rows run once whatever
``--runs`` says.

What it must not do: touch a mount it did not make, or print a secret.
"""

from __future__ import annotations

import concurrent.futures
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.data import MountTarget, S3Admin
from benchmarks.mounts import MountFactory, RunningMount
from benchmarks.probe import WorkloadError, run_checked, run_probe, timed
from benchmarks.report import MIB, PROVENAFS, RAW, RCLONE_OFF, Results
from benchmarks.scale import ScaleData
from benchmarks.workloads import Runner, Workload, timed_api_list
from provenafs.server.testing import LocalStoreProcess

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

SCALE_TIMEOUT = 300.0
CAT_PARALLEL = 8
DEEP_INDEX = 42_000  # d0042/0042000.bin in 100,000 objects of 100 folders
ONE_RUN_SPECS = frozenset({"objects-1m"})  # too big to walk three times in the half hour
ONE_PEER_SPECS = frozenset({"objects-1m"})  # only rclone off walks a million beside provenafs

# The spec (benchmarks.scale.SPECS) each group of rows measures.
WALK_ROW_SPECS = {
    "sx": "prefix-10000",
    "sw10k": "objects-10k",
    "sw100k": "objects-100k",
    "sw1m": "objects-1m",
    "sf20k": "folder-20k",
    "sf200k": "folder-200k",
    "sc1k": "files-1000x64k",
    "sc10k": "files-10000x4k",
    "sd": "objects-100k",
}


class ScaleWalks:
    """The workloads of the groups above over one built spec, on that spec's store."""

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
        self.admin = S3Admin.load(store.data_dir)
        self._timed_out: set[tuple[str, str]] = set()  # (column, group)
        self._runs: dict[tuple[str, str], int] = {}

    @property
    def results(self) -> Results:
        return self.runner.results

    def workloads(self) -> list[Workload]:
        """Every workload whose spec is this one (s1's ``ls`` and ``by-name`` rows included)."""
        spec = self.data.spec.name
        candidates: list[Workload] = [
            ("s1", ("s1-ls", "s1-byname"), self.guarded("s1", self.prefix_rows)),
            ("sx", ("sx-prefix", "sx-ls", "sx-byname"), self.guarded("sx", self.prefix_rows)),
        ]
        for group in ("sw10k", "sw100k", "sw1m"):
            walks = ("find",) if group == "sw1m" else ("find", "lsR", "du")  # as report.py has it
            rows = tuple(f"{group}-{r}" for r in (*walks, "warm", "rewalk", "rss"))
            candidates.append((group, rows, self.guarded(group, self.walk_rows)))
        for group in ("sf20k", "sf200k"):
            candidates.append(
                (group, (f"{group}-lsf", f"{group}-lsl"), self.guarded(group, self.folder_rows))
            )
        for group in ("sc1k", "sc10k"):
            candidates.append((group, (f"{group}-cat",), self.guarded(group, self.cat_rows)))
        candidates.append(("sd", ("sd-ttfb",), self.guarded("sd", self.deep_first_byte)))
        specs = {"s1": "prefix-2000", **WALK_ROW_SPECS}
        return [w for w in candidates if specs[w[0]] == spec]

    def guarded(
        self, group: str, measure: Callable[[str, str], dict[str, float]]
    ) -> Callable[[str], dict[str, float]]:
        """``measure(column, group)``, skipped for a column that timed out before or that
        this group leaves out (the million-object walk: rclone off only, once)."""

        def run(column: str) -> dict[str, float]:
            if (column, group) in self._timed_out:
                raise WorkloadError(f"not run: timed out after {SCALE_TIMEOUT:.0f} s before")
            spec = self.data.spec.name
            if spec in ONE_PEER_SPECS and column not in (RAW, PROVENAFS, RCLONE_OFF):
                return {}
            done = self._runs.get((column, group), 0)
            if spec in ONE_RUN_SPECS and done >= 1:
                return {}
            try:
                values = measure(column, group)
            except WorkloadError as exc:
                if "timed out" in str(exc):
                    self._timed_out.add((column, group))
                raise
            self._runs[(column, group)] = done + 1
            return values

        return run

    # -- helpers --------------------------------------------------------------------------------

    def client(self) -> S3Client:
        return self.admin.client()

    def dataset_target(self) -> MountTarget:
        dataset = self.data.datasets[0]
        return MountTarget(dataset.handle, dataset.prefix)

    def mount(self, column: str, target: MountTarget) -> Any:
        assert self.mounts is not None
        return self.mounts.mount(column, target)

    def raw_list_seconds(self, prefix: str) -> tuple[float, int]:
        """Seconds to LIST every key under ``prefix`` (1,000 a page), and how many."""
        client = self.client()
        try:
            self.runner.cold()
            started = time.perf_counter()
            count = 0
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.admin.bucket, Prefix=prefix):
                count += len(page.get("Contents", []))
            return time.perf_counter() - started, count
        finally:
            client.close()

    def s3_requests(self, mount: RunningMount) -> int:
        text = run_checked(["cat", str(mount.mountpoint / ".provenafs" / "status.json")], 30)
        return int(json.loads(text)["s3"]["requests"])

    # -- prefixes (s1, sx) ----------------------------------------------------------------------

    def prefix_rows(self, column: str, group: str) -> dict[str, float]:
        """``ls -l`` and ``ls`` of the handle prefix and ``ls -l by-name/``, each on a fresh
        mount (peers: of the S3 folder holding every dataset's folder)."""
        datasets = self.data.datasets
        if column == RAW:
            seconds = timed_api_list(self.store, self.data.user, len(datasets))
            rows = ("prefix", "ls", "byname") if group == "sx" else ("ls", "byname")
            return {f"{group}-{row}": seconds for row in rows}
        if column == PROVENAFS:
            expected = {dataset.handle.split("/", 1)[1] for dataset in datasets}
        else:
            expected = {dataset.prefix.rstrip("/").rsplit("/", 1)[-1] for dataset in datasets}
        target = MountTarget(self.data.handle_prefix, self.data.s3_parent)
        values: dict[str, float] = {}
        commands = [("ls", ["ls"])]
        if group == "sx":
            commands.insert(0, ("prefix", ["ls", "-l"]))
        for row, argv in commands:
            with self.mount(column, target) as mount:
                self.runner.cold()
                values[f"{group}-{row}"] = timed([*argv, str(mount.dataset_root)], SCALE_TIMEOUT)
                listed = set(run_checked(["ls", str(mount.dataset_root)], SCALE_TIMEOUT).split())
            missing = expected - listed
            if missing:
                raise WorkloadError(f"ls missed {len(missing)} of {len(expected)} datasets")
        if column == PROVENAFS:
            by_name = MountTarget("by-name", self.data.s3_parent)
            with self.mount(column, by_name) as mount:
                self.runner.cold()
                values[f"{group}-byname"] = timed(["ls", "-l", str(mount.dataset_root)])
                named = run_checked(["ls", str(mount.dataset_root)], SCALE_TIMEOUT).splitlines()
            if len(named) < len(datasets):
                raise WorkloadError(f"by-name/ listed {len(named)} of {len(datasets)}")
        return values

    # -- walks (sw10k, sw100k, sw1m) ------------------------------------------------------------

    def walk_rows(self, column: str, group: str) -> dict[str, float]:
        """``find`` cold then warm (with the S3 requests of the warm one), ``ls -lR`` and
        ``du -s`` cold, each on a fresh mount; the peak RSS over those mounts."""
        spec = self.data.spec
        # find prints the root, the folders and the objects (and what the data store put beside
        # them at mint, such as its metadata file: hence "at least")
        entries = spec.objects + spec.folders + 1
        if column == RAW:
            seconds, count = self.raw_list_seconds(self.data.datasets[0].prefix)
            if count < spec.objects:
                raise WorkloadError(f"LIST found {count} of {spec.objects} keys")
            rows = ("find",) if group == "sw1m" else ("find", "lsR", "du")
            return {f"{group}-{row}": seconds for row in rows}
        values: dict[str, float] = {}
        peak = 0
        with self.mount(column, self.dataset_target()) as mount:
            root = str(mount.dataset_root)
            self.runner.cold()
            started = time.perf_counter()
            found = run_checked(["find", root], SCALE_TIMEOUT).count("\n")
            values[f"{group}-find"] = time.perf_counter() - started
            if found < entries:
                raise WorkloadError(f"find printed {found} of {entries} entries")
            before = self.s3_requests(mount) if column == PROVENAFS else 0
            values[f"{group}-warm"] = timed(["find", root], SCALE_TIMEOUT)
            if column == PROVENAFS:
                # the status file read between them costs no S3 request
                values[f"{group}-rewalk"] = float(self.s3_requests(mount) - before)
            peak = max(peak, mount.peak_rss_bytes() or 0)
        if group != "sw1m":
            for row, argv in (("lsR", ["ls", "-lR"]), ("du", ["du", "-s"])):
                with self.mount(column, self.dataset_target()) as mount:
                    self.runner.cold()
                    values[f"{group}-{row}"] = timed(
                        [*argv, str(mount.dataset_root)], SCALE_TIMEOUT
                    )
                    peak = max(peak, mount.peak_rss_bytes() or 0)
        if peak:
            values[f"{group}-rss"] = peak / MIB
        return values

    # -- one big folder (sf20k, sf200k) ---------------------------------------------------------

    def folder_rows(self, column: str, group: str) -> dict[str, float]:
        """``ls -f`` and ``ls -l`` of the folder ``d0000/`` holding every object."""
        spec = self.data.spec
        folder = spec.key(0).split("/")[0]
        if column == RAW:
            seconds, count = self.raw_list_seconds(f"{self.data.datasets[0].prefix}{folder}/")
            if count < spec.objects:
                raise WorkloadError(f"LIST found {count} of {spec.objects} keys")
            return {f"{group}-lsf": seconds, f"{group}-lsl": seconds}
        values: dict[str, float] = {}
        for row, argv in (("lsf", ["ls", "-f"]), ("lsl", ["ls", "-l"])):
            with self.mount(column, self.dataset_target()) as mount:
                path = str(mount.dataset_root / folder)
                self.runner.cold()
                values[f"{group}-{row}"] = timed([*argv, path], SCALE_TIMEOUT)
                listed = run_checked(["ls", "-f", path], SCALE_TIMEOUT).count("\n")
            if listed < spec.objects:
                raise WorkloadError(f"ls -f listed {listed} of {spec.objects} objects")
        return values

    # -- many small files (sc1k, sc10k) ---------------------------------------------------------

    def cat_rows(self, column: str, group: str) -> dict[str, float]:
        """``xargs -P 8 cat`` of every file (the paths written out before the clock starts)."""
        spec = self.data.spec
        keys = [spec.key(index) for index in range(spec.objects)]
        prefix = self.data.datasets[0].prefix
        if column == RAW:
            client = self.client()
            try:
                self.runner.cold()
                started = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(CAT_PARALLEL) as pool:
                    sizes = list(
                        pool.map(
                            lambda key: len(
                                client.get_object(Bucket=self.admin.bucket, Key=prefix + key)[
                                    "Body"
                                ].read()
                            ),
                            keys,
                        )
                    )
                elapsed = time.perf_counter() - started
            finally:
                client.close()
            if sum(sizes) != spec.objects * spec.object_size:
                raise WorkloadError(f"GETs read {sum(sizes)} bytes")
            return {f"{group}-cat": elapsed}
        with tempfile.TemporaryDirectory(prefix="provenafs-bench-cat-") as scratch:
            paths = Path(scratch) / "paths"
            with self.mount(column, self.dataset_target()) as mount:
                paths.write_text("".join(f"{mount.dataset_root / key}\n" for key in keys))
                self.runner.cold()
                argv = ["xargs", "-a", str(paths), "-P", str(CAT_PARALLEL), "-n", "32", "cat"]
                elapsed = timed(argv, SCALE_TIMEOUT)
        return {f"{group}-cat": elapsed}

    # -- a deep first byte (sd) -----------------------------------------------------------------

    def deep_first_byte(self, column: str, group: str) -> dict[str, float]:
        """Open and read one byte of ``d0042/0042000.bin`` on a fresh mount (raw: one GET on a
        warm connection)."""
        key = self.data.spec.key(DEEP_INDEX)
        if column == RAW:
            client = self.client()
            try:
                full = self.data.datasets[0].prefix + key
                client.head_object(Bucket=self.admin.bucket, Key=full)  # a warm connection
                self.runner.cold()
                started = time.perf_counter()
                body = client.get_object(Bucket=self.admin.bucket, Key=full)["Body"]
                body.read(1)
                elapsed = time.perf_counter() - started
                body.close()
            finally:
                client.close()
            return {"sd-ttfb": elapsed * 1000}
        with self.mount(column, self.dataset_target()) as mount:
            self.runner.cold()
            result = run_probe("ttfb", str(mount.dataset_root / key), timeout=SCALE_TIMEOUT)
        if result.get("bytes") != 1:
            raise WorkloadError("the first read returned no byte")
        return {"sd-ttfb": float(result["seconds"]) * 1000}
