"""Token sources against a fake Keycloak realm; stored logins and the choice of token source."""

from __future__ import annotations

import base64
import json
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.lowlevel

from provenafs.api.errors import AuthenticationError, UnavailableError
from provenafs.api.logins import (
    NotLoggedInError,
    config_dir,
    forget,
    load_refresh_token,
    save_refresh_token,
    token_source_for,
)
from provenafs.api.realm import (
    DEVICE_GRANT,
    RefreshingToken,
    StaticToken,
    TokenSet,
    device_login,
    jwt_expiry,
)

REALM = "http://realm.test/auth/realms/provena"
OFFLINE = "offline-REFRESH-secret"


def fake_jwt(exp: float, n: int) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'exp': int(exp), 'n': n})}.sig"


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeRealm:
    """The realm's token and device endpoints, Keycloak-style, with a fake clock."""

    def __init__(self, clock: FakeClock, lifetime: float = 300.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.forms: list[dict[str, str]] = []
        self.issued = 0
        self.device_answers: list[str] = []
        self.rotate = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()  # let concurrent callers pile up
        form = dict(urllib.parse.parse_qsl(request.content.decode(), keep_blank_values=True))
        self.forms.append(form)
        if request.url.path.endswith("/auth/device"):
            return httpx.Response(
                200,
                json={
                    "device_code": "dev-1",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": f"{REALM}/device",
                    "verification_uri_complete": f"{REALM}/device?user_code=ABCD-EFGH",
                    "expires_in": 600,
                    "interval": 5,
                },
            )
        grant = form.get("grant_type")
        if grant == DEVICE_GRANT:
            answer = self.device_answers.pop(0) if self.device_answers else "ok"
            if answer != "ok":
                return httpx.Response(400, json={"error": answer})
        elif grant != "refresh_token" or form.get("refresh_token", "").startswith("bad"):
            return httpx.Response(400, json={"error": "invalid_grant"})
        self.issued += 1
        body: dict[str, Any] = {
            "access_token": fake_jwt(self.clock() + self.lifetime, self.issued),
            "token_type": "Bearer",
            "expires_in": self.lifetime,
        }
        if grant == DEVICE_GRANT or self.rotate:
            body["refresh_token"] = f"refresh-{self.issued}"
        return httpx.Response(200, json=body)


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    assert jwt_expiry(fake_jwt(1234, 1)) == 1234.0
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


async def test_static_token_is_used_as_is_and_hidden() -> None:
    token = StaticToken("bearer-SECRET")
    assert await token.access_token() == "bearer-SECRET"
    assert "SECRET" not in repr(token)


async def test_refreshing_token_refreshes_30s_before_exp() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)

    async def main() -> list[str]:
        source = RefreshingToken(
            REALM, OFFLINE, "automated-access", transport=httpx.MockTransport(realm), clock=clock
        )
        seen = [await source.access_token()]
        clock.now += 300 - 31  # 31 s left: still fresh
        seen.append(await source.access_token())
        clock.now += 2  # 29 s left: refresh
        seen.append(await source.access_token())
        await source.aclose()
        return seen

    seen = await main()
    assert seen[0] == seen[1] != seen[2]
    assert realm.issued == 2
    form = realm.forms[0]
    assert form["grant_type"] == "refresh_token"
    assert form["refresh_token"] == OFFLINE
    assert form["client_id"] == "automated-access"


async def test_refreshing_token_is_single_flight() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)

    async def main() -> set[str]:
        source = RefreshingToken(
            REALM, OFFLINE, "c", transport=httpx.MockTransport(realm), clock=clock
        )
        results: list[str] = []

        async def ask() -> None:
            results.append(await source.access_token())

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(ask)
        # ten callers told "refresh" at once after a 401: still one exchange
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(source.refresh)
        await source.aclose()
        return set(results)

    assert len(await main()) == 1
    assert realm.issued == 2


