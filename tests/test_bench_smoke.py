"""Smoke tests of the benchmarks' pure helpers: ratios, targets, table and JSON rendering.

No mounts, no servers: the benchmark itself is run by hand (its results go in the issue notes).
``benchmarks`` is a package at the repository's top (not shipped), imported like any other.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import report as bench
from benchmarks import scale
from benchmarks.data import sanitize_handle
from benchmarks.mounts import provenafs_options
from benchmarks.probe import WorkloadError, timed_together
from provenafs.testing import mounted_fstype

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench"


def make_results(values: dict[str, dict[str, list[float]]]) -> Any:
    """Results for rows 1-dd, 4-ttfb and 10-rss with the given values per row and column."""
    rows = [bench.ROWS_BY_ID[row_id] for row_id in ("1-dd", "4-ttfb", "10-rss")]
    results = bench.new_results(rows, bench.COLUMNS, bench.Sizes.full(), {"runs": 3})
    for row_id, columns in values.items():
        for column, runs in columns.items():
            results.cell(row_id, column).values.extend(runs)
    return results


def test_ratio_is_value_over_reference_and_none_when_missing() -> None:
    assert bench.ratio(2.0, 4.0) == 0.5
    assert bench.ratio(None, 4.0) is None
    assert bench.ratio(2.0, None) is None
    assert bench.ratio(2.0, 0.0) is None


def test_cell_median_of_successful_runs_and_reason_of_failures() -> None:
    cell = bench.Cell(values=[3.0, 1.0, 2.0], errors=["dd exited 1: Input/output error"])
    assert cell.median == 2.0
    empty = bench.Cell(errors=["mount failed"])
    assert empty.median is None
    assert empty.reason() == "mount failed"
    assert bench.Cell(note="fio not installed").reason() == "fio not installed"


def test_best_peer_is_highest_throughput_or_lowest_time() -> None:
    cells = {
        "s3fs": bench.Cell(values=[400.0]),
        "rclone-off": bench.Cell(values=[200.0]),
        "rclone-full": bench.Cell(),
        "provenafs": bench.Cell(values=[900.0]),
    }
    assert bench.best_peer(cells, True) == ("s3fs", 400.0)
    assert bench.best_peer(cells, False) == ("rclone-off", 200.0)
    assert bench.best_peer({"provenafs": bench.Cell(values=[1.0])}, True) is None


def test_checks_compare_provenafs_with_the_named_reference() -> None:
    cells = {
        "raw": bench.Cell(values=[1000.0]),
        "provenafs": bench.Cell(values=[850.0]),
        "s3fs": bench.Cell(values=[500.0]),
    }
    assert bench.evaluate_check(bench.Check("raw", ">=", 0.8), cells, True) is True
    assert bench.evaluate_check(bench.Check("s3fs", ">=", 2.0), cells, True) is False
    assert bench.evaluate_check(bench.Check("rclone-off", ">=", 1.0), cells, True) is None
    assert bench.evaluate_check(bench.Check("absolute", "<=", 900.0), cells, False) is True
    assert bench.evaluate_check(bench.Check("best-peer", "<=", 0.25), cells, False) is False


def test_every_row_title_formats_for_full_and_quick_sizes() -> None:
    for sizes in (bench.Sizes.full(), bench.Sizes.quick()):
        titles = [bench.row_title(row, sizes) for row in bench.ROWS]
        assert all("{" not in title for title in titles)
    full = {row.row_id: bench.row_title(row, bench.Sizes.full()) for row in bench.ROWS}
    assert full["1-dd"].startswith("512 MiB ")
    assert "1000 x 4 KiB" in full["6-cat"]
    assert "first 64 KiB of 100 x 4 MiB" in full["7-head"]
    assert "-o memory_cache_size=32M,prefetch_budget=32M" in full["11-budget"]


def test_table_shows_medians_ratios_targets_and_why_a_column_is_missing() -> None:
    results = make_results(
        {
            "1-dd": {"raw": [1000.0, 1200.0, 1100.0], "provenafs": [880.0], "s3fs": [400.0]},
            "4-ttfb": {"raw": [10.0], "provenafs": [30.0], "s3fs": [60.0]},
            "10-rss": {"provenafs": [100.0], "s3fs": [20.0]},
        }
    )
    results.unavailable["rclone-off"] = "rclone not installed"
    results.cell("4-ttfb", "rclone-full").errors.append("mount failed: exited 1")
    table = bench.render_table(results)
    lines = table.splitlines()
    assert "raw boto3" in lines[0] and "provenafs" in lines[0] and "s3fs" in lines[0]
    dd_line = next(line for line in lines if "dd bs=1M" in line)
    assert "1,100" in dd_line
    assert "0.80x" in dd_line  # 880 / 1100
    assert "2.20x (s3fs)" in dd_line  # 880 / 400
    assert ">=" not in dd_line and "≥2x s3fs ok" in dd_line and "≥0.8x raw ok" in dd_line
    ttfb_line = next(line for line in lines if "first byte" in line)
    assert "3.00x" in ttfb_line and "MISS" in ttfb_line
    assert "rclone off: n/a: rclone not installed" in lines
    assert any("rclone full: n/a: mount failed: exited 1" in line for line in lines)


def test_json_holds_runs_medians_ratios_and_reasons() -> None:
    results = make_results(
        {
            "1-dd": {"raw": [1000.0, 1100.0, 1200.0], "provenafs": [550.0, 600.0, 500.0]},
            "4-ttfb": {"raw": [10.0]},
        }
    )
    results.unavailable["s3fs"] = "s3fs not installed"
    document = json.loads(json.dumps(bench.results_to_json(results)))
    rows = {row["id"]: row for row in document["rows"]}
    dd = rows["1-dd"]
    assert dd["columns"]["raw"]["runs"] == [1000.0, 1100.0, 1200.0]
    assert dd["columns"]["raw"]["median"] == 1100.0
    assert dd["columns"]["provenafs"]["median"] == 550.0
    assert dd["ratio_vs_raw"] == 0.5
    assert dd["columns"]["s3fs"] == {"median": None, "reason": "s3fs not installed"}
    assert rows["4-ttfb"]["columns"]["provenafs"]["reason"] == "not measured"
    assert rows["10-rss"]["columns"]["raw"]["reason"] == "does not apply"
    assert document["unavailable"] == {"s3fs": "s3fs not installed"}
    assert document["context"] == {"runs": 3}


def test_parse_only_accepts_row_groups_and_refuses_unknown_ones() -> None:
    assert bench.parse_only(None) == frozenset()
    assert bench.parse_only("1, 7,10,11,12") == frozenset({"1", "7", "10", "11", "12"})
    with pytest.raises(ValueError, match="unknown rows 13"):
        bench.parse_only("1,13")


def test_fetched_bytes_from_status_takes_the_largest_fetch_counter() -> None:
    status = {
        "block_cache": {"hits": 5, "bytes_fetched": 4_000_000},
        "s3": {"requests": 10, "bytes_read": 6_500_000},
        "prefetch_budget": {"max_bytes": 268_435_456, "in_use": 0},
        "inodes": {"bytes_read": 123_456_789},  # not about S3: ignored
    }
    assert bench.find_fetched_bytes(status) == 6_500_000
    assert bench.find_fetched_bytes({"block_cache": {"hits": 1}}) is None
    assert bench.find_fetched_bytes({"readers": [{"bytes_fetched": 7}]}) == 7


def test_prometheus_value_matches_name_and_labels() -> None:
    text = "\n".join(
        [
            "# TYPE SeaweedFS_s3_bucket_traffic_sent_bytes_total counter",
            'SeaweedFS_s3_bucket_traffic_sent_bytes_total{bucket="other"} 5',
            'SeaweedFS_s3_bucket_traffic_sent_bytes_total{bucket="provena"} 1.5e+07',
            "SeaweedFS_s3_bucket_traffic_sent_bytes_total_extra 9",
        ]
    )
    name = "SeaweedFS_s3_bucket_traffic_sent_bytes_total"
    assert bench.prometheus_value(text, name, {"bucket": "provena"}) == 15_000_000.0
    assert bench.prometheus_value(text, name, {"bucket": "missing"}) is None


def test_helpers_for_names_and_numbers() -> None:
    assert sanitize_handle("10378.1/1932274") == "10378-1-1932274"
    assert bench.size_text(512 * bench.MIB) == "512 MiB"
    assert bench.size_text(4 * bench.KIB) == "4 KiB"
    assert bench.format_value(None) == "n/a"
    assert bench.format_value(24500.4) == "24,500"
    assert bench.format_value(0.1234) == "0.123"
    assert bench.format_ratio(0.5) == "0.50x"


def test_mountinfo_lookup_finds_no_mount_at_an_unmounted_directory(tmp_path: Path) -> None:
    assert mounted_fstype(tmp_path) is None


def test_unknown_row_is_a_usage_error_before_anything_starts() -> None:
    done = subprocess.run(
        [str(SCRIPT), "--only", "42", "--no-peers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown rows 42" in done.stderr


def test_fetched_bytes_prefer_the_server_counter_then_a_plausible_status() -> None:
    mib = bench.MIB
    value, note = bench.choose_fetched_bytes(metrics=8.0 * mib, status=2.0 * mib, read=1.0 * mib)
    assert value == 8.0 * mib
    assert "SeaweedFS" in note and "2.0 MiB" in note
    value, note = bench.choose_fetched_bytes(metrics=None, status=2.0 * mib, read=1.0 * mib)
    assert value == 2.0 * mib and "status.json" in note
    value, note = bench.choose_fetched_bytes(metrics=None, status=0.0, read=1.0 * mib)
    assert value is None and "less than the 1.00 MiB read" in note
    value, note = bench.choose_fetched_bytes(metrics=None, status=None, read=1.0 * mib)
    assert value is None and "metricsPort" in note


def test_budget_row_compares_peak_rss_with_budget_plus_idle_rss() -> None:
    mib = bench.MIB
    budget = bench.BUDGET_MEMORY_CACHE + bench.BUDGET_PREFETCH
    assert budget == 64 * mib
    assert bench.budget_ratio(140 * mib, 60 * mib, budget) == pytest.approx(140 / 124)
    rows = [bench.ROWS_BY_ID[row_id] for row_id in ("11-budget", "11-ratio")]
    assert all(row.columns == (bench.PROVENAFS,) for row in rows)
    for peak, verdict in ((134.0, "≤1.1 ok"), (140.0, "≤1.1 MISS")):
        results = bench.new_results(rows, bench.COLUMNS, bench.Sizes.full(), {})
        results.cell("11-budget", "provenafs").values.append(peak)
        ratio = bench.budget_ratio(peak * mib, 60 * mib, budget)
        results.cell("11-ratio", "provenafs").values.append(ratio)
        table = bench.render_table(results)
        ratio_line = next(line for line in table.splitlines() if "idle mount" in line)
        assert verdict in ratio_line
        document = bench.results_to_json(results)
        target = document["rows"][1]["targets"][0]
        assert target == {"target": "≤1.1", "met": verdict.endswith("ok")}


def test_budget_options_go_to_provenafs_mounts_only() -> None:
    options = provenafs_options(bench.PROVENAFS, bench.BUDGET_OPTIONS)
    assert options is not None
    assert options.split(",") == list(bench.BUDGET_OPTIONS)
    assert provenafs_options(bench.PROVENAFS, ()) is None  # default settings: no -o at all
    assert provenafs_options(bench.S3FS, ()) is None
    with pytest.raises(ValueError, match="provenafs mounts only"):
        provenafs_options(bench.S3FS, bench.BUDGET_OPTIONS)


def test_readers_run_together_and_a_failing_one_is_reported(tmp_path: Path) -> None:
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    for path in files:
        path.write_bytes(b"x" * 100_000)
    assert timed_together(files) >= 0.0
    with pytest.raises(WorkloadError, match="dd exited 1"):
        timed_together([files[0], tmp_path / "missing.bin"])


def test_scale_rows_need_scale_and_have_titles() -> None:
    assert bench.parse_only("s1", scale=True) == frozenset({"s1"})
    with pytest.raises(ValueError, match="rows s1 need --scale"):
        bench.parse_only("1,s1")
    for row in bench.SCALE_ROWS:
        assert row.group.startswith("s")
        assert "{" not in bench.row_title(row, bench.Sizes.quick())
        assert bench.ROWS_BY_ID[row.row_id] is row


def test_scale_specs_name_their_keys_and_bodies() -> None:
    spec = scale.SPECS["objects-10k"]
    assert (spec.objects, spec.folders) == (10_000, 100)
    assert spec.key(0) == "d0000/0000000.bin"
    assert spec.key(99) == "d0000/0000099.bin"
    assert spec.key(100) == "d0001/0000100.bin"
    assert spec.key(9999) == "d0099/0009999.bin"
    assert spec.body(4242) == b"d0042/0004242.bin\n"
    one_folder = scale.SPECS["folder-200k"]
    assert {one_folder.key(i).split("/")[0] for i in (0, 199_999)} == {"d0000"}
    sized = scale.SPECS["files-1000x64k"]
    assert len(sized.body(3)) == 64 * bench.KIB
    assert scale.SPECS["prefix-2000"].datasets == 2000
    assert scale.SPECS["objects-1m"].key(999_999) == "d0999/0999999.bin"


def test_scale_manifest_is_reused_only_for_the_same_complete_spec(tmp_path: Path) -> None:
    spec = scale.SPECS["objects-10k"]
    root = scale.spec_dir(tmp_path, spec)
    assert root == tmp_path / "scale-objects-10k"
    root.mkdir()
    assert scale.load_manifest(root, spec) is None  # no manifest: an unfinished build
    data = scale.ScaleData(
        spec,
        "alice",
        (scale.ScaleDataset("10378.1/7", "datasets/10378-1-7/"),),
        "2026-12-04T00:00:00+00:00",
        12.5,
    )
    scale.write_manifest(root, data)
    assert scale.load_manifest(root, spec) == data
    assert data.handle_prefix == "10378.1"
    assert data.s3_parent == "datasets/10378-1-7/"
    assert scale.load_manifest(root, scale.SPECS["objects-100k"]) is None  # another spec
    document = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**document, "format": 0}))
    assert scale.load_manifest(root, spec) is None  # an older builder's output
    (root / "manifest.json").write_text("{")
    assert scale.load_manifest(root, spec) is None
    prefix_spec = scale.SPECS["prefix-2000"]
    two = dataclasses.replace(data, spec=prefix_spec)
    scale.write_manifest(root, two)
    assert scale.load_manifest(root, prefix_spec) is None  # 1 dataset recorded, 2,000 wanted


def test_the_catalog_spec_gives_its_datasets_keywords_for_the_facet_row() -> None:
    catalog = scale.SPECS["catalog-1000"]
    assert catalog.datasets == 1000
    assert catalog.keywords_of(13) == ["topic3"]
    assert scale.SPECS["prefix-2000"].keywords_of(13) is None
    assert {row.row_id for row in bench.SCALE_ROWS if row.group == "s2"} == {
        "s2-search",
        "s2-facet",
    }
