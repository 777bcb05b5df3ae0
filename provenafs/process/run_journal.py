"""The journal of one ``provenafs run``: every state it passes, on disk before it is acted on.

A run goes through these states, each one record appended to ``<state dir>/runs/<hash of the
source>/<run id>`` (checksummed lines, as a draft's journal; directory 0700, file 0600)::

    open ──► finished(exit) ──► published(outputs) ──► sent ──► answered(job) ──► registered
      │          │                                      ▲  │
      │          └──► failed (non-zero exit: drafts kept)   └─ (answer lost: the job is looked
      └──► failed (the daemon stopped during the run:          for by the run id, and only
           drafts kept)                                        then is it sent again)

- ``open``: the command, its working directory, the user, the root process (pid and start
  time) and the options; fsynced before the run id is handed out.
- ``changed``: a dataset the run changed (once per dataset, fsynced before the change is
  made), so a crash never lets a run's draft be published by the quiet delay.
- ``finished``: exit code, end time and the whole observation (files read, written), so the
  run can be published and registered after a restart.
- ``published``: the output versions; ``sent``: a registration request is about to leave (with
  the time); ``answered``: its job's session id; ``registered``: the model run's handle;
  ``failed``: why, and which drafts are kept unpublished. ``dry_run`` ends a ``--dry-run``.

``RunState.apply`` is the one interpretation of the records; replay applies them in order (a
torn tail is dropped, as for drafts). Trio thread only; fsyncs of state records happen on it
(a few per run), ``changed`` records are fsynced in a worker thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provenafs.write.draft_journal import DraftJournal, decode_records, fsync_dir_blocking
from provenafs.write.drafts import mkdir_private, state_root

__all__ = ["TERMINAL", "RunJournal", "RunRequest", "RunState", "load_all", "runs_root"]

log = logging.getLogger(__name__)

TERMINAL = frozenset({"registered", "failed", "dry-run"})


def runs_root(source: str, state_dir: Path | None = None) -> Path:
    """``<state_dir>/runs/<hash of the source URL>``, beside the drafts of the same source."""
    return state_root("runs", source, state_dir)


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """What ``provenafs run`` asked for, besides the command."""

    name: str | None = None
    description: str | None = None
    template: str | None = None
    on_failure: str = "keep"  # "keep" or "register"
    dry_run: bool = False
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # dataset handles named by hand (--output)
    publish: bool = True  # False: outputs are registered as they are (provenafs record)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "template": self.template,
            "on_failure": self.on_failure,
            "dry_run": self.dry_run,
            "annotations": dict(self.annotations),
            "outputs": list(self.outputs),
            "publish": self.publish,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunRequest:
        return cls(
            name=raw.get("name"),
            description=raw.get("description"),
            template=raw.get("template"),
            on_failure=str(raw.get("on_failure") or "keep"),
            dry_run=bool(raw.get("dry_run")),
            annotations={str(k): str(v) for k, v in (raw.get("annotations") or {}).items()},
            outputs=tuple(str(h) for h in raw.get("outputs") or ()),
            publish=bool(raw.get("publish", True)),
        )


@dataclasses.dataclass
class RunState:
    """Everything known of one run, as its journal records it."""

    run_id: str
    uid: int
    root_pid: int
    root_start: int
    argv: tuple[str, ...]
    cwd: str
    host: str
    started: float
    request: RunRequest
    phase: str = "open"
    changed: list[str] = dataclasses.field(default_factory=list)  # dataset handles
    exit_code: int | None = None
    ended: float | None = None
    model_version: str | None = None
    log: dict[str, Any] | None = None  # the observation (the run log, without outputs)
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)  # base -> published
    sent_at: float | None = None
    session_id: str | None = None
    model_run: str | None = None
    failure: str | None = None
    drafts_kept: list[str] = dataclasses.field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @classmethod
    def from_open(cls, record: Mapping[str, Any]) -> RunState:
        return cls(
            run_id=str(record["run_id"]),
            uid=int(record["uid"]),
            root_pid=int(record["root_pid"]),
            root_start=int(record["root_start"]),
            argv=tuple(str(a) for a in record["argv"]),
            cwd=str(record["cwd"]),
            host=str(record["host"]),
            started=float(record["started"]),
            request=RunRequest.from_json(record.get("request") or {}),
        )

    def open_record(self) -> dict[str, Any]:
        return {
            "op": "open",
            "run_id": self.run_id,
            "uid": self.uid,
            "root_pid": self.root_pid,
            "root_start": self.root_start,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "host": self.host,
            "started": self.started,
            "request": self.request.to_json(),
        }

    def apply(self, record: Mapping[str, Any]) -> None:
        """Apply one journal record (the records of ``RunJournal``)."""
        op = record["op"]
        if op == "changed":
            if record["handle"] not in self.changed:
                self.changed.append(str(record["handle"]))
        elif op == "finished":
            self.phase = "finished"
            self.exit_code = int(record["exit_code"])
            self.ended = float(record["ended"])
            self.model_version = record.get("model_version")
            self.log = dict(record["log"])
            extra = record.get("outputs")
            if extra is not None:
                self.request = dataclasses.replace(
                    self.request, outputs=tuple(str(h) for h in extra)
                )
        elif op == "published":
            self.phase = "published"
            self.outputs = {str(k): str(v) for k, v in record["outputs"].items()}
        elif op == "sent":
            self.phase = "sent"
            self.sent_at = float(record["at"])
            self.session_id = None
        elif op == "answered":
            self.phase = "answered"
            self.session_id = str(record["session_id"])
        elif op == "registered":
            self.phase = "registered"
            self.model_run = str(record["handle"])
        elif op == "failed":
            self.phase = "failed"
            self.failure = str(record["reason"])
            self.drafts_kept = [str(h) for h in record.get("drafts_kept") or ()]
        elif op == "dry_run":
            self.phase = "dry-run"
        else:
            raise ValueError(f"unknown run journal record {op!r}")

    def summary(self) -> dict[str, Any]:
        """What ``provenafs status`` shows of the run."""
        return {
            "run_id": self.run_id,
            "phase": self.phase,
            "command": list(self.argv),
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "changed": list(self.changed),
            "outputs": dict(self.outputs),
            "model_run": self.model_run,
            "failure": self.failure,
            "drafts_kept": list(self.drafts_kept),
        }


class RunJournal:
    """The journal file of one run (see the module docstring)."""

    def __init__(self, path: Path, journal: DraftJournal) -> None:
        self.path = path
        self._journal = journal

    @classmethod
    def create(cls, root: Path, state: RunState) -> RunJournal:
        """A new journal holding the run's ``open`` record, on disk when this returns."""
        _private_dirs(root)
        path = root / state.run_id
        journal = DraftJournal(path)
        journal.append(state.open_record())
        journal.sync_blocking()
        fsync_dir_blocking(root)
        return cls(path, journal)

    @classmethod
    def load(cls, path: Path) -> tuple[RunJournal, RunState] | None:
        """The journal at *path* and the state it records; None if it holds no run."""
        data = path.read_bytes()
        records, good = decode_records(data)
        if not records or records[0].get("op") != "open":
            log.warning("ignoring %s: not a run journal", path)
            return None
        if good < len(data):
            log.warning("run journal %s: dropping a torn tail of %d bytes", path, len(data) - good)
            with open(path, "r+b") as file:
                file.truncate(good)
                os.fsync(file.fileno())
        state = RunState.from_open(records[0])
        for record in records[1:]:
            try:
                state.apply(record)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("run %s: skipping a malformed journal record: %s", state.run_id, exc)
        journal = DraftJournal(path)
        journal.records = len(records)
        return cls(path, journal), state

    def record(self, state: RunState, record: Mapping[str, Any]) -> None:
        """Append *record*, make it durable (fsync, on this thread), and apply it to *state*."""
        self._journal.append(record)
        self._journal.sync_blocking()
        state.apply(record)

    async def record_async(self, state: RunState, record: Mapping[str, Any]) -> None:
        """``record``, with the fsync in a worker thread (for records on a request's path)."""
        self._journal.append(record)
        await self._journal.sync()
        state.apply(record)

    def remove(self) -> None:
        self._journal.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        self._journal.close()


def load_all(root: Path) -> Sequence[tuple[RunJournal, RunState]]:
    """Every run journal under *root*, oldest first (by start time)."""
    if not root.is_dir():
        return []
    _private_dirs(root)
    found = []
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.name.endswith(".tmp"):
            loaded = RunJournal.load(path)
            if loaded is not None:
                path.chmod(0o600)
                found.append(loaded)
    return sorted(found, key=lambda pair: pair[1].started)


def _private_dirs(root: Path) -> None:
    """*root* and its parents up to the state dir: 0700, created where missing."""
    mkdir_private(root)
    root.parent.chmod(0o700)
