"""What every dashboard page shares: who is signed in, and errors as pages.

Pages answer HTML, never the API's JSON: a page that needs a signed-in user
redirects to the sign-in form, and an :class:`~podium.errors.ApiError` raised
by the permission helpers the pages share with the API becomes an error page
carrying the same message.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import deps
from podium.settings import Settings
from podium.store import Store
from podium.store.models import User
from podium.web.templating import render


class SignInNeeded(Exception):
    """The page needs a signed-in user; the handler redirects to the sign-in form."""


class PageError(Exception):
    def __init__(self, status: int, message: str, title: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or {403: "No access", 404: "Not found"}.get(status, "Something went wrong")


@contextmanager
def as_page_errors() -> Iterator[None]:
    """Turn the API's errors into error pages with the same message."""
    try:
        yield
    except errors.ApiError as exc:
        raise PageError(exc.status, exc.message) from None


def current_user(
    request: Request, settings: Settings = Depends(deps.settings), session: Session = Depends(deps.db)
) -> User | None:
    """The signed-in user, or None (a wrong API key counts as nobody on a page)."""
    try:
        who = deps.resolve_caller(request, settings, session)
    except errors.ApiError:
        return None
    return who.user


def signed_in(user: User | None = Depends(current_user)) -> User:
    if user is None:
        raise SignInNeeded()
    return user


def administrator(user: User = Depends(signed_in)) -> User:
    if not auth.at_least(user, "administrator"):
        raise PageError(403, "This page is for administrators.")
    return user


def publisher(user: User = Depends(signed_in)) -> User:
    if not auth.at_least(user, "publisher"):
        raise PageError(
            403, "Publishing needs the publisher role; ask an administrator to change your role."
        )
    return user


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, _exc: SignInNeeded) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            "/__login__?next=" + urllib.parse.quote(target, safe="/"), status_code=303
        )

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> HTMLResponse:
        # The user is looked up again: the failing page's dependencies are gone.
        store: Store = deps.store(request)
        with store.session() as session:
            user = current_user(request, deps.settings(request), session)
            return render(
                request, "error.html", user=user, status=exc.status,
                title=exc.title, message=exc.message,
            )
