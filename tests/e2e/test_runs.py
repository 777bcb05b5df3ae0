"""``provenafs run`` end to end against the local store: attribution, publishing, registration,
lineage in the tree, and what the official client reads back (docs/SEMANTICS.md, "Runs").

One private store and one writable mount (``-o access_log=``) for the module; every test mints
its own datasets, so the tests do not see each other's versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenafs.process.access_log import read_access_log
from tests.conftest import LocalStore
from tests.e2e.runs_support import (
    RUN_OPTIONS,
    RunsApi,
    last_line,
    python_script,
    run_command,
    start_command,
    status_of,
    wait_until,
)
from tests.e2e.writes_support import (
    PROVENAFS,
    Dataset,
    WritableMount,
    private_store,
    s3_tree,
    writable_mount,
)
from tests.server.support import CLIENT_PRELUDE, client_python
from tests.users import other_user

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("runs") / "data") as private:
        yield private


@pytest.fixture(scope="module")
def api(store: LocalStore) -> RunsApi:
    return RunsApi(store)


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs-log") / "access.jsonl"


@pytest.fixture(scope="module")
def mount(
    store: LocalStore, tmp_path_factory: pytest.TempPathFactory, access_log: Path
) -> Iterator[WritableMount]:
    mountpoint = tmp_path_factory.mktemp("runs-mount") / "mnt"
    options = f"{RUN_OPTIONS},access_log={access_log}"
    with writable_mount(store, mountpoint, options=options) as writable:
        yield writable


def unique(label: str) -> str:
    return f"run test {label} {uuid.uuid4().hex[:8]}"


def mint(api: RunsApi, label: str, files: dict[str, bytes]) -> Dataset:
    return api.mint("alice", files=files, name=unique(label))


def run_id_of(api: RunsApi, model_run: str) -> str:
    run_id: str = api.model_run(model_run)["record"]["annotations"]["provenafs.run_id"]
    return run_id


def dataset_ids(datasets: list[dict[str, Any]]) -> list[str]:
    return sorted(str(d["dataset_id"]) for d in datasets)


def run_ok(mount: WritableMount, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = run_command(mount, "run", "--init-template", *args, cwd=cwd)
    assert result.returncode == 0, (
        f"provenafs run exited {result.returncode}\nstdout: {result.stdout}\n"
        f"stderr: {result.stderr}\nlog: {mount.mount.log_text()[-3000:]}"
    )
    return result


ANALYSIS = r"""
import pathlib, sys, time
mnt, a, b_prefix, b_suffix, a_name, c, gate = sys.argv[1:8]
mnt = pathlib.Path(mnt)
deadline = time.monotonic() + 60
while not pathlib.Path(gate).exists():  # the reader of D is reading
    assert time.monotonic() < deadline, "the reader of D never started"
    time.sleep(0.02)
first = (mnt / a / "data" / "a1.csv").read_bytes()
second = (mnt / "by-name" / a_name / "data" / "a2.csv").read_bytes()
third = (mnt / b_prefix / (b_suffix + "@latest") / "b.csv").read_bytes()
(mnt / c / "results").mkdir()
(mnt / c / "results" / "summary.csv").write_bytes(first + second + third)
time.sleep(0.3)  # D is read meanwhile
print("analysis done")
"""

READER = r"""
import pathlib, sys, time
path, gate, stop = map(pathlib.Path, sys.argv[1:4])
while not stop.exists():
    path.read_bytes()
    gate.touch()
    time.sleep(0.01)
