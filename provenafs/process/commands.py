"""The mount-side commands: ``mount``, ``umount``, ``login``, ``logout``, ``status``, ...

``main(command, args)`` is called by ``provenafs.cli`` (and by ``mount.fuse.provenafs``, the
helper ``mount(8)`` runs for ``-t fuse.provenafs`` and ``/etc/fstab`` lines). This module parses
arguments, talks to the user and starts the daemon; it must not hold filesystem logic, never
print a token, and never make a mount's own daemon serve its syscalls (it runs in a separate
process from the daemon).

Background mounts start ``python -m provenafs mount ... -f`` as a detached child in its own
session and wait on a readiness pipe (``READY_FD_ENV``), so ``provenafs mount`` returns
only once the mount answers, or fails with the daemon's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from provenafs.api import errors as api_errors
from provenafs.api.client import discover
from provenafs.api.logins import LOGIN_CLIENT_ID, config_dir, forget, save_refresh_token
from provenafs.api.realm import device_login
from provenafs.api.token_urls import InsecureUrlError, check_token_url
from provenafs.mount_options import parse_mount_args
from provenafs.process import control_socket
from provenafs.process.dataset_commands import COMMANDS as DATASET_COMMANDS
from provenafs.process.mounts import (
    FSTYPE,
    READY_FD_ENV,
    find_mount,
    log_path_for,
    mount_containing,
)
from provenafs.process.run_command import lineage_main, record_main, run_lines, run_main

__all__ = ["main", "strip_fstab_options"]

_READY_TIMEOUT_SECONDS = 120.0
_USAGE_EXIT = 2

# Options that only mean something to mount(8) or systemd, never to the filesystem.
_FSTAB_ONLY_OPTIONS = frozenset(
    {"defaults", "_netdev", "noauto", "auto", "user", "users", "nouser", "owner", "group", "nofail"}
)
_FSTAB_ONLY_PREFIXES = ("x-", "comment=")
# Flags mount(8) may pass to a helper (sloppy, no-mtab, verbose); they take no value.
_HELPER_FLAGS = frozenset({"-s", "-n", "-v"})
# Helper flags with a value: namespace, and the type mount(8) already resolved.
_HELPER_VALUE_FLAGS = frozenset({"-N", "-t"})


def _error(command: str, message: str) -> None:
    print(f"provenafs {command}: {message}", file=sys.stderr)


def strip_fstab_options(args: Sequence[str]) -> list[str]:
    """``args`` without mount(8)'s own flags and the fstab-only ``-o`` options."""
    result: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg in _HELPER_FLAGS:
            continue
        if arg in _HELPER_VALUE_FLAGS:
            index += 1
            continue
        if arg == "-o" or (arg.startswith("-o") and len(arg) > 2):
            if arg == "-o":
                if index >= len(args):
                    result.append(arg)  # let the parser report the missing value
                    continue
                value = args[index]
                index += 1
            else:
                value = arg[2:]
            kept = [
                option
                for option in value.split(",")
                if option
                and option not in _FSTAB_ONLY_OPTIONS
                and not option.startswith(_FSTAB_ONLY_PREFIXES)
            ]
            if kept:
                result += ["-o", ",".join(kept)]
            continue
        result.append(arg)
    return result


def _find_mount(mountpoint: Path) -> tuple[str, str] | None:
    """(fstype, source) of the mount at ``mountpoint``, from /proc/self/mountinfo."""
    entry = find_mount(mountpoint)
    return None if entry is None else (entry.fstype, entry.source)


# -- mount ---------------------------------------------------------------------------------------


def _mount(args: Sequence[str]) -> int:
    if any(arg in {"-h", "--help"} for arg in args):
        print(
            "usage: provenafs mount [SOURCE] MOUNTPOINT [-f] [-d] [-o opt,...]\n"
            "  -f  stay in the foreground (log to stderr)\n"
            "  -d  debug logging\n"
            "  -o  mount options (see the README)"
        )
        return 0
    cleaned = strip_fstab_options(args)
    try:
        options = parse_mount_args(cleaned)
    except (ValueError, SystemExit) as exc:
        _error("mount", str(exc) or "invalid arguments")
        return _USAGE_EXIT
    if options.foreground:
        from provenafs.process import daemon  # noqa: PLC0415 -- the FUSE daemon only where it runs

        return daemon.run(options)
    return _mount_in_background(cleaned, options.mountpoint)


