"""Which names can become S3 keys unchanged: the one rule for new names and planned keys.

A name the mount shows must publish as the same key, or not at all. S3 keys are UTF-8, so a
name that is not valid UTF-8 (the mount sees its bytes as lone surrogates, ``os.fsdecode``)
cannot be sent; SeaweedFS turns ``\\`` into ``/`` in keys, so a backslash would publish a
different tree than the mount showed; control characters (C0, DEL, C1) are refused by some
stores and mangled by others' XML listings; and a key holds at most 1024 bytes.

``name_problem`` judges one new path component (the core refuses such a name with ``EINVAL``
at create, mkdir, rename and symlink); ``key_problem`` judges a path relative to a dataset's
prefix (the publisher checks every planned key before it asks for a new version). Pure
functions: no I/O.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_KEY_BYTES", "key_problem", "name_problem"]

MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length


def name_problem(name: str) -> str | None:
    """Why *name* cannot be one component of a published key; None when it can."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\\" in name:
        return "holds a backslash (S3 stores turn it into a /)"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return "holds a control character"
    return None


def key_problem(path: str, prefix_bytes: int) -> str | None:
    """Why *path* (inside a dataset, e.g. ``raw/a.csv``; ``dir/`` for a folder marker) under a
    prefix of *prefix_bytes* bytes cannot be published as it is; None when it can."""
    for component in path.removesuffix("/").split("/"):
        if component in ("", ".", ".."):
            return "has an empty, '.' or '..' component"
        problem = name_problem(component)
        if problem is not None:
            return problem
    length = prefix_bytes + len(path.encode("utf-8"))
    if length > MAX_KEY_BYTES:
        return f"makes a key of {length} bytes (S3 allows {MAX_KEY_BYTES})"
    return None
