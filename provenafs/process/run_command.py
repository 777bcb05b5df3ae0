"""``provenafs run``, ``provenafs record`` and ``provenafs lineage``: the commands of runs.

``provenafs run [options] -- CMD ...`` asks the mount's daemon for a run (the daemon observes
every open of a mount file by CMD's process tree), runs CMD with ``PROVENAFS_RUN`` in its
environment, passing stdin, stdout, stderr and its exit code through as ``env`` and ``time``
do (SIGTERM and SIGHUP are forwarded; SIGINT too, unless the terminal already sent it to CMD;
a CMD killed by a signal makes the exit code 128 + the signal), then asks the daemon to finish
the run: publish its outputs and register the model run, whose handle is the last line of
stdout. The exit code is CMD's when it failed; else 0 once registered, 75 (EX_TEMPFAIL) when
the registration is pending (the daemon retries; ``provenafs status`` shows it) and 1 when it
failed. ``model_version`` is ``--model-version``, or the working directory's git commit
(``+dirty`` with uncommitted changes), read before CMD starts.

``provenafs record`` turns a slice of an access log (``-o access_log=``) into a run;
``provenafs lineage PATH`` prints a dataset's lineage as a tree, or as Graphviz (``--dot``).

This module talks to the user and the daemon (``control_socket.request``); it holds no run
logic and never prints a token.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from provenafs.process import control_socket
from provenafs.process.access_log import read_access_log
from provenafs.process.attribution import RUN_ENV
from provenafs.process.mounts import FSTYPE, find_mount, mount_containing, provenafs_mounts

__all__ = ["lineage_main", "record_main", "run_lines", "run_main"]

EX_TEMPFAIL = 75
_NOT_FOUND = 127
_NOT_EXECUTABLE = 126
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_DATA_FLOW = frozenset({"DATASET", "MODEL_RUN", "VERSION", "STUDY"})


class _CommandError(Exception):
    """What stops the command; the message is for the user."""


def _error(command: str, message: str) -> None:
    print(f"provenafs {command}: {message}", file=sys.stderr, flush=True)


# -- finding the mount and datasets -----------------------------------------------------------


def _provenafs_mounts() -> list[Path]:
    return [entry.mountpoint for entry in provenafs_mounts()]


def _choose_mount(given: Path | None, argv: Sequence[str] = ()) -> Path:
    """``--mount``, else the mount holding the working directory, else the one mount the
    command's path arguments lie in, else the only mount."""
    if given is not None:
        mountpoint = Path(os.path.abspath(given))
        entry = find_mount(mountpoint)
        if entry is None or entry.fstype != FSTYPE:
            raise _CommandError(f"{given} is not a provenafs mount")
        return mountpoint
    here = mount_containing(Path(os.path.realpath(os.getcwd())))
    if here is not None:
        return here
    mounts = _provenafs_mounts()
    named = {m for m in mounts for arg in argv if _is_under(arg, m)}
    if len(named) == 1:
        return named.pop()
    if len(mounts) == 1:
        return mounts[0]
    if not mounts:
        raise _CommandError("no provenafs mount found (mount one, or give --mount)")
    raise _CommandError(
        f"several provenafs mounts ({', '.join(map(str, mounts))}): give --mount MOUNTPOINT"
    )


def _is_under(argument: str, mountpoint: Path) -> bool:
    """Whether a command argument names a path inside *mountpoint* (without touching it)."""
    if "/" not in argument:
        return False
    path = Path(os.path.abspath(argument))
    return path == mountpoint or mountpoint in path.parents


def _handle_of(path: Path, mountpoint: Path) -> str:
    """The dataset version handle of a path inside *mountpoint* (links followed)."""
    real = Path(os.path.realpath(path))
    try:
        relative = real.relative_to(mountpoint).as_posix()
    except ValueError:
        raise _CommandError(f"{path} is not inside the mount {mountpoint}") from None
    try:
        return control_socket.handle_from_path(relative)
    except ValueError as exc:
        raise _CommandError(f"{path}: {exc}") from None


