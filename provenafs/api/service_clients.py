"""One HTTP client per Provena service the mount calls besides the data store, made on first use.

The registry, prov, job, search and auth APIs are reached through ``DataStoreClient`` (one
retry, error and statistics policy) at the base URL ``ServiceUrls`` names for each. This
module only holds those clients; it knows no route and must never log a token.
"""

from __future__ import annotations

import httpx

from provenafs.api.client import DataStoreClient
from provenafs.api.realm import TokenSource
from provenafs.api.services import ServiceUrls

__all__ = ["ServiceClients"]


class ServiceClients:
    """The client of each service, by key (``prov_api``, ``auth_api``, ...)."""

    def __init__(
        self,
        urls: ServiceUrls,
        tokens: TokenSource,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,  # tests answer in-process
    ) -> None:
        self.urls = urls
        self.timeout = timeout
        self._tokens = tokens
        self._retries = retries
        self._transport = transport
        self._clients: dict[str, DataStoreClient] = {}

    def client(self, key: str) -> DataStoreClient:
        """The client of service *key* (``ApiError`` naming the mount option if unknown)."""
        base = self.urls.require(key)
        client = self._clients.get(base)
        if client is None:
            client = DataStoreClient(
                base,
                self._tokens,
                timeout=self.timeout,
                transport=self._transport,
                retries=self._retries,
            )
            self._clients[base] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