"""


def test_an_analysis_is_attributed_published_registered_and_shown_as_lineage(
    api: RunsApi, mount: WritableMount, tmp_path: Path, access_log: Path
) -> None:
    a = mint(api, "A", {"data/a1.csv": b"a,1\n", "data/a2.csv": b"a,2\n", "data/a3.csv": b"x"})
    b = mint(api, "B", {"b.csv": b"b,1\n"})
    c = mint(api, "C", {"readme.txt": b"results of the analysis\n"})
    d = mint(api, "D", {"d.csv": b"d" * 4096})
    gate, stop = tmp_path / "reading-d", tmp_path / "stop"
    reader_script = python_script(tmp_path / "reader.py", READER)
    reader = subprocess.Popen(
        [*reader_script, str(mount.path / d.handle / "d.csv"), str(gate), str(stop)]
    )
    try:
        script = python_script(tmp_path / "analysis.py", ANALYSIS)
        command = [*script, str(mount.path), a.handle, b.prefix, b.suffix, a.name, c.handle]
        command.append(str(gate))
        result = run_ok(mount, "-m", "A test analysis", "--", *command, cwd=tmp_path)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    assert "analysis done" in result.stdout
    model_run = last_line(result.stdout)

    # C has exactly one new version, holding the results and the run log
    assert api.versions_after(c.handle) != []
    [c_new] = api.versions_after(c.handle)
    objects = s3_tree(api, str(api.record(c_new)["item"]["s3"]["path"]))
    assert objects["results/summary.csv"] == b"a,1\na,2\nb,1\n"
    assert objects["readme.txt"] == b"results of the analysis\n"
    run_id = run_id_of(api, model_run)
    log = json.loads(objects[f"provenance/provenafs-run-{run_id}.json"])
    assert log["run_id"] == run_id and log["exit_code"] == 0 and log["dataset"] == c.handle
    assert log["command"] == command and log["cwd"] == str(tmp_path)
    reads = {(r["handle"], r["path"]): r for r in log["read"]}
    assert set(reads) == {(a.handle, "data/a1.csv"), (a.handle, "data/a2.csv"), (b.handle, "b.csv")}
    a_objects = s3_tree(api, a.s3_prefix)
    assert reads[(a.handle, "data/a1.csv")]["etag"] == api.s3.head_object(
        Bucket=api.bucket, Key=a.s3_prefix + "data/a1.csv"
    )["ETag"].strip('"')
    assert reads[(a.handle, "data/a1.csv")]["bytes_read"] == len(a_objects["data/a1.csv"])
    written = {w["path"]: w for w in log["written"]}
    summary = hashlib.sha256(b"a,1\na,2\nb,1\n").hexdigest()
    assert written["results/summary.csv"]["sha256"] == summary
    assert written["results"]["directory"] is True

    # exactly one model run: inputs exactly A and B (not D), output C's new version
    [registered] = api.model_runs(run_id)
    assert registered["id"] == model_run
    record = registered["record"]
    assert dataset_ids(record["inputs"]) == sorted([a.handle, b.handle])
    assert dataset_ids(record["outputs"]) == [c_new]
    assert record["description"] == "A test analysis"
    assert record["associations"]["modeller_id"] == api.store.manifest()["persons"]["alice"]
    assert record["annotations"]["provenafs.exit_code"] == "0"
    assert len(api.lodge_jobs(run_id)) == 1

    # D was read during the run by a process outside it: logged, not attributed
    entries = list(read_access_log(access_log))
    started, ended = record["start_time"], record["end_time"] + 1
    d_reads = [e for e in entries if e.handle == d.handle]
    assert d_reads and all(e.run is None for e in d_reads)
    assert any(started <= e.time <= ended for e in d_reads)
    assert {(e.handle, e.path) for e in entries if e.run == run_id and e.mode == "read"} == set(
        reads
    )

    # lineage in the tree: looked up only, never listed in the prefix
    prefix_dir = mount.path / c.prefix
    listing = os.listdir(prefix_dir)
    assert not [n for n in listing if n.endswith(("@inputs", "@derived", "@runs", ".lineage.json"))]
    new_suffix = c_new.split("/", 1)[1]
    inputs_dir = prefix_dir / f"{new_suffix}@inputs"
    assert sorted(os.listdir(inputs_dir)) == sorted([a.name, b.name])
    assert os.path.realpath(inputs_dir / a.name) == str(mount.path / a.handle)
    assert os.readlink(inputs_dir / b.name) == f"../{b.suffix}"
    derived_dir = mount.path / a.prefix / f"{a.suffix}@derived"
    assert os.listdir(derived_dir) == [c.name]
    assert os.path.realpath(derived_dir / c.name) == str(mount.path / c_new)
    runs_dir = prefix_dir / f"{new_suffix}@runs"
    [run_file] = os.listdir(runs_dir)
    shown = json.loads((runs_dir / run_file).read_bytes())
    assert shown["id"] == model_run and run_file == model_run.split("/", 1)[1] + ".json"
    assert shown["record_status"] == "LODGED"
    assert os.listdir(mount.path / a.prefix / f"{a.suffix}@runs") == [run_file]
    lineage = json.loads((prefix_dir / f"{new_suffix}.lineage.json").read_bytes())
    edges = {(e["source"], e["target"], e["type"]) for e in lineage["upstream"]["links"]}
    assert {(c_new, model_run, "wasGeneratedBy"), (model_run, a.handle, "used")} <= edges
    assert (model_run, d.handle, "used") not in edges

    # provenafs lineage shows the same
    up = run_command(mount, "lineage", str(mount.path / c_new))
    assert up.returncode == 0, up.stderr
    assert f"wasGeneratedBy {model_run}" in up.stdout
    assert f"used {a.handle}  {a.name}" in up.stdout and f"used {b.handle}" in up.stdout
    assert d.handle not in up.stdout
    down = run_command(mount, "lineage", "--down", str(mount.path / a.handle))
    assert down.returncode == 0, down.stderr
    assert f"used by {model_run}" in down.stdout and f"generated {c_new}" in down.stdout
    dot = run_command(mount, "lineage", "--dot", str(mount.path / c_new))
    assert f'"{model_run}" -> "{a.handle}" [label="used"];' in dot.stdout


def test_a_failing_command_publishes_and_registers_nothing(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    c = mint(api, "failing", {"keep.txt": b"kept\n"})
    marker = uuid.uuid4().hex
    script = f"echo partial > {mount.path / c.handle / 'out.txt'}; exit 3 # {marker}"
    result = run_command(mount, "run", "--init-template", "--", "sh", "-c", script, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "drafts kept unpublished: " + c.handle in result.stderr
    [run] = [r for r in status_of(mount)["runs"] if marker in " ".join(r["command"])]
    assert run["phase"] == "failed" and run["exit_code"] == 3
    assert run["drafts_kept"] == [c.handle]
    assert api.versions_after(c.handle) == []
    assert api.model_runs(run["run_id"]) == []
    assert api.lodge_jobs(run["run_id"]) == []
    assert (mount.path / c.handle / "out.txt").read_bytes() == b"partial\n"  # the draft is kept
    assert c.handle in status_of(mount)["held_drafts"]


CONCURRENT = r"""
import pathlib, sys, time
mnt, source, target, mine, other = sys.argv[1:6]
mnt = pathlib.Path(mnt)
pathlib.Path(mine).touch()
deadline = time.monotonic() + 60
while not pathlib.Path(other).exists():  # both runs are open from here on
    assert time.monotonic() < deadline
    time.sleep(0.02)
