"""Sign-in and sign-out for browsers.

A successful sign-in sets an HttpOnly, SameSite=Lax session cookie and a
readable CSRF cookie whose value pages send back in ``X-CSRF-Token`` (or a
``csrf_token`` form field) with every state-changing request. The sign-in form
itself is protected by a double-submit token.
"""

from __future__ import annotations

import secrets
from html import escape

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth
from podium.api import deps
from podium.context import Podium
from podium.store.models import User

router = APIRouter()
_LOGIN_CSRF = "podium_login_csrf"


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never redirect to another host after sign-in.
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _form(next_path: str, token: str, message: str = "", status: int = 200) -> HTMLResponse:
    notice = f"<p role='alert' style='color:#a00'>{escape(message)}</p>" if message else ""
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Sign in - Podium</title><meta name="viewport" content="width=device-width">
</head><body style="font-family:sans-serif;max-width:24em;margin:4em auto">
<h1>Sign in to Podium</h1>{notice}
<form method="post" action="/__login__">
<input type="hidden" name="next" value="{escape(next_path)}">
<input type="hidden" name="csrf_token" value="{escape(token)}">
<p><label>Username<br><input name="username" autocomplete="username" required autofocus></label></p>
<p><label>Password<br><input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">Sign in</button></p>
</form></body></html>"""
    response = HTMLResponse(body, status_code=status)
    response.set_cookie(_LOGIN_CSRF, token, httponly=True, samesite="strict", path="/__login__")
    return response


@router.get("/__login__")
def login_page(next: str | None = None) -> Response:
    return _form(_safe_next(next), secrets.token_urlsafe(16))


@router.post("/__login__")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
    csrf_token: str = Form(""),
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
) -> Response:
    target = _safe_next(next)
    if not auth.csrf_ok(request.cookies.get(_LOGIN_CSRF, ""), csrf_token):
        return _form(target, secrets.token_urlsafe(16), "The form expired; please try again.", 400)
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.locked or not auth.verify_password(user.password_hash, password):
        return _form(target, secrets.token_urlsafe(16), "Wrong username or password.", 401)
    token, csrf = auth.start_session(session, user, ctx.settings.session_lifetime_seconds)
    session.commit()
    response = RedirectResponse(target, status_code=303)
    secure = ctx.settings.session_cookie_secure
    lifetime = ctx.settings.session_lifetime_seconds
    response.set_cookie(
        auth.SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure, max_age=lifetime
    )
    response.set_cookie(auth.CSRF_COOKIE, csrf, samesite="strict", secure=secure, max_age=lifetime)
    response.delete_cookie(_LOGIN_CSRF, path="/__login__")
    return response


@router.post("/__logout__")
def logout(
    request: Request,
    csrf_token: str = Form(""),
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
) -> Response:
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        info = auth.user_for_session(session, token, ctx.settings.session_lifetime_seconds)
        if info is not None and not auth.csrf_ok(info.csrf_token, csrf_token):
            return HTMLResponse("Sign-out needs the page's CSRF token.", status_code=403)
        auth.end_session(session, token)
        session.commit()
    response = RedirectResponse("/__login__", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE)
    response.delete_cookie(auth.CSRF_COOKIE)
    return response


@router.get("/")
def home(
    request: Request, ctx: Podium = Depends(deps.podium), session: Session = Depends(deps.db)
) -> Response:
    try:
        who = deps.resolve_caller(request, ctx, session)
    except Exception:
        who = deps.Caller(None, "anonymous")
    if who.user is None:
        return RedirectResponse("/__login__", status_code=303)
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Podium</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto"><h1>Podium</h1>
<p>Signed in as {escape(who.user.username)} ({escape(who.user.user_role)}).</p>
<p><a href="/__docs__">API documentation</a></p>
<form method="post" action="/__logout__"><input type="hidden" name="csrf_token"
value="{escape(request.cookies.get(auth.CSRF_COOKIE, ''))}"><button>Sign out</button></form>
</body></html>"""
    )
