"""Signed passes for content on its own origin: the hand-off code and the content cookie.

A viewer signed in to the dashboard reaches private content on the content origin
through a hand-off, as OAuth does: the content origin sends the browser to the
dashboard's ``/__handoff__``, which (signed in) answers with a redirect back carrying a
one-time **code**; the content origin trades the code for a **content cookie** and
sends the browser on to the page it asked for.

Both are HMAC-signed with a key derived from the server's secret key, so every node
checks them without the database, and both name one content item and the dashboard
login session they came from: a pass is valid for that content only, is never read by
the API, and dies with the dashboard session (the router checks the session, cached
for seconds). Codes live for a minute and are single-use on the node that redeems
them (a code travels in one redirect; a copy replayed on another node within the minute
yields a pass to the same content for the same session, nothing more).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

CODE_SECONDS = 60


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Handoff:
    def __init__(self, key: bytes, cookie_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self.cookie_seconds = cookie_seconds
        self._clock = clock
        self._redeemed: dict[str, float] = {}  # nonce -> expiry, for single use

    def _sign(self, kind: str, guid: str, session_id: int, seconds: int) -> str:
        expires = int(self._clock()) + seconds
        payload = f"{kind}:{guid}:{session_id}:{expires}:{secrets.token_urlsafe(9)}"
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return f"{_b64(payload.encode())}.{_b64(mac)}"

    def _open(self, kind: str, token: str) -> tuple[str, int, int, str] | None:
        """(guid, session id, expiry, nonce) of a valid, unexpired ``kind`` pass."""
        try:
            raw, _, mac = token.partition(".")
            payload = _unb64(raw)
            if not hmac.compare_digest(_unb64(mac), hmac.new(self._key, payload, hashlib.sha256).digest()):
                return None
            found, guid, session_id, expires, nonce = payload.decode().split(":")
            if found != kind or int(expires) < self._clock():
                return None
            return guid, int(session_id), int(expires), nonce
        except (ValueError, UnicodeDecodeError):
            return None

    def code(self, guid: str, session_id: int) -> str:
        """A one-time code for ``guid``, given to a viewer signed in with ``session_id``."""
        return self._sign("code", guid, session_id, CODE_SECONDS)

    def redeem(self, code: str) -> tuple[str, int] | None:
        """(content guid, session id) of a valid code not redeemed before on this node."""
        opened = self._open("code", code)
        if opened is None:
            return None
        guid, session_id, expires, nonce = opened
        now = self._clock()
        for old in [n for n, until in self._redeemed.items() if until < now]:
            del self._redeemed[old]
        if nonce in self._redeemed:
            return None
        self._redeemed[nonce] = expires
        return guid, session_id

    def cookie(self, guid: str, session_id: int) -> str:
        """The content cookie's value: a pass to ``guid`` for ``cookie_seconds``."""
        return self._sign("cookie", guid, session_id, self.cookie_seconds)

    def check(self, token: str, guid: str) -> int | None:
        """The dashboard session id a content cookie for ``guid`` came from, or None."""
        opened = self._open("cookie", token)
        if opened is None or opened[0] != guid:
            return None
        return opened[1]