data = (mnt / source / "in.csv").read_bytes()
(mnt / target / "out.csv").write_bytes(data.upper())
"""


def test_two_runs_at_once_are_attributed_each_to_its_own(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    sources = [mint(api, f"source {n}", {"in.csv": f"input {n}\n".encode()}) for n in (1, 2)]
    targets = [mint(api, f"target {n}", {"keep.txt": b"k"}) for n in (1, 2)]
    script = python_script(tmp_path / "concurrent.py", CONCURRENT)
    markers = [tmp_path / "started-1", tmp_path / "started-2"]
    runs = []
    for n in (0, 1):
        argv = [str(mount.path), sources[n].handle, targets[n].handle, str(markers[n])]
        argv.append(str(markers[1 - n]))
        log = tmp_path / f"run-{n}.out"
        runs.append((start_command(mount, "run", "--init-template", "--", *script, *argv,
                                   log=log, cwd=tmp_path), log))  # fmt: skip
    for process, log in runs:
        assert process.wait(timeout=240) == 0, log.read_text()
    for n, (_, log) in enumerate(runs):
        model_run = last_line(log.read_text())
        [new] = api.versions_after(targets[n].handle)
        record = api.model_run(model_run)["record"]
        assert dataset_ids(record["inputs"]) == [sources[n].handle]
        assert dataset_ids(record["outputs"]) == [new]
        objects = s3_tree(api, str(api.record(new)["item"]["s3"]["path"]))
        assert objects["out.csv"] == f"INPUT {n + 1}\n".encode()


SHARED = r"""
import pathlib, sys, time
mnt, source, target, name, mine, other = sys.argv[1:7]
mnt = pathlib.Path(mnt)
data = (mnt / source / "in.csv").read_bytes()
(mnt / target / name).write_bytes(data.upper())
pathlib.Path(mine).touch()
deadline = time.monotonic() + 60
while not pathlib.Path(other).exists():  # both runs have changed the dataset from here on
    assert time.monotonic() < deadline
    time.sleep(0.02)