async def test_short_lived_tokens_are_not_refreshed_on_every_call() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock, lifetime=10)

    source = RefreshingToken(REALM, OFFLINE, "c", transport=httpx.MockTransport(realm), clock=clock)
    for _ in range(5):
        await source.access_token()
    clock.now += 6  # past half of a 10 s lifetime
    await source.access_token()
    await source.aclose()
    assert realm.issued == 2


async def test_realm_outage_keeps_a_token_that_has_not_expired() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)
    down = False

    async def handler(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("realm down")
        return await realm(request)

    async def main() -> None:
        nonlocal down
        source = RefreshingToken(
            REALM, OFFLINE, "c", transport=httpx.MockTransport(handler), clock=clock
        )
        token = await source.access_token()
        down = True
        clock.now += 290  # 10 s left: due for refresh, the realm is down, the token still works
        assert await source.access_token() == token
        clock.now += 20  # expired: now the outage shows
        with pytest.raises(UnavailableError):
            await source.access_token()
        await source.aclose()

    await main()


async def test_refused_refresh_raises_without_the_token() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)

    async def main() -> None:
        source = RefreshingToken(
            REALM, "bad-REFRESH-secret", "c", transport=httpx.MockTransport(realm), clock=clock
        )
        try:
            await source.access_token()
        finally:
            await source.aclose()

    with pytest.raises(AuthenticationError) as info:
        await main()
    assert "invalid_grant" in str(info.value)
    assert "secret" not in str(info.value).lower()


async def test_rotated_refresh_token_is_reported() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)
    realm.rotate = True
    rotated: list[str] = []

    source = RefreshingToken(
        REALM,
        "refresh-0",
        "client-tools",
        transport=httpx.MockTransport(realm),
        clock=clock,
        on_new_refresh_token=rotated.append,
    )
    await source.access_token()
    await source.refresh()
    await source.aclose()
    assert rotated == ["refresh-1", "refresh-2"]
    assert realm.forms[1]["refresh_token"] == "refresh-1"


async def test_device_login_polls_until_approved() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)
    realm.device_answers = ["authorization_pending", "slow_down", "authorization_pending"]
    shown: list[tuple[str, str]] = []
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    async def main() -> TokenSet:
        return await device_login(
            REALM,
            "client-tools",
            lambda uri, code: shown.append((uri, code)),
            transport=httpx.MockTransport(realm),
            sleep=fake_sleep,
            clock=clock,
        )

    tokens = await main()
    assert shown == [(f"{REALM}/device?user_code=ABCD-EFGH", "ABCD-EFGH")]
    assert sleeps == [5, 5, 10, 10]
    assert tokens.refresh_token == "refresh-1"
    assert tokens.expires_at == int(clock.now + 300)
    assert realm.forms[0] == {"client_id": "client-tools", "scope": ""}
    assert realm.forms[1]["grant_type"] == DEVICE_GRANT
    assert realm.forms[1]["device_code"] == "dev-1"
    assert "refresh-1" not in repr(tokens)
    assert tokens.access_token not in repr(tokens)


@pytest.mark.parametrize("answer", ["expired_token", "access_denied"])
async def test_device_login_expired_or_denied(answer: str) -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)
    realm.device_answers = ["authorization_pending", answer]

    async def fast_sleep(seconds: float) -> None:
        clock.now += seconds

    async def main() -> TokenSet:
        return await device_login(
            REALM,
            "client-tools",
            lambda uri, code: None,
            transport=httpx.MockTransport(realm),
            sleep=fast_sleep,
            clock=clock,
        )

    with pytest.raises(AuthenticationError):
        await main()
    assert len(realm.forms) == 3


