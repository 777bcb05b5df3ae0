"""Where secrets may be sent: over https, or over plain http to this machine only.

Bearer tokens go to the data store, refresh and offline tokens (which live for weeks) to the
Keycloak realm, and S3 session credentials to the S3 endpoint. Over plain http anyone on the
path reads them. So a URL that will carry one must be ``https``, or ``http`` to a loopback
address (``127.0.0.0/8``, ``::1``, ``localhost``), unless the user said ``insecure_http``
(``-o insecure_http``, ``provenafs login --insecure-http``). And when the data store is
``https``, the realm and the S3 endpoint must be too, whatever says otherwise: the discovery
document that names them is fetched without authentication, so it must never be able to
send a token somewhere in clear (not even to a loopback port another local user may hold).

``check_token_url`` raises ``InsecureUrlError`` with a message fit for the user; it is called
before the first request that carries a secret. Messages show scheme, host and port only
(never user info, paths or queries). Pure functions: no I/O, no name resolution.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping

__all__ = ["InsecureUrlError", "check_token_url", "check_token_urls", "is_loopback_host"]


class InsecureUrlError(ValueError):
    """A URL that would carry a token in clear; the message says why and what to do."""


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (a literal: names are never resolved here)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _shown(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def check_token_url(
    url: str, *, what: str, insecure_http: bool = False, source: str | None = None
) -> None:
    """Refuse *url* (where *what*, e.g. "the Keycloak realm", is reached) if a token sent
    there could travel in clear. *source* is the data store's URL when *url* is another
    service it leads to (the realm, the S3 endpoint)."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    if scheme != "http" or not parts.hostname:
        raise InsecureUrlError(f"{what} must be an http(s) URL, got {_shown(parts)!r}")
    if source is not None and urllib.parse.urlsplit(source.strip()).scheme.lower() == "https":
        raise InsecureUrlError(
            f"{what} ({_shown(parts)}) is plain http, but the data store "
            f"({_shown(urllib.parse.urlsplit(source.strip()))}) is https: its tokens are never "
            "sent over plain http; give an https URL"
        )
    if insecure_http or is_loopback_host(parts.hostname):
        return
    raise InsecureUrlError(
        f"{what} ({_shown(parts)}) is plain http to another machine: tokens would travel in "
        "clear. Use https, or accept that with -o insecure_http (provenafs login "
        "--insecure-http)"
    )


def check_token_urls(
    source: str, others: Mapping[str, str | None], *, insecure_http: bool = False
) -> None:
    """``check_token_url`` of the data store *source*, then of each service it leads to
    (*others*: what it is, as messages name it, to its URL; None where there is none)."""
    check_token_url(source, what="the data store", insecure_http=insecure_http)
    for what, url in others.items():
        if url is not None:
            check_token_url(url, what=what, insecure_http=insecure_http, source=source)
