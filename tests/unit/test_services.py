"""Where Provena's other services answer: the discovery document, the host rule, overrides."""

from __future__ import annotations

import httpx
import pytest

from provenafs.api.client import discover
from provenafs.api.errors import ApiError
from provenafs.api.services import ServiceUrls, service_urls


def test_a_real_deployment_is_derived_from_the_data_stores_host() -> None:
    urls = service_urls("https://data-api.example.org", None, {})
    assert urls == ServiceUrls(
        registry_api="https://registry-api.example.org",
        prov_api="https://prov-api.example.org",
        search_api="https://search.example.org",
        job_api="https://job-api.example.org",
        auth_api="https://auth-api.example.org",
    )
    assert (
        service_urls("http://data-api.lab:8080/", None, {}).prov_api == "http://prov-api.lab:8080"
    )


def test_the_document_then_overrides_win() -> None:
    document = {"prov_api": "http://127.0.0.1:9/", "job_api": "http://127.0.0.1:9", "other": 1}
    urls = service_urls("http://127.0.0.1:9", document, {"job_api": "http://jobs.lab/"})
    assert urls.prov_api == "http://127.0.0.1:9"
    assert urls.job_api == "http://jobs.lab"
    assert urls.registry_api is None  # not named, not derivable


def test_an_unknown_service_says_how_to_name_it() -> None:
    with pytest.raises(ApiError, match="-o prov_api=URL"):
        ServiceUrls().require("prov_api")


async def test_discovery_reads_the_document_or_derives() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "store.local":
            return httpx.Response(200, json={"prov_api": "http://store.local/prov"})
        return httpx.Response(404)

    transport = httpx.MockTransport(answer)
    found: dict[str, ServiceUrls] = {}
    for source in ("http://store.local", "https://data-api.example.org"):
        document = (await discover(source, transport=transport)).document
        found[source] = service_urls(source, document, {})
    assert found["http://store.local"].prov_api == "http://store.local/prov"
    assert found["https://data-api.example.org"].auth_api == "https://auth-api.example.org"
