"""pjdfstest, the POSIX conformance suite, run in a draft of a real mount against its expectations.

The vendored copy (``tests/posix/pjdfstest``, see its README: the helper ``pjdfstest.c`` built
by ``scripts/setup``, and the ``.t`` files of the ten directories the mount is held to) runs
as root in a fresh folder of a dataset's draft, one folder per ``.t`` file. Every assertion
that fails is expected to, by name, in ``pjdfstest-expected-failures.txt``, with its cause; the
test fails on any difference either way: an unexpected failure, or an expected failure that
now passes (then the file is out of date: regenerate it with ``PJDFSTEST_UPDATE=1``, check the
diff, and commit it). Files pjdfstest itself skips on Linux (``1..1 ok 1``) are listed too.

The mount has no ``allow_other``: pjdfstest's steps as another uid (``-u 65534``) are refused by
the kernel (``EACCES``), so the expectations do not depend on what the mount lets other local
users do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, LocalStore
from tests.e2e.writes_support import StoreApi, WritableMount, writes_fixtures

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
SUITE = HERE / "pjdfstest"
BINARY = SUITE / "pjdfstest"
EXPECTED = HERE / "pjdfstest-expected-failures.txt"
FILE_TIMEOUT = 240.0
_NAME = re.compile(r"pjdfstest_[0-9a-f]{32}")
_TAP = re.compile(r"(not ok|ok) (\d+)(.*)")

store, api, mount = writes_fixtures("pjdfstest")


def suite_files() -> list[str]:
    """Every ``.t`` file of the vendored suite, as ``dir/NN.t``, sorted."""
    return sorted(f"{path.parent.name}/{path.name}" for path in (SUITE / "tests").glob("*/*.t"))


def run_file(name: str, workdir: Path, ran: dict[str, int]) -> tuple[bool, dict[int, str]]:
    """Run one ``.t`` file in *workdir*: (skipped, failing assertion numbers to their text);
    ``ran[name]`` is how many assertions it ran."""
    workdir.mkdir()
    result = subprocess.run(
        ["/bin/sh", str(SUITE / "tests" / name)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=FILE_TIMEOUT,
        check=False,
    )
    lines = result.stdout.splitlines()
    if lines == ["1..1", "ok 1"]:
        return True, {}
    plan = next((line for line in lines if re.fullmatch(r"1\.\.\d+", line)), None)
    assert plan is not None, (
        f"{name} printed no plan: {result.stdout[-500:]} {result.stderr[-500:]}"
    )
    failures: dict[int, str] = {}
    seen = 0
    for line in lines:
        match = _TAP.match(line)
        if match is None:
            continue
        seen += 1
        if match.group(1) == "not ok" and "# TODO" not in match.group(3):  # TAP: not a failure
            failures[int(match.group(2))] = _NAME.sub("N", match.group(3).strip(" -"))
    assert seen == int(plan[3:]), f"{name}: {seen} assertions ran of {plan}"
    ran[name] = seen
    return False, failures


def cause(text: str, earlier: list[str]) -> str:
    """Why an assertion fails, from its text and the failures before it in its file."""
    if re.search(r"'(mkfifo|mknod|bind) ", text) and "got EPERM" in text:
        return "special-file: FIFOs, device nodes and sockets are EPERM"
    if "'link " in text and "got EPERM" in text:
        return "hard-link: hard links are EPERM"
    if text.startswith("tried '-u "):
        return "other-user: the mount has no allow_other, the kernel refuses other uids"
    knock_ons = {
        "special-file": "knock-on: a FIFO, device node or socket before it was refused",
        "hard-link": "knock-on: a hard link before it was refused",
        "other-user": "knock-on: an earlier step as another user was refused",
        "owner": "knock-on: an owner before it was not kept",
    }
    first = next(
        (knock_ons[e.split(":")[0]] for e in earlier if e.split(":")[0] in knock_ons), None
    )
    if first is not None and text.endswith("got ENOENT"):
        return first
    if re.search(r"uid,gid|,655\d\d|lchown|'chown ", text):
        return "owner: owners are the mount's, chown is not kept"
    return first or "unexplained"


def read_expected() -> dict[str, set[int] | None]:
    """The expectation file: per ``.t`` file its failing assertions (None: skipped)."""
    expected: dict[str, set[int] | None] = {}
    for line in EXPECTED.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, rest = line.split(" ", 1)
        if rest.startswith("skipped"):
            expected[name] = None
            continue
        numbers = expected.setdefault(name, set())
        assert numbers is not None, f"{name} is both skipped and failing"
        numbers.add(int(rest.split(" ", 1)[0]))
    return expected


def write_expected(results: dict[str, tuple[bool, dict[int, str]]]) -> None:
    lines = [
        "# pjdfstest assertions expected to fail in a draft of provenafs, with their causes.",
        "# One line per assertion: <dir/NN.t> <number> <cause>: <what pjdfstest printed>",
        "# (names generated by pjdfstest shown as N). Files pjdfstest skips on Linux: skipped.",
        "# Regenerate: PJDFSTEST_UPDATE=1 pytest tests/posix/test_pjdfstest.py (check the diff).",
    ]
    for name, (skipped, failures) in sorted(results.items()):
        if skipped:
            lines.append(f"{name} skipped")
            continue
        earlier: list[str] = []
        for number, text in sorted(failures.items()):
            why = cause(text, earlier)
            earlier.append(why)
            lines.append(f"{name} {number} {why}: {text}".rstrip(": "))
    EXPECTED.write_text("\n".join(lines) + "\n")


def pass_rates(results: dict[str, tuple[bool, dict[int, str]]], ran: dict[str, int]) -> str:
    """A Markdown table: per directory, assertions run, failed, and the share that passed."""
    rows = ["| dir | run | failed | passed |", "|---|---|---|---|"]
    totals = [0, 0]
    for directory in sorted({name.split("/")[0] for name in results}):
        names = [n for n in results if n.startswith(directory + "/") and not results[n][0]]
        run = sum(ran[n] for n in names)
        failed = sum(len(results[n][1]) for n in names)
        totals = [totals[0] + run, totals[1] + failed]
        rows.append(
            f"| {directory} | {run} | {failed} | {100 * (run - failed) / max(run, 1):.0f}% |"
        )
    run, failed = totals
    rows.append(f"| total | {run} | {failed} | {100 * (run - failed) / max(run, 1):.0f}% |")
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def pjdfstest_binary() -> Path:
    if not (BINARY.is_file() and os.access(BINARY, os.X_OK)):
        if shutil.which("gcc") is None:
            message = "pjdfstest is not built (scripts/setup builds it with gcc)"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        subprocess.run(
            ["gcc", "-D_GNU_SOURCE", "-O2", "-w", "-o", str(BINARY), str(SUITE / "pjdfstest.c")],
            check=True,
        )
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("pjdfstest needs root (CI runs as root)")
        pytest.skip("pjdfstest needs root")
    return BINARY


@pytest.fixture(scope="module")
def draft_folder(store: LocalStore, api: StoreApi, mount: WritableMount) -> Iterator[Path]:
    dataset = api.mint(files={"README.md": b"pjdfstest runs in a folder of this draft\n"})
    folder = mount.dataset_dir(dataset.handle) / "pjd"
    folder.mkdir()
    yield folder


def test_pjdfstest_in_a_draft_matches_its_expectations(
    pjdfstest_binary: Path, draft_folder: Path
) -> None:
    results: dict[str, tuple[bool, dict[int, str]]] = {}
    ran: dict[str, int] = {}
    for number, name in enumerate(suite_files()):
        workdir = draft_folder / f"{number:03d}-{name.replace('/', '-')}"
        results[name] = run_file(name, workdir, ran)
    if os.environ.get("PJDFSTEST_UPDATE") == "1":
        write_expected(results)
    if os.environ.get("PJDFSTEST_SUMMARY"):
        Path(os.environ["PJDFSTEST_SUMMARY"]).write_text(pass_rates(results, ran))
    expected = read_expected()
    problems: list[str] = []
    for name, (skipped, failures) in sorted(results.items()):
        wanted = expected.get(name, set())
        if skipped or wanted is None:
            if skipped != (wanted is None):
                problems.append(f"{name}: {'skipped' if skipped else 'ran'}, expected otherwise")
            continue
        for n in sorted(set(failures) - wanted):
            problems.append(f"{name} {n} failed unexpectedly: {failures[n]}")
        for n in sorted(wanted - set(failures)):
            problems.append(f"{name} {n} passes but is listed as failing: update the file")
    problems += [
        f"{name} is listed but was not run" for name in sorted(set(expected) - set(results))
    ]
    unexplained = [line for line in EXPECTED.read_text().splitlines() if " unexplained" in line]
    assert not problems, "\n".join(problems[:60]) + f"\n({len(problems)} differences)"
    assert not unexplained, "every expected failure needs a cause:\n" + "\n".join(unexplained)
