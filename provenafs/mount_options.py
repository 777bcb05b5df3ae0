"""The mount's command line, ``[SOURCE] MOUNTPOINT [-f] [-d] [-o key[=value],...]``, as a value.

``parse_mount_args`` accepts what ``provenafs mount``, ``mount -t fuse.provenafs`` and an
``/etc/fstab`` line pass: our own ``-o`` keys, the standard FUSE and mount(8) keys (kept in
``extra`` for the daemon to pass on or ignore), and mount(8)'s helper flags
``-n -s -v -t TYPE -N NS``.
Unknown keys are an error with a clear message, never silently dropped.

Defaults keep the daemon under 256 MiB RSS: 64 MiB of memory cache, 64 MiB of prefetch. The mount is
read-write (drafts become new versions, docs/SEMANTICS.md, Writes); ``-o ro`` makes it read-only.
Write-side keys: ``writes=draft|in-place``, ``state_dir=`` (where drafts live; default
``$XDG_STATE_HOME/provenafs``), ``publish_delay=`` (seconds of quiet before a draft publishes
itself; 0 = never), ``on_unmount=publish|refuse``, ``reason=`` (the reason of published versions)
and ``metadata_reason=`` (of metadata edits). Sharing with other local users (docs/SEMANTICS.md,
"Security"): ``allow_other``, ``umask=``, ``file_mode=``, ``dir_mode=`` (octal, as rclone and
mountpoint-s3 name them; only the group and other read and search bits are taken) and
``default_permissions``; ``insecure_http`` lets tokens go over plain http to another machine.
Every accepted standard key either reaches the kernel or is mount(8)'s own: none is dropped.
Runs and lineage: ``access_log=``, ``run_template=``, ``lineage_depth=``, ``prov_timeout=`` and
the service URLs ``prov_api=``, ``job_api=``, ``registry_api=``, ``auth_api=``, ``search_api=``.
This module only parses: it must not touch the
filesystem, the network or the environment beyond the caller's uid/gid defaults, and never reads a
token file (it only names it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEFAULT_SOURCE",
    "KERNEL_FLAGS",
    "SERVICE_OPTIONS",
    "SHAREABLE_DIR_BITS",
    "SHAREABLE_FILE_BITS",
    "MountOptions",
    "MountOptionsError",
    "parse_mount_args",
    "parse_size",
]

DEFAULT_SOURCE = "http://127.0.0.1:8750"
MIB = 1 << 20

# mount(8)/fstab flags the kernel understands for a FUSE mount: the daemon passes these on.
KERNEL_FLAGS = frozenset(
    {
        "nodev",
        "nosuid",
        "noexec",
        "exec",
        "dev",
        "suid",
        "noatime",
        "relatime",
        "atime",
        "nodiratime",
    }
)
# Standard keys that mount(8), fstab and libfuse users pass; accepted and kept in ``extra``.
# Beyond the kernel's flags they are mount(8)'s own (noauto, _netdev, ...), which mean nothing
# to a filesystem, or libfuse's that the daemon sets itself (auto_unmount always; fsname is
# honoured, subtype must be provenafs). default_permissions is a flag of its own (below).
_PASSTHROUGH_KEYS = KERNEL_FLAGS | frozenset(
    {
        "auto_unmount",
        "_netdev",
        "defaults",
        "noauto",
        "auto",
        "user",
        "users",
        "nouser",
        "nofail",
        "owner",
        "group",
        "fsname",
        "subtype",
    }
)
_FLAG_KEYS = frozenset({"allow_other", "ro", "rw", "debug", "default_permissions", "insecure_http"})
# What the mode options can share with other users: read and execute (for directories, search)
# bits of group and others; a file's execute bits show only where its kept mode has them. Write
# bits are never shared: only the mount's owner changes anything.
SHAREABLE_FILE_BITS = 0o055
SHAREABLE_DIR_BITS = 0o055
WRITE_MODES = ("draft", "in-place")
# Base URLs of Provena's other services (default: the discovery document, or derived).
SERVICE_OPTIONS = ("registry_api", "prov_api", "search_api", "job_api", "auth_api")
ON_UNMOUNT = ("publish", "refuse")
_VALUE_KEYS = frozenset(
    {
        "cache_dir",
        "cache_size",
        "memory_cache_size",
        "prefetch_budget",
        "read_ahead",
        "spill_size",
        "metadata_ttl",
        "listing_ttl",
        "listing_cache_size",
        "uid",
        "gid",
        "offline_token_file",
        "metadata_reason",
        "writes",
        "state_dir",
        "publish_delay",
        "on_unmount",
        "reason",
        "realm_url",
        "s3_endpoint",
        "region",
        # runs and lineage (docs/SEMANTICS.md, "Runs" and "Lineage in the tree")
        "access_log",
        "run_template",
        "lineage_depth",
        "prov_timeout",
        *SERVICE_OPTIONS,
        "umask",
        "file_mode",
        "dir_mode",
    }
)
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MountOptionsError(ValueError):
    """The mount's arguments are wrong; the message says which and how."""


