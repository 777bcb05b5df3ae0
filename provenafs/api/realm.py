"""Bearer tokens for the data store: where an access token comes from and how it stays fresh.

``TokenSource`` is what ``DataStoreClient`` asks for a bearer before each request. Three kinds:

- ``StaticToken``: a bearer used as is (``PROVENAFS_TOKEN``); nothing to refresh.
- ``RefreshingToken``: exchanges a refresh (or offline) token at the Keycloak realm's token
  endpoint (``grant_type=refresh_token``, form-encoded) and refreshes when fewer than 30 s of the
  access token's life remain (half its life for shorter tokens), reading ``exp`` from the JWT
  payload without verifying it (the data store verifies). Refreshes are single-flight: N
  concurrent requests cause one exchange. While the realm is unreachable, a token that has not
  yet expired keeps being used.
- ``device_login``: the Keycloak device flow (``provenafs login``), answering a ``TokenSet``.

This module must never log, print or put a token in an exception message or a ``repr``. It runs
under trio (httpx uses anyio). Realm failures are translated here, once, into ``api.errors``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
import trio

from provenafs.api.errors import ApiError, AuthenticationError, UnavailableError

__all__ = [
    "DEVICE_GRANT",
    "EARLY_REFRESH_SECONDS",
    "RefreshingToken",
    "StaticToken",
    "TokenSet",
    "TokenSource",
    "device_login",
    "jwt_claim",
    "jwt_expiry",
]

EARLY_REFRESH_SECONDS = 30.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_REALM_TRIES = 3


class TokenSource(Protocol):
    """Where ``DataStoreClient`` gets its bearer token."""

    async def access_token(self) -> str:
        """A bearer token that is valid now (refreshing it first if needed)."""
        ...

    async def refresh(self) -> None:
        """Get a new access token now: the data store said the current one is not valid."""
        ...


@dataclasses.dataclass(frozen=True)
class TokenSet:
    """What a realm's token endpoint answers; ``expires_at`` is Unix seconds."""

    access_token: str = dataclasses.field(repr=False)
    refresh_token: str | None = dataclasses.field(repr=False)
    expires_at: float


class StaticToken:
    """A bearer token used as is (``PROVENAFS_TOKEN``); ``refresh`` cannot help it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(<redacted>)"

    async def access_token(self) -> str:
        return self._token

    async def refresh(self) -> None:
        return None


def jwt_claim(token: str, name: str) -> object:
    """One claim of a JWT, read without verifying the signature (the data store verifies it);
    None if the token or the claim is unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying the signature; None if unreadable."""
    exp = jwt_claim(token, "exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


def _token_url(realm_url: str) -> str:
    return f"{realm_url.rstrip('/')}/protocol/openid-connect/token"


def _oauth_error(response: httpx.Response) -> str:
    """The OAuth ``error`` code of a realm answer (never the body, which may echo a token)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return f"HTTP {response.status_code}"


def _token_set(body: Any, now: float, previous_refresh: str | None) -> TokenSet:
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise AuthenticationError("the realm's token answer has no access_token")
    access = str(body["access_token"])
    expires_at = jwt_expiry(access)
    if expires_at is None:
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
        expires_at = now + lifetime
    refresh = body.get("refresh_token")
    return TokenSet(access, refresh if isinstance(refresh, str) else previous_refresh, expires_at)


async def _post_form(
    http: httpx.AsyncClient, url: str, form: dict[str, str], what: str
) -> httpx.Response:
    """POST a form to the realm, retrying network errors and 5xx a few times."""
    delay = 0.2
    for attempt in range(_REALM_TRIES):
        try:
            response = await http.post(url, data=form)
        except httpx.TransportError as exc:
            if attempt + 1 == _REALM_TRIES:
                raise UnavailableError(
                    f"{what}: realm unreachable ({type(exc).__name__})"
                ) from None
        else:
            if response.status_code < 500:
                return response
            if attempt + 1 == _REALM_TRIES:
                raise UnavailableError(f"{what}: realm answered HTTP {response.status_code}")
        await trio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


