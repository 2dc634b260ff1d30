"""Wrong API keys on the content path: 429 from the front while the client's address must wait.

:class:`KeyGuard` wraps the content router. While no address is throttled (the
usual case) it hands ``route`` straight to the router and adds nothing, not even
a coroutine. Otherwise a request carrying an API key (``Authorization: Key`` or
``X-RSC-Authorization``) from an address that must wait is answered 429 with
``Retry-After`` from memory, without looking the key up. Failures themselves are
counted where keys are checked: a key the router does not know is passed to the
app, whose caller resolution (:mod:`podium.api.credentials`) counts and logs it.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any

from podium import throttle
from podium.proxy.decisions import Decision, Respond, Router
from podium.throttle import Throttle


def _carries_key(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"x-rsc-authorization" and value.strip():
            return True
        if name == b"authorization" and value.strip()[:4].lower() == b"key ":
            return True
    return False


def too_many(wait_seconds: float, headers: list[tuple[bytes, bytes]]) -> Respond:
    seconds = throttle.retry_after(wait_seconds)
    message = f"Too many requests with wrong API keys from your address; try again in {seconds} s."
    retry = (b"retry-after", str(seconds).encode())
    if any(n == b"accept" and b"text/html" in v for n, v in headers):
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Too many attempts"
            " - Podium</title></head><body style='font-family:sans-serif;max-width:40em;margin:4em "
            f"auto'><h1>Too many attempts</h1><p>{message}</p></body></html>"
        )
        return Respond(429, [(b"content-type", b"text/html; charset=utf-8"), retry], page.encode())
    body = json.dumps({"code": 30, "error": message, "payload": None}).encode()
    return Respond(429, [(b"content-type", b"application/json"), retry], body)


async def _answer(decision: Decision) -> Decision:
    return decision


class KeyGuard:
    """A :class:`~podium.proxy.decisions.Router` refusing throttled API keys before ``router``."""

    def __init__(self, router: Router, failures: Throttle) -> None:
        self.router = router
        self.failures = failures

    def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Coroutine[Any, Any, Decision]:
        if self.failures.blocking and client is not None and _carries_key(headers):
            wait = self.failures.wait_seconds((throttle.key_address(client[0]),))
            if wait > 0:
                return _answer(too_many(wait, headers))
        return self.router.route(method, target, headers, client)