"""


def test_two_runs_that_change_one_dataset_share_its_one_new_version(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    sources = [mint(api, f"shared source {n}", {"in.csv": f"input {n}\n".encode()}) for n in (1, 2)]
    target = mint(api, "shared target", {"keep.txt": b"k"})
    script = python_script(tmp_path / "shared.py", SHARED)
    markers = [tmp_path / "started-1", tmp_path / "started-2"]
    runs = []
    for n in (0, 1):
        argv = [str(mount.path), sources[n].handle, target.handle, f"out-{n + 1}.csv"]
        argv += [str(markers[n]), str(markers[1 - n])]
        log = tmp_path / f"run-{n}.out"
        runs.append((start_command(mount, "run", "--init-template", "--", *script, *argv,
                                   log=log, cwd=tmp_path), log))  # fmt: skip
    for process, log in runs:
        assert process.wait(timeout=240) == 0, log.read_text()
    [new] = api.versions_after(target.handle)
    objects = s3_tree(api, str(api.record(new)["item"]["s3"]["path"]))
    assert objects["out-1.csv"] == b"INPUT 1\n" and objects["out-2.csv"] == b"INPUT 2\n"
    run_ids = []
    for n, (_, log) in enumerate(runs):
        record = api.model_run(last_line(log.read_text()))["record"]
        assert dataset_ids(record["inputs"]) == [sources[n].handle]
        assert dataset_ids(record["outputs"]) == [new]
        run_ids.append(record["annotations"]["provenafs.run_id"])
    assert len(set(run_ids)) == 2
    assert {f"provenance/provenafs-run-{run_id}.json" for run_id in run_ids} <= set(objects)


def test_dry_run_on_failure_output_model_version_and_the_remembered_template(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    source = mint(api, "options source", {"in.csv": b"options\n"})
    tried = mint(api, "options dry", {"keep.txt": b"k"})
    changed = mint(api, "options changed", {"keep.txt": b"k"})
    named = mint(api, "options named", {"keep.txt": b"n"})
    read_source = f"cat '{mount.path / source.handle / 'in.csv'}' > /dev/null"
    # --dry-run: the command runs and is observed; the record is printed, nothing registered
    dry = run_command(
        mount, "run", "--init-template", "--dry-run", "--model-version", "v-dry", "--", "sh",
        "-c", f"{read_source}; echo dry > '{mount.path / tried.handle / 'dry.txt'}'", cwd=tmp_path,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    preview = json.loads(dry.stdout)
    assert preview["problems"] == []
    shown = preview["record"]
    assert dataset_ids(shown["inputs"]) == [source.handle]
    assert dataset_ids(shown["outputs"]) == [f"(the next version of {tried.handle})"]
    assert shown["model_version"] == "v-dry"
    dry_id = shown["annotations"]["provenafs.run_id"]
    assert api.model_runs(dry_id) == [] and api.lodge_jobs(dry_id) == []
    assert (mount.path / tried.handle / "dry.txt").read_bytes() == b"dry\n"  # an ordinary draft
    # a failing command registered all the same, with a named output and a model version, under
    # the template --init-template remembered (no template option this time)
    failed = run_command(
        mount, "run", "--on-failure", "register", "--model-version", "v7",
        "--output", str(mount.path / named.handle), "--", "sh", "-c",
        f"{read_source}; echo out > '{mount.path / changed.handle / 'out.txt'}'; exit 4",
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 4, failed.stderr
    registered = api.model_run(last_line(failed.stdout))["record"]
    [new] = api.versions_after(changed.handle)
    assert s3_tree(api, str(api.record(new)["item"]["s3"]["path"]))["out.txt"] == b"out\n"
    assert api.versions_after(named.handle) == []  # named, unchanged: an output as it is
    assert dataset_ids(registered["inputs"]) == [source.handle]
    assert dataset_ids(registered["outputs"]) == sorted([new, named.handle])
    assert registered["model_version"] == "v7"
    assert registered["annotations"]["provenafs.exit_code"] == "4"
    templates = Path(mount.env["XDG_CONFIG_HOME"]) / "provenafs" / "run-templates.json"
    remembered = json.loads(templates.read_text())
    assert registered["workflow_template_id"] in remembered.values()
    assert shown["workflow_template_id"] == registered["workflow_template_id"]


def test_lineage_follows_a_new_run_at_once_and_depth_bounds_the_walk(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    source = mint(api, "lineage source", {"in.csv": b"lineage\n"})
    target = mint(api, "lineage target", {"keep.txt": b"k"})
    derived = mount.path / source.prefix / f"{source.suffix}@derived"
    assert os.listdir(derived) == []  # looked at before the run: nothing derived yet
    copy = f"cat '{mount.path / source.handle / 'in.csv'}' > '{mount.path / target.handle / 'c'}'"
    model_run = last_line(run_ok(mount, "--", "sh", "-c", copy, cwd=tmp_path).stdout)
    [new] = api.versions_after(target.handle)
    assert os.listdir(derived) == [target.name]  # a registered run drops what was cached
    near = run_command(mount, "lineage", "--depth", "1", str(mount.path / new))
    far = run_command(mount, "lineage", "--depth", "2", str(mount.path / new))
    assert near.returncode == 0 and far.returncode == 0, near.stderr + far.stderr
    assert f"wasGeneratedBy {model_run}" in near.stdout
    assert f"used {source.handle}" not in near.stdout  # two hops away
    assert f"used {source.handle}" in far.stdout
    refused = run_command(mount, "lineage", "--depth", "11", str(mount.path / new))
    assert refused.returncode != 0 and "depth" in refused.stderr, refused.stderr


def test_a_read_through_latest_or_by_name_is_recorded_as_the_version_it_reached(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    source = mint(api, "two versions", {"in.csv": b"first\n"})
    (mount.path / source.handle / "in.csv").write_bytes(b"second\n")
    newest = mount.commit_ok(mount.path / source.handle, "a second version")
    assert newest != source.handle and api.versions_after(source.handle) == [newest]
    target = mint(api, "alias target", {"keep.txt": b"k"})
    latest = mount.path / source.prefix / f"{source.suffix}@latest" / "in.csv"
    by_name = mount.path / "by-name" / source.name / "in.csv"
    out = mount.path / target.handle / "out.csv"
    copy = f"cat '{latest}' '{by_name}' > '{out}'"
    record = api.model_run(last_line(run_ok(mount, "--", "sh", "-c", copy, cwd=tmp_path).stdout))
    assert dataset_ids(record["record"]["inputs"]) == [newest]  # not the first version
    [made] = api.versions_after(target.handle)
    assert s3_tree(api, str(api.record(made)["item"]["s3"]["path"]))["out.csv"] == b"second\n" * 2


DAEMON = r"""
import os, pathlib, sys, time
mnt, source, target, done = sys.argv[1:5]
mnt = pathlib.Path(mnt)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # a daemon: its parent exits, init adopts it
        time.sleep(0.3)
        data = (mnt / source / "in.csv").read_bytes()
        (mnt / target / "from-daemon.csv").write_bytes(data)
        pathlib.Path(done).touch()
    os._exit(0)
