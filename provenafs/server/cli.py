"""``provenafs serve``: run the local data store, and the admin subcommands acting on its data dir.

``provenafs serve [--data-dir DIR] [--host H] [--port N] [--seed] ...`` starts SeaweedFS (or
uses ``--s3-endpoint``), the registry, seeding, and uvicorn; SIGTERM or SIGINT stops uvicorn and
then SeaweedFS, so no child outlives it. ``DATA_DIR/server.json`` names the running server's URL
and PID while it runs.

The subcommands (``token``, ``user``, ``group``, ``access``, ``lock``, ``unlock``, ``release``,
``mint``, ``device``, ``faults``) work whether or not the server runs: they open the same SQLite
registry and signing key. Only ``faults`` (in-memory server state) needs a running server, and
``mint`` goes through the running server when there is one (else it starts storage briefly).

Bad input gets a one-line message on stderr and exit status 2. Tokens are printed only by
``token`` (on stdout, alone); nothing here logs a token or secret. Every command runs under umask
077, and the data dir is 0700 with every file in it 0600 (``private_files``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from provenafs.server.app import AppState, create_app
from provenafs.server.auth import TokenAuthority, realm_router
from provenafs.server.datastore import DataStore, ServerSettings
from provenafs.server.faults import FaultInjector, parse_fault_flag
from provenafs.server.models import ITEM_ROLES, CollectionFormat
from provenafs.server.private_files import PRIVATE_UMASK, private_dir, tighten, write_private
from provenafs.server.registry import Registry, RegistryError
from provenafs.server.seed import SeedCaller, seed_store
from provenafs.server.services import ProvenaServices

if TYPE_CHECKING:
    from provenafs.server.objects import ObjectStore

__all__ = ["main"]

log = logging.getLogger("provenafs.server")

DEFAULT_DATA_DIR = Path("~/.local/share/provenafs/store").expanduser()
DEFAULT_PORT = 8750
DEFAULT_BUCKET = "provena-local-bucket"
CLI_TOKEN_LIFETIME = 3600
_ROLE_LETTERS = {
    "r": "entity-registry-read",
    "w": "entity-registry-write",
    "a": "entity-registry-admin",
}
_SUBCOMMANDS = (
    "token",
    "user",
    "group",
    "access",
    "lock",
    "unlock",
    "release",
    "mint",
    "device",
    "faults",
)


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


class _Shutdown(BaseException):
    """Raised from the SIGTERM handler so that ``finally`` blocks stop every child."""


# --------------------------------------------------------------------------- argument parsing


def _data_dir_option(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        help=f"the data store's directory (default: {DEFAULT_DATA_DIR})",
    )


def _server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provenafs serve",
        description="Run the local Provena-compatible data store.",
        epilog="admin subcommands: " + ", ".join(_SUBCOMMANDS) + " (provenafs serve CMD --help)",
    )
    _data_dir_option(parser, default=DEFAULT_DATA_DIR)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seed", action="store_true", help="load sample users and datasets")
    parser.add_argument(
        "--credential-ttl",
        type=int,
        default=None,
        metavar="S",
        help="advertise credentials as expiring after S seconds (default: the real session)",
    )
    parser.add_argument(
        "--token-lifetime", type=int, default=300, metavar="S", help="access token lifetime"
    )
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="use this S3 server (admin keys from PROVENAFS_S3_ACCESS_KEY_ID/_SECRET_ACCESS_KEY)",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="path_prefix=/registry,latency_ms=N,error_rate=F,fail_next=N,status=S (repeatable)",
    )
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def _admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provenafs serve")
    common = argparse.ArgumentParser(add_help=False)
    _data_dir_option(common, default=DEFAULT_DATA_DIR)
    sub = parser.add_subparsers(dest="command", required=True)

    token = sub.add_parser("token", parents=[common], help="print an access token for a user")
    token.add_argument("username")
    token.add_argument("--offline", action="store_true", help="print an offline (refresh) token")
    token.add_argument("--lifetime", type=int, default=CLI_TOKEN_LIFETIME, metavar="S")

    user = sub.add_parser("user", help="local accounts").add_subparsers(
        dest="action", required=True
    )
    user_add = user.add_parser("add", parents=[common])
    user_add.add_argument("username")
    user_add.add_argument("--email", default=None)
    user_add.add_argument("--roles", default="r,w", help="r,w,a or full realm role names")
    user.add_parser("list", parents=[common])

    group = sub.add_parser("group", help="groups").add_subparsers(dest="action", required=True)
    group_add = group.add_parser("add", parents=[common])
    group_add.add_argument("group")
    group_add.add_argument("--members", default="", help="comma-separated usernames")
    group.add_parser("list", parents=[common])

    access = sub.add_parser("access", parents=[common], help="show or set access settings")
    access.add_argument("dataset", help="a handle or a seed name")
    access.add_argument("--owner", default=None)
    access.add_argument("--general", default=None, help="comma-separated item roles ('' = none)")
    access.add_argument(
        "--group", action="append", default=None, metavar="G=ROLES", help="repeatable"
    )

    for name in ("lock", "unlock"):
        locking = sub.add_parser(name, parents=[common], help=f"{name} a dataset")
        locking.add_argument("dataset")
        locking.add_argument("--reason", default=f"{name.capitalize()}ed with provenafs serve")
        locking.add_argument("--user", default="admin", help="who the lock event names")

    release = sub.add_parser("release", help="release review").add_subparsers(
        dest="action", required=True
    )
    request = release.add_parser("request", parents=[common])
    request.add_argument("dataset")
    request.add_argument("--approver", default="admin", help="a reviewer's username or Person id")
    request.add_argument("--notes", default="Requested with provenafs serve")
    request.add_argument("--user", default=None, help="requester (default: the owner)")
    for name in ("approve", "reject"):
        acting = release.add_parser(name, parents=[common])
        acting.add_argument("dataset")
        acting.add_argument("--notes", default=f"{name.capitalize()}d with provenafs serve")
        acting.add_argument("--user", default=None, help="reviewer (default: the designated one)")

    mint = sub.add_parser("mint", parents=[common], help="mint a dataset from a JSON file")
    mint.add_argument("file", type=Path, help="a CollectionFormat JSON document")
    mint.add_argument("--user", required=True)

    device = sub.add_parser("device", help="device flow").add_subparsers(
        dest="action", required=True
    )
    approve = device.add_parser("approve", parents=[common])
    approve.add_argument("user_code")
    approve.add_argument("--user", required=True)

    faults = sub.add_parser("faults", help="fault injection of the running server")
    faults_sub = faults.add_subparsers(dest="action", required=True)
    faults_set = faults_sub.add_parser("set", parents=[common])
    faults_set.add_argument("--path-prefix", default=None)
    faults_set.add_argument("--latency-ms", type=int, default=0)
    faults_set.add_argument("--error-rate", type=float, default=0.0)
    faults_set.add_argument("--fail-next", type=int, default=0)
    faults_set.add_argument("--status", type=int, default=503)
    faults_sub.add_parser("clear", parents=[common])
    faults_sub.add_parser("list", parents=[common])
    return parser


# --------------------------------------------------------------------------- helpers


def _realm_roles(text: str) -> list[str]:
    roles = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        role = _ROLE_LETTERS.get(part, part)
        if role not in set(_ROLE_LETTERS.values()) and not role.startswith("sys-admin-"):
            raise UsageError(f"unknown realm role {part!r} (use r, w, a or full role names)")
        roles.append(role)
    if "entity-registry-admin" in roles:
        roles += ["sys-admin-read", "sys-admin-write", "sys-admin-admin"]
    return list(dict.fromkeys(roles))


def _item_roles(text: str) -> list[str]:
    roles = [p.strip() for p in text.split(",") if p.strip()]
    for role in roles:
        if role not in ITEM_ROLES:
            raise UsageError(f"unknown item role {role!r} (known: {', '.join(ITEM_ROLES)})")
    return roles


def _write_private_json(path: Path, document: dict[str, Any]) -> None:
    write_private(path, json.dumps(document, indent=2) + "\n")


def _running_server(data_dir: Path) -> dict[str, Any] | None:
    """``server.json`` of a live server on *data_dir*, or None."""
    try:
        info: dict[str, Any] = json.loads((data_dir / "server.json").read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


def _http_json(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (our own URL)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")


# --------------------------------------------------------------------------- admin commands


def _registry(args: argparse.Namespace) -> Registry:
    return Registry.in_data_dir(private_dir(args.data_dir.expanduser()))


def _resolve_dataset(registry: Registry, name: str) -> str:
    """A handle, or a seed name from ``--seed`` (e.g. ``reef-temperatures``)."""
    if registry.item_exists(name):
        return name
    seeded = registry.get_meta(f"seed:{name}")
    if seeded is not None:
        return str(json.loads(seeded)["handle"])
    raise UsageError(f"no dataset {name!r} (give a handle such as 10378.1/1932274 or a seed name)")


def _authority(data_dir: Path, lifetime: int = CLI_TOKEN_LIFETIME) -> TokenAuthority:
    return TokenAuthority(data_dir, access_lifetime=lifetime)


def _admin_token(args: argparse.Namespace, registry: Registry) -> str:
    account = registry.get_user("admin")
    if account is None or "entity-registry-admin" not in account.realm_roles:
        raise UsageError("no local 'admin' account with the realm admin role")
    token: str = _authority(args.data_dir).issue_access_token(
        account.username, account.email, list(account.realm_roles), lifetime=300
    )
    return token


def _cmd_token(args: argparse.Namespace) -> int:
    registry = _registry(args)
    account = registry.get_user(args.username)
    if account is None:
        raise UsageError(f"no local user {args.username!r} (create it with: user add)")
    if args.lifetime < 1:
        raise UsageError("--lifetime must be at least 1 second")
    authority = _authority(args.data_dir, args.lifetime)
    if args.offline:
        token = authority.issue_refresh_token(account.username, offline=True)
    else:
        token = authority.issue_access_token(
            account.username, account.email, list(account.realm_roles), lifetime=args.lifetime
        )
    print(token)
    return 0


def _cmd_user(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.action == "add":
        account = registry.add_user(args.username, args.email, _realm_roles(args.roles))
        print(f"user {account.username}: {', '.join(account.realm_roles)}")
        return 0
    for account in registry.list_users():
        groups = f" groups={','.join(account.groups)}" if account.groups else ""
        print(
            f"{account.username}\t{account.email or '-'}\t{','.join(account.realm_roles)}{groups}"
        )
    return 0


def _cmd_group(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.action == "add":
        members = [m.strip() for m in args.members.split(",") if m.strip()]
        try:
            registry.set_group(args.group, members)
        except RegistryError as exc:
            raise UsageError(str(exc)) from None
        print(f"group {args.group}: {', '.join(members) or '(no members)'}")
        return 0
    for group, group_members in registry.list_groups().items():
        print(f"{group}\t{','.join(group_members)}")
    return 0


def _cmd_access(args: argparse.Namespace) -> int:
    registry = _registry(args)
    handle = _resolve_dataset(registry, args.dataset)
    groups = None
    if args.group is not None:
        groups = {}
        for spec in args.group:
            name, sep, roles = spec.partition("=")
            if not sep or not name:
                raise UsageError(f"--group wants G=ROLES, got {spec!r}")
            groups[name] = _item_roles(roles)
    general = None if args.general is None else _item_roles(args.general)
    try:
        access = registry.set_access(handle, owner=args.owner, general=general, groups=groups)
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(
        json.dumps(
            {
                "id": handle,
                "owner": access.owner,
                "general": list(access.general),
                "groups": {g: list(r) for g, r in access.groups.items()},
            }
        )
    )
    return 0


def _cmd_lock(args: argparse.Namespace) -> int:
    registry = _registry(args)
    handle = _resolve_dataset(registry, args.dataset)
    account = registry.get_user(args.user)
    if account is None:
        raise UsageError(f"no local user {args.user!r}")
    locked = args.command == "lock"
    registry.set_locked(
        handle, locked, username=account.username, email=account.email, reason=args.reason
    )
    print(f"{handle}: {'locked' if locked else 'unlocked'}")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    registry = _registry(args)
    handle = _resolve_dataset(registry, args.dataset)
    item = registry.fetch_dataset(handle)
    try:
        if args.action == "request":
            requester = args.user or item.owner_username
            item = registry.request_release(
                handle,
                approver_id=registry.linked_person(args.approver) or args.approver,
                requester=registry.linked_person(requester) or requester,
                notes=args.notes,
            )
        else:
            reviewer = item.release_approver or ""
            if args.user is not None:
                reviewer = registry.linked_person(args.user) or args.user
            item = registry.action_release(
                handle, approve=args.action == "approve", reviewer=reviewer, notes=args.notes
            )
    except RegistryError as exc:
        raise UsageError(str(exc)) from None
    print(f"{handle}: {item.release_status.value}")
    return 0


def _cmd_device(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if registry.get_user(args.user) is None:
        raise UsageError(f"no local user {args.user!r}")
    if not _authority(args.data_dir).approve_device(args.user_code, args.user):
        raise UsageError(f"no pending device authorisation with user code {args.user_code!r}")
    print(f"device code {args.user_code} approved for {args.user}")
    return 0


def _cmd_faults(args: argparse.Namespace) -> int:
    registry = _registry(args)
    server = _running_server(args.data_dir)
    if server is None:
        raise UsageError(f"no provenafs serve is running on {args.data_dir}")
    token = _admin_token(args, registry)
    url = f"{server['url']}/_provenafs/faults"
    if args.action == "set":
        rule = {
            "path_prefix": args.path_prefix,
            "latency_ms": args.latency_ms,
            "error_rate": args.error_rate,
            "fail_next": args.fail_next,
            "status": args.status,
        }
        status, body = _http_json("PUT", url, token, rule)
    elif args.action == "clear":
        status, body = _http_json("DELETE", url, token)
    else:
        status, body = _http_json("GET", url, token)
    if status != 200:
        raise UsageError(f"the server refused: {status} {body}")
    print(json.dumps(body))
    return 0


def _cmd_mint(args: argparse.Namespace) -> int:
    registry = _registry(args)
    account = registry.get_user(args.user)
    if account is None:
        raise UsageError(f"no local user {args.user!r}")
    try:
        document = json.loads(args.file.read_text())
        collection_format = CollectionFormat.model_validate(document)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = f"{args.file}: invalid CollectionFormat at {where}: {first['msg']}"
            raise UsageError(message) from None
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    server = _running_server(args.data_dir)
    if server is not None:
        token = _authority(args.data_dir).issue_access_token(
            account.username, account.email, list(account.realm_roles), lifetime=300
        )
        status, body = _http_json("POST", f"{server['url']}/register/mint-dataset", token, document)
        if status != 200 or not body["status"]["success"]:
            raise UsageError(f"mint refused: {status} {json.dumps(body)}")
        print(body["handle"])
        return 0
    with _storage(args.data_dir, _saved_settings(args.data_dir)) as (objects, settings):
        datastore = DataStore(registry, objects, settings)
        datastore.activities = ProvenaServices(registry).provenance  # jobs run when serving
        caller = SeedCaller(account.username, account.email, account.realm_roles)
        minted = datastore.mint(caller, collection_format)
    if minted.handle is None:
        raise UsageError(minted.status.details)
    print(minted.handle)
    return 0


# --------------------------------------------------------------------------- the server


@dataclasses.dataclass(frozen=True)
class _StorageChoice:
    bucket: str
    s3_endpoint: str | None  # None: run SeaweedFS in the data dir
    credential_ttl: int | None = None


def _saved_settings(data_dir: Path) -> _StorageChoice:
    try:
        saved = json.loads((data_dir / "serve-config.json").read_text())
    except (OSError, ValueError):
        return _StorageChoice(DEFAULT_BUCKET, None)
    return _StorageChoice(saved.get("bucket", DEFAULT_BUCKET), saved.get("s3_endpoint"))


@contextlib.contextmanager
def _storage(
    data_dir: Path, choice: _StorageChoice, host: str = "127.0.0.1"
) -> Iterator[tuple[ObjectStore, ServerSettings]]:
    """Start (or connect to) S3 and yield ``(ObjectStore, ServerSettings)``; stop it after."""
    # boto3 is imported only where storage is needed: admin subcommands start faster without it
    from provenafs.server.objects import ObjectStore, admin_from_environment  # noqa: PLC0415
    from provenafs.server.seaweed import SeaweedServer  # noqa: PLC0415

    weed = None
    try:
        if choice.s3_endpoint is not None:
            try:
                admin = admin_from_environment(choice.s3_endpoint, choice.bucket)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        else:
            weed = SeaweedServer(data_dir, host=host, bucket=choice.bucket)
            admin = weed.start()
        objects = ObjectStore(admin)
        objects.ensure_bucket()
        _write_private_json(
            data_dir / "s3-admin.json",
            {
                "endpoint_url": admin.endpoint_url,
                "access_key_id": admin.access_key_id,
                "secret_access_key": admin.secret_access_key,
                "bucket": admin.bucket,
                "region": admin.region,
            },
        )
        settings = ServerSettings(
            bucket=admin.bucket,
            s3_endpoint_url=admin.endpoint_url,
            credential_ttl=choice.credential_ttl,
        )
        yield objects, settings
    finally:
        if weed is not None:
            weed.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Refuse early (before starting storage) when the HTTP port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signum)


def _serve(argv: Sequence[str]) -> int:
    args = _server_parser().parse_args(list(argv))
    if not _is_loopback(args.host) and not args.allow_remote:
        raise UsageError(f"--host {args.host} is not a loopback address (add --allow-remote)")
    if not 0 < args.port < 65536:
        raise UsageError("--port must be within 1..65535")
    if args.credential_ttl is not None and args.credential_ttl < 1:
        raise UsageError("--credential-ttl must be at least 1 second")
    if args.token_lifetime < 1:
        raise UsageError("--token-lifetime must be at least 1 second")
    try:
        rules = [parse_fault_flag(spec) for spec in args.fault]
    except ValueError as exc:
        raise UsageError(f"--fault: {exc}") from None
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _check_port_free(args.host, args.port)
    data_dir = private_dir(args.data_dir.expanduser().resolve())
    tighten(data_dir)  # a data dir of an older version held files others could read
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        return _run_server(args, data_dir, FaultInjector(rules), started)
    except (_Shutdown, KeyboardInterrupt):
        log.info("provenafs serve: stopped")
        return 0
    except Exception as exc:
        from provenafs.server.objects import StorageError  # noqa: PLC0415

        if not isinstance(exc, StorageError):
            raise
        print(f"provenafs serve: storage failed: {exc}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(OSError):
            (data_dir / "server.json").unlink()


def _run_server(
    args: argparse.Namespace, data_dir: Path, faults: FaultInjector, started: float
) -> int:
    import uvicorn  # noqa: PLC0415 (only the server needs it)

    registry = Registry.in_data_dir(data_dir)
    choice = _StorageChoice(args.bucket, args.s3_endpoint, args.credential_ttl)
    _write_private_json(
        data_dir / "serve-config.json", {"bucket": args.bucket, "s3_endpoint": args.s3_endpoint}
    )
    try:
        with _storage(data_dir, choice, args.host) as (objects, settings):
            log.info("storage ready after %.2f s", time.monotonic() - started)
            datastore = DataStore(registry, objects, settings)
            services = ProvenaServices(registry)
            datastore.activities = services.provenance
            if args.seed:
                seed_store(datastore, data_dir, services.entities)
                log.info("seeded after %.2f s", time.monotonic() - started)
            authority = TokenAuthority(data_dir, access_lifetime=args.token_lifetime)
            state = AppState(
                datastore=datastore,
                authority=authority,
                faults=faults,
                realm_router=realm_router(authority, registry.lookup_user),
                ready=threading.Event(),
                routers=services.routers(),
            )
            app = create_app(state)
            config = uvicorn.Config(
                app,
                host=args.host,
                port=args.port,
                log_level=args.log_level,
                server_header=False,
                lifespan="off",
            )
            server = uvicorn.Server(config)
            url = f"http://{args.host}:{args.port}"
            services.runner.start()
            state.ready.set()
            _write_private_json(data_dir / "server.json", {"url": url, "pid": os.getpid()})
            print(f"provenafs serve: {url} (data dir {data_dir})", flush=True)
            try:
                server.run()
            finally:
                services.runner.stop()
            if not server.started:
                raise UsageError(f"could not listen on {args.host}:{args.port}")
    finally:
        registry.close()
    return 0


# --------------------------------------------------------------------------- entry point

_HANDLERS = {
    "token": _cmd_token,
    "user": _cmd_user,
    "group": _cmd_group,
    "access": _cmd_access,
    "lock": _cmd_lock,
    "unlock": _cmd_lock,
    "release": _cmd_release,
    "mint": _cmd_mint,
    "device": _cmd_device,
    "faults": _cmd_faults,
}


def _subcommand_first(args: list[str]) -> list[str]:
    """Accept ``--data-dir DIR SUBCOMMAND ...`` as well as ``SUBCOMMAND ... --data-dir DIR``."""
    if len(args) >= 3 and args[0] == "--data-dir" and args[2] in _SUBCOMMANDS:
        return [*args[2:], *args[:2]]
    if len(args) >= 2 and args[0].startswith("--data-dir=") and args[1] in _SUBCOMMANDS:
        return [*args[1:], args[0]]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``provenafs serve ...``; returns the exit status (2 for bad input)."""
    args_list = _subcommand_first(list(sys.argv[1:] if argv is None else argv))
    os.umask(PRIVATE_UMASK)  # whatever the store or its children write is private to its user
    try:
        if args_list and args_list[0] in _SUBCOMMANDS:
            args = _admin_parser().parse_args(args_list)
            args.data_dir = args.data_dir.expanduser()
            return _HANDLERS[args.command](args)
        return _serve(args_list)
    except (UsageError, RegistryError) as exc:
        print(f"provenafs serve: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse: --help is 0, bad usage is 2
        return int(exc.code) if isinstance(exc.code, int) else 2
