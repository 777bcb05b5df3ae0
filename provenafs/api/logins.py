"""Where the mount's tokens live and which ``TokenSource`` a mount uses.

Stored logins are one JSON file, ``<config_dir>/tokens.json`` (mode 0600, directory 0700), keyed
by the data store's URL. ``token_source_for`` picks, in order: ``PROVENAFS_TOKEN`` (a bearer used
as is), ``PROVENAFS_OFFLINE_TOKEN`` or an offline token file (refreshed through the realm, client
``automated-access``), a stored ``provenafs login`` (client ``client-tools``); otherwise it
raises ``NotLoggedInError``.

This module must never log or print a token, nor put one in an exception message. Its file I/O
is small and blocking: call it at start-up or from a command, not from a FUSE handler.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provenafs.api.errors import AuthenticationError
from provenafs.api.realm import RefreshingToken, StaticToken, TokenSource

__all__ = [
    "LOGIN_CLIENT_ID",
    "OFFLINE_CLIENT_ID",
    "NotLoggedInError",
    "config_dir",
    "forget",
    "load_refresh_token",
    "read_private_json",
    "save_refresh_token",
    "token_source_for",
    "write_private_json",
]

LOGIN_CLIENT_ID = "client-tools"
OFFLINE_CLIENT_ID = "automated-access"
_TOKENS_FILE = "tokens.json"


class NotLoggedInError(AuthenticationError):
    """No token of any kind is available for a data store."""


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/provenafs`` (or ``~/.config/provenafs``), created with mode 0700."""
    base = environ.get("XDG_CONFIG_HOME") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".config"
    )
    path = Path(base) / "provenafs"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _key(source_url: str) -> str:
    return source_url.rstrip("/")


def read_private_json(path: Path) -> dict[str, Any]:
    """The JSON object in *path*; empty when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_private_json(path: Path, data: Mapping[str, Any]) -> None:
    """Replace *path* with *data* atomically and durably; 0600 from its first byte (a fresh
    temporary file each time, so no leftover of another's mode is ever reused)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_refresh_token(
    source_url: str,
    token: str,
    *,
    client_id: str = LOGIN_CLIENT_ID,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Remember a login's refresh token for ``source_url`` (replacing any earlier one)."""
    path = config_dir(environ) / _TOKENS_FILE
    data = read_private_json(path)
    data[_key(source_url)] = {"refresh_token": token, "client_id": client_id}
    write_private_json(path, data)


def _load_entry(source_url: str, environ: Mapping[str, str]) -> Mapping[str, Any] | None:
    entry = read_private_json(config_dir(environ) / _TOKENS_FILE).get(_key(source_url))
    if isinstance(entry, dict) and isinstance(entry.get("refresh_token"), str):
        return entry
    return None


def load_refresh_token(source_url: str, *, environ: Mapping[str, str] = os.environ) -> str | None:
    """The stored refresh token for ``source_url``, or None."""
    entry = _load_entry(source_url, environ)
    return None if entry is None else str(entry["refresh_token"])


def forget(source_url: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Drop the stored login for ``source_url``; True if there was one."""
    path = config_dir(environ) / _TOKENS_FILE
    data = read_private_json(path)
    if data.pop(_key(source_url), None) is None:
        return False
    write_private_json(path, data)
    return True


def token_source_for(
    source_url: str,
    realm_url: str | None,
    *,
    offline_token_file: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> TokenSource:
    """The token source a mount of ``source_url`` uses (see the module docstring for order)."""
    bearer = environ.get("PROVENAFS_TOKEN", "").strip()
    if bearer:
        return StaticToken(bearer)
    offline = environ.get("PROVENAFS_OFFLINE_TOKEN", "").strip()
    if not offline and offline_token_file is not None:
        try:
            offline = offline_token_file.read_text().strip()
        except OSError as exc:
            raise NotLoggedInError(
                f"cannot read the offline token file {offline_token_file}: {exc.strerror}"
            ) from None
        if not offline:
            raise NotLoggedInError(f"the offline token file {offline_token_file} is empty")
    entry = None if offline else _load_entry(source_url, environ)
    if not offline and entry is None:
        raise NotLoggedInError(
            f"not logged in to {_key(source_url)}: run `provenafs login {_key(source_url)}`, "
            "or set PROVENAFS_TOKEN or PROVENAFS_OFFLINE_TOKEN"
        )
    if realm_url is None:
        raise NotLoggedInError(
            f"no Keycloak realm is known for {_key(source_url)}, so its token cannot be "
            "refreshed: give the realm URL, or set PROVENAFS_TOKEN"
        )
    if offline:
        return RefreshingToken(realm_url, offline, OFFLINE_CLIENT_ID)
    assert entry is not None
    client_id = entry.get("client_id")

    def remember(new_token: str) -> None:
        save_refresh_token(
            source_url,
            new_token,
            client_id=client_id if isinstance(client_id, str) else LOGIN_CLIENT_ID,
            environ=environ,
        )

    return RefreshingToken(
        realm_url,
        str(entry["refresh_token"]),
        client_id if isinstance(client_id, str) else LOGIN_CLIENT_ID,
        on_new_refresh_token=remember,
    )