os.wait()
deadline = time.monotonic() + 60
while not pathlib.Path(done).exists():
    assert time.monotonic() < deadline
    time.sleep(0.02)
"""


def test_a_daemonised_child_is_still_attributed(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    source = mint(api, "daemon source", {"in.csv": b"from a daemon\n"})
    target = mint(api, "daemon target", {"keep.txt": b"k"})
    command = python_script(tmp_path / "daemon.py", DAEMON)
    argv = [str(mount.path), source.handle, target.handle, str(tmp_path / "done")]
    result = run_ok(mount, "--", *command, *argv, cwd=tmp_path)
    record = api.model_run(last_line(result.stdout))["record"]
    [new] = api.versions_after(target.handle)
    assert dataset_ids(record["inputs"]) == [source.handle]
    assert dataset_ids(record["outputs"]) == [new]


def test_the_exit_code_and_signals_pass_through(mount: WritableMount, tmp_path: Path) -> None:
    ok = run_command(mount, "run", "--init-template", "--dry-run", "--", "sh", "-c", "exit 0")
    assert ok.returncode == 0, ok.stderr
    preview = json.loads(ok.stdout)
    assert preview["problems"] == [] and preview["record"]["inputs"] == []
    missing = run_command(mount, "run", "--init-template", "--", "no-such-command-here")
    assert missing.returncode == 127
    piped = subprocess.run(  # stdin and stdout are CMD's, the model run is the last line
        [*PROVENAFS, "run", "--mount", str(mount.path), "--init-template", "--", "tr", "a-z",
         "A-Z"],
        input="through the pipe\n", env=mount.env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines()[0] == "THROUGH THE PIPE"
    assert last_line(piped.stdout).startswith("10378.1/")
    log = tmp_path / "sleeper.out"
    process = start_command(
        mount, "run", "--init-template", "--", "sh", "-c", "touch started; exec sleep 60",
        log=log, cwd=tmp_path,
    )  # fmt: skip
    wait_until((tmp_path / "started").exists, "the command to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()


@pytest.fixture
def shared_mount(store: LocalStore) -> Iterator[WritableMount]:
    """An ``allow_other`` mount at a path another Unix user can reach."""
    other_user()
    parent = Path(tempfile.mkdtemp(prefix="provenafs-runs-"))
    parent.chmod(0o755)
    try:
        with writable_mount(
            store,
            parent / "mnt",
            home=parent / "home",
            options=f"{RUN_OPTIONS},allow_other,umask=022,access_log={parent / 'access.jsonl'}",
        ) as writable:
            yield writable
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(parent)


def test_another_users_process_with_a_forged_run_id_is_not_attributed(
    api: RunsApi, shared_mount: WritableMount, tmp_path: Path
) -> None:
    """Inside the run's own process tree, with PROVENAFS_RUN in its environment, a process of
    another Unix user still never joins the run: attribution needs the run's uid."""
    mine = mint(api, "mine", {"in.csv": b"mine\n"})
    theirs = mint(api, "theirs", {"in.csv": b"theirs\n"})
    user = other_user()
    copy = tmp_path / "copy"
    script = (
        f"cat {shared_mount.path / mine.handle / 'in.csv'} > /dev/null && "
        f"runuser -u {user.name} -- env -i PATH=/usr/bin:/bin PROVENAFS_RUN=$PROVENAFS_RUN "
        f"cat {shared_mount.path / theirs.handle / 'in.csv'} > {copy}"
    )
    result = run_ok(shared_mount, "--", "sh", "-c", script, cwd=tmp_path)
    assert copy.read_bytes() == b"theirs\n"  # the other user did read it, through the mount
    model_run = last_line(result.stdout)
    record = api.model_run(model_run)["record"]
    assert dataset_ids(record["inputs"]) == [mine.handle]
    run_id = record["annotations"]["provenafs.run_id"]
    entries = list(read_access_log(shared_mount.home.parent / "access.jsonl"))
    [forged] = [e for e in entries if e.handle == theirs.handle]
    assert (forged.uid, forged.run) == (user.uid, None)
    assert [e.run for e in entries if e.handle == mine.handle] == [run_id]


