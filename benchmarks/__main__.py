"""``python -m benchmarks`` (scripts/bench): the read benchmark, from the command line to the table.

Parses the options, finds which columns can run here, starts a private local store
(``provenafs.server.testing``), creates or reuses the bench datasets, runs the chosen rows
(``benchmarks.workloads``), with ``--scale`` also the rows over the big cached datasets
(``benchmarks.scale``, each on its own store), and prints the table and writes the JSON, also
when something failed on the way (a failed setup is reported, and what was measured is kept).

What it must not do: leave a process, mount or scratch dir behind (everything is stopped and
removed in ``finally``, the scratch dir kept only with ``--keep``), or print a secret.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.data import S3Admin, prepare_data
from benchmarks.mounts import MountFactory, provenafs_mount_available, unavailable_columns
from benchmarks.peers import PeerConfig, find_rclone, tool_version
from benchmarks.probe import REPO
from benchmarks.report import (
    COLUMNS,
    MOUNT_COLUMNS,
    ROWS,
    SCALE_ROWS,
    Results,
    Row,
    Sizes,
    new_results,
    parse_only,
    render_table,
    results_to_json,
    row_title,
)
from benchmarks.scale import SPECS, default_cache, open_scale, spec_dir
from benchmarks.scale_walks import WALK_ROW_SPECS
from benchmarks.workloads import SCALE_ROW_SPECS, Options, ReadBench, Runner, ScaleBench
from provenafs.server.testing import LocalStoreProcess, start_local_store


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Read benchmark: provenafs beside raw boto3, s3fs-fuse and rclone mount.",
        epilog="rows: "
        + "; ".join(f"{row.group} {row_title(row, Sizes.full())}" for row in ROWS if row.group)
        + "; with --scale: "
        + "; ".join(f"{row.group} {row_title(row, Sizes.full())}" for row in SCALE_ROWS)
        + ". Peers install with scripts/bench-peers-setup.",
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per cell (default 3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast try")
    parser.add_argument("--only", default=None, help="rows to run, e.g. 1,5,7 (default all)")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also mount with s3fs and rclone where installed (default: yes)",
    )
    parser.add_argument(
        "--drop-caches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="drop kernel caches before each cold measurement, where allowed (default: yes)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse this store data dir")
    parser.add_argument("--keep", action="store_true", help="keep the scratch data dir")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also run the rows over big datasets, built once and cached (python -m "
        "benchmarks.scale builds them ahead)",
    )
    parser.add_argument(
        "--scale-cache",
        type=Path,
        default=None,
        help=f"where the big datasets are cached (default: {default_cache()})",
    )
    args = parser.parse_args(list(argv))
    try:
        only = parse_only(args.only, scale=args.scale)
    except ValueError as exc:
        parser.error(str(exc))
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = args.json or REPO / "bench-results" / f"bench-{stamp}.json"
    return Options(
        runs,
        args.quick,
        only,
        args.peers,
        args.data_dir,
        args.keep,
        json_path,
        provenafs=True,
        drop_caches=args.drop_caches,
        scale=args.scale,
        scale_cache=args.scale_cache,
    )


def machine_context(options: Options, rclone: str | None) -> dict[str, Any]:
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "runs": options.runs,
        "quick": options.quick,
        "only": sorted(options.only),
        "scale": options.scale,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "versions": {
            "s3fs": tool_version(["s3fs", "--version"]) if shutil.which("s3fs") else None,
            "rclone": tool_version([rclone, "version"]) if rclone else None,
            "fio": tool_version(["fio", "--version"]) if shutil.which("fio") else None,
            "python": sys.version.split()[0],
        },
    }


def chosen_rows(options: Options) -> tuple[list[Row], list[Row]]:
    """The read rows and the scale rows this run measures.

    The daemons' peak RSS (row 10) is recorded whenever a read row runs; with ``--only`` naming
    scale rows alone, no read row runs (and no bench datasets are made).
    """
    only = options.only
    read_groups = {row.group for row in ROWS}
    read: list[Row] = []
    if not only or only & read_groups:
        read = [row for row in ROWS if not only or row.group in {*only, "10"}]
    scale = [row for row in SCALE_ROWS if options.scale and (not only or row.group in only)]
    return read, scale


def mount_factory(
    store: LocalStoreProcess,
    user: str,
    scratch: Path,
    rclone: str | None,
    results: Results,
) -> MountFactory | None:
    """Fresh mounts of ``store`` as ``user`` (None when no mount column can run here)."""
    if not [column for column in MOUNT_COLUMNS if column not in results.unavailable]:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    return MountFactory(
        base_url=store.base_url,
        peers=PeerConfig(S3Admin.load(store.data_dir), scratch / "secrets", rclone),
        scratch=scratch,
        provenafs_token=store.token(user, offline=True),
    )


def run_read_rows(
    options: Options,
    runner: Runner,
    sizes: Sizes,
    scratch: Path,
    rclone: str | None,
) -> None:
    """Rows 1-12 on a private store (or the ``--data-dir`` one) with the bench datasets."""
    say = runner.say
    data_dir = options.data_dir or scratch / "store"
    say(f"starting provenafs serve in {data_dir}")
    seeded = (data_dir / "seed-manifest.json").exists()
    server = start_local_store(data_dir, seed=not seeded, log_path=scratch / "serve.log")
    bench: ReadBench | None = None
    try:
        admin = S3Admin.load(data_dir)
        data = prepare_data(server, admin, sizes, say)
        mounts = mount_factory(server, data.user, scratch / "read", rclone, runner.results)
        bench = ReadBench(runner=runner, server=server, admin=admin, data=data, mounts=mounts)
        runner.results.context["seaweedfs_metrics"] = bench.metrics_url is not None
        bench.run()
    except Exception:
        say(f"provenafs serve log ({server.log_path}):\n{server.log_tail()}")
        raise
    finally:
        if bench is not None:
            bench.close()
        server.stop()


def run_scale_rows(
    options: Options, runner: Runner, rows: Sequence[Row], scratch: Path, rclone: str | None
) -> None:
    """The scale rows, one cached spec (and its store) at a time; builds what is missing."""
    cache = options.scale_cache or default_cache()
    specs = {**SCALE_ROW_SPECS, **WALK_ROW_SPECS}
    names = list(dict.fromkeys(specs[row.group] for row in rows))
    built: dict[str, Any] = runner.results.context.setdefault("scale_data", {})
    for name in names:
        spec = SPECS[name]
        with open_scale(cache, spec, runner.say) as (store, data, built_now):
            built[name] = {
                "description": spec.description,
                "cache": str(spec_dir(cache, spec)),
                "built": data.built,
                "build_seconds": data.build_seconds,
                "built_now": built_now,
            }
            mounts = mount_factory(
                store, data.user, scratch / f"scale-{name}", rclone, runner.results
            )
            ScaleBench(runner=runner, store=store, data=data, mounts=mounts).run()


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[bench {time.monotonic() - started:6.0f}s] {message}", file=sys.stderr, flush=True)

    rclone = find_rclone()
    sizes = Sizes.quick() if options.quick else Sizes.full()
    if not provenafs_mount_available():
        options = dataclasses.replace(options, provenafs=False)
    read_rows, scale_rows = chosen_rows(options)
    context = machine_context(options, rclone)
    context["sizes"] = dataclasses.asdict(sizes)
    results = new_results([*read_rows, *scale_rows], COLUMNS, sizes, context)
    results.unavailable.update(
        unavailable_columns(provenafs=options.provenafs, peers=options.peers, rclone=rclone)
    )

    exit_code = 0
    scratch = Path(tempfile.mkdtemp(prefix="provenafs-bench-"))
    try:
        runner = Runner(options=options, results=results, say=say)
        context["drop_caches"] = runner.drop_allowed
        if read_rows:
            run_read_rows(options, runner, sizes, scratch, rclone)
        if scale_rows:
            run_scale_rows(options, runner, scale_rows, scratch, rclone)
    except KeyboardInterrupt:
        say("interrupted: tearing down")
        exit_code = 130
    except Exception as exc:  # noqa: BLE001 - report why, tear down, still print what was measured
        say(f"setup failed: {exc or type(exc).__name__}")
        exit_code = 1
    finally:
        if options.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    context["seconds"] = round(time.monotonic() - started, 1)
    table = render_table(results)
    print(table)
    options.json_path.parent.mkdir(parents=True, exist_ok=True)
    options.json_path.write_text(json.dumps(results_to_json(results), indent=2) + "\n")
    say(f"wrote {options.json_path}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
