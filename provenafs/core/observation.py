"""What the core tells an observer about the processes using the mount (runs, the access log).

``Filesystem`` reports each open of a dataset file (``opened``: the exact version handle the
name resolved to, whatever alias led there, the path, the object's ETag, reading or writing),
each listing of a dataset directory (``listed``) and, before it is made, each change of a
dataset (``changing``). Each report carries the ``Caller`` the kernel named. An ``opened``
report may answer a ``ReadCounter`` that the open file's reads add their bytes to (reads carry
no caller: attribution happens at open, never per read).

The observer decides what a caller is (``provenafs.process`` resolves it to a run); this module
holds only the vocabulary. With no observer, nothing is reported and nothing is paid.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from provenafs.core.types import Caller

__all__ = ["AccessObserver", "FileAccess", "ReadCounter"]


class FileAccess(NamedTuple):
    """One open of a dataset file (a tuple: made on every observed open, it must be cheap)."""

    caller: Caller
    handle: str  # the dataset version the file belongs to
    path: str  # inside the dataset
    etag: str | None  # of the published object read; None: the draft's own bytes
    size: int
    writing: bool


class ReadCounter:
    """Bytes the daemon served through one open file (page-cache hits never reach it)."""

    __slots__ = ("bytes_read",)

    def __init__(self) -> None:
        self.bytes_read = 0


class AccessObserver(Protocol):
    """Told about opens, listings and changes of dataset content (the daemon wires one)."""

    @property
    def active(self) -> bool:
        """Whether anything is observed now (false: the core reports nothing, at no cost)."""

    async def opened(self, access: FileAccess) -> ReadCounter | None:
        """A dataset file was opened; the counter its reads should add to, if any."""

    async def listed(self, caller: Caller, handle: str, path: str) -> None:
        """A dataset directory was opened for listing."""

    async def changing(self, caller: Caller, handle: str, path: str) -> None:
        """*caller* is about to change *path* of dataset *handle* (into its draft)."""
