"""``provenafs whoami|reviewers|release|review|lock|unlock``: dataset actions through a mount.

Each command finds the mount holding PATH (any path inside it; for ``release``, ``review``,
``lock`` and ``unlock`` a path inside, or the sidecar or a link to, one dataset version), and
asks its daemon over the control socket (``core.dataset_actions``), so that the mount's caches
and the kernel's follow at once: a dataset approved for release shows no write bits and refuses
writes with the very next call.

- ``whoami [PATH] [--json]``: username, realm roles, linked Person, whether writes are allowed;
- ``reviewers [PATH]``: the release reviewers (Person id, name, email);
- ``release PATH --to REVIEWER -m NOTES``: REVIEWER is a Person id, a username or a
  reviewer's name or email;
- ``review PATH --approve|--reject -m NOTES``;
- ``lock PATH -m REASON``, ``unlock PATH -m REASON``.

This module parses arguments and prints; it holds no filesystem logic and never prints a token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from provenafs.process import control_socket
from provenafs.process.mounts import mount_containing

__all__ = ["COMMANDS"]


def _error(command: str, message: str) -> None:
    print(f"provenafs {command}: {message}", file=sys.stderr)


def _mount_and_handle(command: str, path: Path, *, dataset: bool) -> tuple[Path, str | None]:
    """The mountpoint holding *path*, and (with *dataset*) the dataset version it names."""
    real = Path(os.path.realpath(path))  # follows by-name/, facet and @latest links
    mountpoint = mount_containing(real)
    if mountpoint is None:
        raise ValueError(f"{path} is not inside a provenafs mount")
    if not dataset:
        return mountpoint, None
    try:
        return mountpoint, control_socket.handle_from_path(real.relative_to(mountpoint).as_posix())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def ask(mountpoint: Path, message: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """The daemon's ``done`` answer to *message*; ``ControlError`` with its refusal."""
    for answer in control_socket.request(mountpoint, message, timeout=timeout):
        if answer.get("event") == "done":
            return answer
        if answer.get("event") == "error":
            raise control_socket.ControlError(str(answer.get("error") or "refused"))
    raise control_socket.ControlError("the daemon ended the conversation without an answer")


def _run(command: str, action: Callable[[], int]) -> int:
    try:
        return action()
    except (ValueError, control_socket.ControlError) as exc:
        _error(command, str(exc))
        return 1


def identity_lines(answer: Mapping[str, Any]) -> list[str]:
    person = answer.get("person_id")
    name = answer.get("person_name")
    linked = f"{person} ({name})" if person and name else (person or "none")
    return [
        f"username: {answer.get('username')}",
        f"email: {answer.get('email') or '-'}",
        f"realm roles: {', '.join(answer.get('realm_roles') or []) or '-'}",
        f"linked person: {linked}",
        f"can write: {'yes' if answer.get('can_write') else 'no'}",
    ]


def _whoami(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="provenafs whoami", description="Who the mount is.")
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), help="inside a mount")
    parser.add_argument("--json", action="store_true")
    parsed = parser.parse_args(args)

    def act() -> int:
        mountpoint, _ = _mount_and_handle("whoami", parsed.path, dataset=False)
        answer = ask(mountpoint, {"op": "whoami"})
        answer.pop("event", None)
        if parsed.json:
            print(json.dumps(answer, indent=2, sort_keys=True))
        else:
            print("\n".join(identity_lines(answer)))
            if not answer.get("person_id"):
                print(
                    "warning: no Person is linked: minting, versioning, release requests and "
                    "runs need one",
                    file=sys.stderr,
                )
        return 0

    return _run("whoami", act)


def _reviewers(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="provenafs reviewers", description="Release reviewers.")
    parser.add_argument("path", nargs="?", type=Path, default=Path("."), help="inside a mount")
    parsed = parser.parse_args(args)

    def act() -> int:
        mountpoint, _ = _mount_and_handle("reviewers", parsed.path, dataset=False)
        for reviewer in ask(mountpoint, {"op": "reviewers"}).get("reviewers", []):
            name, email = reviewer.get("name") or "?", reviewer.get("email") or "-"
            print(f"{reviewer.get('id')}\t{name}\t{email}")
        return 0

    return _run("reviewers", act)


def _dataset_action(command: str, parsed: argparse.Namespace, message: dict[str, Any]) -> int:
    def act() -> int:
        mountpoint, handle = _mount_and_handle(command, parsed.path, dataset=True)
        answer = ask(mountpoint, {**message, "handle": handle})
        details = answer.get("details")
        if details:
            print(details, file=sys.stderr)
        print(handle)
        return 0

    return _run(command, act)


def _release(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="provenafs release", description="Ask a reviewer to review a dataset's release."
    )
    parser.add_argument("path", type=Path, help="the dataset version (a path inside it)")
    parser.add_argument("--to", required=True, metavar="REVIEWER", help="id, username or name")
    parser.add_argument("-m", "--message", dest="notes", required=True, metavar="NOTES")
    parsed = parser.parse_args(args)
    message = {"op": "release", "to": parsed.to, "notes": parsed.notes}
    return _dataset_action("release", parsed, message)


def _review(args: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="provenafs review", description="Approve or reject a dataset's pending release."
    )
    parser.add_argument("path", type=Path, help="the dataset version (e.g. reviews/<name>)")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", dest="approve", action="store_true")
    choice.add_argument("--reject", dest="approve", action="store_false")
    parser.add_argument("-m", "--message", dest="notes", required=True, metavar="NOTES")
    parsed = parser.parse_args(args)
    message = {"op": "review", "approve": parsed.approve, "notes": parsed.notes}
    return _dataset_action("review", parsed, message)


def _lock_command(op: str) -> Callable[[Sequence[str]], int]:
    def command(args: Sequence[str]) -> int:
        parser = argparse.ArgumentParser(prog=f"provenafs {op}", description=f"{op} a dataset.")
        parser.add_argument("path", type=Path, help="the dataset version (a path inside it)")
        parser.add_argument("-m", "--message", dest="reason", required=True, metavar="REASON")
        parsed = parser.parse_args(args)
        return _dataset_action(op, parsed, {"op": op, "reason": parsed.reason})

    return command


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "whoami": _whoami,
    "reviewers": _reviewers,
    "release": _release,
    "review": _review,
    "lock": _lock_command("lock"),
    "unlock": _lock_command("unlock"),
}