def test_a_slice_of_the_access_log_is_recorded_as_a_run(
    api: RunsApi, mount: WritableMount, tmp_path: Path
) -> None:
    source = mint(api, "recorded source", {"in.csv": b"scheduled job input\n"})
    output = mint(api, "recorded output", {"out.csv": b"made elsewhere\n"})
    since = time.time() - 1
    subprocess.run(["cat", str(mount.path / source.handle / "in.csv")], check=True,
                   capture_output=True)  # fmt: skip
    result = run_command(
        mount, "record", "--since", str(since), "--comm", "cat",
        "--output", str(mount.path / output.handle), "--name", "a scheduled job", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = api.model_run(last_line(result.stdout))["record"]
    assert dataset_ids(record["inputs"]) == [source.handle]
    assert dataset_ids(record["outputs"]) == [output.handle]  # nothing published
    assert api.versions_after(output.handle) == []
    assert record["display_name"] == "a scheduled job"


def test_a_run_needs_a_workflow_template_and_says_so(mount: WritableMount, tmp_path: Path) -> None:
    result = run_command(mount, "run", "--template", "10378.1/999999999", "--", "true")
    assert result.returncode == 1
    assert "the run could not start" in result.stderr
    assert "10378.1/999999999" in result.stderr
    assert not [r for r in status_of(mount)["runs"] if r["command"] == ["true"]]


OFFICIAL_CLIENT = (
    CLIENT_PRELUDE
    + r"""
model_run, output, source = sys.argv[3:6]

async def main():
    run = await client.registry.model_run.fetch(id=model_run)
    contributing = await client.prov_api.get_contributing_datasets(starting_id=output, depth=2)
    effected = await client.prov_api.get_effected_datasets(starting_id=source, depth=2)
    record = run.item.record
    print(json.dumps({
        "record_status": run.item.record_status.value,
        "inputs": sorted(d.dataset_id for d in record.inputs),
        "outputs": sorted(d.dataset_id for d in record.outputs),
        "run_id": record.annotations["provenafs.run_id"],
        "modeller": record.associations.modeller_id,
        "contributing": sorted(n.id for n in contributing.graph.nodes
                               if n.item_subtype.value == "DATASET"),
        "effected": sorted(n.id for n in effected.graph.nodes
                           if n.item_subtype.value == "DATASET"),
    }))

asyncio.run(main())
"""
)


def test_the_official_client_reads_what_a_run_registered(
    api: RunsApi, mount: WritableMount, store: LocalStore, tmp_path: Path
) -> None:
    python = client_python()
    source = mint(api, "client source", {"in.csv": b"for the official client\n"})
    target = mint(api, "client target", {"keep.txt": b"k"})
    script = (
        f"cat {mount.path / source.handle / 'in.csv'} > {mount.path / target.handle / 'copy.csv'}"
    )
    model_run = last_line(run_ok(mount, "--", "sh", "-c", script, cwd=tmp_path).stdout)
    [new] = api.versions_after(target.handle)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    token = store.token("alice", offline=True)
    result = subprocess.run(
        [str(python), "-c", OFFICIAL_CLIENT, store.base_url, token, model_run, new, source.handle],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    answer = json.loads(last_line(result.stdout))
    assert answer["record_status"] == "LODGED"
    assert (answer["inputs"], answer["outputs"]) == ([source.handle], [new])
    assert answer["run_id"] == run_id_of(api, model_run)
    assert answer["modeller"] == store.manifest()["persons"]["alice"]
    assert source.handle in answer["contributing"] and target.handle in answer["contributing"]
    assert new in answer["effected"]


def test_in_place_a_run_pushes_into_the_dataset_itself(
    api: RunsApi, store: LocalStore, tmp_path: Path
) -> None:
    source = mint(api, "in-place source", {"in.csv": b"pushed in place\n"})
    target = mint(api, "in-place target", {"keep.txt": b"k"})
    with writable_mount(store, tmp_path / "mnt", options=f"{RUN_OPTIONS},writes=in-place") as mnt:
        script = (
            f"cat {mnt.path / source.handle / 'in.csv'} > {mnt.path / target.handle / 'out.csv'}"
        )
        model_run = last_line(run_ok(mnt, "--", "sh", "-c", script, cwd=tmp_path).stdout)
    assert api.versions_after(target.handle) == []  # no version: the dataset itself changed
    record = api.model_run(model_run)["record"]
    assert dataset_ids(record["inputs"]) == [source.handle]
    assert dataset_ids(record["outputs"]) == [target.handle]
    objects = s3_tree(api, target.s3_prefix)
    assert objects["out.csv"] == b"pushed in place\n"
    run_id = record["annotations"]["provenafs.run_id"]
    log = json.loads(objects[f"provenance/provenafs-run-{run_id}.json"])
    [written] = log["written"]
    assert written["path"] == "out.csv" and written["in_place"] is True
    assert written["sha256"] == hashlib.sha256(b"pushed in place\n").hexdigest()