class RefreshingToken:
    """Access tokens minted from a refresh or offline token, refreshed 30 s before ``exp``.

    ``on_new_refresh_token`` is called when the realm rotates the refresh token (stored logins
    persist it). ``http`` is an optional shared client; ``transport`` is for tests.
    """

    def __init__(
        self,
        realm_url: str,
        refresh_token: str,
        client_id: str,
        http: httpx.AsyncClient | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        on_new_refresh_token: Callable[[str], None] | None = None,
    ) -> None:
        self._token_url = _token_url(realm_url)
        self._refresh_token = refresh_token
        self._client_id = client_id
        self._http = http or httpx.AsyncClient(transport=transport, timeout=30.0)
        self._clock = clock
        self._on_new_refresh_token = on_new_refresh_token
        self._current: TokenSet | None = None
        self._issued_at = 0.0
        self._lock = trio.Lock()
        self._generation = 0
        self.exchanges = 0

    def __repr__(self) -> str:
        return f"RefreshingToken({self._token_url!r}, client_id={self._client_id!r})"

    @property
    def expires_at(self) -> float | None:
        """When the current access token expires (Unix seconds), None before the first one."""
        return None if self._current is None else self._current.expires_at

    def _fresh(self) -> bool:
        """Whether the current token has more than its early-refresh margin left.

        The margin is 30 s, or half the token's lifetime for tokens shorter than a minute.
        """
        current = self._current
        if current is None:
            return False
        lifetime = current.expires_at - self._issued_at
        margin = min(EARLY_REFRESH_SECONDS, max(0.0, lifetime / 2))
        return current.expires_at - self._clock() > margin

    async def access_token(self) -> str:
        if self._current is not None and self._fresh():
            return self._current.access_token
        generation = self._generation
        async with self._lock:
            if self._current is None or (not self._fresh() and self._generation == generation):
                try:
                    await self._exchange()
                except UnavailableError:
                    # the realm is down: a token that has not quite expired still serves
                    current = self._current
                    if current is None or current.expires_at <= self._clock():
                        raise
                    return current.access_token
            assert self._current is not None
            return self._current.access_token

    async def refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            if self._generation == generation:  # nobody refreshed while we waited
                await self._exchange()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _exchange(self) -> None:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh_token,
            "client_id": self._client_id,
            "scope": "",
        }
        self.exchanges += 1
        response = await _post_form(self._http, self._token_url, form, "token refresh")
        if response.status_code != 200:
            raise AuthenticationError(
                f"token refresh refused ({_oauth_error(response)}): log in again"
            )
        try:
            body = response.json()
        except ValueError:
            raise AuthenticationError("token refresh: the realm answered no JSON") from None
        now = self._clock()
        tokens = _token_set(body, now, self._refresh_token)
        if tokens.refresh_token and tokens.refresh_token != self._refresh_token:
            self._refresh_token = tokens.refresh_token
            if self._on_new_refresh_token is not None:
                self._on_new_refresh_token(tokens.refresh_token)
        self._current = tokens
        self._issued_at = now
        self._generation += 1


async def device_login(
    realm_url: str,
    client_id: str,
    show: Callable[[str, str], None],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Callable[[float], Awaitable[None]] = trio.sleep,
    clock: Callable[[], float] = time.time,
) -> TokenSet:
    """Sign in with the Keycloak device flow.

    ``show(verification_uri_complete, user_code)`` tells the user where to approve; then the
    token endpoint is polled every ``interval`` seconds (longer after ``slow_down``) until the
    realm answers tokens, refuses, or the device code expires.
    """
    base = realm_url.rstrip("/")
    async with httpx.AsyncClient(transport=transport, timeout=30.0) as http:
        response = await _post_form(
            http,
            f"{base}/protocol/openid-connect/auth/device",
            {"client_id": client_id, "scope": ""},
            "device login",
        )
        if response.status_code != 200:
            raise AuthenticationError(f"device login refused ({_oauth_error(response)})")
        try:
            grant = response.json()
            device_code = str(grant["device_code"])
            user_code = str(grant["user_code"])
            uri = str(grant.get("verification_uri_complete") or grant["verification_uri"])
            interval = float(grant.get("interval") or 5)
            expires_in = float(grant.get("expires_in") or 600)
        except (ValueError, KeyError, TypeError):
            raise ApiError("device login: the realm's answer is missing fields") from None
        show(uri, user_code)
        deadline = clock() + expires_in
        form = {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id}
        while True:
            await sleep(interval)
            response = await _post_form(http, _token_url(base), form, "device login")
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    raise AuthenticationError("device login: the realm answered no JSON") from None
                return _token_set(body, clock(), None)
            error = _oauth_error(response)
            if error == "authorization_pending" and clock() < deadline:
                continue
            if error == "slow_down" and clock() < deadline:
                interval += 5
                continue
            if error in {"authorization_pending", "slow_down", "expired_token"}:
                raise AuthenticationError("device login expired before it was approved")
            raise AuthenticationError(f"device login refused ({error})")
