"""Keycloak-style auth of the local data store: realm key, tokens, device flow, realm routes.

``TokenAuthority`` keeps one RSA-2048 key per data directory (``DATA_DIR/auth/realm-key.pem``, 0600
in a 0700 directory, created once and shared by the server and the CLI), signs access, refresh and
offline tokens as Keycloak does (RS256 JWTs with ``preferred_username``, ``email``,
``realm_access.roles``), verifies access tokens locally as Provena's ``KeycloakFastAPI`` does
(signature and ``exp``; audience not checked) and runs the OAuth device flow with its state in
SQLite (``DATA_DIR/auth/auth.sqlite3``) so that ``provenafs serve device approve`` in another
process can approve a login the server is polling for. ``realm_router`` serves the realm endpoints
that Keycloak clients call (docs/API.md §8, §10.1).

It must not import from the mount side, and no token, key or device code may appear in a log line,
an exception message or a repr. Thread-safe: the key is read-only after construction and every
SQLite operation opens its own connection.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import html
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

__all__ = [
    "DEVICE_CODE_GRANT",
    "INCORRECT_STRUCTURE",
    "INVALID_CREDENTIALS",
    "DeviceCodeExpired",
    "Principal",
    "TokenAuthority",
    "TokenInvalid",
    "UserLookup",
    "realm_router",
]

INVALID_CREDENTIALS = "Could not validate credentials"
INCORRECT_STRUCTURE = "Token had incorrect structure."
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_CLIENT_ID = "client-tools"

_ACCESS_TYPE = "Bearer"
_REFRESH_TYPE = "Refresh"
_OFFLINE_TYPE = "Offline"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels, no look-alikes: no words, no 0/O
_MAX_FORM_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Principal:
    """The subject of a verified access token, as Provena's ``User`` model."""

    username: str
    email: str | None
    roles: tuple[str, ...]
    token: str = dataclasses.field(repr=False)


class TokenInvalid(Exception):
    """A token or code was refused; the message is the API's detail string, never the token."""


class DeviceCodeExpired(TokenInvalid):
    """The device code existed but its time ran out (OAuth ``expired_token``)."""


class UserLookup(Protocol):
    """``(email, realm roles)`` of a local account, or None if there is no such user."""

    def __call__(self, username: str) -> tuple[str | None, list[str]] | None: ...


