"""The run commands' own parts: the lineage tree and Graphviz, exit codes passed through, the
access log read back."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provenafs.process.access_log import AccessLog, LoggedOpen, read_access_log
from provenafs.process.run_command import _git_version, _spawn_and_wait, lineage_dot, lineage_tree

NODES = {
    "d/new": {"id": "d/new", "name": "Results", "subtype": "DATASET"},
    "r/1": {"id": "r/1", "name": "fit", "subtype": "MODEL_RUN"},
    "d/a": {"id": "d/a", "name": "Input", "subtype": "DATASET"},
    "d/old": {"id": "d/old", "name": "Results", "subtype": "DATASET"},
}
LINKS = [
    {"source": "d/new", "target": "r/1", "type": "wasGeneratedBy"},
    {"source": "r/1", "target": "d/a", "type": "used"},
    {"source": "r/1", "target": "d/old", "type": "used"},
    {"source": "d/old", "target": "r/1", "type": "wasGeneratedBy"},  # a loop
]


def test_the_tree_follows_edges_and_marks_repeats() -> None:
    assert lineage_tree("d/new", NODES, LINKS, down=False) == [
        "d/new  Results (DATASET)",
        "└── wasGeneratedBy r/1  fit (MODEL_RUN)",
        "    ├── used d/a  Input (DATASET)",
        "    └── used d/old  Results (DATASET)",
        "        └── wasGeneratedBy r/1  fit (MODEL_RUN)  (repeated above)",
    ]
    assert lineage_tree("d/a", NODES, LINKS[:2], down=True) == [
        "d/a  Input (DATASET)",
        "└── used by r/1  fit (MODEL_RUN)",
        "    └── generated d/new  Results (DATASET)",
    ]


def test_graphviz_quotes_names_and_keeps_provs_direction() -> None:
    nodes = {**NODES, "d/a": {"id": "d/a", "name": 'A "quoted" name', "subtype": "DATASET"}}
    dot = lineage_dot("d/new", nodes, LINKS[:2])
    assert dot.startswith('digraph "lineage of d/new" {')
    assert '"d/new" [shape=box, style=bold, label="Results\\nd/new\\nDATASET"];' in dot
    assert 'label="A \\"quoted\\" name\\nd/a\\nDATASET"' in dot
    assert '"r/1" -> "d/a" [label="used"];' in dot
    assert dot.endswith("}")


def test_exit_codes_and_signals_pass_through(tmp_path: Path) -> None:
    assert _spawn_and_wait(["sh", "-c", "exit 7"], "run") == 7
    assert _spawn_and_wait(["sh", "-c", 'test "$PROVENAFS_RUN" = run-9'], "run-9") == 0
    assert _spawn_and_wait(["sh", "-c", "kill -TERM $$"], "run") == 128 + signal.SIGTERM
    assert _spawn_and_wait([str(tmp_path / "no-such-program")], "run") == 127


def test_the_access_log_is_private_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.jsonl"
    log = AccessLog(path)
    entry = LoggedOpen(1.5, 42, 1000, "cat", "10378.1/1", "a b.csv", "etag", "read", None)
    log.write(entry)
    log.close()
    with path.open("a") as file:
        file.write('{"time": 2, "pid": "torn')  # a torn last line is skipped
    assert path.stat().st_mode & 0o777 == 0o600
    assert list(read_access_log(path)) == [entry]
    assert json.loads(path.read_text().splitlines()[0])["path"] == "a b.csv"


def test_an_access_log_path_that_is_a_symlink_is_refused_and_its_target_left_alone(
    tmp_path: Path,
) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_bytes(b"theirs\n")
    target.chmod(0o644)
    link = tmp_path / "access.jsonl"
    link.symlink_to(target)
    with pytest.raises(OSError) as refused:
        AccessLog(link)
    assert refused.value.errno == errno.ELOOP
    assert target.read_bytes() == b"theirs\n"
    assert target.stat().st_mode & 0o777 == 0o644


def test_the_model_version_is_the_git_commit_and_says_when_it_is_dirty(tmp_path: Path) -> None:
    assert _git_version(tmp_path).startswith("unversioned")

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "fit.py").write_text("print(1)\n")
    git("add", "fit.py")
    git("commit", "-q", "-m", "first")
    head = git("rev-parse", "HEAD")
    assert _git_version(tmp_path) == head
    (tmp_path / "fit.py").write_text("print(2)\n")
    assert _git_version(tmp_path) == head + "+dirty"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT])
def test_hangup_and_interrupt_are_forwarded_to_the_command(tmp_path: Path, signum: int) -> None:
    """Not from a terminal, so SIGINT is forwarded too; the command's trap answers with 42."""
    ready = tmp_path / "ready"
    command = f"trap 'exit 42' HUP INT; touch {ready}; while :; do sleep 0.05; done"
    code = (
        "import sys; from provenafs.process.run_command import _spawn_and_wait; "
        f"sys.exit(_spawn_and_wait(['sh', '-c', {command!r}], 'run'))"
    )
    wrapper = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and wrapper.poll() is None
            time.sleep(0.02)
        wrapper.send_signal(signum)
        assert wrapper.wait(timeout=30) == 42
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
