"""``RunManager``: the daemon's side of ``provenafs run`` and ``provenafs record``.

A run opens (``start``: the CLI's process is its root, its uid its user, the command and options
journaled) before the command is spawned with ``PROVENAFS_RUN`` in its environment. While it is
open, the manager is the filesystem's ``AccessObserver``: each open, listing and change is
resolved to a run by ``ProcessAttribution`` (never per read: reads add to the open file's
counter), files read are recorded with their exact version, ETag, bytes and opens, and each
dataset the run changes is journaled before the change is made, so its draft is held from the
quiet-delay publisher (``PublishScheduler.held``) whatever happens.

``finish`` ends the observation (later opens by leftover processes are not the run's) and
journals the exit code and the whole observation, then, for exit code 0 (or
``--on-failure register``): writes the run log into each output's draft, publishes each
(``PublishScheduler.commit``; in place, a push), builds the ``ModelRunRecord``, registers it
and follows its job to the MODEL_RUN handle. Each step is journaled before it is acted on
(``run_journal``); after a crash, a restart or an unreachable prov API the run is driven on
from its last state, with back-off, and a registration whose answer was lost is looked for by
its run id before it is sent again, so a run is registered at most once and never lost. A run
that was open when the daemon ended is failed with its drafts kept; a non-zero exit keeps
them too (held until ``provenafs commit``), publishing and registering nothing.

``-o access_log=`` is written here too (one line per open). Trio thread only; the driving tasks
run in the manager's own nursery (``serve``). Never logs a token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from provenafs.api import errors as api_errors
from provenafs.api.prov_models import WorkflowTemplate
from provenafs.api.provenance import ProvenanceClient
from provenafs.core.observation import FileAccess, ReadCounter
from provenafs.core.types import Caller
from provenafs.errors import FsError
from provenafs.process.access_log import AccessLog, LoggedOpen
from provenafs.process.attribution import ProcessAttribution, RunIdentity
from provenafs.process.run_journal import RunJournal, RunRequest, RunState, load_all
from provenafs.process.run_record import (
    command_text,
    log_path,
    missing_annotations,
    model_run,
    run_log,
)
from provenafs.process.run_record import preview as record_preview
from provenafs.process.run_templates import remember_template, remembered_template
from provenafs.storage.blobstore import BlobError
from provenafs.write.draft_entries import CarriedEntry, DirectoryEntry, StagedEntry
from provenafs.write.drafts import DraftStore
from provenafs.write.publish import NothingToPublishError, PublishError
from provenafs.write.publish_scheduler import PublishScheduler

__all__ = ["RunFiles", "RunManager"]

log = logging.getLogger(__name__)

Say = Callable[[dict[str, Any]], Awaitable[None]]

_FIRST_BACKOFF = 2.0
_MAX_BACKOFF = 300.0
_JOB_WAIT = 120.0
_GRACE_MARGIN = 5.0
_KEEP_FINISHED = 50  # terminal runs shown in status
_ORPHAN_CHECK = 2.0  # seconds between looks for open runs whose root process is gone
_HASH_CHUNK = 1 << 20


class RunFiles(Protocol):
    """What the manager needs of the filesystem core (``Filesystem`` provides it)."""

    @property
    def draft_store(self) -> DraftStore: ...

    async def write_run_file(self, handle: str, path: str, data: bytes) -> None: ...

    async def file_digest(self, handle: str, path: str) -> tuple[int, str] | None: ...

    def lineage_changed(self) -> None: ...


class _PendingError(Exception):
    """The run cannot go on now (a service is unreachable, a publish failed): retried later."""

    def __init__(self, reason: str, retry_at: float | None = None) -> None:
        super().__init__(reason)
        self.retry_at = retry_at


class _FailedError(Exception):
    """The run cannot be registered (or must not be): it ends failed."""

    def __init__(self, reason: str, *, keep_drafts: bool) -> None:
        super().__init__(reason)
        self.keep_drafts = keep_drafts


class _Read:
    __slots__ = ("counter", "etag", "handle", "opens", "path", "size")

    def __init__(self, handle: str, path: str, etag: str | None, size: int) -> None:
        self.handle = handle
        self.path = path
        self.etag = etag
        self.size = size
        self.opens = 0
        self.counter = ReadCounter()


@dataclasses.dataclass
class _Observed:
    """What an open run did so far (in memory; journaled whole when it finishes)."""

    reads: dict[tuple[str, str, str | None], _Read] = dataclasses.field(default_factory=dict)
    written: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    listed: set[tuple[str, str]] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class _Run:
    state: RunState
    journal: RunJournal | None
    observed: _Observed | None = None
    lock: trio.Lock = dataclasses.field(default_factory=trio.Lock)
    settled: trio.Event = dataclasses.field(default_factory=trio.Event)
    pending: str | None = None  # why it waits, while it does
    next_try: float | None = None
    backoff: float = _FIRST_BACKOFF
    listener: Say | None = None
    wake: trio.Event = dataclasses.field(default_factory=trio.Event)
    preview: dict[str, Any] | None = None  # what a --dry-run would register


def _hash_blocking(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    remaining = size
    with path.open("rb") as file:
        while remaining > 0:
            chunk = file.read(min(_HASH_CHUNK, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    if remaining > 0:  # bytes past the local file's end read as zeros (a grow not written)
        digest.update(bytes(remaining))
    return digest.hexdigest()


class RunManager:
    """Runs of one mount: observation, journal, publishing and registration."""

    def __init__(
        self,
        *,
        root: Path,
        source: str,
        files: RunFiles,
        scheduler: PublishScheduler,
        prov: ProvenanceClient | None,
        attribution: ProcessAttribution,
        access_log: AccessLog | None = None,
        run_template: str | None = None,
        in_place: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = root
        self._source = source
        self._files = files
        self._scheduler = scheduler
        self._prov = prov
        self._attribution = attribution
        self._access_log = access_log
        self._run_template = run_template
        self._in_place = in_place
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        self._open: set[str] = set()
        self._closed = trio.Event()  # set (and renewed) whenever a run stops being open
        self._nursery: trio.Nursery | None = None
        scheduler.held = self.holds

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> None:
        """Load every run journal (before the quiet-delay publisher starts): a run that was open
        fails with its drafts kept; a finished one is driven on by ``serve``."""
        for journal, state in load_all(self._root):
            if state.phase in {"registered", "dry-run"}:
                journal.remove()
                continue
            run = _Run(state, journal)
            if state.phase == "open":
                self._fail(
                    run,
                    "the mount's daemon ended while the run was open; its drafts are kept",
                    keep_drafts=True,
                )
            elif state.phase == "failed" and not self._kept_drafts_exist(state):
                journal.remove()
                continue
            self._runs[state.run_id] = run
            log.info("run %s: recovered in state %s", state.run_id, state.phase)

    def _kept_drafts_exist(self, state: RunState) -> bool:
        return any(self._files.draft_store.get(h) is not None for h in state.drafts_kept)

    async def serve(self) -> None:
        """Drive every unfinished run on (until cancelled); runs finished later join. An open
        run whose ``provenafs run`` process is gone (killed before it could finish the run)
        fails with its drafts kept."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for run in list(self._runs.values()):
                if not run.state.terminal and run.state.phase != "open":
                    nursery.start_soon(self._drive, run)
            while True:
                await trio.sleep(_ORPHAN_CHECK)
                self._fail_orphans()

    def _fail_orphans(self) -> None:
        for run_id in list(self._open):
            run = self._runs[run_id]
            root = self._attribution.process(run.state.root_pid)
            if root is None or root.start != run.state.root_start:
                self._fail(
                    run,
                    "its provenafs run process ended without finishing the run; its drafts "
                    "are kept",
                    keep_drafts=True,
                )

    def _closing(self, run_id: str) -> None:
        """*run_id* stops being open: attribution ends, runs waiting for it go on."""
        self._open.discard(run_id)
        self._attribution.remove_run(run_id)
        self._closed.set()
        self._closed = trio.Event()

    # -- holds and status -------------------------------------------------------------------

    def holds(self, handle: str) -> bool:
        """Whether the draft of *handle* belongs to a run that has not published it (open,
        finished, or failed with its drafts kept): the quiet delay leaves it alone."""
        for run in self._runs.values():
            state = run.state
            if state.phase in {"registered", "dry-run"}:
                continue
            kept = state.drafts_kept if state.phase == "failed" else state.changed
            if handle in kept:
                return True
        return False

    def status(self) -> dict[str, Any]:
        runs = []
        for run in self._runs.values():
            summary = run.state.summary()
            if run.pending is not None and not run.state.terminal:
                summary["pending"] = run.pending
                summary["next_try"] = run.next_try
            runs.append(summary)
        held = sorted(d.handle for d in self._files.draft_store.drafts() if self.holds(d.handle))
        return {"runs": runs, "held_drafts": held}

    # -- observation (core.observation.AccessObserver) --------------------------------------

    @property
    def active(self) -> bool:
        return bool(self._open) or self._access_log is not None

    def _live(self, run_id: str | None) -> _Run | None:
        if run_id is None or run_id not in self._open:
            return None
        return self._runs.get(run_id)

    async def opened(self, access: FileAccess) -> ReadCounter | None:
        logging_opens = self._access_log is not None
        who = await self._attribution.resolve(access.caller, fresh_comm=logging_opens)
        if self._access_log is not None:
            self._access_log.write(
                LoggedOpen(
                    time=self._clock(),
                    pid=access.caller.pid,
                    uid=access.caller.uid,
                    comm=who.comm,
                    handle=access.handle,
                    path=access.path,
                    etag=access.etag,
                    mode="write" if access.writing else "read",
                    run=who.run_id,
                )
            )
        run = self._live(who.run_id)
        if run is None or run.observed is None:
            return None
        if access.writing:
            run.observed.written.setdefault(access.handle, set()).add(access.path)
            return None
        key = (access.handle, access.path, access.etag)
        read = run.observed.reads.get(key)
        if read is None:
            read = run.observed.reads[key] = _Read(*key, access.size)
        read.opens += 1
        return read.counter

    async def listed(self, caller: Caller, handle: str, path: str) -> None:
        if not self._open:
            return
        run = self._live((await self._attribution.resolve(caller)).run_id)
        if run is not None and run.observed is not None:
            run.observed.listed.add((handle, path))

    async def changing(self, caller: Caller, handle: str, path: str) -> None:
        if not self._open:
            return
        run = self._live((await self._attribution.resolve(caller)).run_id)
        if run is None or run.observed is None or run.journal is None:
            return
        run.observed.written.setdefault(handle, set()).add(path)
        if handle not in run.state.changed:
            # Durable before the change is made: the draft is held whatever happens next.
            await run.journal.record_async(run.state, {"op": "changed", "handle": handle})

    # -- the control socket's side -----------------------------------------------------------

    async def start(
        self, peer_pid: int, peer_uid: int, message: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Open a run whose root is the calling process; answers ``{run_id, template, warnings}``
        or raises ``ValueError`` with what stops it."""
        argv = message.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError("a run needs a command (argv: a list of strings)")
        request = _request_of(message)
        template, warnings = await self._prerequisites(request, bool(message.get("init_template")))
        root = self._attribution.process(peer_pid)
        if root is None:
            raise ValueError("the calling process cannot be seen in /proc")
        state = RunState(
            run_id=secrets.token_hex(8),
            uid=peer_uid,
            root_pid=peer_pid,
            root_start=root.start,
            argv=tuple(argv),
            cwd=str(message.get("cwd") or "/"),
            host=socket.gethostname(),
            started=self._clock(),
            request=dataclasses.replace(request, template=template),
        )
        journal = await trio.to_thread.run_sync(RunJournal.create, self._root, state)
        self._runs[state.run_id] = _Run(state, journal, _Observed())
        self._open.add(state.run_id)
        self._attribution.add_run(RunIdentity(state.run_id, peer_uid, peer_pid, root.start))
        log.info("run %s started: %s", state.run_id, command_text(state.argv))
        return {"run_id": state.run_id, "template": template, "warnings": warnings}

    async def _prerequisites(
        self, request: RunRequest, init_template: bool
    ) -> tuple[str | None, list[str]]:
        """The workflow template to use and warnings; ``ValueError`` for what stops a run
        (no template, no linked Person, missing required annotations). An unreachable prov
        API is only a warning: the run is registered once it answers."""
        warnings: list[str] = []
        problems: list[str] = []
        prov = self._prov
        template_id = request.template or self._run_template or remembered_template(self._source)
        if prov is None:
            problems.append("this mount knows no prov API (mount with -o prov_api=URL)")
        else:
            try:
                template_id = await self._template_id(prov, template_id, init_template)
                person = await prov.linked_person()
                if person is None:
                    problems.append(
                        "no registry Person is linked to this user: link one first "
                        "(auth API POST /link/user/assign); runs are registered with it as "
                        "the modeller"
                    )
                if template_id is None:
                    problems.append(
                        "no workflow template: give --template ID or -o run_template=ID, or "
                        "run once with --init-template to make a generic one"
                    )
                else:
                    template = await prov.workflow_template(template_id)
                    given = {**request.annotations, **{k: "" for k in _OWN_ANNOTATIONS}}
                    missing = missing_annotations(template, given)
                    if missing:
                        problems.append(
                            f"the workflow template {template_id} requires the annotations "
                            f"{', '.join(missing)} (give them with --annotation KEY=VALUE)"
                        )
            except api_errors.InvalidRequestError as exc:
                problems.append(f"the workflow template {template_id} cannot be used: {exc}")
            except (api_errors.UnavailableError, api_errors.AuthenticationError) as exc:
                warnings.append(
                    f"the prov API cannot be reached now ({exc}); the run is registered "
                    "once it answers"
                )
            except api_errors.ApiError as exc:
                problems.append(str(exc))
        if problems and not request.dry_run:
            raise ValueError("; ".join(problems))
        return template_id, warnings + problems

    async def _template_id(
        self, prov: ProvenanceClient, template_id: str | None, init_template: bool
    ) -> str | None:
        if not init_template:
            return template_id
        if template_id is not None:
            with contextlib.suppress(api_errors.InvalidRequestError):
                await prov.workflow_template(template_id)
                return template_id
        created = await prov.create_generic_template()
        await trio.to_thread.run_sync(remember_template, self._source, created)
        log.info("made the generic workflow template %s for %s", created, self._source)
        return created

    async def finish(self, peer_uid: int, message: Mapping[str, Any], say: Say) -> None:
        """The command ended: journal what the run did, then publish and register (or not),
        telling *say* how it goes; the last message is the outcome."""
        run = self._runs.get(str(message.get("run_id")))
        if run is None or run.state.uid != peer_uid:
            await say({"event": "error", "error": "no such run (it may predate a remount)"})
            return
        if run.state.phase != "open" or run.observed is None or run.journal is None:
            await say(self._outcome(run))
            return
        exit_code = message.get("exit_code")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            await say({"event": "error", "error": "exit_code must be an integer"})
            return
        extra = [str(h) for h in message.get("outputs") or ()]
        self._closing(run.state.run_id)
        observed = await self._observation(run.observed)
        run.observed = None
        await run.journal.record_async(
            run.state,
            {
                "op": "finished",
                "exit_code": exit_code,
                "ended": self._clock(),
                "model_version": message.get("model_version"),
                "log": observed,
                "outputs": sorted({*run.state.request.outputs, *extra}),
            },
        )
        await self._follow(run, say)

    async def record(self, peer_uid: int, message: Mapping[str, Any], say: Say) -> None:
        """``provenafs record``: register reads taken from an access log as a run (outputs
        named by hand; nothing is published)."""
        try:
            request = dataclasses.replace(_request_of(message), publish=False)
            template, warnings = await self._prerequisites(request, init_template=False)
            reads = _reads_of(message.get("reads"))
            started, ended = float(message["started"]), float(message["ended"])
            argv = tuple(str(a) for a in message.get("argv") or ("(recorded from an access log)",))
        except (ValueError, KeyError, TypeError) as exc:
            await say({"event": "error", "error": str(exc)})
            return
        for warning in warnings:
            await say({"event": "progress", "message": f"warning: {warning}"})
        state = RunState(
            run_id=secrets.token_hex(8),
            uid=peer_uid,
            root_pid=0,
            root_start=0,
            argv=argv,
            cwd=str(message.get("cwd") or "/"),
            host=socket.gethostname(),
            started=started,
            request=dataclasses.replace(request, template=template),
        )
        journal = await trio.to_thread.run_sync(RunJournal.create, self._root, state)
        run = _Run(state, journal)
        self._runs[state.run_id] = run
        await journal.record_async(
            state,
            {
                "op": "finished",
                "exit_code": 0,
                "ended": ended,
                "model_version": message.get("model_version"),
                "log": {"read": reads, "written": [], "listed": []},
                "outputs": list(request.outputs),
            },
        )
        await self._follow(run, say)

    async def _follow(self, run: _Run, say: Say) -> None:
        """Drive a just-finished run in the manager's nursery; tell *say* until it settles."""
        settled = run.settled
        run.listener = say
        try:
            if self._nursery is None:
                raise RuntimeError("the run manager is not serving")
            self._nursery.start_soon(self._drive, run)
            await settled.wait()
            await say(self._outcome(run))
        finally:
            run.listener = None

    def _outcome(self, run: _Run) -> dict[str, Any]:
        state = run.state
        common = {"run_id": state.run_id, "outputs": dict(state.outputs)}
        if state.phase == "registered":
            return {"event": "done", "model_run": state.model_run, **common}
        if state.phase == "failed":
            return {
                "event": "failed",
                "reason": state.failure,
                "drafts_kept": list(state.drafts_kept),
                **common,
            }
        if state.phase == "dry-run":
            return {"event": "dry-run", "preview": run.preview, **common}
        return {"event": "pending", "reason": run.pending or state.phase, **common}

    # -- driving a run ------------------------------------------------------------------------

    async def _say(self, run: _Run, text: str) -> None:
        if run.listener is not None:
            await run.listener({"event": "progress", "message": text})

    def _settle(self, run: _Run) -> None:
        run.settled.set()
        run.settled = trio.Event()

    async def _drive(self, run: _Run) -> None:
        async with run.lock:
            while not run.state.terminal:
                try:
                    await self._advance(run)
                    run.pending = None
                except _PendingError as exc:
                    now = self._clock()
                    retry_at = exc.retry_at or now + run.backoff
                    run.backoff = min(_MAX_BACKOFF, run.backoff * 2)
                    run.pending, run.next_try = str(exc), retry_at
                    log.warning("run %s pending: %s", run.state.run_id, exc)
                    self._settle(run)
                    with trio.move_on_after(max(0.0, retry_at - now)):
                        await run.wake.wait()
                    run.wake = trio.Event()
                except _FailedError as exc:
                    self._fail(run, str(exc), keep_drafts=exc.keep_drafts)
            self._finalise(run)
            self._settle(run)

    def retry_now(self) -> int:
        """Wake every pending run (``provenafs status`` shows them); how many."""
        count = 0
        for run in self._runs.values():
            if run.pending is not None and not run.state.terminal:
                run.wake.set()
                count += 1
        return count

    def _fail(self, run: _Run, reason: str, *, keep_drafts: bool) -> None:
        state = run.state
        self._closing(state.run_id)
        kept = []
        if keep_drafts:
            kept = [h for h in state.changed if self._files.draft_store.get(h) is not None]
        record = {"op": "failed", "reason": reason, "drafts_kept": kept}
        if run.journal is not None:
            run.journal.record(state, record)
        else:
            state.apply(record)
        log.warning("run %s failed: %s", state.run_id, reason)

    def _finalise(self, run: _Run) -> None:
        state = run.state
        if state.phase in {"registered", "dry-run"} and run.journal is not None:
            run.journal.remove()
            run.journal = None
        if state.phase == "registered":
            log.info("run %s registered as %s", state.run_id, state.model_run)
            self._files.lineage_changed()
        finished = [r for r in self._runs.values() if r.state.phase in {"registered", "dry-run"}]
        for old in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            self._runs.pop(old.state.run_id, None)

    def _journal(self, run: _Run, record: Mapping[str, Any]) -> None:
        """*record* journaled (the background steps of a run: a few small fsyncs per run)."""
        assert run.journal is not None
        run.journal.record(run.state, record)

    async def _advance(self, run: _Run) -> None:
        state = run.state
        if state.phase == "finished":
            if state.exit_code != 0 and state.request.on_failure != "register":
                raise _FailedError(
                    f"the command exited with {state.exit_code}: nothing was published or "
                    "registered (--on-failure register registers failed runs)",
                    keep_drafts=True,
                )
            if state.request.dry_run:
                await self._dry_run(run)
                return
            await self._publish_outputs(run)
        if state.phase == "published":
            await self._send(run)
        if state.phase == "sent":
            await self._look_for_lost_answer(run)
        if state.phase == "answered":
            await self._await_job(run)

    # -- outputs ------------------------------------------------------------------------------

    def _reason(self, state: RunState) -> str:
        return f"provenafs run {state.run_id}: {command_text(state.argv)[:200]}"

    async def _publish_outputs(self, run: _Run) -> None:
        state = run.state
        reason = self._reason(state)
        outputs: dict[str, str] = {}
        named = set(state.request.outputs)
        for base in dict.fromkeys([*state.changed, *state.request.outputs]):
            if not state.request.publish:
                outputs[base] = base
                continue
            await self._wait_for_sharers(run, base)
            await self._write_log(run, base)
            await self._say(run, f"publishing {base}")
            try:
                new: str | None = await self._scheduler.commit(base, reason)
            except NothingToPublishError as exc:
                new = exc.current_handle or await self._adopted(base, reason)
                if new is None and (self._in_place or base in named):
                    new = base
            except PublishError as exc:
                raise _PendingError(f"publishing {base} failed: {exc}") from exc
            if new is not None:
                outputs[base] = new
                await self._say(run, f"published {base} as {new}")
        self._journal(run, {"op": "published", "outputs": outputs})

    async def _wait_for_sharers(self, run: _Run, base: str) -> None:
        """Runs that changed the same dataset share its draft: publish it once none of the
        others is still open (the one version then holds what they all wrote)."""
        while True:
            sharers = [
                other
                for other in self._open
                if other != run.state.run_id and base in self._runs[other].state.changed
            ]
            if not sharers:
                return
            closed = self._closed
            await self._say(run, f"waiting for run {sharers[0]}, which also changes {base}")
            await closed.wait()

    async def _write_log(self, run: _Run, base: str) -> None:
        """The run log into *base*'s draft, unless the draft is already being published."""
        state = run.state
        draft = self._files.draft_store.get(base)
        if draft is None and not (self._in_place and base in state.changed):
            return
        if draft is not None and (draft.new_version_id or draft.version_request is not None):
            return  # written before this publish started, which now resumes
        try:
            await self._files.write_run_file(base, log_path(state.run_id), run_log(state, base))
        except FsError as exc:
            raise _FailedError(
                f"the run log cannot be written into {base} ({exc}); its draft is kept",
                keep_drafts=True,
            ) from exc
        except (OSError, api_errors.ApiError) as exc:
            raise _PendingError(f"writing the run log into {base}: {exc}") from exc

    async def _adopted(self, base: str, reason: str) -> str | None:
        """The version of *base* an earlier session published for this run: the publisher's
        rule (same reason, made by this user)."""
        try:
            return await self._scheduler.publisher.adopt_lost_version(base, reason)
        except api_errors.NotFoundError:
            return None
        except api_errors.ApiError as exc:
            raise _PendingError(f"looking up the published version of {base}: {exc}") from exc

    # -- registration -------------------------------------------------------------------------

    def _require_prov(self) -> ProvenanceClient:
        if self._prov is None:
            raise _FailedError(
                "this mount knows no prov API (mount with -o prov_api=URL)", keep_drafts=False
            )
        return self._prov

    async def _record_of(self, run: _Run) -> Any:
        prov = self._require_prov()
        state = run.state
        try:
            person = await prov.linked_person()
            template_id = state.request.template
            if template_id is None:
                raise _FailedError("the run names no workflow template", keep_drafts=False)
            template: WorkflowTemplate = await prov.workflow_template(template_id)
        except (api_errors.InvalidRequestError, api_errors.PermissionDeniedError) as exc:
            raise _FailedError(str(exc), keep_drafts=False) from exc
        except api_errors.ApiError as exc:
            raise _PendingError(f"the prov API cannot be reached: {exc}") from exc
        if person is None:
            raise _FailedError("no registry Person is linked to this user", keep_drafts=False)
        try:
            return model_run(state, template=template, modeller=person, outputs=state.outputs)
        except ValueError as exc:
            raise _FailedError(str(exc), keep_drafts=False) from exc

    async def _send(self, run: _Run) -> None:
        prov = self._require_prov()
        record = await self._record_of(run)
        self._journal(run, {"op": "sent", "at": self._clock()})
        await self._say(run, "registering the model run")
        try:
            session = await prov.register_model_run(record)
        except (api_errors.InvalidRequestError, api_errors.PermissionDeniedError) as exc:
            raise _FailedError(
                f"the prov API refused the record: {exc}", keep_drafts=False
            ) from exc
        except api_errors.ApiError as exc:
            raise _PendingError(
                f"the registration's answer was lost ({exc}); its job is looked for before it "
                "is sent again"
            ) from exc
        self._journal(run, {"op": "answered", "session_id": session})

    async def _look_for_lost_answer(self, run: _Run) -> None:
        """A registration was sent and its answer never journaled: adopt its job if it exists;
        send again only once the request can no longer arrive (its timeout has passed)."""
        prov = self._require_prov()
        state = run.state
        sent_at = state.sent_at or 0.0
        try:
            job = await prov.find_run_job(state.run_id, since=int(sent_at) - 3600)
        except api_errors.ApiError as exc:
            raise _PendingError(f"the job API cannot be reached: {exc}") from exc
        if job is not None:
            self._journal(run, {"op": "answered", "session_id": job.session_id})
            return
        give_up_at = sent_at + prov.timeout + _GRACE_MARGIN
        if self._clock() < give_up_at:
            raise _PendingError(
                "a registration was sent and its answer lost; waiting until its request timed "
                "out before sending it again",
                retry_at=give_up_at,
            )
        log.info("run %s: no job carries its id: registering again", state.run_id)
        await self._send(run)

    async def _await_job(self, run: _Run) -> None:
        prov = self._require_prov()
        session = run.state.session_id
        assert session is not None
        deadline = self._clock() + _JOB_WAIT
        delay = 0.1
        while True:
            try:
                job = await prov.job(session)
            except api_errors.ApiError as exc:
                raise _PendingError(f"the job API cannot be reached: {exc}") from exc
            if job.status == "SUCCEEDED" and job.result_id:
                self._journal(run, {"op": "registered", "handle": job.result_id})
                return
            if job.finished:
                raise _FailedError(
                    f"the registration job {session} failed: {job.info}", keep_drafts=False
                )
            if self._clock() > deadline:
                raise _PendingError(f"the registration job {session} has not finished yet")
            await trio.sleep(delay)
            delay = min(2.0, delay * 2)

    async def _dry_run(self, run: _Run) -> None:
        """Print the record the run would register (its outputs as they are now: unpublished)."""
        state = run.state
        problems: list[str] = []
        record = None
        state.outputs = {
            h: f"(the next version of {h})" if state.request.publish else h
            for h in [*state.changed, *state.request.outputs]
        }
        try:
            record = await self._record_of(run)
        except (_FailedError, _PendingError) as exc:
            problems.append(str(exc))
        run.preview = record_preview(record, problems)
        self._journal(run, {"op": "dry_run"})

    # -- observation to the run log -----------------------------------------------------------

    async def _landed(self, handle: str, path: str) -> dict[str, Any]:
        """What a file written in place (pushed, no longer in the draft) holds now."""
        try:
            found = await self._files.file_digest(handle, path)
        except (OSError, FsError, api_errors.ApiError, BlobError) as exc:
            log.warning("run log: no sha256 of %s in %s: %s", path, handle, exc)
            return {"in_place": True}
        if found is None:
            return {"removed": True}
        return {"size": found[0], "sha256": found[1], "in_place": True}

    async def _observation(self, observed: _Observed) -> dict[str, Any]:
        reads = [
            {
                "handle": r.handle,
                "path": r.path,
                "etag": r.etag,
                "size": r.size,
                "bytes_read": r.counter.bytes_read,
                "opens": r.opens,
            }
            for r in sorted(observed.reads.values(), key=lambda r: (r.handle, r.path, r.etag or ""))
        ]
        written = []
        for handle in sorted(observed.written):
            draft = self._files.draft_store.get(handle)
            for path in sorted(observed.written[handle]):
                entry = draft.resolve(path) if draft is not None else None
                item: dict[str, Any] = {"handle": handle, "path": path}
                if isinstance(entry, StagedEntry) and draft is not None:
                    size = draft.staged_size(entry)
                    local = draft.blob_dir / entry.blob
                    item["size"] = size
                    item["sha256"] = await trio.to_thread.run_sync(_hash_blocking, local, size)
                elif isinstance(entry, CarriedEntry):
                    item.update(size=entry.size, etag=entry.etag, moved=True)
                elif isinstance(entry, DirectoryEntry):
                    item["directory"] = True
                elif draft is None and self._in_place:
                    item.update(await self._landed(handle, path))  # pushed: in the dataset
                else:
                    item["removed"] = True
                written.append(item)
        listed = [{"handle": h, "path": p} for h, p in sorted(observed.listed)]
        return {"read": reads, "written": written, "listed": listed}


_OWN_ANNOTATIONS = (
    "provenafs.run_id",
    "provenafs.command",
    "provenafs.exit_code",
    "provenafs.host",
    "provenafs.cwd",
    "provenafs.files_read",
    "provenafs.log",
)


def _request_of(message: Mapping[str, Any]) -> RunRequest:
    on_failure = str(message.get("on_failure") or "keep")
    if on_failure not in {"keep", "register"}:
        raise ValueError("on_failure is keep or register")
    annotations = message.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ValueError("annotations must be an object of strings")
    outputs = message.get("outputs") or []
    return RunRequest(
        name=_text(message.get("name")),
        description=_text(message.get("description")),
        template=_text(message.get("template")),
        on_failure=on_failure,
        dry_run=bool(message.get("dry_run")),
        annotations={str(k): str(v) for k, v in annotations.items()},
        outputs=tuple(str(h) for h in outputs),
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _reads_of(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise ValueError("reads must be a list")
    reads = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("handle"), str):
            raise ValueError("each read names a handle")
        reads.append(
            {
                "handle": item["handle"],
                "path": str(item.get("path") or ""),
                "etag": item.get("etag"),
                "size": int(item.get("size") or 0),
                "bytes_read": None,
                "opens": int(item.get("opens") or 1),
            }
        )
    return reads