def _annotations(pairs: Sequence[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise _CommandError(f"--annotation wants KEY=VALUE, got {pair!r}")
        found[key.strip()] = value
    return found


def _conversation(
    mountpoint: Path, message: Mapping[str, Any], command: str, *, timeout: float | None
) -> Iterator[dict[str, Any]]:
    """The daemon's answers to *message*; progress lines are printed to stderr."""
    for answer in control_socket.request(mountpoint, message, timeout=timeout):
        if answer.get("event") == "progress":
            print(f"provenafs {command}: {answer.get('message')}", file=sys.stderr, flush=True)
            continue
        yield answer


def _single_answer(mountpoint: Path, message: Mapping[str, Any], command: str) -> dict[str, Any]:
    for answer in _conversation(mountpoint, message, command, timeout=120.0):
        if answer.get("event") == "error":
            raise _CommandError(str(answer.get("error") or "the daemon refused"))
        return answer
    raise _CommandError("the daemon ended the conversation without an answer")


# -- provenafs run ----------------------------------------------------------------------------


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provenafs run",
        description="Run a command, record which dataset versions it read and wrote through the "
        "mount, publish what it wrote and register the run as a Provena model run.",
        usage="provenafs run [options] -- CMD [ARGS...]",
    )
    _add_record_options(parser)
    parser.add_argument(
        "--init-template",
        action="store_true",
        help="make a generic workflow template (once) and remember it for this data store",
    )
    parser.add_argument(
        "--on-failure",
        choices=("keep", "register"),
        default="keep",
        help="a failing command keeps its drafts unpublished and registers nothing (keep, the "
        "default), or is published and registered all the same (register)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    return parser


def _add_record_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mount", type=Path, default=None, metavar="MOUNTPOINT")
    parser.add_argument("--template", default=None, metavar="ID", help="workflow template")
    parser.add_argument("--model-version", default=None, metavar="VERSION")
    parser.add_argument("--name", default=None, help="the model run's display name")
    parser.add_argument("-m", "--description", default=None, metavar="TEXT")
    parser.add_argument(
        "--output",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="a dataset (any path in it) that is an output too (repeatable)",
    )
    parser.add_argument(
        "-a",
        "--annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an annotation of the model run (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the record, register nothing")


def _git_version(cwd: Path) -> str:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unversioned (the working directory is not in a git work tree)"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unversioned (git could not be run)"
    return head.stdout.strip() + ("+dirty" if dirty else "")


class _Forwarder:
    """Forwards SIGTERM, SIGHUP and SIGINT to the child while it runs (SIGINT only when the
    terminal did not deliver it to the child itself)."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Forwarder:
        for sig in _FORWARDED:
            self._previous[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_it():
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)


def _terminal_sent_it() -> bool:
    """Whether this process is in its terminal's foreground group (a ^C reaches the child)."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False


def _spawn_and_wait(argv: Sequence[str], run_id: str) -> int:
    """Run *argv* with ``PROVENAFS_RUN``; its exit code (128 + N when killed by signal N)."""
    env = dict(os.environ)
    env[RUN_ENV] = run_id
    with _Forwarder() as forwarder:
        try:
            child = subprocess.Popen(list(argv), env=env)  # the user's own command
        except FileNotFoundError:
            _error("run", f"{argv[0]}: command not found")
            return _NOT_FOUND
        except PermissionError:
            _error("run", f"{argv[0]}: permission denied")
            return _NOT_EXECUTABLE
        forwarder.child = child
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:  # a handler replaced for a moment: keep waiting
                continue
    return 128 - code if code < 0 else code


def run_main(args: Sequence[str]) -> int:
    parser = _run_parser()
    parsed = parser.parse_args(args)
    command = list(parsed.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.print_usage(sys.stderr)
        _error("run", "no command given (provenafs run [options] -- CMD ...)")
        return 2
    try:
        mountpoint = _choose_mount(parsed.mount, command)
        outputs = [_handle_of(path, mountpoint) for path in parsed.output]
        annotations = _annotations(parsed.annotation)
    except _CommandError as exc:
        _error("run", str(exc))
        return 2
    cwd = Path(os.getcwd())
    model_version = parsed.model_version or _git_version(cwd)
    start = {
        "op": "run-start",
        "argv": command,
        "cwd": str(cwd),
        "template": parsed.template,
        "init_template": parsed.init_template,
        "name": parsed.name,
        "description": parsed.description,
        "on_failure": parsed.on_failure,
        "dry_run": parsed.dry_run,
        "annotations": annotations,
        "outputs": outputs,
    }
    try:
        opened = _single_answer(mountpoint, start, "run")
    except (_CommandError, control_socket.ControlError) as exc:
        _error("run", f"the run could not start: {exc}")
        return 1
    for warning in opened.get("warnings") or ():
        _error("run", f"warning: {warning}")
    run_id = str(opened["run_id"])
    code = _spawn_and_wait(command, run_id)
    finish = {
        "op": "run-finish",
        "run_id": run_id,
        "exit_code": code,
        "model_version": model_version,
        "outputs": outputs,
    }
    return _finish(mountpoint, finish, code)


def _finish(mountpoint: Path, message: Mapping[str, Any], code: int) -> int:
    """Ask the daemon to finish the run; print the outcome; the exit code."""
    failed_code = code or 1
    try:
        for answer in _conversation(mountpoint, message, "run", timeout=None):
            return _outcome(answer, code, failed_code)
    except control_socket.ControlError as exc:
        _error(
            "run",
            f"{exc}: the run is not finished (a run open when its mount's daemon ends is "
            "reported failed, with its drafts kept, when it mounts again)",
        )
        return failed_code
    _error("run", "the daemon ended the conversation without an outcome")
    return failed_code


def _stdout(text: str) -> None:
    """The outcome on stdout; a reader that went away (``| head``) is no error of the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush does not fail again
        os.close(devnull)


def _outcome(answer: Mapping[str, Any], code: int, failed_code: int) -> int:
    event = answer.get("event")
    outputs = answer.get("outputs") or {} if event != "dry-run" else {}
    for base, new in sorted(outputs.items()):
        if base != new:
            print(f"provenafs run: output {base} published as {new}", file=sys.stderr)
    if event == "done":
        _stdout(str(answer.get("model_run")))
        return code
    if event == "dry-run":
        _stdout(json.dumps(answer.get("preview"), indent=2, sort_keys=True))
        return code
    if event == "pending":
        _error(
            "run",
            f"the registration is pending ({answer.get('reason')}); the daemon retries it "
            "(see provenafs status)",
        )
        return code or EX_TEMPFAIL
    if event == "failed":
        _error("run", f"run {answer.get('run_id')} failed: {answer.get('reason')}")
        kept = answer.get("drafts_kept") or []
        if kept:
            _error(
                "run",
                f"drafts kept unpublished: {', '.join(kept)} (publish them with provenafs "
                "commit PATH)",
            )
        return failed_code
    _error("run", str(answer.get("error") or f"unexpected answer {event!r}"))
    return failed_code


# -- provenafs record -------------------------------------------------------------------------


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _CommandError(f"not a time: {text!r} (Unix seconds or ISO 8601)") from None
    return moment.timestamp()


def record_main(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="provenafs record",
        description="Register the dataset versions read in a slice of an access log (-o "
        "access_log=) as a model run. Nothing is published: outputs are named by hand.",
    )
    parser.add_argument(
        "--log", type=Path, default=None, help="the access log (default: the mount's)"
    )
    parser.add_argument("--since", required=True, help="Unix seconds or ISO 8601")
    parser.add_argument("--until", default=None, help="Unix seconds or ISO 8601 (default: now)")
    parser.add_argument("--pid", type=int, action="append", default=[], help="(repeatable)")
    parser.add_argument("--comm", action="append", default=[], help="command name (repeatable)")
    parser.add_argument("--uid", type=int, default=os.getuid(), help="default: yours")
    _add_record_options(parser)
    parsed = parser.parse_args(args)
    try:
        mountpoint = _choose_mount(parsed.mount)
        since = _time(parsed.since)
        until = _time(parsed.until) if parsed.until else dt.datetime.now().timestamp()
        log_file = parsed.log or _mount_access_log(mountpoint)
        outputs = [_handle_of(path, mountpoint) for path in parsed.output]
        annotations = _annotations(parsed.annotation)
        reads, commands = _slice(log_file, since, until, parsed)
    except (_CommandError, OSError, control_socket.ControlError) as exc:
        _error("record", str(exc))
        return 1
    if not reads and not outputs:
        _error("record", "the slice holds no read of a published file, and no --output is given")
        return 1
    names = ", ".join(sorted(commands)) or "no command"
    message = {
        "op": "run-record",
        "reads": reads,
        "started": since,
        "ended": until,
        "argv": sorted(commands),
        "template": parsed.template,
        "name": parsed.name or f"provenafs record: {names}"[:120],
        "description": parsed.description
        or (
            f"Recorded by provenafs from the access log {log_file}: {len(reads)} files read by "
            f"{names} between {_iso(since)} and {_iso(until)}."
        ),
        "dry_run": parsed.dry_run,
        "annotations": annotations,
        "outputs": outputs,
        "model_version": parsed.model_version or "not recorded (from an access log)",
    }
    return _finish(mountpoint, message, 0)


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def _mount_access_log(mountpoint: Path) -> Path:
    status = _single_answer(mountpoint, {"op": "status"}, "record").get("status") or {}
    path = status.get("access_log")
    if not path:
        raise _CommandError("the mount keeps no access log (-o access_log=PATH); give --log")
    return Path(path)


def _slice(
    log_file: Path, since: float, until: float, parsed: argparse.Namespace
) -> tuple[list[dict[str, Any]], set[str]]:
    """Reads of published objects in the slice, one per (version, path, ETag), and the
    command names seen."""
    reads: dict[tuple[str, str, str], dict[str, Any]] = {}
    commands: set[str] = set()
    for entry in read_access_log(log_file):
        if not since <= entry.time <= until or entry.uid != parsed.uid:
            continue
        if parsed.pid and entry.pid not in parsed.pid:
            continue
        if parsed.comm and entry.comm not in parsed.comm:
            continue
        commands.add(entry.comm)
        if entry.mode != "read" or entry.etag is None:
            continue
        key = (entry.handle, entry.path, entry.etag)
        found = reads.setdefault(
            key, {"handle": entry.handle, "path": entry.path, "etag": entry.etag, "opens": 0}
        )
        found["opens"] += 1
    return list(reads.values()), commands


# -- provenafs lineage ------------------------------------------------------------------------


def lineage_main(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="provenafs lineage",
        description="Print a dataset version's lineage: what it came from (or, with --down, "
        "what came from it), as a tree or as Graphviz.",
    )
    parser.add_argument("path", type=Path, help="a dataset version's directory (or a path in it)")
    parser.add_argument("--down", action="store_true", help="what was derived from it")
    parser.add_argument("--depth", type=int, default=4, help="hops to follow (1-10, default 4)")
    parser.add_argument("--dot", action="store_true", help="print Graphviz instead of a tree")
    parser.add_argument("--all", action="store_true", help="show agents, models and templates too")
    parsed = parser.parse_args(args)
    try:
        real = Path(os.path.realpath(parsed.path))
        mountpoint = mount_containing(real)
        if mountpoint is None:
            raise _CommandError(f"{parsed.path} is not inside a provenafs mount")
        handle = _handle_of(real, mountpoint)
        message = {"op": "lineage", "handle": handle, "down": parsed.down, "depth": parsed.depth}
        answer = _single_answer(mountpoint, message, "lineage")
    except (_CommandError, control_socket.ControlError) as exc:
        _error("lineage", str(exc))
        return 1
    nodes = {n["id"]: n for n in answer.get("nodes") or []}
    links = answer.get("links") or []
    if not parsed.all:
        nodes = {k: v for k, v in nodes.items() if v["subtype"] in _DATA_FLOW or k == handle}
        links = [e for e in links if e["source"] in nodes and e["target"] in nodes]
    if parsed.dot:
        print(lineage_dot(handle, nodes, links))
    else:
        print("\n".join(lineage_tree(handle, nodes, links, down=parsed.down)))
    return 0


_DOWN_LABELS = {"used": "used by", "wasGeneratedBy": "generated", "wasInformedBy": "informed"}


def _label(node: Mapping[str, Any] | None, item_id: str) -> str:
    if node is None:
        return item_id
    return f"{item_id}  {node['name']} ({node['subtype']})"


def lineage_tree(
    start: str,
    nodes: Mapping[str, Mapping[str, Any]],
    links: Sequence[Mapping[str, str]],
    *,
    down: bool,
) -> list[str]:
    """The graph from *start* as an indented tree: each edge is a line naming its relation."""
    children: dict[str, list[tuple[str, str]]] = {}
    for edge in links:
        if down:
            label = _DOWN_LABELS.get(edge["type"], f"<- {edge['type']}")
            children.setdefault(edge["target"], []).append((label, edge["source"]))
        else:
            children.setdefault(edge["source"], []).append((edge["type"], edge["target"]))
    lines = [_label(nodes.get(start), start)]

    def walk(item: str, indent: str, seen: tuple[str, ...]) -> None:
        below = sorted(children.get(item, []), key=lambda pair: (pair[0], pair[1]))
        for index, (label, child) in enumerate(below):
            last = index == len(below) - 1
            branch, carry = ("└── ", "    ") if last else ("├── ", "│   ")
            repeated = child in seen
            suffix = "  (repeated above)" if repeated else ""
            lines.append(f"{indent}{branch}{label} {_label(nodes.get(child), child)}{suffix}")
            if not repeated:
                walk(child, indent + carry, (*seen, child))

    walk(start, "", (start,))
    return lines


def lineage_dot(
    start: str,
    nodes: Mapping[str, Mapping[str, Any]],
    links: Sequence[Mapping[str, str]],
) -> str:
    """The graph as Graphviz (``dot -Tsvg``); the start node is drawn bold."""

    def quoted(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    lines = [f"digraph {quoted('lineage of ' + start)} {{", "  rankdir=LR;"]
    for item_id, node in sorted(nodes.items()):
        shape = {"DATASET": "box", "MODEL_RUN": "ellipse"}.get(str(node["subtype"]), "note")
        style = ", style=bold" if item_id == start else ""
        label = f"{node['name']}\n{item_id}\n{node['subtype']}"
        lines.append(f"  {quoted(item_id)} [shape={shape}{style}, label={quoted(label)}];")
    for edge in links:
        source, target = quoted(edge["source"]), quoted(edge["target"])
        lines.append(f"  {source} -> {target} [label={quoted(edge['type'])}];")
    lines.append("}")
    return "\n".join(lines)


# -- status -------------------------------------------------------------------------------------


def run_lines(document: Mapping[str, Any]) -> list[str]:
    """``provenafs status`` lines for runs: open, pending, failed (with kept drafts), done."""
    runs = [r for r in document.get("runs") or [] if isinstance(r, Mapping)]
    if not runs:
        return []
    lines = [f"  runs: {len(runs)}"]
    for run in runs:
        command = " ".join(str(a) for a in run.get("command") or [])[:60]
        line = f"    {run.get('run_id')} {run.get('phase')}: {command}"
        if run.get("model_run"):
            line += f" -> model run {run['model_run']}"
        if run.get("pending"):
            line += f" (pending: {run['pending']})"
        if run.get("failure"):
            line += f" ({run['failure']})"
        if run.get("drafts_kept"):
            line += f"; drafts kept: {', '.join(run['drafts_kept'])}"
        lines.append(line)
    return lines
