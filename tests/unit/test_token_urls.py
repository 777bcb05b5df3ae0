"""``check_token_url``: https, or plain http to a loopback address, unless insecure_http; an
https data store never leads a token to plain http (issue 10 item 7)."""

from __future__ import annotations

import pytest

from provenafs.api.token_urls import InsecureUrlError, check_token_url, is_loopback_host


@pytest.mark.parametrize(
    "url",
    [
        "https://data-api.example.org",
        "https://auth.example.org/auth/realms/provena",
        "http://127.0.0.1:8750",
        "http://127.10.20.30",
        "http://localhost:9000/auth/realms/provena",
        "http://LOCALHOST.",
        "http://[::1]:8750",
    ],
)
def test_https_and_loopback_http_carry_tokens(url: str) -> None:
    check_token_url(url, what="the data store")


@pytest.mark.parametrize(
    "url",
    [
        "http://data-api.example.org",
        "http://10.0.0.5:8750",
        "http://0.0.0.0:8750",  # reaches this machine, but is no loopback address
        "http://localhost.example.org",
        "http://127.0.0.1.nip.io",  # a name is never resolved
        "http://[::ffff:127.0.0.1]",
    ],
)
def test_plain_http_elsewhere_is_refused_unless_insecure_http(url: str) -> None:
    with pytest.raises(InsecureUrlError, match="plain http to another machine"):
        check_token_url(url, what="the data store")
    check_token_url(url, what="the data store", insecure_http=True)


@pytest.mark.parametrize("realm", ["http://127.0.0.1:8080/realms/x", "http://auth.example.org"])
def test_an_https_source_never_leads_to_plain_http(realm: str) -> None:
    for insecure in (False, True):
        with pytest.raises(InsecureUrlError, match=r"the data store .* is https"):
            check_token_url(
                realm,
                what="the Keycloak realm",
                insecure_http=insecure,
                source="https://data-api.example.org",
            )
    check_token_url(realm.replace("http:", "https:"), what="r", source="https://d.example.org")


@pytest.mark.parametrize("url", ["ftp://example.org", "example.org", "http://", "file:///etc"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(InsecureUrlError, match="must be an http"):
        check_token_url(url, what="the data store", insecure_http=True)


def test_messages_name_scheme_host_and_port_only() -> None:
    url = "http://me:hunter2@data.example.org:8443/private/path?token=abc"
    with pytest.raises(InsecureUrlError) as refused:
        check_token_url(url, what="the data store")
    message = str(refused.value)
    assert "http://data.example.org:8443" in message
    assert "hunter2" not in message and "token=abc" not in message and "private" not in message


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert is_loopback_host("localhost") and is_loopback_host("[::1]")
    assert not is_loopback_host("128.0.0.1") and not is_loopback_host("")
