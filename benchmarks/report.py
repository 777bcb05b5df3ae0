"""The benchmark's rows, targets and results, and how they are shown: a table and a JSON document.

Pure data and pure functions (``tests/test_bench_smoke.py`` imports this module): what each row
measures and in which unit, the targets of issue 5 as checks against a reference column, medians
and ratios, the fixed-width table with its footnotes, and the JSON written beside it. It also
holds the pure parsers of measured data (a mount's status counters, Prometheus text).

What it must not do: start a process, touch a mount or the network, or read a file.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

MIB = 1 << 20
KIB = 1 << 10

RAW = "raw"
PROVENAFS = "provenafs"
S3FS = "s3fs"
RCLONE_OFF = "rclone-off"
RCLONE_FULL = "rclone-full"
COLUMNS = (RAW, PROVENAFS, S3FS, RCLONE_OFF, RCLONE_FULL)
MOUNT_COLUMNS = (PROVENAFS, S3FS, RCLONE_OFF, RCLONE_FULL)
PEERS = (S3FS, RCLONE_OFF, RCLONE_FULL)
COLUMN_TITLES = {
    RAW: "raw boto3",
    PROVENAFS: "provenafs",
    S3FS: "s3fs",
    RCLONE_OFF: "rclone off",
    RCLONE_FULL: "rclone full",
}

# Row 11: a configured memory budget, which issue 5 says is never exceeded by more than 10%.
BUDGET_MEMORY_CACHE = 32 * MIB
BUDGET_PREFETCH = 32 * MIB
BUDGET_OPTIONS = (
    f"memory_cache_size={BUDGET_MEMORY_CACHE // MIB}M",
    f"prefetch_budget={BUDGET_PREFETCH // MIB}M",
)


@dataclasses.dataclass(frozen=True)
class Check:
    """One target of issue 5: provenafs's value against a reference, e.g. ``>= 0.8 x raw``.

    ``reference`` is a column name, ``"best-peer"``, or ``"absolute"`` (``bound`` is then in the
    row's unit rather than a ratio).
    """

    reference: str
    op: str
    bound: float

    def describe(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.reference == "absolute":
            return f"{sign}{self.bound:g}"
        return f"{sign}{self.bound:g}x {self.reference}"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: what is measured, its unit, and which direction is better."""

    row_id: str
    group: str
    label: str
    unit: str
    higher_is_better: bool
    targets: tuple[Check, ...] = ()
    columns: tuple[str, ...] = COLUMNS


ROWS: tuple[Row, ...] = (
    Row(
        "1-dd",
        "1",
        "{large} seq read cold, dd bs=1M (raw: 8 x 8 MiB ranged GETs)",
        "MiB/s",
        True,
        (Check(S3FS, ">=", 2.0), Check(RAW, ">=", 0.8)),
    ),
    Row(
        "1-cp",
        "1",
        "{large} seq read cold, cp to a tmp file (raw: 8 x 8 MiB GETs)",
        "MiB/s",
        True,
        (Check(S3FS, ">=", 2.0), Check(RAW, ">=", 0.8)),
    ),
    Row("1-single", "1", "{large} seq read cold, one GET", "MiB/s", True, (), (RAW,)),
    Row(
        "2-warm",
        "2",
        "same file warm re-read, dd (raw: from tmpfs)",
        "MiB/s",
        True,
        (Check(RAW, ">=", 0.5),),
    ),
    Row(
        "3-pair",
        "3",
        "2 concurrent readers of {pair} files, aggregate",
        "MiB/s",
        True,
        (Check(RAW, ">=", 0.8),),
    ),
    Row(
        "4-ttfb",
        "4",
        "time to first byte of {large}, cold (raw: one GET)",
        "ms",
        False,
        (Check(RAW, "<=", 1.5),),
    ),
    Row(
        "4-open",
        "4",
        "  same, the path looked up first (stat), caches dropped, then open + read",
        "ms",
        False,
        (Check(RAW, "<=", 1.5),),
    ),
    Row(
        "5-lsR",
        "5",
        "ls -lR over {small_n} files, cold (raw: LIST)",
        "s",
        False,
        (Check(S3FS, "<=", 0.5),),
    ),
    Row(
        "6-cat",
        "6",
        "cat of {small_n} x {small_size} files, cold (raw: 8 threads)",
        "s",
        False,
        (Check(S3FS, "<=", 0.5),),
    ),
    Row(
        "7-head",
        "7",
        "first {head} of {medium_n} x {medium_size} files, cold",
        "s",
        False,
        (Check("best-peer", "<=", 0.25),),
    ),
    Row(
        "7-bytes",
        "7",
        "  bytes fetched from S3 for that (SeaweedFS's counter, all columns)",
        "MiB",
        False,
        (Check(RAW, "<=", 4.0),),
    ),
    Row(
        "8-rand",
        "8",
        "random 4 KiB reads over {large} for {seconds}",
        "IOPS",
        True,
        (Check(S3FS, ">=", 1.0),),
        MOUNT_COLUMNS,
    ),
    Row(
        "9-root",
        "9",
        "ls of a root of {roots} datasets, cold (raw: API list)",
        "s",
        False,
        (Check("absolute", "<=", 1.0),),
        (RAW, PROVENAFS),
    ),
    Row(
        "10-rss",
        "10",
        "daemon peak RSS (VmHWM) over all of the above",
        "MiB",
        False,
        (Check("absolute", "<=", 256.0),),
        MOUNT_COLUMNS,
    ),
    Row(
        "11-budget",
        "11",
        "peak RSS with -o {budget}, seq {large} then 2 readers",
        "MiB",
        False,
        (),
        (PROVENAFS,),
    ),
    Row(
        "11-ratio",
        "11",
        "  that / (budget + RSS of the idle mount)",
        "x",
        False,
        (Check("absolute", "<=", 1.1),),
        (PROVENAFS,),
    ),
    Row(
        "12-run",
        "12",
        "cat of {small_n} x {small_size} files, warm, inside provenafs run / outside",
        "x",
        False,
        (Check("absolute", "<=", 1.05),),
        (PROVENAFS,),
    ),
)


def _prefix_rows(group: str, count: str, *, with_ls_l: bool = True) -> tuple[Row, ...]:
    """``ls -l``, ``ls`` of a handle prefix of ``count`` datasets and ``ls -l by-name/``:
    at most 1.2 x the data store's own list walk (issue 13)."""
    within = (Check(RAW, "<=", 1.2),)
    rows = [
        Row(
            f"{group}-ls",
            group,
            f"  ls of that prefix of {count} datasets, cold",
            "s",
            False,
            within,
        ),
        Row(
            f"{group}-byname",
            group,
            f"  ls -l of by-name/ with {count} datasets, cold (raw: API list)",
            "s",
            False,
            within,
            (RAW, PROVENAFS),
        ),
    ]
    if with_ls_l:
        label = f"ls -l of a handle prefix of {count} datasets, cold (raw: API list)"
        rows.insert(0, Row(f"{group}-prefix", group, label, "s", False, within))
    return tuple(rows)


def _walk_rows(group: str, count: str, *, find_only: bool = False) -> tuple[Row, ...]:
    """Walks of a dataset of ``count`` objects in folders: no slower than the best peer, no S3
    request when walked again warm, peak RSS at most 256 MiB (issue 13)."""
    best = (Check("best-peer", "<=", 1.0),)
    rows = [
        Row(
            f"{group}-find", group, f"find over {count} objects, cold (raw: LIST)", "s", False, best
        )
    ]
    if not find_only:
        rows.append(
            Row(f"{group}-lsR", group, f"  ls -lR over the {count}, cold", "s", False, best)
        )
        rows.append(Row(f"{group}-du", group, f"  du -s of the {count}, cold", "s", False, best))
    rows += [
        Row(f"{group}-warm", group, "  that find again, warm", "s", False, best, MOUNT_COLUMNS),
        Row(
            f"{group}-rewalk",
            group,
            "  S3 requests of that warm find",
            "req",
            False,
            (Check("absolute", "<=", 0.0),),
            (PROVENAFS,),
        ),
        Row(
            f"{group}-rss",
            group,
            "  daemon peak RSS (VmHWM) after the walks",
            "MiB",
            False,
            (Check("absolute", "<=", 256.0),),
            MOUNT_COLUMNS,
        ),
    ]
    return tuple(rows)


def _folder_rows(group: str, count: str) -> tuple[Row, ...]:
    """``ls -f`` and ``ls -l`` of one folder of ``count`` objects: no slower than the best peer."""
    best = (Check("best-peer", "<=", 1.0),)
    return (
        Row(
            f"{group}-lsf",
            group,
            f"ls -f of one folder of {count}, cold (raw: LIST)",
            "s",
            False,
            best,
        ),
        Row(f"{group}-lsl", group, f"  ls -l of that folder of {count}, cold", "s", False, best),
    )


# Rows over the big cached datasets of ``--scale`` (``benchmarks.scale``); their groups start
# with "s" and they run only with ``--scale``.
SCALE_ROWS: tuple[Row, ...] = (
    Row(
        "s1-prefix",
        "s1",
        "ls -l of a handle prefix of 2,000 datasets, cold (raw: API list)",
        "s",
        False,
        (Check(RAW, "<=", 1.2),),
    ),
    # Issue 13: big roots, big datasets, many small files (benchmarks.scale_walks).
    *_prefix_rows("s1", "2,000", with_ls_l=False),
    *_prefix_rows("sx", "10,000"),
    *_walk_rows("sw10k", "10,000"),
    *_walk_rows("sw100k", "100,000"),
    *_walk_rows("sw1m", "1,000,000", find_only=True),
    *_folder_rows("sf20k", "20,000"),
    *_folder_rows("sf200k", "200,000"),
    Row(
        "sc1k-cat",
        "sc1k",
        "xargs -P 8 cat of 1,000 x 64 KiB files, cold (raw: 8 threads of GETs)",
        "s",
        False,
        (Check("best-peer", "<=", 1.0),),
    ),
    Row(
        "sc10k-cat",
        "sc10k",
        "xargs -P 8 cat of 10,000 x 4 KiB files, cold (raw: 8 threads of GETs)",
        "s",
        False,
        (Check("best-peer", "<=", 1.0),),
    ),
    Row(
        "sd-ttfb",
        "sd",
        "first byte of a file 2 folders deep in 100,000 objects, fresh mount (raw: one GET)",
        "ms",
        False,
        (Check("best-peer", "<=", 1.5),),
    ),
    Row(
        "s2-search",
        "s2",
        "ls -l of search/<query>/ over 1,000 datasets, 25 hits, cold (raw: search + 25 fetches)",
        "s",
        False,
        (),
        (RAW, PROVENAFS),
    ),
    Row(
        "s2-facet",
        "s2",
        "ls -l of by-keyword/<kw>/ (100 of 1,000 datasets), cold (raw: API list)",
        "s",
        False,
        (),
        (RAW, PROVENAFS),
    ),
)
ROWS_BY_ID = {row.row_id: row for row in (*ROWS, *SCALE_ROWS)}


@dataclasses.dataclass
class Cell:
    """The runs of one row in one column: values of the successful runs, reasons of the rest."""

    values: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def reason(self) -> str:
        """Why there is no value (the first error, or the note)."""
        if self.errors:
            return self.errors[0]
        return self.note or "not measured"


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def best_peer(cells: Mapping[str, Cell], higher_is_better: bool) -> tuple[str, float] | None:
    """The peer column with the best median (highest or lowest), or None if no peer has one."""
    candidates = [(name, cells[name].median) for name in PEERS if name in cells]
    present = [(name, value) for name, value in candidates if value is not None]
    if not present:
        return None
    pick = max if higher_is_better else min
    return pick(present, key=lambda item: item[1])


def reference_value(
    check: Check, cells: Mapping[str, Cell], higher_is_better: bool
) -> float | None:
    """The value a check compares provenafs against (1.0 for absolute bounds)."""
    if check.reference == "absolute":
        return 1.0
    if check.reference == "best-peer":
        best = best_peer(cells, higher_is_better)
        return None if best is None else best[1]
    cell = cells.get(check.reference)
    return None if cell is None else cell.median


def evaluate_check(check: Check, cells: Mapping[str, Cell], higher_is_better: bool) -> bool | None:
    """Whether provenafs meets the check; None when a needed value is missing."""
    mine = cells.get(PROVENAFS)
    measured = ratio(
        None if mine is None else mine.median, reference_value(check, cells, higher_is_better)
    )
    if measured is None:
        return None
    return measured >= check.bound if check.op == ">=" else measured <= check.bound


def format_value(value: float | None) -> str:
    """A median for the table: three significant figures, thousands without decimals."""
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value != 0 else "0"


def size_text(nbytes: float) -> str:
    """A byte count for a label: ``512 MiB``, ``4 KiB``, ``1.5 GiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", KIB)):
        if nbytes >= scale:
            return f"{nbytes / scale:g} {unit}"
    return f"{nbytes:g} B"


def row_title(row: Row, sizes: Sizes) -> str:
    """The row's label with the sizes of this run filled in."""
    return row.label.strip().format(
        large=size_text(sizes.large_file),
        pair=size_text(sizes.pair_file),
        small_n=sizes.small_files,
        small_size=size_text(sizes.small_file_size),
        medium_n=sizes.medium_files,
        medium_size=size_text(sizes.medium_file_size),
        head=size_text(sizes.head_bytes),
        seconds=f"{sizes.random_seconds:g} s",
        roots=sizes.root_datasets,
        budget=",".join(BUDGET_OPTIONS),
    )


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_targets(row: Row, cells: Mapping[str, Cell]) -> str:
    parts = []
    for check in row.targets:
        met = evaluate_check(check, cells, row.higher_is_better)
        verdict = "?" if met is None else ("ok" if met else "MISS")
        parts.append(f"{check.describe()} {verdict}")
    return ", ".join(parts) or "-"


def parse_only(text: str | None, *, scale: bool = False) -> frozenset[str]:
    """Row groups chosen by ``--only`` ("1,5,7" → {"1","5","7"}); empty means all.

    Raises ValueError on a group that does not exist, or on a scale group without ``scale``.
    """
    if not text:
        return frozenset()
    known = {row.group for row in ROWS}
    scale_groups = {row.group for row in SCALE_ROWS}
    chosen = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(chosen - known - scale_groups, key=lambda g: int(g) if g.isdigit() else 0)
    if unknown:
        raise ValueError(
            f"unknown rows {', '.join(unknown)}; rows are 1-12, "
            f"and with --scale {', '.join(sorted(scale_groups))}"
        )
    if not scale and chosen & scale_groups:
        raise ValueError(f"rows {', '.join(sorted(chosen & scale_groups))} need --scale")
    return chosen


def find_fetched_bytes(status: object) -> int | None:
    """Bytes fetched from S3 according to a mount's ``.provenafs/status.json``, if it says.

    The status layout belongs to the mount, so this collects every integer counter whose key
    names fetched or downloaded bytes (``bytes_fetched``, ``s3_bytes``, ``bytes_downloaded``), or
    ``bytes_read`` inside a section about S3 or the blob store, and returns the largest: counters
    kept at different layers (block cache, readers, S3 client) undercount, never overcount.
    """
    fetched = re.compile(r"(fetch|download|s3).*bytes|bytes.*(fetch|download|from_s3)")
    store_section = re.compile(r"s3|blob|store")
    found: list[int] = []

    def walk(node: object, section: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                name = str(key).lower()
                if isinstance(value, int) and not isinstance(value, bool):
                    is_store_read = name == "bytes_read" and store_section.search(section)
                    if fetched.search(name) or is_store_read:
                        found.append(value)
                else:
                    walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, section)

    walk(status, "")
    return max(found) if found else None


def prometheus_value(text: str, name: str, labels: Mapping[str, str]) -> float | None:
    """The value of the sample ``name{labels...}`` in Prometheus text format (labels: a subset)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        match = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            try:
                return float(match.group(4))
            except ValueError:
                return None
    return None


def choose_fetched_bytes(
    *, metrics: float | None, status: float | None, read: float
) -> tuple[float | None, str]:
    """Bytes fetched from S3 by one mount, from the best source available, and a note saying which.

    SeaweedFS's own counter of bytes sent for the bucket is exact and the same for every column;
    a provenafs status counter comes next, unless it is below the ``read`` bytes the workload
    read (then it misses some fetches, e.g. prefetches). Nothing else is used: a daemon's
    ``rchar`` misses ``recv`` (s3fs's libcurl) and counts cache-file reads (rclone).
    """
    if metrics is not None:
        extra = "" if status is None else f"; status.json says {status / MIB:.1f} MiB"
        return metrics, f"from SeaweedFS's bucket traffic counter{extra}"
    missing = "SeaweedFS metrics not exposed by the store (weed without -metricsPort)"
    if status is not None and status >= read:
        return status, "from .provenafs/status.json (SeaweedFS metrics not exposed)"
    if status is not None:
        return None, (
            f"status.json counts {status / MIB:.2f} MiB, less than the {read / MIB:.2f} MiB read "
            f"(its counters miss some fetches); {missing}"
        )
    return None, missing


def budget_ratio(peak_rss: float, idle_rss: float, budget: float) -> float:
    """Peak RSS over what a configured budget allows: the budget on top of the idle mount's RSS.

    Issue 5 wants this at most 1.1 (the budget never exceeded by more than 10%).
    """
    return peak_rss / (idle_rss + budget)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big the bench's data is: full size by default, small with ``--quick``."""

    large_file: int
    pair_file: int
    small_files: int
    small_file_size: int
    medium_files: int
    medium_file_size: int
    head_bytes: int
    random_seconds: float
    root_datasets: int

    @staticmethod
    def full() -> Sizes:
        return Sizes(512 * MIB, 256 * MIB, 1000, 4 * KIB, 100, 4 * MIB, 64 * KIB, 20.0, 1000)

    @staticmethod
    def quick() -> Sizes:
        return Sizes(64 * MIB, 32 * MIB, 200, 4 * KIB, 20, 4 * MIB, 64 * KIB, 3.0, 100)


@dataclasses.dataclass
class Results:
    """Everything one bench run produced: cells by row and column, plus context for the JSON."""

    rows: tuple[Row, ...]
    columns: tuple[str, ...]
    sizes: Sizes
    cells: dict[str, dict[str, Cell]]
    unavailable: dict[str, str]
    context: dict[str, Any]

    def cell(self, row_id: str, column: str) -> Cell:
        return self.cells.setdefault(row_id, {}).setdefault(column, Cell())


def new_results(
    rows: Sequence[Row], columns: Sequence[str], sizes: Sizes, context: dict[str, Any]
) -> Results:
    cells = {row.row_id: {column: Cell() for column in columns} for row in rows}
    return Results(tuple(rows), tuple(columns), sizes, cells, {}, context)


def cell_text(results: Results, row: Row, column: str) -> str:
    if column not in row.columns:
        return "n/a"
    if column in results.unavailable:
        return "n/a"
    cell = results.cells[row.row_id].get(column)
    if cell is None:
        return "n/a"
    median = cell.median
    if median is None:
        return "n/a"
    text = format_value(median)
    if cell.errors:
        text += "*"
    return text


def render_table(results: Results) -> str:
    """The rows x columns table with ratios against raw and the best peer, then the footnotes."""
    header = ["#", "workload", "unit"]
    header += [COLUMN_TITLES[c] for c in results.columns]
    header += ["pfs/raw", "pfs/best peer", "target (issue 5)"]
    lines: list[list[str]] = []
    footnotes: list[str] = []
    for row in results.rows:
        cells = results.cells[row.row_id]
        values = [cell_text(results, row, column) for column in results.columns]
        mine = cells.get(PROVENAFS)
        mine_median = None if mine is None or PROVENAFS not in row.columns else mine.median
        raw_cell = cells.get(RAW)
        vs_raw = ratio(mine_median, None if raw_cell is None else raw_cell.median)
        best = best_peer(cells, row.higher_is_better) if PROVENAFS in row.columns else None
        vs_peer = ratio(mine_median, None if best is None else best[1])
        peer_text = format_ratio(vs_peer)
        if best is not None and vs_peer is not None:
            peer_text += f" ({COLUMN_TITLES[best[0]]})"
        group = row.group if not row.label.startswith(" ") else ""
        lines.append(
            [
                group,
                row_title(row, results.sizes),
                row.unit,
                *values,
                format_ratio(vs_raw),
                peer_text,
                format_targets(row, cells),
            ]
        )
        for column in results.columns:
            if column not in row.columns or column in results.unavailable:
                continue
            cell = cells.get(column)
            if cell is None:
                continue
            if cell.median is None and (cell.errors or cell.note):
                footnotes.append(f"row {row.row_id}, {COLUMN_TITLES[column]}: n/a: {cell.reason()}")
            elif cell.errors:
                footnotes.append(
                    f"row {row.row_id}, {COLUMN_TITLES[column]}: * {len(cell.errors)} failed "
                    f"run(s): {cell.errors[0]}"
                )
            elif cell.note:
                footnotes.append(f"row {row.row_id}, {COLUMN_TITLES[column]}: {cell.note}")
    widths = [len(h) for h in header]
    for line in lines:
        widths = [max(w, len(text)) for w, text in zip(widths, line, strict=True)]

    def fmt(parts: Sequence[str]) -> str:
        out = []
        for index, (text, width) in enumerate(zip(parts, widths, strict=True)):
            numeric = 3 <= index < 3 + len(results.columns)
            out.append(text.rjust(width) if numeric else text.ljust(width))
        return "| " + " | ".join(out) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    text_lines = [fmt(header), rule, *(fmt(line) for line in lines)]
    for column, reason in results.unavailable.items():
        text_lines.append(f"{COLUMN_TITLES[column]}: n/a: {reason}")
    text_lines.extend(footnotes)
    return "\n".join(text_lines) + "\n"


def results_to_json(results: Results) -> dict[str, Any]:
    """The JSON document: context, then each row with every column's runs, median and ratios."""
    rows_out = []
    for row in results.rows:
        cells = results.cells[row.row_id]
        columns_out: dict[str, Any] = {}
        for column in results.columns:
            cell = cells.get(column)
            if column not in row.columns:
                columns_out[column] = {"median": None, "reason": "does not apply"}
            elif column in results.unavailable:
                columns_out[column] = {"median": None, "reason": results.unavailable[column]}
            elif cell is not None:
                entry: dict[str, Any] = {"median": cell.median, "runs": list(cell.values)}
                if cell.errors:
                    entry["errors"] = list(cell.errors)
                if cell.note:
                    entry["note"] = cell.note
                if cell.median is None:
                    entry["reason"] = cell.reason()
                columns_out[column] = entry
        mine = cells.get(PROVENAFS)
        mine_median = None if mine is None or PROVENAFS not in row.columns else mine.median
        raw_cell = cells.get(RAW)
        best = best_peer(cells, row.higher_is_better)
        rows_out.append(
            {
                "id": row.row_id,
                "label": row_title(row, results.sizes),
                "unit": row.unit,
                "higher_is_better": row.higher_is_better,
                "columns": columns_out,
                "ratio_vs_raw": ratio(mine_median, None if raw_cell is None else raw_cell.median),
                "best_peer": None if best is None else best[0],
                "ratio_vs_best_peer": ratio(mine_median, None if best is None else best[1]),
                "targets": [
                    {
                        "target": check.describe(),
                        "met": evaluate_check(check, cells, row.higher_is_better),
                    }
                    for check in row.targets
                ],
            }
        )
    return {
        "context": results.context,
        "unavailable": dict(results.unavailable),
        "rows": rows_out,
    }
