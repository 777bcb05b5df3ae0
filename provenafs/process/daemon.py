"""Run one mount: build the IO layer and the filesystem core, mount them, serve until unmounted.

The daemon owns the process: logging (stderr in the foreground, a per-mountpoint log file when
started in the background by ``provenafs mount``), signals (SIGTERM/SIGINT/SIGHUP unmount
cleanly), and one trio nursery that owns every background task, pyfuse3's main loop included.
It must not make syscalls against the mount it serves (its own trio loop would have to answer
them), and it must not know filesystem semantics: those are the core's.

Start-up problems (bad token, unreachable source, unusable mountpoint) are found *before*
mounting and reported as ``StartupError`` with a message fit for the user; a parent waiting on
the readiness pipe (``READY_FD_ENV``) receives either ``ready`` or ``error: <message>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import os
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import trio
import trio.lowlevel

import provenafs
from provenafs import fuse_ops
from provenafs.api import errors as api_errors
from provenafs.api.client import DataStoreClient, discover
from provenafs.api.logins import NotLoggedInError, token_source_for
from provenafs.api.models import Discovery
from provenafs.api.provenance import ProvenanceClient
from provenafs.api.realm import RefreshingToken, TokenSource
from provenafs.api.registry import RegistryClient
from provenafs.api.services import ServiceUrls, service_urls
from provenafs.api.token_urls import InsecureUrlError, check_token_urls
from provenafs.cache.block_cache import BlockCache
from provenafs.cache.disk_cache import DiskCache
from provenafs.cache.spill import SpillArea
from provenafs.core.filesystem import Filesystem
from provenafs.mount_options import KERNEL_FLAGS, MountOptions
from provenafs.process.access_log import AccessLog
from provenafs.process.attribution import ProcessAttribution
from provenafs.process.control_socket import ControlServer, socket_path_for
from provenafs.process.kernel_readahead import set_readahead
from provenafs.process.mounts import READY_FD_ENV, find_mount, log_path_for
from provenafs.process.run_control import RunControl
from provenafs.process.run_journal import runs_root
from provenafs.process.runs import RunManager
from provenafs.read.reader import PrefetchBudget
from provenafs.storage.credentials import CredentialBroker
from provenafs.storage.s3 import S3BlobStore
from provenafs.write.draft_root_lock import DraftRootInUseError, hold_draft_root
from provenafs.write.drafts import DraftStore, default_root
from provenafs.write.publish import Publisher
from provenafs.write.publish_scheduler import PublishScheduler

__all__ = ["StartupError", "fuse_mount_options", "run"]

log = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 5.0
_NEGATIVE_TIMEOUT_SECONDS = 5.0  # how long the kernel may cache "no such name"
_DISCOVERY_TRIES = 4
_DISCOVERY_FIRST_DELAY = 0.2  # in-flight requests may finish this long after a stop signal
_QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore")


class StartupError(Exception):
    """The mount could not start; the message is what the user is shown."""


def _escape_option_value(value: str) -> str:
    """libfuse and fusermount3 split ``-o`` on commas and want ASCII: percent-encode the rest."""
    return urllib.parse.quote(value, safe=":/?#[]@!$&'()*+;=%~.-_")


def fuse_mount_options(options: MountOptions) -> set[str]:
    """The libfuse options for this mount (``fuse.provenafs`` in /proc/mounts, auto_unmount)."""
    result = {
        f"fsname={_escape_option_value(options.extra.get('fsname') or options.source)}",
        "subtype=provenafs",
        "auto_unmount",
    }
    # The core decides every permission itself (so that a version that is not the latest
    # answers EROFS, not EACCES); the kernel checks mode bits too where asked, or where other
    # users are let in and shared with (docs/SEMANTICS.md, "Security"). Either way the core
    # still refuses every change by a caller who is not the mount's owner, root included.
    if options.kernel_checks_modes:
        result.add("default_permissions")
    result.update(key for key in options.extra if key in KERNEL_FLAGS)
    if not result & {"atime", "relatime"}:
        result.add("noatime")
    if "suid" not in result:
        # Kept modes may carry set-user-ID bits another data store user published: they show,
        # but never take effect unless the mount asks for ``suid``.
        result.add("nosuid")
    if "dev" not in result:
        result.add("nodev")
    if options.read_only:
        result.add("ro")
    if options.allow_other:
        result.add("allow_other")
    return result


def _configure_logging(options: MountOptions, *, to_file: bool) -> None:
    level = logging.DEBUG if options.debug else logging.INFO
    handler: logging.Handler
    if to_file:
        path = log_path_for(options.mountpoint)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.chmod(0o700)
        handler = logging.FileHandler(path, encoding="utf-8")
        os.chmod(path, 0o600)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # These log request headers (signatures, session tokens) at debug level: keep them quiet.
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _check_mountpoint(options: MountOptions) -> None:
    mountpoint = options.mountpoint
    if not mountpoint.exists():
        raise StartupError(f"mountpoint {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise StartupError(f"mountpoint {mountpoint} is not a directory")
    existing = find_mount(mountpoint)
    if existing is not None:
        raise StartupError(
            f"mountpoint {mountpoint} is already mounted ({existing.fstype} from {existing.source})"
        )
    if any(mountpoint.iterdir()):
        raise StartupError(f"mountpoint {mountpoint} is not empty")


class _Readiness:
    """The pipe a parent ``provenafs mount`` waits on: one line, ``ready`` or ``error: ...``."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def from_environment(cls) -> _Readiness:
        raw = os.environ.pop(READY_FD_ENV, None)
        if raw is None or not raw.isdigit():
            return cls(None)
        return cls(int(raw))

    @property
    def has_parent(self) -> bool:
        return self._fd is not None

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.write(fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
        with contextlib.suppress(OSError):
            os.close(fd)

    def ready(self) -> None:
        self._send("ready")

    def failed(self, message: str) -> None:
        self._send(f"error: {message}")


def _describe_api_failure(options: MountOptions, exc: Exception) -> str:
    source = options.source
    if isinstance(exc, NotLoggedInError):
        return str(exc)
    if isinstance(exc, api_errors.AuthenticationError):
        return f"{source} refused the token ({exc}); run `provenafs login {source}` or set a token"
    if isinstance(exc, api_errors.PermissionDeniedError):
        return f"{source} denied access ({exc}); the account lacks the registry read role"
    if isinstance(exc, api_errors.UnavailableError):
        return f"cannot reach the data store at {source}: {exc}"
    if isinstance(exc, api_errors.NotFoundError):
        return f"{source} does not look like a Provena data store: {exc}"
    return f"cannot start against {source}: {type(exc).__name__}: {exc}"


async def _discover_with_retries(source: str) -> Discovery:
    """``discover`` tries once; a data store that fails briefly must not stop a mount."""
    delay = _DISCOVERY_FIRST_DELAY
    for _ in range(_DISCOVERY_TRIES - 1):
        try:
            return await discover(source)
        except api_errors.UnavailableError as exc:
            log.warning("discovery of %s failed (%s); retrying in %.1f s", source, exc, delay)
        await trio.sleep(delay)
        delay *= 2
    return await discover(source)


@dataclasses.dataclass(frozen=True)
class _Mounted:
    """What one mount runs: the filesystem core, its publishing service and control socket."""

    fs: Filesystem
    publishing: PublishScheduler
    control: ControlServer
    disk: DiskCache | None  # its writer runs in the mount's nursery
    runs: RunManager  # drives finished runs in the mount's nursery


def _publishing_for(
    options: MountOptions,
    fs: Filesystem,
    client: DataStoreClient,
    broker: CredentialBroker,
    store: S3BlobStore,
) -> PublishScheduler:
    publisher = Publisher(
        client,
        broker,
        store,
        fs.draft_store,
        fs,
        default_reason=options.reason,
        in_place=options.write_mode == "in-place",
    )
    service = PublishScheduler(publisher, publish_delay=options.publish_delay)
    fs.set_in_place_publisher(service)  # -o writes=in-place pushes at close through it
    return service


def _control_status(
    options: MountOptions,
    client: DataStoreClient,
    broker: CredentialBroker,
    cache: BlockCache,
    budget: PrefetchBudget,
    *,
    runs: RunManager,
) -> Callable[[], dict[str, Any]]:
    """The mount's counters for ``provenafs status`` (credential expiries, never credentials)."""

    def status() -> dict[str, Any]:
        return {
            "version": provenafs.__version__,
            "pid": os.getpid(),
            "source": options.source,
            "mountpoint": str(options.mountpoint),
            "read_only": options.read_only,
            "on_unmount": options.on_unmount,
            "access_log": None if options.access_log is None else str(options.access_log),
            "block_cache": dict(cache.statistics()),
            "prefetch_budget": dict(budget.statistics()),
            "data_store_calls": dict(client.statistics()),
            "credentials": dict(broker.statistics()),
            "credential_expiries": {
                f"{handle} {kind}": expiry.isoformat()
                for (handle, kind), expiry in broker.expiries().items()
            },
            **runs.status(),
        }

    return status


async def _serve_control(
    control: ControlServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The control socket; a mount whose socket cannot be made still serves files."""
    try:
        await control.serve(task_status=task_status)
    except OSError as exc:
        log.error("no control socket at %s: %s", control.socket_path, exc)
        task_status.started()


def _check_token_urls(
    options: MountOptions, discovery: Discovery | None, services: ServiceUrls | None = None
) -> None:
    """Refuse, before any token is sent, a URL that would carry one in clear: the data store;
    then the realm and S3 endpoint that discovery (or the options) name, and the services."""
    others: dict[str, str | None] = {}
    if discovery is not None:
        others = {"the Keycloak realm": discovery.realm_url}
        others["the S3 endpoint"] = discovery.s3_endpoint_url
    if services is not None:
        others.update(services.by_name())
    try:
        check_token_urls(options.source, others, insecure_http=options.insecure_http)
    except InsecureUrlError as exc:
        raise StartupError(str(exc)) from exc


@contextlib.asynccontextmanager
async def _open_filesystem(options: MountOptions) -> AsyncIterator[_Mounted]:
    """Discover the data store, check the token works, and build the core over the IO layer."""
    try:
        _check_token_urls(options, None)
        discovery = await _discover_with_retries(options.source)
        discovery = dataclasses.replace(
            discovery,
            realm_url=options.realm_url or discovery.realm_url,
            s3_endpoint_url=options.s3_endpoint or discovery.s3_endpoint_url,
            region=options.region or discovery.region,
        )
        # the discovery document is unauthenticated: it must not lead a token into clear
        services = service_urls(options.source, discovery.document, options.services)
        _check_token_urls(options, discovery, services)
        tokens = token_source_for(
            options.source, discovery.realm_url, offline_token_file=options.offline_token_file
        )
    except api_errors.ApiError as exc:
        raise StartupError(_describe_api_failure(options, exc)) from exc
    client = DataStoreClient(options.source, tokens)
    try:
        try:
            # One cheap authenticated call: a bad token or source fails here, before mounting.
            await client.list_page(None, page_size=1)
        except api_errors.ApiError as exc:
            raise StartupError(_describe_api_failure(options, exc)) from exc
        log.info(
            "data store %s: S3 %s, region %s",
            options.source,
            discovery.s3_endpoint_url or "(AWS default)",
            discovery.region,
        )
        registry, username = await _registry_for(client, services, tokens)
        store = S3BlobStore(discovery.s3_endpoint_url, discovery.region)
        broker = CredentialBroker(client)
        disk = None
        if options.cache_dir is not None:
            disk = DiskCache(options.cache_dir, options.cache_size)
        cache = BlockCache(options.memory_cache_size, disk=disk)
        budget = PrefetchBudget(options.prefetch_budget)
        # Drafts a crash left behind are replayed here, before the mount shows anything.
        drafts_root = default_root(options.source, options.state_dir)
        drafts = await trio.to_thread.run_sync(DraftStore, drafts_root)
        fs = Filesystem(
            client=client,
            broker=broker,
            store=store,
            cache=cache,
            budget=budget,
            options=options,
            drafts=drafts,
            spill=SpillArea(spill_directory(), options.spill_size) if options.spill_size else None,
            services=registry,
            username=username,
        )
        fs.set_kernel_notifier(fuse_ops.KernelNotifier())
        publishing = _publishing_for(options, fs, client, broker, store)
        prov, access_log = _provenance_for(options, fs, tokens, services)
        runs = RunManager(
            root=runs_root(options.source, options.state_dir),
            source=options.source,
            files=fs,
            scheduler=publishing,
            prov=prov,
            attribution=ProcessAttribution(),
            access_log=access_log,
            run_template=options.run_template,
            in_place=options.write_mode == "in-place",
        )
        runs.recover()  # before anything publishes: a run's drafts are held
        fs.set_access_observer(runs)
        editor = fs.sidecar_editor
        control = ControlServer(
            socket_path_for(options.mountpoint),
            publishing=publishing,
            status=_control_status(options, client, broker, cache, budget, runs=runs),
            reverter=None if editor is None else editor.revert,
            runs=RunControl(runs, fs.lineage),
            allowed_uid=options.uid,  # the mount's owner only, as for changes through it
            actions=None if fs.dataset_actions is None else fs.dataset_actions.control_actions(),
        )
        try:
            yield _Mounted(fs, publishing, control, disk, runs)
        finally:
            with trio.CancelScope(shield=True):
                await fs.close()
                if prov is not None:
                    await prov.aclose()
                if access_log is not None:
                    access_log.close()
                await registry.aclose()
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
            await _close_tokens(tokens)


def _provenance_for(
    options: MountOptions, fs: Filesystem, tokens: TokenSource, services: ServiceUrls
) -> tuple[ProvenanceClient | None, AccessLog | None]:
    """The prov/job/registry/auth client (None when no prov API is known) wired into the
    lineage nodes, and the access log if one is asked for."""
    prov = None
    if services.prov_api is not None:
        prov = ProvenanceClient(services, tokens, timeout=options.prov_timeout)
        fs.lineage.api = prov
        fs.lineage.depth = options.lineage_depth
    else:
        log.info("no prov API known for %s: runs and lineage are unavailable", options.source)
    access_log = None
    if options.access_log is not None:
        try:
            access_log = AccessLog(options.access_log)
        except OSError as exc:
            raise StartupError(f"cannot open the access log {options.access_log}: {exc}") from exc
    return prov, access_log


async def _registry_for(
    client: DataStoreClient, urls: ServiceUrls, tokens: TokenSource
) -> tuple[RegistryClient, str | None]:
    """The registry and search services beside the data store, and who the caller is.

    Neither stops a mount: without the discovery document the service URLs are derived from
    the data store's host; an unknown caller leaves ``mine/`` to be filled once known.
    """
    registry = RegistryClient(client, urls, tokens)
    try:
        identity = await registry.whoami()
    except api_errors.ApiError as exc:
        log.warning("who the caller is could not be asked (%s)", exc)
        return registry, None
    if identity.person_id is None:
        log.warning(
            "%s has no linked Person: minting, versioning, release requests and runs need one",
            identity.username,
        )
    log.info("signed in as %s (Person %s)", identity.username, identity.person_id or "none")
    return registry, identity.username


def spill_directory() -> Path:
    """Where spill files are made: the user's private cache directory."""
    env = os.environ.get("XDG_CACHE_HOME")
    return (Path(env) if env else Path.home() / ".cache") / "provenafs" / "spill"


async def _close_tokens(tokens: TokenSource) -> None:
    if isinstance(tokens, RefreshingToken):
        await tokens.aclose()


async def _stop_on_signals(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    """First signal: let libfuse stop reading requests; after a grace period, cancel the rest."""
    async for signum in signals:
        log.info("received %s: unmounting", signal.Signals(signum).name)
        fuse_ops.stop_session()
        scope.deadline = min(scope.deadline, trio.current_time() + _STOP_GRACE_SECONDS)
        return


async def _run_session(scope: trio.CancelScope) -> None:
    try:
        await fuse_ops.run_session()
    finally:
        scope.cancel()


async def _set_readahead_after_init(initialized: trio.Event, options: MountOptions) -> None:
    """Set the kernel's readahead once INIT is answered: the kernel lowers it to what INIT
    negotiated (128 KiB) when it takes the answer, undoing any earlier setting."""
    await initialized.wait()
    await trio.to_thread.run_sync(
        _set_readahead_blocking, options.mountpoint, options.read_ahead >> 10
    )


def _set_readahead_blocking(mountpoint: Path, kib: int) -> None:
    entry = find_mount(mountpoint)
    if entry is None:
        log.info("kernel readahead left alone: %s is not in /proc/self/mountinfo", mountpoint)
        return
    set_readahead(entry.device, kib)


async def _serve(options: MountOptions, readiness: _Readiness) -> None:
    stop_signals = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    with trio.open_signal_receiver(*stop_signals) as signals:
        async with _open_filesystem(options) as mounted:
            fs = mounted.fs
            initialized = trio.Event()
            try:
                fuse_ops.open_session(
                    fs,
                    options.mountpoint,
                    fuse_mount_options(options),
                    negative_timeout=min(options.metadata_ttl, _NEGATIVE_TIMEOUT_SECONDS),
                    on_init=initialized.set,
                )
            except RuntimeError as exc:
                raise StartupError(f"cannot mount at {options.mountpoint}: {exc}") from exc
            log.info("mounted %s at %s", options.source, options.mountpoint)
            try:
                async with trio.open_nursery() as nursery:
                    await fs.start(nursery)
                    await nursery.start(_serve_control, mounted.control)
                    nursery.start_soon(mounted.publishing.run)
                    nursery.start_soon(mounted.runs.serve)
                    if mounted.disk is not None:
                        nursery.start_soon(mounted.disk.run_writer)
                    nursery.start_soon(_stop_on_signals, signals, nursery.cancel_scope)
                    nursery.start_soon(_run_session, nursery.cancel_scope)
                    if options.read_ahead:
                        nursery.start_soon(_set_readahead_after_init, initialized, options)
                    await trio.lowlevel.checkpoint()
                    readiness.ready()
            finally:
                fuse_ops.close_session()
                log.info("unmounted %s", options.mountpoint)


def _with_absolute_paths(options: MountOptions) -> MountOptions:
    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(os.path.abspath(path))

    return dataclasses.replace(
        options,
        mountpoint=Path(os.path.abspath(options.mountpoint)),
        cache_dir=absolute(options.cache_dir),
        state_dir=absolute(options.state_dir),
        offline_token_file=absolute(options.offline_token_file),
        access_log=absolute(options.access_log),
    )


@contextlib.contextmanager
def _draft_root_held(options: MountOptions) -> Iterator[None]:
    """This mount's draft store, locked against a second mount of the source for its life."""
    with contextlib.ExitStack() as stack:
        root = default_root(options.source, options.state_dir)
        try:
            stack.enter_context(hold_draft_root(root, str(options.mountpoint)))
        except DraftRootInUseError as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"cannot lock the draft store {root}: {exc}") from exc
        yield


def _bound_malloc() -> None:
    """Keep glibc from holding freed block buffers, so resident memory follows the budgets.

    Parts are fetched in worker threads and freed on the trio thread; glibc gives each thread
    its own arena (up to 8 per core), whose freed space is rarely returned, so resident memory
    grew far past the cache and prefetch budgets (245 MiB after a random-read fill, 150 MiB with
    two arenas, at the same speed). Even with two arenas, 1 MiB blocks left holes in the heaps:
    peak RSS went up to 1.2x (budget + idle RSS) in one run of several. Buffers of 256 KiB and
    more are therefore mapped and unmapped on their own (a fixed threshold: glibc's moving one
    climbs to 32 MiB): 0.89-0.94x in ten runs, for about 0.2 s more system time per 512 MiB read
    (page faults). Elsewhere than glibc this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_arena_max, m_mmap_threshold = -8, -3
    mallopt(m_arena_max, 2)
    mallopt(m_mmap_threshold, 256 << 10)


def run(options: MountOptions) -> int:
    """Mount and serve in this process until unmounted or signalled; return the exit code."""
    _bound_malloc()
    readiness = _Readiness.from_environment()
    in_background = readiness.has_parent
    options = _with_absolute_paths(options)
    _configure_logging(options, to_file=in_background)
    if in_background:
        os.chdir("/")  # a daemon must not keep the caller's working directory busy
    try:
        _check_mountpoint(options)
        with _draft_root_held(options):
            trio.run(_serve, options, readiness)
    except StartupError as exc:
        readiness.failed(str(exc))
        if in_background:
            log.error("%s", exc)
        else:
            print(f"provenafs: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.exception("the mount failed")
        readiness.failed(f"the mount failed: {type(exc).__name__}: {exc}")
        return 1
    return 0