def _mount_in_background(args: Sequence[str], mountpoint: Path) -> int:
    """Start the daemon detached, wait until it reports ready (or why it could not start)."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ)
    env[READY_FD_ENV] = str(write_fd)
    command = [sys.executable, "-m", "provenafs", "mount", *args, "-f"]
    try:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(write_fd,),
            env=env,
        )
    finally:
        os.close(write_fd)
    try:
        line = _read_readiness(read_fd, _READY_TIMEOUT_SECONDS)
    finally:
        os.close(read_fd)
    log_hint = f"(daemon log: {log_path_for(mountpoint)})"
    if line == "ready":
        found = _find_mount(mountpoint)
        if found is not None and found[0] == FSTYPE:
            return 0
        _error("mount", f"the daemon reported ready but {mountpoint} is not mounted {log_hint}")
        return 1
    if line is not None and line.startswith("error: "):
        _error("mount", line.removeprefix("error: "))
        _reap(child)
        return 1
    if line is None and child.poll() is None:
        child.terminate()
        _reap(child)
        _error("mount", f"the mount was not ready after {_READY_TIMEOUT_SECONDS:.0f} s {log_hint}")
        return 1
    code = _reap(child)
    _error("mount", f"the daemon exited with status {code} before the mount was ready {log_hint}")
    return 1


def _read_readiness(fd: int, timeout: float) -> str | None:
    """The daemon's one status line, or None on timeout or a daemon that died silently."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""


def _reap(child: subprocess.Popen[bytes]) -> int | None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return child.wait(timeout=10)
    return None


# -- umount --------------------------------------------------------------------------------------


