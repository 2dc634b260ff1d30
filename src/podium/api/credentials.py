"""API keys checked under the failure throttle, and the client address requests come from.

A wrong key is counted against the client address (:mod:`podium.throttle`),
logged with a short prefix of its SHA-256 (never the key) and audited; past the
free failures, requests with a key from that address are answered 429 with
``Retry-After`` before any lookup. A good key costs nothing more than before.
"""

from __future__ import annotations

import logging
from typing import cast

from fastapi import Request
from sqlalchemy.orm import Session

from podium import audit, auth, errors, throttle
from podium.store.models import User
from podium.throttle import Throttle

log = logging.getLogger(__name__)


def failure_throttle(request: Request) -> Throttle:
    """The node's :class:`~podium.throttle.Throttle` (a dependency, as in :mod:`podium.api.deps`)."""
    return cast(Throttle, request.app.state.throttle)


def client_address(request: Request) -> str:
    """The address of the client that sent ``request``.

    The proxy front owns the public port and replaces any X-Forwarded-For a
    client sends with the peer address it saw (``podium.proxy.http.upstream_head``);
    with ``trust_forwarded_headers`` it appends that address instead. Either way
    the last entry is the one the front vouches for, so only that one is used.
    """
    forwarded = request.headers.getlist("x-forwarded-for")
    if forwarded:
        last = forwarded[-1].rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.client.host if request.client else "unknown"


def key_fingerprint(key: str) -> str:
    """What logs may say about a key: 8 hex digits of its SHA-256, enough to tell attempts apart."""
    return auth.hash_token(key)[:8]


def user_for_key(request: Request, session: Session, key: str) -> User:
    """The user of ``key``: 401 (code 30) when it matches none, 429 while the client's
    address must wait after too many wrong keys."""
    guard = failure_throttle(request)
    ip = client_address(request)
    counted = throttle.key_address(ip)
    wait = guard.wait_seconds((counted,))
    if wait > 0:
        seconds = throttle.retry_after(wait)
        log.debug("API key from %s refused unchecked for %d s more", ip, seconds)
        raise errors.too_many_attempts(
            f"Too many requests with wrong API keys from your address; try again in {seconds} s.",
            seconds,
        )
    user = auth.user_for_api_key(session, key)
    if user is not None:
        return user
    failures = guard.failure(session, counted)
    audit.record(
        session, audit.ANONYMOUS, "api_key_rejected",
        f"Rejected an API key that is not valid (sha256 {key_fingerprint(key)}...) from {ip}.",
    )
    session.commit()
    delay = guard.policy(counted).delay_seconds(failures)
    log.warning(
        "wrong API key (sha256 %s...) from %s: %d in a row from this address%s",
        key_fingerprint(key), ip, failures,
        f"; further keys from it wait {delay:g} s" if delay else "",
    )
    raise errors.bad_credentials()
