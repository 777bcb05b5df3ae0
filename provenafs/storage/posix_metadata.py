"""POSIX attributes in S3 object metadata, as s3fs-fuse and rclone keep them.

The convention (s3fs-fuse's, which rclone shares for the mtime):

- ``x-amz-meta-mode``: the whole ``st_mode`` (file type bits included) as a decimal number;
  s3fs reads it with ``strtol(..., 0)``, so a leading ``0`` means octal and ``0x`` hex;
- ``x-amz-meta-mtime``: seconds since the epoch, ``"<seconds>.<9 digits of nanoseconds>"``
  (rclone writes a float with 9 decimals; s3fs reads the digits after the dot as nanoseconds,
  so exactly 9 of them keep both readers right);
- a symbolic link is an object whose mode has ``S_IFLNK`` and whose body is the target;
- a directory's own attributes sit on its zero-byte ``dir/`` marker object.

``PosixMetadata`` is what one object's metadata says (None where it says nothing);
``metadata_for`` is what a publish writes. Names are the lower-case user-metadata names
without their ``x-amz-meta-`` prefix, as boto3's ``Metadata`` and ``ObjectHead.metadata``
carry them. Values only: no I/O, no knowledge of datasets.
"""

from __future__ import annotations

import dataclasses
import re
import stat
from collections.abc import Mapping

__all__ = [
    "LINK_TARGET_MAX",
    "MODE_KEY",
    "MTIME_KEY",
    "NO_METADATA",
    "PosixMetadata",
    "format_mtime",
    "metadata_for",
    "parse_metadata",
    "parse_mode",
    "parse_mtime",
]

MODE_KEY = "mode"
MTIME_KEY = "mtime"
LINK_TARGET_MAX = 4095  # bytes: PATH_MAX less its NUL, the longest target symlink(2) takes

_NS = 1_000_000_000
_MAX_SECONDS = 1 << 40  # anything further from 1970 is not a time a file system shows
_MTIME_RE = re.compile(r"(-?[0-9]{1,13})(?:\.([0-9]{1,30}))?")
_MODE_MAX = 0o177777
_KNOWN_TYPES = frozenset({stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK})


@dataclasses.dataclass(frozen=True)
class PosixMetadata:
    """What an object's metadata says: its ``st_mode`` and mtime, None where it is silent.

    A mode whose type bits name a node type the mount does not show (a FIFO, a device, a
    socket written by s3fs) reads as a regular file with its permission bits.
    """

    mode: int | None = None
    mtime_ns: int | None = None

    @property
    def is_link(self) -> bool:
        return self.mode is not None and stat.S_ISLNK(self.mode)

    @property
    def permissions(self) -> int | None:
        """The permission bits (``0o7777``), or None."""
        return None if self.mode is None else stat.S_IMODE(self.mode)

    @property
    def says_anything(self) -> bool:
        return self.mode is not None or self.mtime_ns is not None


NO_METADATA = PosixMetadata()


def parse_mode(text: str) -> int | None:
    """``st_mode`` from s3fs's text (decimal, ``0``-led octal or ``0x`` hex); None if bad."""
    text = text.strip()
    try:
        if text.lower().startswith("0x"):
            value = int(text[2:], 16)
        elif len(text) > 1 and text.startswith("0"):
            value = int(text[1:], 8)
        else:
            value = int(text, 10)
    except ValueError:
        return None
    if not 0 <= value <= _MODE_MAX:
        return None
    kind = stat.S_IFMT(value)
    if kind not in _KNOWN_TYPES:
        kind = stat.S_IFREG  # no type (another tool), or one the mount does not show
    return kind | stat.S_IMODE(value)


def parse_mtime(text: str) -> int | None:
    """Nanoseconds since the epoch from ``"<s>"`` or ``"<s>.<fraction>"``; None if bad.

    The fraction is read as a decimal fraction (``"1.5"`` is 1.5 s), which agrees with s3fs
    (digits as nanoseconds) whenever there are 9 digits, as this module and rclone write them.
    """
    match = _MTIME_RE.fullmatch(text.strip())
    if match is None:
        return None
    seconds = int(match.group(1))
    if abs(seconds) > _MAX_SECONDS:
        return None
    fraction = (match.group(2) or "").ljust(9, "0")[:9]
    return seconds * _NS + int(fraction)  # before 1970 as s3fs and format_mtime: {-1, .9} is -0.1


def format_mtime(mtime_ns: int) -> str:
    """``"1700000000.123456789"``: whole seconds, a dot, exactly 9 digits of nanoseconds."""
    seconds, nanos = divmod(mtime_ns, _NS)
    return f"{seconds}.{nanos:09d}"


def parse_metadata(metadata: Mapping[str, str]) -> PosixMetadata:
    """What *metadata* (names lower-case, without ``x-amz-meta-``) says of mode and mtime."""
    mode_text = metadata.get(MODE_KEY)
    mtime_text = metadata.get(MTIME_KEY)
    mode = parse_mode(mode_text) if mode_text is not None else None
    mtime = parse_mtime(mtime_text) if mtime_text is not None else None
    return PosixMetadata(mode, mtime)


def metadata_for(mode: int, mtime_ns: int) -> dict[str, str]:
    """The user metadata a publish writes on an object: s3fs's mode, s3fs's and rclone's
    mtime. No owner: s3fs then shows its mounting user, as this mount shows its own."""
    return {MODE_KEY: str(mode), MTIME_KEY: format_mtime(mtime_ns)}
