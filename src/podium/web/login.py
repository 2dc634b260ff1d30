"""Sign-in and sign-out for browsers; ``/`` leads to the dashboard.

A successful sign-in sets an HttpOnly, SameSite=Lax session cookie. The session's
CSRF token is never in a cookie: dashboard pages carry it (``<meta name="csrf-token">``
and form fields) and send it back in ``X-CSRF-Token`` (or a ``csrf_token`` form field)
with every state-changing request; no other origin can read those pages. The sign-in
form itself is protected by a double-submit token in an HttpOnly cookie.

``/__handoff__`` signs a viewer in to one content item on the content origin
(:mod:`podium.handoff`).

Failed sign-ins are throttled and audited (:mod:`podium.web.signin`).
"""

from __future__ import annotations

import secrets
import urllib.parse
import uuid

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from podium import audit, auth, vanity
from podium.api import deps
from podium.api.credentials import client_address
from podium.handoff import Handoff
from podium.proxy.router import HANDOFF_PATH
from podium.settings import Settings
from podium.urls import Urls
from podium.web.signin import SignIn, sign_in
from podium.web.templating import render

router = APIRouter()
_LOGIN_CSRF = "podium_login_csrf"


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never redirect to another host after sign-in.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(
    request: Request, next_path: str, token: str, message: str = "", status: int = 200,
    username: str = "",
) -> HTMLResponse:
    response = render(
        request, "login.html", status=status, next_path=next_path, login_token=token,
        message=message, username=username,
    )
    response.set_cookie(_LOGIN_CSRF, token, httponly=True, samesite="strict", path="/__login__")
    return response


@router.get("/__login__")
def login_page(request: Request, next: str | None = None) -> Response:
    return _form(request, _safe_next(next), secrets.token_urlsafe(16))


@router.post("/__login__")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
    csrf_token: str = Form(""),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    signin: SignIn = Depends(sign_in),
) -> Response:
    target = _safe_next(next)
    if not auth.csrf_ok(request.cookies.get(_LOGIN_CSRF, ""), csrf_token):
        return _form(
            request, target, secrets.token_urlsafe(16), "The form expired; please try again.", 400,
            username,
        )
    outcome = signin.attempt(session, username, password, client_address(request))
    user = outcome.user
    if user is None:
        refused = _form(request, target, secrets.token_urlsafe(16), outcome.message, outcome.status, username)
        refused.headers.update(outcome.headers)
        return refused
    token, _csrf = auth.start_session(session, user, settings.session_lifetime_seconds)
    session.commit()
    response = RedirectResponse(target, status_code=303)
    secure = settings.session_cookie_secure
    lifetime = settings.session_lifetime_seconds
    response.set_cookie(
        auth.SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure, max_age=lifetime
    )
    response.delete_cookie(auth.CSRF_COOKIE)  # readable by page scripts: no longer used
    response.delete_cookie(_LOGIN_CSRF, path="/__login__")
    return response


@router.post("/__logout__")
def logout(
    request: Request,
    csrf_token: str = Form(""),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
) -> Response:
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        info = auth.user_for_session(session, token, settings.session_lifetime_seconds)
        if info is not None and not auth.csrf_ok(info.csrf_token, csrf_token):
            return HTMLResponse("Sign-out needs the page's CSRF token.", status_code=403)
        auth.end_session(session, token)
        if info is not None:
            audit.record(session, info.user, "user_logout", "Signed out.")
        session.commit()
    response = RedirectResponse("/__login__", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE)
    response.delete_cookie(auth.CSRF_COOKIE)
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/connect/", status_code=303)


@router.get("/__handoff__")
def content_handoff(
    request: Request,
    content: str = "",
    next: str = "",
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    handoff: Handoff = Depends(deps.handoff),
    session: Session = Depends(deps.db),
) -> Response:
    """The dashboard's end of the hand-off: a signed-in viewer is sent back to the content
    origin with a one-time code for ``content``; others sign in first."""
    try:
        guid = str(uuid.UUID(content))
    except ValueError:
        return HTMLResponse("No such content.", status_code=404)
    token = request.cookies.get(auth.SESSION_COOKIE)
    info = auth.user_for_session(session, token, settings.session_lifetime_seconds) if token else None
    if info is None:
        here = request.url.path + "?" + request.url.query
        return RedirectResponse("/__login__?next=" + urllib.parse.quote(here, safe="/"), status_code=303)
    session.commit()
    if vanity.public_prefix(session, guid, next) is None:
        next = f"/content/{guid}/"
    query = urllib.parse.urlencode({"code": handoff.code(guid, info.id), "next": next})
    origin = urls.content_origin.replace("{guid}", guid)
    response = RedirectResponse(f"{origin}{HANDOFF_PATH.decode()}?{query}", status_code=303)
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response