async def test_device_login_gives_up_when_the_code_expires() -> None:
    clock = FakeClock()
    realm = FakeRealm(clock)
    realm.device_answers = ["authorization_pending"] * 1000

    async def slow_sleep(seconds: float) -> None:
        clock.now += 100

    async def main() -> TokenSet:
        return await device_login(
            REALM,
            "client-tools",
            lambda uri, code: None,
            transport=httpx.MockTransport(realm),
            sleep=slow_sleep,
            clock=clock,
        )

    with pytest.raises(AuthenticationError, match="expired"):
        await main()
    assert len(realm.forms) <= 9


# -- tokens.py ------------------------------------------------------------------------------


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path), **extra}


def test_config_dir_and_token_file_modes(tmp_path: Path) -> None:
    environ = env(tmp_path)
    directory = config_dir(environ)
    assert directory == tmp_path / "config" / "provenafs"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    save_refresh_token("http://ds.test/", "r-1", environ=environ)
    save_refresh_token("http://other.test", "r-2", environ=environ)
    path = directory / "tokens.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_refresh_token("http://ds.test", environ=environ) == "r-1"
    assert load_refresh_token("http://other.test/", environ=environ) == "r-2"
    assert forget("http://ds.test", environ=environ) is True
    assert forget("http://ds.test", environ=environ) is False
    assert load_refresh_token("http://ds.test", environ=environ) is None
    assert load_refresh_token("http://other.test", environ=environ) == "r-2"
    assert [p.name for p in directory.iterdir()] == ["tokens.json"]


def test_config_dir_defaults_to_home(tmp_path: Path) -> None:
    assert config_dir({"HOME": str(tmp_path)}) == tmp_path / ".config" / "provenafs"


async def test_token_source_order(tmp_path: Path) -> None:
    environ = env(tmp_path)
    save_refresh_token("http://ds.test", "stored-r", environ=environ)

    bearer = token_source_for("http://ds.test", REALM, environ={**environ, "PROVENAFS_TOKEN": "b"})
    assert isinstance(bearer, StaticToken)
    assert await bearer.access_token() == "b"

    offline = token_source_for(
        "http://ds.test", REALM, environ={**environ, "PROVENAFS_OFFLINE_TOKEN": OFFLINE}
    )
    assert isinstance(offline, RefreshingToken)
    assert "automated-access" in repr(offline)
    assert OFFLINE not in repr(offline)

    token_file = tmp_path / "offline.txt"
    token_file.write_text(OFFLINE + "\n")
    from_file = token_source_for(
        "http://ds.test", REALM, offline_token_file=token_file, environ=environ
    )
    assert isinstance(from_file, RefreshingToken) and "automated-access" in repr(from_file)

    stored = token_source_for("http://ds.test/", REALM, environ=environ)
    assert isinstance(stored, RefreshingToken) and "client-tools" in repr(stored)


async def test_stored_login_persists_a_rotated_refresh_token(tmp_path: Path) -> None:
    environ = env(tmp_path)
    save_refresh_token("http://ds.test", "refresh-0", environ=environ)
    clock = FakeClock()
    realm = FakeRealm(clock)
    realm.rotate = True
    source = token_source_for("http://ds.test", REALM, environ=environ)
    assert isinstance(source, RefreshingToken)
    source._http = httpx.AsyncClient(transport=httpx.MockTransport(realm))
    await source.access_token()
    assert load_refresh_token("http://ds.test", environ=environ) == "refresh-1"


def test_not_logged_in_is_clear(tmp_path: Path) -> None:
    environ = env(tmp_path)
    with pytest.raises(NotLoggedInError, match=r"provenafs login http://ds\.test"):
        token_source_for("http://ds.test/", REALM, environ=environ)
    missing = tmp_path / "nope.txt"
    with pytest.raises(NotLoggedInError, match="offline token file"):
        token_source_for("http://ds.test", REALM, offline_token_file=missing, environ=environ)
    with pytest.raises(NotLoggedInError, match="realm"):
        token_source_for(
            "http://ds.test", None, environ={**environ, "PROVENAFS_OFFLINE_TOKEN": OFFLINE}
        )
    assert isinstance(NotLoggedInError("x"), AuthenticationError)