@dataclasses.dataclass(frozen=True)
class MountOptions:
    source: str
    mountpoint: Path
    foreground: bool
    debug: bool
    cache_dir: Path | None
    cache_size: int  # bytes on disk under cache_dir
    memory_cache_size: int  # bytes of the in-memory block cache
    prefetch_budget: int  # bytes of read-ahead across all open files
    metadata_ttl: float  # seconds records and the dataset list are trusted
    listing_ttl: float  # seconds S3 listings are trusted
    allow_other: bool
    read_only: bool
    uid: int  # owner of every node (default: the mounting user)
    gid: int
    offline_token_file: Path | None
    extra: Mapping[str, str]  # accepted standard keys (auto_unmount, x-systemd.*, ...)
    # The reason sent with sidecar metadata edits that set none (no commas: -o splits on them).
    metadata_reason: str | None = None
    # The write side (docs/SEMANTICS.md, Writes); defaults keep older constructors working.
    write_mode: str = "draft"  # "draft": changes become a new version; "in-place": pushed in
    state_dir: Path | None = None  # drafts live in <state_dir>/drafts/<hash of source>
    publish_delay: float = 300.0  # seconds without writers or changes before a draft publishes
    on_unmount: str = "publish"  # "publish" pending drafts at unmount, or "refuse" to unmount
    reason: str | None = None  # reason of published versions (else a generated summary)
    # Overrides of what discovery names (a real Provena deployment has no discovery document).
    realm_url: str | None = (
        None  # Keycloak realm, e.g. https://auth.example.org/auth/realms/provena
    )
    s3_endpoint: str | None = None  # None: AWS S3
    region: str | None = None  # None: the discovered region (ap-southeast-2 by default)
    read_ahead: int = 1 << 20  # bytes the kernel reads ahead in a file (0: the kernel's own)
    spill_size: int = 1 << 30  # bytes of local spill files behind page-cache fills (0: none)
    # Runs and lineage: one JSON line per open of a dataset file (None: no access log), the
    # workflow template of runs, lineage depth (1..10), service URL overrides, and how long a
    # prov API call may take (a registration whose answer was lost is looked for after that).
    access_log: Path | None = None
    run_template: str | None = None
    lineage_depth: int = 2
    services: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    prov_timeout: float = 30.0
    # Sharing with other local users (docs/SEMANTICS.md, "Security"); modes are octal values.
    umask: int | None = None
    file_mode: int | None = None
    dir_mode: int | None = None
    default_permissions: bool = False  # asked for: the kernel checks mode bits
    insecure_http: bool = False  # tokens may go over plain http to another machine
    listing_cache_size: int = 64 << 20  # bytes of S3 listings kept (a warm re-walk's bound)

    @property
    def shared_file_bits(self) -> int:
        """The group and other bits files show: what other users may read (all of a kept mode
        where no other user reaches the mount)."""
        return self._shared(self.file_mode, SHAREABLE_FILE_BITS)

    @property
    def shared_dir_bits(self) -> int:
        """The group and other bits directories show: what other users may list and search."""
        return self._shared(self.dir_mode, SHAREABLE_DIR_BITS)

    def _shared(self, mode: int | None, shareable: int) -> int:
        if not self.allow_other:  # nobody else reaches the mount: kept modes show whole
            return 0o077
        if mode is not None:
            return mode & shareable
        if self.umask is not None:
            return shareable & ~self.umask
        return 0  # let in with allow_other, shared with nothing unless a mode option says so

    @property
    def kernel_checks_modes(self) -> bool:
        """``default_permissions``: asked for, or other users are let in and shared with."""
        shares = bool(self.shared_file_bits or self.shared_dir_bits)
        return self.default_permissions or (self.allow_other and shares)


