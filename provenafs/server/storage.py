"""The old import path of the store's S3 side, kept for callers outside ``provenafs/server``.

The mount's real-S3 unit tests import ``SeaweedServer``, ``ObjectStore`` and ``find_weed`` from
here. New code imports ``provenafs.server.seaweed`` (the SeaweedFS process) and
``provenafs.server.objects`` (admin S3 operations, scoped credentials) instead; this module defines
nothing of its own and goes once no caller is left.
"""

from __future__ import annotations

from provenafs.server.objects import ObjectNotFound, ObjectStore, S3Admin, StorageError
from provenafs.server.seaweed import SeaweedServer, find_weed

__all__ = ["ObjectNotFound", "ObjectStore", "S3Admin", "SeaweedServer", "StorageError", "find_weed"]