# --------------------------------------------------------------------------- JWT plumbing


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_segment(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8"))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The realm key at *path*; created once (0600), race-free between processes."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won: use its key
                os.link(tmp, path)
        finally:
            tmp.unlink()
    os.chmod(path, 0o600)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise TypeError(f"{path} does not hold an RSA private key")
    return loaded


# --------------------------------------------------------------------------- the authority


class TokenAuthority:
    """The realm's signing key, token issue/verify, refresh/offline tokens and device flow."""

    def __init__(
        self,
        data_dir: Path,
        *,
        realm: str = "provena",
        access_lifetime: int = 300,
        refresh_lifetime: int = 8 * 3600,
        offline_lifetime: int = 30 * 24 * 3600,
        device_lifetime: int = 600,
        device_interval: int = 1,
        issuer: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.offline_lifetime = offline_lifetime
        self.device_lifetime = device_lifetime
        self.device_interval = device_interval  # Keycloak says 5; short keeps logins quick
        self.issuer = issuer or f"provenafs-local/realms/{realm}"
        self._clock = clock
        self.auth_dir = Path(data_dir) / "auth"
        self.auth_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.auth_dir, 0o700)
        self._private_key = _load_or_create_key(self.auth_dir / "realm-key.pem")
        self._public_key = self._private_key.public_key()
        der = self._public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode("ascii")
        self.key_id = _b64url(hashlib.sha256(der).digest()[:16])
        self._db_path = self.auth_dir / "auth.sqlite3"
        self._init_db()

    def __repr__(self) -> str:
        return f"TokenAuthority(realm={self.realm!r}, auth_dir={str(self.auth_dir)!r})"

    # ------------------------------------------------------------------ signing

    def _now(self) -> int:
        return int(self._clock())

    def _sign(self, claims: Mapping[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
        signature = self._private_key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"

    def _verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of a token this realm signed; ``TokenInvalid`` for anything else."""
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_b64url_decode(header_b64))
            if not isinstance(header, dict) or header.get("alg") != "RS256":
                raise ValueError("not RS256")
            self._public_key.verify(
                _b64url_decode(signature_b64),
                f"{header_b64}.{payload_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            claims = json.loads(_b64url_decode(payload_b64))
        except (ValueError, TypeError, UnicodeError, RecursionError, InvalidSignature):
            raise TokenInvalid(INVALID_CREDENTIALS) from None
        if not isinstance(claims, dict):
            raise TokenInvalid(INVALID_CREDENTIALS)
        expires = claims.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise TokenInvalid(INVALID_CREDENTIALS)
        if expires <= self._clock():
            raise TokenInvalid(INVALID_CREDENTIALS)
        return claims

    # ------------------------------------------------------------------ access tokens

    def issue_access_token(
        self,
        username: str,
        email: str | None,
        roles: Sequence[str],
        *,
        lifetime: int | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        session_id: str | None = None,
        scope: str = "openid profile email",
    ) -> str:
        """A Keycloak-shaped RS256 access token (default lifetime: ``access_lifetime``)."""
        now = self._now()
        claims = {
            "exp": now + (self.access_lifetime if lifetime is None else lifetime),
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "sub": username,
            "typ": _ACCESS_TYPE,
            "azp": client_id,
            "sid": session_id or str(uuid.uuid4()),
            "scope": scope,
            "preferred_username": username,
            "email": email,
            "email_verified": email is not None,
            "realm_access": {"roles": list(roles)},
        }
        return self._sign(claims)

    def verify_access_token(self, token: str) -> Principal:
        """Check signature and ``exp``; map the claims as Provena's ``KeycloakFastAPI`` does."""
        claims = self._verified_claims(token)
        if claims.get("typ", _ACCESS_TYPE) != _ACCESS_TYPE:
            raise TokenInvalid(INVALID_CREDENTIALS)  # a refresh token is not a bearer token
        try:
            username = claims["preferred_username"]
            email = claims["email"]
            roles = claims["realm_access"]["roles"]
        except (KeyError, TypeError):
            raise TokenInvalid(INCORRECT_STRUCTURE) from None
        if (
            not isinstance(username, str)
            or not (email is None or isinstance(email, str))
            or not isinstance(roles, list)
            or not all(isinstance(role, str) for role in roles)
        ):
            raise TokenInvalid(INCORRECT_STRUCTURE)
        return Principal(username=username, email=email, roles=tuple(roles), token=token)

    # ------------------------------------------------------------------ refresh tokens

    def issue_refresh_token(
        self,
        username: str,
        *,
        offline: bool = False,
        client_id: str = DEFAULT_CLIENT_ID,
        session_id: str | None = None,
    ) -> str:
        """A refresh token (``typ: Refresh``) or a reusable offline token (``typ: Offline``)."""
        now = self._now()
        claims = {
            "exp": now + (self.offline_lifetime if offline else self.refresh_lifetime),
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": username,
            "typ": _OFFLINE_TYPE if offline else _REFRESH_TYPE,
            "azp": client_id,
            "sid": session_id or str(uuid.uuid4()),
            "scope": "openid offline_access profile email" if offline else "openid profile email",
            "preferred_username": username,
        }
        return self._sign(claims)

    def refresh_token_claims(self, token: str) -> dict[str, Any]:
        """The verified claims of a live refresh or offline token; ``TokenInvalid`` otherwise."""
        claims = self._verified_claims(token)
        username = claims.get("sub")
        if claims.get("typ") not in {_REFRESH_TYPE, _OFFLINE_TYPE} or not isinstance(username, str):
            raise TokenInvalid("Invalid refresh token")
        with self._db() as db:
            revoked = db.execute(
                "SELECT 1 FROM revoked_tokens WHERE jti = ?", (str(claims.get("jti")),)
            ).fetchone()
            not_before = db.execute(
                "SELECT not_before FROM user_not_before WHERE username = ?", (username,)
            ).fetchone()
        if revoked is not None:
            raise TokenInvalid("Token is not active")
        if not_before is not None and int(claims.get("iat", 0)) < int(not_before[0]):
            raise TokenInvalid("Token is not active")
        return claims

    def redeem_refresh_token(self, token: str) -> str:
        """The username a live refresh/offline token belongs to (reusable until it expires)."""
        return str(self.refresh_token_claims(token)["sub"])

    def revoke_refresh_token(self, token: str) -> None:
        """Revoke one refresh or offline token (a logout)."""
        claims = self.refresh_token_claims(token)
        with self._db() as db:
            db.execute("DELETE FROM revoked_tokens WHERE expires_at < ?", (self._clock(),))
            db.execute(
                "INSERT OR IGNORE INTO revoked_tokens (jti, expires_at) VALUES (?, ?)",
                (str(claims["jti"]), float(claims["exp"])),
            )

    def revoke_user_tokens(self, username: str) -> None:
        """Revoke every refresh and offline token issued to *username* until now."""
        with self._db() as db:
            db.execute(
                "INSERT INTO user_not_before (username, not_before) VALUES (?, ?) "
                "ON CONFLICT(username) DO UPDATE SET not_before = excluded.not_before",
                (username, self._now() + 1),
            )

    # ------------------------------------------------------------------ device flow

    def start_device_authorization(
        self, client_id: str, *, realm_url: str | None = None
    ) -> dict[str, object]:
        """A new pending device grant: RFC 8628's device authorization response."""
        device_code = secrets.token_urlsafe(32)
        expires_at = self._clock() + self.device_lifetime
        with self._db() as db:
            db.execute("DELETE FROM device_grants WHERE expires_at < ?", (self._clock() - 3600,))
            while True:
                user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
                try:
                    db.execute(
                        "INSERT INTO device_grants (device_hash, user_code, client_id, expires_at)"
                        " VALUES (?, ?, ?, ?)",
                        (_hash(device_code), user_code, client_id, expires_at),
                    )
                    break
                except sqlite3.IntegrityError:
                    continue  # user code collision: draw again
        shown = f"{user_code[:4]}-{user_code[4:]}"
        base = (realm_url or self.issuer).rstrip("/")
        return {
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": f"{base}/device",
            "verification_uri_complete": f"{base}/device?user_code={shown}",
            "expires_in": self.device_lifetime,
            "interval": self.device_interval,
        }

    def approve_device(self, user_code: str, username: str) -> bool:
        """Approve the pending, unexpired grant with *user_code* for *username*."""
        normalised = "".join(ch for ch in user_code.upper() if ch.isalnum())
        with self._db() as db:
            cursor = db.execute(
                "UPDATE device_grants SET username = ? WHERE user_code = ? AND username IS NULL"
                " AND consumed = 0 AND expires_at > ?",
                (username, normalised, self._clock()),
            )
            return cursor.rowcount == 1

    def poll_device(self, device_code: str) -> str | None:
        """The approved username (once: the code is then spent); None while pending."""
        with self._db() as db:
            row = db.execute(
                "SELECT username, consumed, expires_at FROM device_grants WHERE device_hash = ?",
                (_hash(device_code),),
            ).fetchone()
            if row is None or row[1]:
                raise TokenInvalid("Device code not valid")
            username, _, expires_at = row
            if expires_at <= self._clock():
                raise DeviceCodeExpired("Device code is expired")
            if username is None:
                return None
            spent = db.execute(
                "UPDATE device_grants SET consumed = 1 WHERE device_hash = ? AND consumed = 0",
                (_hash(device_code),),
            )
            if spent.rowcount != 1:
                raise TokenInvalid("Device code not valid")
            return str(username)

    # ------------------------------------------------------------------ storage

    def _init_db(self) -> None:
        if not self._db_path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self._db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS device_grants ("
                " device_hash TEXT PRIMARY KEY, user_code TEXT NOT NULL UNIQUE,"
                " client_id TEXT NOT NULL, expires_at REAL NOT NULL, username TEXT,"
                " consumed INTEGER NOT NULL DEFAULT 0)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, expires_at REAL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS user_not_before ("
                " username TEXT PRIMARY KEY, not_before INTEGER NOT NULL)"
            )

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self._db_path, timeout=30, isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()

    # ------------------------------------------------------------------ keys for clients

    def jwks(self) -> dict[str, object]:
        """The realm's public key as a JWK set (``/protocol/openid-connect/certs``)."""
        numbers = self._public_key.public_numbers()

        def as_b64url(value: int) -> str:
            return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        key = {
            "kid": self.key_id,
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "n": as_b64url(numbers.n),
            "e": as_b64url(numbers.e),
        }
        return {"keys": [key]}


# --------------------------------------------------------------------------- the realm routes


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form body as a dict (first value of each field); None if too large."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
    return {name: values[0] for name, values in fields.items() if values}


def realm_router(authority: TokenAuthority, users: UserLookup) -> APIRouter:
    """The Keycloak realm endpoints; mount with ``prefix=f"/auth/realms/{authority.realm}"``."""
    router = APIRouter()

    def realm_url(request: Request) -> str:
        return str(request.url_for("provenafs_realm")).rstrip("/")

    def token_response(
        username: str, *, client_id: str, offline_token: str | None, session_id: str | None
    ) -> JSONResponse:
        found = users(username)
        if found is None:
            return _oauth_error("invalid_grant", "User not found or disabled")
        email, roles = found
        session = session_id or str(uuid.uuid4())
        scope = "openid offline_access profile email" if offline_token else "openid profile email"
        access = authority.issue_access_token(
            username, email, roles, client_id=client_id, session_id=session, scope=scope
        )
        if offline_token is not None:
            refresh, refresh_expires_in = offline_token, 0  # Keycloak: offline tokens report 0
        else:
            refresh = authority.issue_refresh_token(
                username, client_id=client_id, session_id=session
            )
            refresh_expires_in = authority.refresh_lifetime
        return JSONResponse(
            {
                "access_token": access,
                "expires_in": authority.access_lifetime,
                "refresh_expires_in": refresh_expires_in,
                "refresh_token": refresh,
                "token_type": "Bearer",
                "not-before-policy": 0,
                "session_state": session,
                "scope": scope,
            }
        )

    def refresh_grant(form: Mapping[str, str]) -> JSONResponse:
        token = form.get("refresh_token", "")
        if not token:
            return _oauth_error("invalid_request", "Missing parameter: refresh_token")
        try:
            claims = authority.refresh_token_claims(token)
        except TokenInvalid as exc:
            return _oauth_error("invalid_grant", str(exc))
        offline = claims.get("typ") == _OFFLINE_TYPE
        return token_response(
            str(claims["sub"]),
            client_id=form.get("client_id") or str(claims.get("azp") or DEFAULT_CLIENT_ID),
            offline_token=token if offline else None,
            session_id=str(claims.get("sid") or "") or None,
        )

    def device_grant(form: Mapping[str, str]) -> JSONResponse:
        code = form.get("device_code", "")
        if not code:
            return _oauth_error("invalid_request", "Missing parameter: device_code")
        try:
            username = authority.poll_device(code)
        except DeviceCodeExpired as exc:
            return _oauth_error("expired_token", str(exc))
        except TokenInvalid as exc:
            return _oauth_error("invalid_grant", str(exc))
        if username is None:
            return _oauth_error("authorization_pending", "The authorization request is pending")
        client_id = form.get("client_id") or DEFAULT_CLIENT_ID
        return token_response(username, client_id=client_id, offline_token=None, session_id=None)

    @router.get("", name="provenafs_realm")
    def realm_info(request: Request) -> dict[str, object]:
        base = realm_url(request)
        return {
            "realm": authority.realm,
            "public_key": authority.public_key_b64,
            "token-service": f"{base}/protocol/openid-connect",
            "account-service": f"{base}/account",
            "tokens-not-before": 0,
        }

    @router.get("/.well-known/openid-configuration")
    def openid_configuration(request: Request) -> dict[str, object]:
        base = realm_url(request)
        return {
            "issuer": base,
            "token_endpoint": f"{base}/protocol/openid-connect/token",
            "device_authorization_endpoint": f"{base}/protocol/openid-connect/auth/device",
            "jwks_uri": f"{base}/protocol/openid-connect/certs",
            "grant_types_supported": ["refresh_token", DEVICE_CODE_GRANT],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    @router.get("/protocol/openid-connect/certs")
    def certs() -> dict[str, object]:
        return authority.jwks()

    @router.post("/protocol/openid-connect/token")
    async def token(request: Request) -> JSONResponse:
        form = await _form(request)
        if form is None:
            return _oauth_error("invalid_request", "Request body too large")
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            return await run_in_threadpool(refresh_grant, form)
        if grant == DEVICE_CODE_GRANT:
            return await run_in_threadpool(device_grant, form)
        if not grant:
            return _oauth_error("invalid_request", "Missing form parameter: grant_type")
        return _oauth_error("unsupported_grant_type", "Unsupported grant_type")

    @router.post("/protocol/openid-connect/auth/device")
    async def device_authorization(request: Request) -> JSONResponse:
        form = await _form(request)
        if form is None:
            return _oauth_error("invalid_request", "Request body too large")
        client_id = form.get("client_id", "")
        if not client_id:
            return _oauth_error("invalid_client", "Missing parameter: client_id", status=401)
        answer = await run_in_threadpool(
            authority.start_device_authorization, client_id, realm_url=realm_url(request)
        )
        return JSONResponse(answer)

    @router.get("/device", response_class=HTMLResponse)
    def device_page(user_code: str = "") -> HTMLResponse:
        shown = html.escape(user_code[:32] or "USER_CODE")
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            "<title>provenafs: approve a device</title></head><body>"
            "<h1>Approve this device login</h1>"
            "<p>This local data store has no login page. To approve the device, run:</p>"
            f"<pre>provenafs serve device approve {shown} --user NAME --data-dir DATA_DIR</pre>"
            "</body></html>"
        )
        return HTMLResponse(page)

    return router
