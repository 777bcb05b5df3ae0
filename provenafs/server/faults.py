"""Fault injection for tests of the local data store: latency, an error rate, fail-next-N.

Off by default. Rules are keyed by path prefix (None: every route) and set through
``PUT /_provenafs/faults``, ``provenafs serve --fault ...`` or ``provenafs serve faults set``.
The health check ``/``, the control routes ``/_provenafs/...`` and the realm ``/auth/...`` are
never faulted, so a test can always see that the server is up, turn faults off and get a token.

This module must not know about any data store route, and the mount must not import it.
Thread safety: rules are guarded by a lock; the middleware runs on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["FaultDecision", "FaultInjector", "FaultMiddleware", "FaultRule", "parse_fault_flag"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_EXEMPT_PREFIXES = ("/_provenafs", "/auth/")


@dataclasses.dataclass(frozen=True)
class FaultRule:
    """What to do to requests whose path starts with ``path_prefix`` (None: all of them)."""

    path_prefix: str | None = None
    latency_ms: int = 0
    error_rate: float = 0.0
    fail_next: int = 0
    status: int = 503

    def matches(self, path: str) -> bool:
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclasses.dataclass(frozen=True)
class FaultDecision:
    delay_seconds: float
    fail_status: int | None


def is_exempt(path: str) -> bool:
    """The health check, control routes and the realm are never faulted."""
    return path == "/" or path.startswith(_EXEMPT_PREFIXES)


class FaultInjector:
    """The current fault rules, and the decision for each request."""

    def __init__(self, rules: list[FaultRule] | None = None, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str | None, FaultRule] = {}
        self._random = random.Random(seed)  # noqa: S311 (fault sampling, not security)
        for rule in rules or []:
            self.set_rule(rule)

    def set_rule(self, rule: FaultRule) -> None:
        """Add *rule*, replacing any rule for the same prefix."""
        with self._lock:
            self._rules[rule.path_prefix] = rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules.values())

    def decide(self, path: str) -> FaultDecision:
        """Latency to add and the status to fail with (None: let it through); counts fail_next."""
        if is_exempt(path):
            return FaultDecision(0.0, None)
        delay = 0.0
        status: int | None = None
        with self._lock:
            for prefix, rule in list(self._rules.items()):
                if not rule.matches(path):
                    continue
                delay = max(delay, rule.latency_ms / 1000)
                if status is not None:
                    continue
                if rule.fail_next > 0:
                    self._rules[prefix] = dataclasses.replace(rule, fail_next=rule.fail_next - 1)
                    status = rule.status
                elif rule.error_rate > 0 and self._random.random() < rule.error_rate:
                    status = rule.status
        return FaultDecision(delay, status)


def parse_fault_flag(text: str) -> FaultRule:
    """Parse ``path_prefix=/registry,latency_ms=200,error_rate=0.5,fail_next=2,status=500``.

    Raises ValueError with a readable message on bad input.
    """
    fields: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault setting {part!r} is not NAME=VALUE")
        if name == "path_prefix":
            fields[name] = value or None
        elif name in {"latency_ms", "fail_next", "status"}:
            fields[name] = int(value)
        elif name == "error_rate":
            fields[name] = float(value)
        else:
            raise ValueError(f"unknown fault setting {name!r}")
    rule = FaultRule(**fields)
    if rule.latency_ms < 0 or rule.fail_next < 0 or not 0.0 <= rule.error_rate <= 1.0:
        raise ValueError("latency_ms and fail_next must be >= 0 and error_rate within 0..1")
    if not 400 <= rule.status <= 599:
        raise ValueError("status must be an HTTP error status (400-599)")
    return rule


class FaultMiddleware:
    """ASGI middleware applying a ``FaultInjector``'s decision before the app sees a request."""

    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decision = self.injector.decide(str(scope.get("path", "")))
        if decision.delay_seconds:
            await asyncio.sleep(decision.delay_seconds)
        if decision.fail_status is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "Injected fault (provenafs serve fault injection)."}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": decision.fail_status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
