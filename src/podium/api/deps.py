"""Request dependencies: the database session and the caller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.context import Podium
from podium.store.models import User

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def podium(request: Request) -> Podium:
    return request.app.state.podium  # type: ignore[no-any-return]


def db(ctx: Podium = Depends(podium)) -> Iterator[Session]:
    """A session for one request. Endpoints that change data commit themselves,
    so the change is durable before the response leaves."""
    session = ctx.store._sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@dataclass(frozen=True)
class Caller:
    user: User | None
    via: str  # "key", "session" or "anonymous"


def resolve_caller(request: Request, ctx: Podium, session: Session) -> Caller:
    """Who is calling: an API key, else a login session cookie, else nobody.

    A key that does not match is an error (401, code 30) rather than anonymous
    access, so a mistyped key is reported instead of silently showing less.
    Cookie-authenticated requests that change state must carry the session's
    CSRF token in ``X-CSRF-Token`` (double-submit), API keys need none.
    """
    key = auth.parse_authorization(request.headers.get("authorization"))
    if key is None:
        key = request.headers.get("x-rsc-authorization") or None
    if key is not None:
        user = auth.user_for_api_key(session, key)
        if user is None:
            raise errors.bad_credentials()
        session.commit()
        return Caller(user, "key")
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        info = auth.user_for_session(session, token, ctx.settings.session_lifetime_seconds)
        if info is not None:
            if request.method not in _SAFE_METHODS and not auth.csrf_ok(
                info.csrf_token, request.headers.get("x-csrf-token")
            ):
                raise errors.forbidden(
                    "Missing or wrong X-CSRF-Token header for a cookie-authenticated request."
                )
            session.commit()
            return Caller(info.user, "session")
    return Caller(None, "anonymous")


def caller(
    request: Request, ctx: Podium = Depends(podium), session: Session = Depends(db)
) -> Caller:
    return resolve_caller(request, ctx, session)


def user(who: Caller = Depends(caller)) -> User:
    """The authenticated user; 401 when there is none."""
    if who.user is None:
        raise errors.auth_required()
    return who.user


def publisher(current: User = Depends(user)) -> User:
    if not auth.at_least(current, "publisher"):
        raise errors.forbidden("This operation needs the publisher or administrator role.")
    return current


def administrator(current: User = Depends(user)) -> User:
    if not auth.at_least(current, "administrator"):
        raise errors.forbidden("This operation needs the administrator role.")
    return current
