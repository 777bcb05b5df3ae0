"""Where Provena's other services live: one base URL each for registry, prov, search, job, auth.

A real deployment puts each service on its own host beside the data store's
(``https://data-api.X`` → ``https://registry-api.X``, ``prov-api.X``, ``search.X``, ``job-api.X``,
``auth-api.X``; docs/API.md §1); the local store answers them all at its one root and names them
in ``/.well-known/provenafs`` (keys ``registry_api``, ``prov_api``, ``search_api``, ``job_api``,
``auth_api``). ``service_urls`` takes, per service: an override (``-o registry_api=URL``), else
the discovery document's URL, else the URL derived from the data store's host (the data store's
own URL where its host does not start with ``data-api.``).

This module only computes URLs (and fetches the discovery document without a token); it must
not log or hold a token.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from provenafs.api.errors import UnavailableError

__all__ = [
    "SERVICE_KEYS",
    "ServiceUrls",
    "derived_service_urls",
    "discover_service_urls",
    "service_urls",
]

SERVICE_KEYS = ("registry_api", "prov_api", "search_api", "job_api", "auth_api")
# The host prefix each service has beside ``data-api.`` (Provena's client config).
_HOST_PREFIXES = {
    "registry_api": "registry-api",
    "prov_api": "prov-api",
    "search_api": "search",
    "job_api": "job-api",
    "auth_api": "auth-api",
}
_DATA_API = "data-api."


@dataclasses.dataclass(frozen=True)
class ServiceUrls:
    """Base URLs (no trailing ``/``) of the services beside one data store."""

    registry_api: str
    prov_api: str
    search_api: str
    job_api: str
    auth_api: str


def derived_service_urls(source: str) -> ServiceUrls:
    """Each service's URL from the data store's: ``data-api.X`` → ``registry-api.X``, ...;
    any other host: the data store's own URL for every service (one root answers all)."""
    parsed = urllib.parse.urlsplit(source.rstrip("/"))
    host = parsed.netloc
    urls = {}
    for key in SERVICE_KEYS:
        if host.startswith(_DATA_API):
            netloc = _HOST_PREFIXES[key] + "." + host.removeprefix(_DATA_API)
            urls[key] = urllib.parse.urlunsplit((parsed.scheme, netloc, "", "", ""))
        else:
            urls[key] = source.rstrip("/")
    return ServiceUrls(**urls)


def service_urls(
    source: str,
    discovered: Mapping[str, Any] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> ServiceUrls:
    """Per service: the override, else the discovery document's URL, else the derived one."""
    derived = dataclasses.asdict(derived_service_urls(source))
    urls = {}
    for key in SERVICE_KEYS:
        chosen = (overrides or {}).get(key) or (discovered or {}).get(key)
        urls[key] = str(chosen).rstrip("/") if isinstance(chosen, str) and chosen else derived[key]
    return ServiceUrls(**urls)


async def discover_service_urls(
    source: str,
    overrides: Mapping[str, str] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ServiceUrls:
    """``service_urls`` with the data store's discovery document (none on a real deployment:
    then the derived URLs); ``UnavailableError`` if the data store cannot be reached."""
    async with httpx.AsyncClient(
        base_url=source.rstrip("/"), transport=transport, timeout=30.0
    ) as http:
        try:
            response = await http.get("/.well-known/provenafs")
        except httpx.TransportError as exc:
            raise UnavailableError(
                f"discover: data store unreachable ({type(exc).__name__})"
            ) from None
    document: Any = None
    if response.status_code == 200:
        try:
            document = response.json()
        except ValueError:
            document = None
    return service_urls(source, document if isinstance(document, dict) else None, overrides)
