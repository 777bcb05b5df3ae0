"""The Keycloak-style authority and realm routes: tokens, expiry, tampering, refresh, device flow.

The authority is driven directly (with an injected clock where expiry matters) and the realm router
over real HTTP: uvicorn serves a tiny app holding only the router, on 127.0.0.1, in a thread.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI

from provenafs.server.auth import (
    DEVICE_CODE_GRANT,
    INCORRECT_STRUCTURE,
    INVALID_CREDENTIALS,
    DeviceCodeExpired,
    TokenAuthority,
    TokenInvalid,
    realm_router,
)
from tests.conftest import free_port

READ_WRITE = ["entity-registry-read", "entity-registry-write"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(token.split(".")[1]))
    return result


def sign_with(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


def realm_private_key(data_dir: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (data_dir / "auth" / "realm-key.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority(tmp_path)


# --------------------------------------------------------------------------- the key


def test_key_is_private_and_survives_restart(tmp_path: Path) -> None:
    first = TokenAuthority(tmp_path)
    token = first.issue_access_token("alice", "alice@example.org", READ_WRITE)
    auth_dir = tmp_path / "auth"
    assert stat.S_IMODE(auth_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((auth_dir / "realm-key.pem").stat().st_mode) == 0o600
    second = TokenAuthority(tmp_path)  # e.g. the CLI while the server runs, or after a restart
    assert second.public_key_b64 == first.public_key_b64
    assert second.verify_access_token(token).username == "alice"


def test_public_key_is_bare_base64_der(authority: TokenAuthority) -> None:
    assert "-----" not in authority.public_key_b64
    der = base64.b64decode(authority.public_key_b64, validate=True)
    public = serialization.load_der_public_key(der)
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    # Provena's server wraps the value in PEM lines and verifies with it
    pem = f"-----BEGIN PUBLIC KEY-----\n{authority.public_key_b64}\n-----END PUBLIC KEY-----\n"
    assert isinstance(serialization.load_pem_public_key(pem.encode()), rsa.RSAPublicKey)


def test_other_data_dirs_have_other_keys(tmp_path: Path) -> None:
    one = TokenAuthority(tmp_path / "one")
    two = TokenAuthority(tmp_path / "two")
    assert one.public_key_b64 != two.public_key_b64
    token = one.issue_access_token("alice", None, READ_WRITE)
    with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
        two.verify_access_token(token)


# --------------------------------------------------------------------------- access tokens


def test_issue_and_verify(authority: TokenAuthority) -> None:
    token = authority.issue_access_token("alice", "alice@example.org", READ_WRITE)
    principal = authority.verify_access_token(token)
    assert principal.username == "alice"
    assert principal.email == "alice@example.org"
    assert principal.roles == tuple(READ_WRITE)
    assert principal.token == token
    assert token not in repr(principal)
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header["alg"] == "RS256"
    claims = claims_of(token)
    assert claims["preferred_username"] == "alice"
    assert claims["realm_access"] == {"roles": READ_WRITE}
    assert claims["azp"] == "client-tools"
    assert claims["typ"] == "Bearer"
    assert claims["exp"] - claims["iat"] == 300
    assert isinstance(claims["iat"], int)
    assert "nbf" not in claims


def test_token_verifies_with_the_published_key_alone(authority: TokenAuthority) -> None:
    """A client that knows only the realm JSON's ``public_key`` can check the signature."""
    token = authority.issue_access_token("alice", None, [])
    public = serialization.load_der_public_key(base64.b64decode(authority.public_key_b64))
    assert isinstance(public, rsa.RSAPublicKey)
    head, payload, signature = token.split(".")
    public.verify(
        b64url_decode(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


def test_email_may_be_null(authority: TokenAuthority) -> None:
    token = authority.issue_access_token("svc", None, ["entity-registry-read"])
    assert authority.verify_access_token(token).email is None


def test_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    authority = TokenAuthority(tmp_path, clock=clock)
    token = authority.issue_access_token("alice", None, READ_WRITE, lifetime=10)
    clock.now += 9
    assert authority.verify_access_token(token).username == "alice"
    clock.now += 1
    with pytest.raises(TokenInvalid) as caught:
        authority.verify_access_token(token)
    assert str(caught.value) == INVALID_CREDENTIALS


def test_expiry_on_the_real_clock(authority: TokenAuthority) -> None:
    token = authority.issue_access_token("alice", None, READ_WRITE, lifetime=-1)
    with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
        authority.verify_access_token(token)


@pytest.mark.parametrize("part", [0, 1, 2])
def test_tampered_token_is_refused(authority: TokenAuthority, part: int) -> None:
    token = authority.issue_access_token("alice", None, ["entity-registry-read"])
    pieces = token.split(".")
    if part == 1:  # grant oneself the admin role, keep the signature
        claims = claims_of(token)
        claims["realm_access"]["roles"].append("entity-registry-admin")
        pieces[1] = b64url(json.dumps(claims).encode())
    else:
        raw = bytearray(b64url_decode(pieces[part]))
        raw[len(raw) // 2] ^= 0x01
        pieces[part] = b64url(bytes(raw))
    with pytest.raises(TokenInvalid) as caught:
        authority.verify_access_token(".".join(pieces))
    assert str(caught.value) == INVALID_CREDENTIALS
    assert token not in str(caught.value)


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "a.b", "....", "x" * 5000, "é.é.é", "eyJhbGciOiJub25lIn0.e30."]
)
def test_garbage_is_refused(authority: TokenAuthority, garbage: str) -> None:
    with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
        authority.verify_access_token(garbage)


def test_deeply_nested_header_is_refused(authority: TokenAuthority) -> None:
    header = b64url(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
        authority.verify_access_token(f"{header}.e30.c2ln")
    with pytest.raises(TokenInvalid):
        authority.redeem_refresh_token(f"{header}.e30.c2ln")


def test_alg_none_and_hs256_are_refused(authority: TokenAuthority) -> None:
    claims = claims_of(authority.issue_access_token("alice", None, READ_WRITE))
    for alg in ("none", "HS256"):
        head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        body = b64url(json.dumps(claims).encode())
        with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
            authority.verify_access_token(f"{head}.{body}.")


@pytest.mark.parametrize("missing", ["preferred_username", "email", "realm_access", "roles"])
def test_missing_claims(tmp_path: Path, missing: str) -> None:
    authority = TokenAuthority(tmp_path)
    claims = claims_of(authority.issue_access_token("alice", "a@example.org", READ_WRITE))
    if missing == "roles":
        claims["realm_access"] = {}
    else:
        del claims[missing]
    token = sign_with(realm_private_key(tmp_path), claims)
    with pytest.raises(TokenInvalid) as caught:
        authority.verify_access_token(token)
    assert str(caught.value) == INCORRECT_STRUCTURE


def test_missing_exp_is_refused(tmp_path: Path) -> None:
    authority = TokenAuthority(tmp_path)
    claims = claims_of(authority.issue_access_token("alice", None, READ_WRITE))
    del claims["exp"]
    with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
        authority.verify_access_token(sign_with(realm_private_key(tmp_path), claims))


def test_refresh_token_is_not_a_bearer_token(authority: TokenAuthority) -> None:
    for offline in (False, True):
        refresh = authority.issue_refresh_token("alice", offline=offline)
        with pytest.raises(TokenInvalid, match=INVALID_CREDENTIALS):
            authority.verify_access_token(refresh)


# --------------------------------------------------------------------------- refresh tokens


def test_refresh_and_offline_tokens(tmp_path: Path) -> None:
    clock = FakeClock()
    authority = TokenAuthority(tmp_path, clock=clock, refresh_lifetime=1800)
    refresh = authority.issue_refresh_token("alice")
    offline = authority.issue_refresh_token("bob", offline=True)
    assert claims_of(refresh)["typ"] == "Refresh"
    assert claims_of(offline)["typ"] == "Offline"
    assert "offline_access" in claims_of(offline)["scope"]
    for _ in range(3):  # both are reusable
        assert authority.redeem_refresh_token(refresh) == "alice"
        assert authority.redeem_refresh_token(offline) == "bob"
    clock.now += 1800
    with pytest.raises(TokenInvalid):
        authority.redeem_refresh_token(refresh)
    assert authority.redeem_refresh_token(offline) == "bob"  # offline outlives a session


def test_access_token_is_not_a_refresh_token(authority: TokenAuthority) -> None:
    access = authority.issue_access_token("alice", None, READ_WRITE)
    with pytest.raises(TokenInvalid):
        authority.redeem_refresh_token(access)


def test_revocation(tmp_path: Path) -> None:
    clock = FakeClock()
    authority = TokenAuthority(tmp_path, clock=clock)
    one = authority.issue_refresh_token("alice", offline=True)
    two = authority.issue_refresh_token("alice", offline=True)
    authority.revoke_refresh_token(one)
    with pytest.raises(TokenInvalid):
        TokenAuthority(tmp_path, clock=clock).redeem_refresh_token(one)  # seen by other processes
    assert authority.redeem_refresh_token(two) == "alice"
    authority.revoke_user_tokens("alice")
    with pytest.raises(TokenInvalid):
        authority.redeem_refresh_token(two)
    clock.now += 5
    assert authority.redeem_refresh_token(authority.issue_refresh_token("alice")) == "alice"


def test_repr_reveals_no_key(authority: TokenAuthority) -> None:
    text = repr(authority)
    assert "BEGIN" not in text
    assert authority.public_key_b64[:40] not in text


# --------------------------------------------------------------------------- device flow


def test_device_flow_across_two_processes(tmp_path: Path) -> None:
    server = TokenAuthority(tmp_path)
    cli = TokenAuthority(tmp_path)  # `provenafs serve device approve` opens the same data dir
    grant = server.start_device_authorization("client-tools")
    assert set(grant) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    device_code, user_code = str(grant["device_code"]), str(grant["user_code"])
    assert user_code in str(grant["verification_uri_complete"])
    assert server.poll_device(device_code) is None
    assert server.poll_device(device_code) is None
    assert cli.approve_device("WRONG-CODE", "alice") is False
    assert cli.approve_device(user_code.lower().replace("-", ""), "alice") is True
    assert cli.approve_device(user_code, "mallory") is False  # approved once, for alice
    assert server.poll_device(device_code) == "alice"
    with pytest.raises(TokenInvalid):  # a device code is spent by its first success
        server.poll_device(device_code)
    with pytest.raises(TokenInvalid):
        server.poll_device("no-such-device-code")
    assert (tmp_path / "auth" / "auth.sqlite3").exists()
    db_text = (tmp_path / "auth" / "auth.sqlite3").read_bytes()
    assert device_code.encode() not in db_text  # only its hash is stored


def test_device_code_expires(tmp_path: Path) -> None:
    clock = FakeClock()
    authority = TokenAuthority(tmp_path, clock=clock, device_lifetime=60)
    grant = authority.start_device_authorization("client-tools")
    clock.now += 61
    assert authority.approve_device(str(grant["user_code"]), "alice") is False
    with pytest.raises(DeviceCodeExpired):
        authority.poll_device(str(grant["device_code"]))


def test_user_codes_differ(authority: TokenAuthority) -> None:
    codes = {str(authority.start_device_authorization("c")["user_code"]) for _ in range(50)}
    assert len(codes) == 50


# --------------------------------------------------------------------------- realm routes


USERS: dict[str, tuple[str | None, list[str]]] = {
    "alice": ("alice@example.org", READ_WRITE),
    "bob": (None, ["entity-registry-read"]),
}


def lookup(username: str) -> tuple[str | None, list[str]] | None:
    return USERS.get(username)


@dataclasses.dataclass
class Realm:
    url: str
    authority: TokenAuthority
    data_dir: Path

    def token(self, **form: str) -> httpx.Response:
        return httpx.post(f"{self.url}/protocol/openid-connect/token", data=form, timeout=10)


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    data_dir = tmp_path_factory.mktemp("realm")
    authority = TokenAuthority(data_dir)
    app = FastAPI()
    app.include_router(realm_router(authority, lookup), prefix=f"/auth/realms/{authority.realm}")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Realm(f"http://127.0.0.1:{port}/auth/realms/provena", authority, data_dir)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_realm_json(realm: Realm) -> None:
    response = httpx.get(realm.url, timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["realm"] == "provena"
    assert body["public_key"] == realm.authority.public_key_b64
    assert body["token-service"] == f"{realm.url}/protocol/openid-connect"
    assert body["account-service"] == f"{realm.url}/account"
    assert body["tokens-not-before"] == 0


def test_openid_configuration_and_certs(realm: Realm) -> None:
    config = httpx.get(f"{realm.url}/.well-known/openid-configuration", timeout=10).json()
    assert config["issuer"] == realm.url
    assert config["token_endpoint"] == f"{realm.url}/protocol/openid-connect/token"
    assert config["device_authorization_endpoint"] == (
        f"{realm.url}/protocol/openid-connect/auth/device"
    )
    keys = httpx.get(config["jwks_uri"], timeout=10).json()["keys"]
    assert len(keys) == 1
    assert keys[0]["kty"] == "RSA"
    assert keys[0]["alg"] == "RS256"


def assert_token_response(body: dict[str, Any], authority: TokenAuthority, user: str) -> None:
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == authority.access_lifetime
    assert isinstance(body["refresh_token"], str)
    principal = authority.verify_access_token(body["access_token"])
    assert principal.username == user
    assert (principal.email, list(principal.roles)) == USERS[user]


def test_refresh_grant(realm: Realm) -> None:
    refresh = realm.authority.issue_refresh_token("alice")
    response = realm.token(grant_type="refresh_token", refresh_token=refresh, client_id="x")
    assert response.status_code == 200
    body = response.json()
    assert_token_response(body, realm.authority, "alice")
    assert body["refresh_expires_in"] == realm.authority.refresh_lifetime
    assert body["refresh_token"] != refresh
    again = realm.token(grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert again.status_code == 200


def test_offline_grant_is_reusable(realm: Realm) -> None:
    offline = realm.authority.issue_refresh_token("bob", offline=True)
    for _ in range(2):
        response = realm.token(grant_type="refresh_token", refresh_token=offline, scope="")
        assert response.status_code == 200
        body = response.json()
        assert_token_response(body, realm.authority, "bob")
        assert body["refresh_token"] == offline
        assert body["refresh_expires_in"] == 0


def test_roles_come_from_the_user_at_refresh_time(realm: Realm) -> None:
    refresh = realm.authority.issue_refresh_token("alice")
    USERS["alice"] = ("alice@example.org", ["entity-registry-read"])
    try:
        body = realm.token(grant_type="refresh_token", refresh_token=refresh).json()
        roles = realm.authority.verify_access_token(body["access_token"]).roles
        assert roles == ("entity-registry-read",)
    finally:
        USERS["alice"] = ("alice@example.org", READ_WRITE)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "refresh_token", "refresh_token": "garbage"}, "invalid_grant"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        (
            {"grant_type": "password", "username": "alice", "password": "x"},
            "unsupported_grant_type",
        ),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": DEVICE_CODE_GRANT, "device_code": "nope"}, "invalid_grant"),
        ({"grant_type": DEVICE_CODE_GRANT}, "invalid_request"),
    ],
)
def test_token_endpoint_errors(realm: Realm, form: dict[str, str], error: str) -> None:
    response = realm.token(**form)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert "error_description" in response.json()


def test_refresh_with_access_token_or_for_unknown_user(realm: Realm) -> None:
    access = realm.authority.issue_access_token("alice", None, READ_WRITE)
    response = realm.token(grant_type="refresh_token", refresh_token=access)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    ghost = realm.authority.issue_refresh_token("ghost", offline=True)
    response = realm.token(grant_type="refresh_token", refresh_token=ghost)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_revoked_offline_token_is_refused(realm: Realm) -> None:
    offline = realm.authority.issue_refresh_token("bob", offline=True)
    realm.authority.revoke_refresh_token(offline)
    response = realm.token(grant_type="refresh_token", refresh_token=offline)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_device_flow_over_http(realm: Realm) -> None:
    started = httpx.post(
        f"{realm.url}/protocol/openid-connect/auth/device",
        data={"client_id": "client-tools"},
        timeout=10,
    )
    assert started.status_code == 200
    grant = started.json()
    assert grant["verification_uri"] == f"{realm.url}/device"
    assert (
        grant["verification_uri_complete"] == f"{realm.url}/device?user_code={grant['user_code']}"
    )
    assert grant["interval"] >= 1
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": grant["device_code"]}
    pending = realm.token(**poll)
    assert (pending.status_code, pending.json()["error"]) == (400, "authorization_pending")
    page = httpx.get(grant["verification_uri_complete"], timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f"provenafs serve device approve {grant['user_code']}" in page.text
    # the CLI approves from another process, through the data dir alone
    assert TokenAuthority(realm.data_dir).approve_device(grant["user_code"], "alice")
    done = realm.token(**poll)
    assert done.status_code == 200
    body = done.json()
    assert_token_response(body, realm.authority, "alice")
    assert realm.authority.redeem_refresh_token(body["refresh_token"]) == "alice"
    spent = realm.token(**poll)
    assert (spent.status_code, spent.json()["error"]) == (400, "invalid_grant")


def test_device_authorization_needs_client_id(realm: Realm) -> None:
    response = httpx.post(f"{realm.url}/protocol/openid-connect/auth/device", data={}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_device_page_escapes_input(realm: Realm) -> None:
    page = httpx.get(f"{realm.url}/device", params={"user_code": "<script>x</script>"}, timeout=10)
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


def test_oversized_form_is_refused(realm: Realm) -> None:
    response = realm.token(grant_type="refresh_token", refresh_token="x" * 100_000)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
