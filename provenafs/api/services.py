"""Where Provena's other services answer for one data store: ``ServiceUrls``.

Real Provena puts each service on its own host, ``https://{prefix}.{domain}``; the local data
store answers them all at its root and names each base URL in ``/.well-known/provenafs``
(docs/API.md §1, §13), which ``client.discover`` fetches once (``Discovery.document``). Where
it is missing (a real deployment), ``service_urls`` derives the URLs from the data store's host
(``data-api.X`` → ``prov-api.X``, ``job-api.X``, ``registry-api.X``, ``auth-api.X``,
``search.X``). ``-o prov_api=URL`` and the like override either. A service that stays unknown
is None, and ``require`` says how to name it.

Pure: no I/O here, and never a token.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from provenafs.api.errors import ApiError

__all__ = ["SERVICE_KEYS", "ServiceUrls", "service_urls"]

SERVICE_KEYS = ("registry_api", "prov_api", "search_api", "job_api", "auth_api")
_HOST_PREFIXES = {
    "registry_api": "registry-api",
    "prov_api": "prov-api",
    "search_api": "search",
    "job_api": "job-api",
    "auth_api": "auth-api",
}
_DATA_STORE_PREFIX = "data-api."


@dataclasses.dataclass(frozen=True)
class ServiceUrls:
    """Base URLs (no trailing ``/``) of the services beside a data store; None: unknown."""

    registry_api: str | None = None
    prov_api: str | None = None
    search_api: str | None = None
    job_api: str | None = None
    auth_api: str | None = None

    def by_name(self) -> dict[str, str | None]:
        """Each service's URL under the name messages give it (``the prov api``)."""
        return {_name(key): getattr(self, key) for key in SERVICE_KEYS}

    def require(self, key: str) -> str:
        """The base URL of service *key* (``prov_api``, ...), or an ``ApiError`` saying how to
        give it."""
        value = getattr(self, key)
        if not isinstance(value, str) or not value:
            raise ApiError(f"{_name(key)} of this data store is unknown: mount with -o {key}=URL")
        return value


def _name(key: str) -> str:
    return f"the {key.replace('_', ' ')}"


def _derived(source: str, key: str) -> str | None:
    """``https://prov-api.example.org`` for ``https://data-api.example.org`` and ``prov_api``."""
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if not host.startswith(_DATA_STORE_PREFIX):
        return None
    netloc = _HOST_PREFIXES[key] + "." + host.removeprefix(_DATA_STORE_PREFIX)
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "", "", "")).rstrip("/")


def service_urls(
    source: str, document: Mapping[str, Any] | None, overrides: Mapping[str, str]
) -> ServiceUrls:
    """Each service's base URL: the override, else the discovery document's, else derived."""
    found: dict[str, str | None] = {}
    for key in SERVICE_KEYS:
        value = overrides.get(key)
        if not value and document is not None and isinstance(document.get(key), str):
            value = str(document[key])
        found[key] = value.rstrip("/") if value else _derived(source, key)
    return ServiceUrls(**found)