def parse_size(text: str) -> int:
    """Bytes in ``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"4096"`` (binary units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise MountOptionsError(f"not a size: {text!r} (use e.g. 4096, 512M, 2G)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def _parse_seconds(key: str, text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise MountOptionsError(f"-o {key}= wants seconds, got {text!r}") from None
    if not math.isfinite(value):
        raise MountOptionsError(f"-o {key}= wants a finite number of seconds, got {text!r}")
    if value < 0:
        raise MountOptionsError(f"-o {key}= must not be negative")
    return value


def _parse_id(key: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise MountOptionsError(f"-o {key}= wants a numeric id, got {text!r}")
    return int(text)


def _parse_mode(key: str, text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise MountOptionsError(f"-o {key}= wants octal permission bits (e.g. 0644), got {text!r}")
    return value


def _split_options(text: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    for item in text.split(","):
        if not item:
            continue
        key, equals, value = item.partition("=")
        pairs.append((key.strip(), value if equals else None))
    return pairs


def parse_mount_args(argv: Sequence[str]) -> MountOptions:
    """Parse ``[SOURCE] MOUNTPOINT [-f] [-d] [-o a=b,c]`` (flags may come anywhere)."""
    positional: list[str] = []
    option_pairs: list[tuple[str, str | None]] = []
    foreground = False
    debug = False
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg in ("-f", "--foreground"):
            foreground = True
        elif arg in ("-d", "--debug"):
            debug = True
            foreground = True
        elif arg in ("-n", "-s", "-v"):
            pass  # mount(8) helper flags: no mtab, sloppy, verbose
        elif arg in ("-o", "-t", "-N"):
            if index >= len(args):
                raise MountOptionsError(f"{arg} needs a value")
            if arg == "-o":
                option_pairs += _split_options(args[index])
            index += 1
        elif arg.startswith("-o") and len(arg) > 2:
            option_pairs += _split_options(arg[2:])
        elif arg.startswith("-") and arg != "-":
            raise MountOptionsError(f"unknown flag {arg!r} (known: -f, -d, -o opt[=value],...)")
        else:
            positional.append(arg)

    if len(positional) == 1:
        source, mountpoint = DEFAULT_SOURCE, positional[0]
    elif len(positional) == 2:
        source, mountpoint = positional
    else:
        raise MountOptionsError(
            "usage: provenafs mount [SOURCE] MOUNTPOINT [-f] [-d] [-o opt[=value],...]"
        )
    if not re.match(r"https?://[^/\s]+", source):
        raise MountOptionsError(f"SOURCE must be an http(s) URL of a data store, got {source!r}")

    values: dict[str, str] = {}
    flags: set[str] = set()
    extra: dict[str, str] = {}
    for key, value in option_pairs:
        if key in _FLAG_KEYS:
            if value is not None:
                raise MountOptionsError(f"-o {key} takes no value")
            flags.add(key)
        elif key in _VALUE_KEYS:
            if not value:
                raise MountOptionsError(f"-o {key}= needs a value")
            values[key] = value
        elif key in _PASSTHROUGH_KEYS or key.startswith("x-") or key == "comment":
            extra[key] = value or ""
        else:
            known = sorted(_FLAG_KEYS | _VALUE_KEYS)
            raise MountOptionsError(f"unknown mount option {key!r} (known: {', '.join(known)})")
    if {"ro", "rw"} <= flags:
        raise MountOptionsError("-o ro and -o rw contradict each other")
    if extra.get("subtype", "provenafs") != "provenafs":
        raise MountOptionsError("-o subtype= can only be provenafs (mounts show as fuse.provenafs)")

    write_mode = values.get("writes", "draft")
    if write_mode not in WRITE_MODES:
        raise MountOptionsError(
            f"-o writes= is one of {', '.join(WRITE_MODES)}, got {write_mode!r}"
        )
    on_unmount = values.get("on_unmount", "publish")
    if on_unmount not in ON_UNMOUNT:
        raise MountOptionsError(
            f"-o on_unmount= is one of {', '.join(ON_UNMOUNT)}, got {on_unmount!r}"
        )
    depth = values.get("lineage_depth", "2")
    if not (depth.isascii() and depth.isdigit()) or not 1 <= int(depth) <= 10:
        raise MountOptionsError(
            f"-o lineage_depth= is a number of hops from 1 to 10, got {depth!r}"
        )
    for key in SERVICE_OPTIONS:
        if key in values and not re.match(r"https?://[^/\s]+", values[key]):
            raise MountOptionsError(f"-o {key}= must be an http(s) URL, got {values[key]!r}")
    access_log = values.get("access_log")
    state_dir = values.get("state_dir")
    cache_dir = values.get("cache_dir")
    token_file = values.get("offline_token_file")
    return MountOptions(
        source=source.rstrip("/"),
        mountpoint=Path(mountpoint).expanduser(),
        foreground=foreground,
        debug=debug or "debug" in flags,
        cache_dir=Path(cache_dir).expanduser() if cache_dir else None,
        cache_size=parse_size(values.get("cache_size", "1G")),
        memory_cache_size=parse_size(values.get("memory_cache_size", "64M")),
        prefetch_budget=parse_size(values.get("prefetch_budget", "64M")),
        metadata_ttl=_parse_seconds("metadata_ttl", values.get("metadata_ttl", "30")),
        listing_ttl=_parse_seconds("listing_ttl", values.get("listing_ttl", "300")),
        allow_other="allow_other" in flags,
        read_only="ro" in flags,
        uid=_parse_id("uid", values["uid"]) if "uid" in values else os.getuid(),
        gid=_parse_id("gid", values["gid"]) if "gid" in values else os.getgid(),
        offline_token_file=Path(token_file).expanduser() if token_file else None,
        extra=MappingProxyType(extra),
        metadata_reason=values.get("metadata_reason", "").strip() or None,
        write_mode=write_mode,
        state_dir=Path(state_dir).expanduser() if state_dir else None,
        publish_delay=_parse_seconds("publish_delay", values.get("publish_delay", "300")),
        on_unmount=on_unmount,
        reason=values.get("reason", "").strip() or None,
        realm_url=values.get("realm_url", "").strip() or None,
        s3_endpoint=values.get("s3_endpoint", "").strip() or None,
        region=values.get("region", "").strip() or None,
        read_ahead=parse_size(values.get("read_ahead", "1M")),
        spill_size=parse_size(values.get("spill_size", "1G")),
        access_log=Path(access_log).expanduser() if access_log else None,
        run_template=values.get("run_template", "").strip() or None,
        lineage_depth=int(depth),
        services=MappingProxyType(
            {k: values[k].rstrip("/") for k in SERVICE_OPTIONS if k in values}
        ),
        prov_timeout=_parse_seconds("prov_timeout", values.get("prov_timeout", "30")),
        umask=_parse_mode("umask", values["umask"]) if "umask" in values else None,
        file_mode=_parse_mode("file_mode", values["file_mode"]) if "file_mode" in values else None,
        dir_mode=_parse_mode("dir_mode", values["dir_mode"]) if "dir_mode" in values else None,
        default_permissions="default_permissions" in flags,
        insecure_http="insecure_http" in flags,
        listing_cache_size=parse_size(values.get("listing_cache_size", "64M")),
    )