def _umount(args: Sequence[str]) -> int:
    """``provenafs umount MOUNTPOINT [--publish|--refuse] [-z]``.

    Pending drafts are published first (``--publish``) or make the command refuse with the list
    of them (``--refuse``); without either flag the mount's ``-o on_unmount=`` decides. A
    daemon that does not answer on its control socket is unmounted anyway: its drafts stay on
    disk and the next mount picks them up.
    """
    parser = argparse.ArgumentParser(prog="provenafs umount")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("-z", "--lazy", action="store_true", help="detach even if busy")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--publish",
        dest="on_unmount",
        action="store_const",
        const="publish",
        help="publish pending drafts, then unmount",
    )
    choice.add_argument(
        "--refuse",
        dest="on_unmount",
        action="store_const",
        const="refuse",
        help="refuse to unmount while drafts are pending",
    )
    parsed = parser.parse_args(args)
    mountpoint: Path = parsed.mountpoint.absolute()
    found = _find_mount(mountpoint)
    if found is None:
        _error("umount", f"{mountpoint} is not mounted")
        return 1
    if found[0] != FSTYPE:
        _error("umount", f"{mountpoint} is not a provenafs mount (it is {found[0]})")
        return 1
    if not _settle_drafts_before_unmount(mountpoint, parsed.on_unmount):
        return 1
    fusermount = shutil.which("fusermount3")
    if fusermount is None:
        _error("umount", "fusermount3 is not installed (apt install fuse3)")
        return 1
    command = [fusermount, "-u", *(["-z"] if parsed.lazy else []), str(mountpoint)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        _error("umount", result.stderr.strip() or f"fusermount3 failed ({result.returncode})")
        return 1
    return 0


def _draft_line(draft: Mapping[str, Any]) -> str:
    line = (
        f"{draft.get('handle', '?')}: {draft.get('added', 0)} added, "
        f"{draft.get('changed', 0)} changed, {draft.get('removed', 0)} removed, "
        f"{_mib(draft.get('staged_bytes', 0))} staged"
    )
    if draft.get("new_version_id"):
        line += f", publishing into {draft['new_version_id']}"
    if draft.get("open_writers"):
        line += f", {draft['open_writers']} open for writing"
    return line


def _settle_drafts_before_unmount(mountpoint: Path, choice: str | None) -> bool:
    """Publish or refuse pending drafts as asked (or as the mount's option says)."""
    try:
        status = _control_status(mountpoint)
    except control_socket.ControlError as exc:
        print(
            f"provenafs umount: warning: {exc}; unmounting anyway (drafts stay on disk and are "
            "picked up by the next mount)",
            file=sys.stderr,
        )
        return True
    held = set(status.get("held_drafts") or ())
    drafts = [d for d in status.get("drafts", []) if isinstance(d, Mapping)]
    for draft in [d for d in drafts if d.get("handle") in held]:
        print(
            f"provenafs umount: keeping the draft of {draft.get('handle')} unpublished: it "
            "belongs to a run (see provenafs status)",
            file=sys.stderr,
        )
    drafts = [d for d in drafts if d.get("handle") not in held]
    if not drafts:
        return True
    on_unmount = choice or str(status.get("on_unmount") or "refuse")
    if on_unmount != "publish":
        _error("umount", f"{mountpoint} has {len(drafts)} unpublished draft(s):")
        for draft in drafts:
            print(f"  {_draft_line(draft)}", file=sys.stderr)
        print(
            "Publish them with `provenafs commit PATH` (or `provenafs umount --publish "
            f"{mountpoint}`); nothing was unmounted.",
            file=sys.stderr,
        )
        return False
    for draft in drafts:
        handle = str(draft.get("handle"))
        outcome = _commit_through(mountpoint, handle, None, "umount")
        if outcome is None:
            _error("umount", f"not unmounting {mountpoint}: publishing {handle} failed")
            return False
        print(f"published {handle} as {outcome}", file=sys.stderr)
    return True


# -- commit --------------------------------------------------------------------------------------


class _ProgressPrinter:
    """Publish progress on stderr: one rewritten line on a terminal, else a line a second."""

    def __init__(self, command: str) -> None:
        self._command = command
        self._tty = sys.stderr.isatty()
        self._last_phase = ""
        self._last_time = 0.0
        self._pending = ""

    def show(self, progress: Mapping[str, Any]) -> None:
        target = progress.get("new_handle") or "a new version"
        text = (
            f"publishing {progress.get('handle')} as {target}: {progress.get('phase')}, "
            f"{progress.get('files_done', 0)}/{progress.get('files_total', 0)} files, "
            f"{_mib(progress.get('bytes_done', 0))} of {_mib(progress.get('bytes_total', 0))}"
        )
        now = time.monotonic()
        phase = str(progress.get("phase"))
        if self._tty:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        elif phase != self._last_phase or now - self._last_time >= 1.0:
            print(text, file=sys.stderr, flush=True)
            self._last_time = now
            self._pending = ""
        else:
            self._pending = text
        self._last_phase = phase

    def finish(self) -> None:
        if self._tty and self._last_phase:
            sys.stderr.write("\n")
        elif self._pending:
            print(self._pending, file=sys.stderr)
        sys.stderr.flush()


def _commit_through(mountpoint: Path, handle: str, reason: str | None, command: str) -> str | None:
    """Ask the daemon to publish ``handle``; the new handle (the same one when there was
    nothing to publish), or None after reporting the failure."""
    printer = _ProgressPrinter(command)
    message: dict[str, Any] = {"op": "commit", "handle": handle}
    if reason:
        message["reason"] = reason
    try:
        for answer in control_socket.request(mountpoint, message, timeout=None):
            event = answer.get("event")
            if event == "progress":
                printer.show(answer)
                continue
            printer.finish()
            if event == "done":
                return str(answer.get("handle"))
            if event == "nothing":
                why = answer.get("message") or f"{handle} has no pending changes"
                print(f"provenafs {command}: nothing to publish ({why})", file=sys.stderr)
                return str(answer.get("handle") or handle)
            _error(command, str(answer.get("error") or "the daemon refused"))
            return None
    except control_socket.ControlError as exc:
        printer.finish()
        _error(command, str(exc))
        return None
    printer.finish()
    _error(command, "the daemon ended the conversation without an answer")
    return None


def _commit(args: Sequence[str]) -> int:
    """``provenafs commit PATH [-m REASON]``: publish the draft of the dataset holding PATH.

    Progress (files and bytes) goes to stderr, the new handle is the last line of stdout. A
    dataset with no draft, or a draft that changes nothing, has nothing to publish: that is
    said on stderr, the dataset's own handle is printed, and the exit code is 0. A failure
    exits 1 with its cause; the draft is kept and a later commit resumes it. A draft published
    moments ago (by the quiet delay, a resume after a crash, or another commit) also leaves
    nothing to publish; then the handle printed is the version it became.
    """
    parser = argparse.ArgumentParser(
        prog="provenafs commit",
        description="Publish a dataset's pending changes as its next version.",
    )
    parser.add_argument("path", type=Path, help="a path inside a dataset version's directory")
    parser.add_argument("-m", "--message", dest="reason", metavar="REASON", default=None)
    parsed = parser.parse_args(args)
    # realpath follows @latest and by-name/ links to the version they name.
    path = Path(os.path.realpath(parsed.path))
    mountpoint = mount_containing(path)
    if mountpoint is None:
        _error("commit", f"{parsed.path} is not inside a provenafs mount")
        return 1
    try:
        handle = control_socket.handle_from_path(path.relative_to(mountpoint).as_posix())
    except ValueError as exc:
        _error("commit", f"{parsed.path}: {exc}")
        return 1
    new_handle = _commit_through(mountpoint, handle, parsed.reason, "commit")
    if new_handle is None:
        return 1
    print(new_handle, flush=True)
    return 0


# -- login / logout ------------------------------------------------------------------------------


def _login(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="provenafs login")
    parser.add_argument("source", help="the data store URL")
    parser.add_argument(
        "--realm", metavar="URL", help="the Keycloak realm URL (a real Provena has no discovery)"
    )
    parser.add_argument(
        "--insecure-http",
        action="store_true",
        help="allow plain http to another machine (tokens travel in clear)",
    )
    parsed = parser.parse_args(args)
    try:
        trio.run(_login_flow, parsed.source.rstrip("/"), parsed.realm, parsed.insecure_http)
    except InsecureUrlError as exc:
        _error("login", str(exc))
        return 1
    except api_errors.ApiError as exc:
        _error("login", str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        _error("login", "cancelled")
        return 1
    return 0


def _show_device_prompt(verification_uri: str, user_code: str) -> None:
    print(f"To sign in, open {verification_uri}")
    print(f"and confirm the code {user_code}. Waiting for approval...", flush=True)


async def _login_flow(
    source: str, realm_url: str | None = None, insecure_http: bool = False
) -> None:
    check_token_url(source, what="the data store", insecure_http=insecure_http)
    realm_url = realm_url or (await discover(source)).realm_url
    if realm_url is None:
        raise api_errors.ApiError(
            f"{source} names no Keycloak realm; give it with --realm URL, or use PROVENAFS_TOKEN"
        )
    # Before the device flow starts: its answer is the refresh token.
    check_token_url(
        realm_url, what="the Keycloak realm", insecure_http=insecure_http, source=source
    )
    tokens = await device_login(realm_url, LOGIN_CLIENT_ID, _show_device_prompt)
    if not tokens.refresh_token:
        raise api_errors.AuthenticationError("the realm answered no refresh token")
    save_refresh_token(source, tokens.refresh_token, client_id=LOGIN_CLIENT_ID)
    print(f"Signed in to {source}; the login is stored in {config_dir()} (mode 0600).")


def _logout(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="provenafs logout")
    parser.add_argument("source", help="the data store URL")
    parsed = parser.parse_args(args)
    if forget(parsed.source):
        print(f"Signed out of {parsed.source}.")
    else:
        print(f"No stored login for {parsed.source}.")
    return 0


# -- status --------------------------------------------------------------------------------------


STATUS_EXPIRIES_SHOWN = 5  # credential sets whose expiry the summary names, soonest first


def _mib(value: Any) -> str:
    return f"{value / (1 << 20):.1f} MiB" if isinstance(value, int | float) else "?"


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def _summary(document: Mapping[str, Any]) -> list[str]:
    """The few lines a person wants from ``status.json``; ``--json`` has everything."""
    cache = _section(document, "block_cache")
    budget = _section(document, "prefetch_budget")
    calls = _section(document, "data_store_calls")
    credentials = _section(document, "credentials")
    expiries = _section(document, "credential_expiries")
    mode = "read-only" if document.get("read_only", True) else "read-write"
    lines = [
        f"  version {document.get('version', '?')}, {mode}",
        f"  open files: {document.get('open_files', 0)}, "
        f"open directories: {document.get('open_directories', 0)}",
        f"  block cache: {_mib(cache.get('bytes', 0))} of {_mib(cache.get('max_bytes'))}, "
        f"{cache.get('hits', 0)} hits, {cache.get('misses', 0)} misses, "
        f"{_mib(cache.get('bytes_fetched', 0))} fetched",
    ]
    if "disk_max_bytes" in cache:
        lines.append(
            f"  disk cache: {_mib(cache.get('disk_bytes', 0))} of {_mib(cache['disk_max_bytes'])}"
        )
    if budget:
        lines.append(
            f"  prefetch: {_mib(budget.get('in_use', 0))} in use of {_mib(budget.get('max_bytes'))}"
        )
    total_calls = sum(v for k, v in calls.items() if k != "retries" and isinstance(v, int))
    lines.append(f"  data store calls: {total_calls}, retries: {calls.get('retries', 0)}")
    lines.append(
        f"  credentials: {credentials.get('held', 0)} held, "
        f"{credentials.get('read_calls', 0)} read / {credentials.get('write_calls', 0)} write "
        f"requests, {credentials.get('failures', 0)} failures"
    )
    soonest = sorted(expiries.items(), key=lambda item: (str(item[1]), item[0]))
    for name, expiry in soonest[:STATUS_EXPIRIES_SHOWN]:
        lines.append(f"    {name}: expires {expiry}")
    if len(soonest) > STATUS_EXPIRIES_SHOWN:
        lines.append(f"    ... and {len(soonest) - STATUS_EXPIRIES_SHOWN} more (--json lists all)")
    return lines + _publishing_summary(document) + run_lines(document)


def _publishing_summary(document: Mapping[str, Any]) -> list[str]:
    """Drafts, publishes in progress and recent failures (from the control socket)."""
    drafts = [d for d in document.get("drafts") or [] if isinstance(d, Mapping)]
    lines = [f"  drafts: {len(drafts) if drafts else 'none'}"]
    lines += [f"    {_draft_line(draft)}" for draft in drafts]
    for progress in document.get("publishing") or []:
        if isinstance(progress, Mapping):
            lines.append(
                f"  publishing {progress.get('handle')} as {progress.get('new_handle') or '?'}: "
                f"{progress.get('phase')}, {progress.get('files_done', 0)}/"
                f"{progress.get('files_total', 0)} files, {_mib(progress.get('bytes_done', 0))}"
                f" of {_mib(progress.get('bytes_total', 0))}"
            )
    for failure in document.get("failures") or []:
        if isinstance(failure, Mapping):
            when = failure.get("at")
            stamp = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
                if isinstance(when, int | float)
                else "?"
            )
            lines.append(
                f"  failed to publish {failure.get('handle')} at {stamp}: {failure.get('cause')}"
            )
    return lines


def _control_status(mountpoint: Path) -> dict[str, Any]:
    """The daemon's status document through its control socket."""
    for answer in control_socket.request(mountpoint, {"op": "status"}, timeout=30.0):
        if answer.get("event") == "done" and isinstance(answer.get("status"), dict):
            status: dict[str, Any] = answer["status"]
            return status
        if answer.get("event") == "error":
            raise control_socket.ControlError(str(answer.get("error")))
    raise control_socket.ControlError("the daemon answered no status")


def _status(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="provenafs status")
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--json", action="store_true", help="print the raw status document")
    parsed = parser.parse_args(args)
    mountpoint: Path = parsed.mountpoint.absolute()
    found = _find_mount(mountpoint)
    if found is None or found[0] != FSTYPE:
        _error("status", f"{mountpoint} is not a provenafs mount")
        return 1
    # The daemon's control socket answers drafts, publishes and failures; status.json (read
    # through the mount) has the rest, and is all there is when the socket does not answer.
    live: dict[str, Any] | None = None
    try:
        live = _control_status(mountpoint)
    except control_socket.ControlError:
        live = None
    status_file = mountpoint / ".provenafs" / "status.json"
    document: dict[str, Any] = {}
    try:
        loaded = json.loads(status_file.read_bytes())
        document = loaded if isinstance(loaded, dict) else {}
    except OSError as exc:
        if live is None:
            _error("status", f"cannot read {status_file}: {exc.strerror or exc}")
            return 1
    except json.JSONDecodeError as exc:
        if live is None:
            _error("status", f"{status_file} is not valid JSON: {exc}")
            return 1
    if live is not None:
        document.update(live)
    identity = _identity(mountpoint) if live is not None else None
    if identity is not None:
        document["identity"] = identity
    if parsed.json:
        print(json.dumps(document, indent=2, sort_keys=True, default=str))
        return 0
    print(f"provenafs mount {mountpoint} ({found[1]})")
    print("\n".join(_summary(document)))
    if identity is not None:
        person = identity.get("person_id") or "none"
        print(f"  signed in as {identity.get('username')}, linked Person {person}")
        if not identity.get("person_id"):
            print(
                f"warning: {identity.get('username')} has no linked Person: minting, "
                "versioning, release requests and runs need one",
                file=sys.stderr,
            )
    return 0


def _identity(mountpoint: Path) -> dict[str, Any] | None:
    """Who the mount's daemon acts as (``whoami``), or None when it cannot say."""
    try:
        for answer in control_socket.request(mountpoint, {"op": "whoami"}, timeout=30.0):
            if answer.get("event") == "done":
                return {k: v for k, v in answer.items() if k != "event"}
            return None
    except control_socket.ControlError:
        return None
    return None


# -- revert (metadata history) ------------------------------------------------------------------


def _newest_history_id(sidecar: Path) -> int | None:
    """The id of the newest history entry in a sidecar, read through the mount."""
    try:
        history = json.loads(sidecar.read_bytes())["item"]["history"]
        return max(int(entry["id"]) for entry in history)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _revert(args: Sequence[str]) -> int:
    """``provenafs revert PATH --to HISTORY_ID -m REASON``: through the mount's daemon, so that
    its caches show the reverted record at once; prints the new history entry's id last."""
    parser = argparse.ArgumentParser(
        prog="provenafs revert",
        description="Restore the metadata of an earlier history entry (files are not restored).",
    )
    parser.add_argument("path", type=Path, help="the dataset's directory or its <handle>.json")
    parser.add_argument("--to", dest="history_id", type=int, required=True, metavar="HISTORY_ID")
    parser.add_argument("-m", "--message", dest="reason", required=True, metavar="REASON")
    parsed = parser.parse_args(args)
    if not parsed.reason.strip():
        _error("revert", "the reason (-m) must not be empty")
        return _USAGE_EXIT
    # realpath follows @latest and by-name/ links to the version they name.
    path = Path(os.path.realpath(parsed.path))
    mountpoint = mount_containing(path)
    if mountpoint is None:
        _error("revert", f"{parsed.path} is not inside a provenafs mount")
        return 1
    relative = path.relative_to(mountpoint).as_posix()
    try:
        handle = control_socket.handle_from_path(relative)
    except ValueError as exc:
        _error("revert", f"{parsed.path}: {exc}")
        return 1
    message = {
        "op": "revert",
        "handle": handle,
        "history_id": parsed.history_id,
        "reason": parsed.reason,
    }
    try:
        for answer in control_socket.request(mountpoint, message, timeout=120.0):
            event = answer.get("event")
            if event == "error":
                _error("revert", str(answer.get("error") or "the daemon refused the revert"))
                return 1
            if event == "done":
                new_id = answer.get("history_id")
                if not isinstance(new_id, int):
                    prefix, suffix = handle.split("/", 1)
                    new_id = _newest_history_id(mountpoint / prefix / f"{suffix}.json")
                print(f"Reverted the metadata of {handle} to history entry {parsed.history_id}.")
                print(new_id if new_id is not None else "?")
                return 0
    except control_socket.ControlError as exc:
        _error("revert", str(exc))
        return 1
    _error("revert", "the daemon ended the conversation without an answer")
    return 1


_COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "mount": _mount,
    "umount": _umount,
    "login": _login,
    "logout": _logout,
    "status": _status,
    "commit": _commit,
    "revert": _revert,
    "run": run_main,
    "record": record_main,
    "lineage": lineage_main,
    **DATASET_COMMANDS,
}


def main(command: str, args: Sequence[str]) -> int:
    """Run one mount-side command with its arguments; return the exit code."""
    handler = _COMMANDS.get(command)
    if handler is None:
        _error(command, "unknown command")
        return _USAGE_EXIT
    try:
        return handler(list(args))
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else _USAGE_EXIT
