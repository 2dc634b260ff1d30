"""Routing of ``/content/{guid}/...`` in the app: authorise, pick the bundle, serve it.

The front passes here what it neither forwards to a content process nor serves itself
(:mod:`podium.proxy.files`: the files of static and rendered content a viewer may see):
refusals, drafts, earlier renderings, ranges, files not found. Requests are marked with the origin it arrived on
(``X-Podium-Origin: content``, see :mod:`podium.proxy.front`).

On the content origin the caller is whoever the request's API key names, or the
content cookie for this content item (:mod:`podium.handoff`); browsers without one are
sent through the dashboard's ``/__handoff__``, which signs them in if need be and
sends them back with a one-time code that :func:`redeem_handoff` trades for the
cookie. On the dashboard origin only API-key requests are served (clients checking a
deploy), under ``Content-Security-Policy: sandbox`` so that a browser would run none of
it; anything else is redirected to the content origin.

The caller may view content following its ``access_type`` and permissions; drafts
(``/content/{guid}/_bundle{id}/``) only by those who may manage it.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import uuid

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, errors, vanity
from podium.api import credentials, deps
from podium.handoff import Handoff
from podium.layout import DataLayout
from podium.proxy.files import safe_file
from podium.proxy.router import CONTENT_COOKIE, HANDOFF_PATH
from podium.render import RENDERED_MODES, latest_rendering
from podium.store import Store
from podium.store.models import Bundle, Content, Rendering
from podium.urls import Urls
from podium.usage import UsageRecorder

router = APIRouter()
_DRAFT = re.compile(r"^_bundle(\d+)(/.*)?$")
# An earlier rendering of rendered content: /content/{guid}/_rendering{id}/ (see podium.render).
_RENDERING = re.compile(r"^_rendering(\d+)(/.*)?$")


def _page(status: int, title: str, text: str) -> HTMLResponse:
    from html import escape

    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - Podium</title></head><body style='font-family:sans-serif;"
        f"max-width:40em;margin:4em auto'><h1>{escape(title)}</h1><p>{escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _on_content_origin(request: Request) -> bool:
    return request.headers.get("x-podium-origin") == "content"


def _target(request: Request) -> str:
    """The address the viewer asked for: what the front passed here, with the vanity path
    it came by (``X-Podium-Vanity``, set only by the front) put back."""
    path = request.url.path
    via = request.headers.get("x-podium-vanity")
    if via and _on_content_origin(request):
        path = via + path.split("/", 3)[3] if path.count("/") >= 3 else via
    return path + (f"?{request.url.query}" if request.url.query else "")


def _denied(request: Request, who: deps.Caller, urls: Urls, guid: str) -> Response:
    if who.user is None and _wants_html(request):
        query = urllib.parse.urlencode({"content": guid, "next": _target(request)})
        return RedirectResponse(f"{urls.public}__handoff__?{query}", status_code=303)
    if who.user is None:
        return _page(401, "Sign in needed", "This content is only for signed-in users with access.")
    return _page(403, "No access", "You do not have permission to view this content. Ask its owner.")


@router.api_route("/content/{guid}", methods=["GET", "HEAD"])
def content_no_slash(guid: str, request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/content/{guid}/{query}", status_code=301)


@router.api_route("/content/{guid}/{path:path}", methods=["GET", "HEAD"])
def serve_content(
    guid: str,
    path: str,
    request: Request,
    layout: DataLayout = Depends(deps.layout),
    urls: Urls = Depends(deps.urls),
    handoff: Handoff = Depends(deps.handoff),
    session: Session = Depends(deps.db),
) -> Response:
    try:
        uuid.UUID(guid)
    except ValueError:
        return _page(404, "Not found", "There is no content at this address.")
    content_origin = _on_content_origin(request)
    key = auth.parse_authorization(request.headers.get("authorization")) or (
        request.headers.get("x-rsc-authorization") or None
    )
    if not content_origin and key is None:  # browsers see content on its own origin only
        return RedirectResponse(urls.content_origin.replace("{guid}", guid) + _target(request), 307)
    try:
        who = _content_caller(request, handoff, session, guid, key)
    except errors.ApiError as exc:  # a wrong key (401), or too many of them (429, Retry-After)
        refused = _page(exc.status, "Not signed in", exc.message)
        refused.headers.update(exc.headers)
        return refused
    response = _serve(request, guid, path, who, layout, urls, session)
    usage: UsageRecorder | None = getattr(request.app.state, "usage", None)
    if usage is not None and response.status_code < 400:  # served by content: a hit
        usage.hit(request.method.encode(), _target(request).encode(), request.scope["headers"],
                  guid.lower(), who.user.guid if who.user else None, None)
    if not content_origin:
        response.headers["content-security-policy"] = "sandbox"
    return response


def _content_caller(
    request: Request, handoff: Handoff, session: Session, guid: str, key: str | None
) -> deps.Caller:
    """The API key's user, else the user of a content cookie for ``guid``; never the
    dashboard's session."""
    if key is not None:  # counted and throttled like the API's (podium.api.credentials)
        keyed = credentials.user_for_key(request, session, key)
        session.commit()
        return deps.Caller(keyed, "key")
    for name, value in _cookies(request):
        if name == CONTENT_COOKIE:
            session_id = handoff.check(value, guid)
            user = auth.user_for_session_id(session, session_id) if session_id is not None else None
            if user is not None:
                return deps.Caller(user, "session")
    return deps.Caller(None, "anonymous")


def _cookies(request: Request) -> list[tuple[str, str]]:
    """Every cookie of the request, repeated names included (content on this origin can
    set a cookie of any name, so the one that checks out must be found among several)."""
    found = []
    for part in request.headers.get("cookie", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found.append((name, value))
    return found


def _serve(
    request: Request, guid: str, path: str, who: deps.Caller, layout: DataLayout, urls: Urls,
    session: Session,
) -> Response:
    content = session.scalar(select(Content).where(Content.guid == guid))
    if content is None:
        return _page(404, "Not found", "There is no content at this address.")

    draft = _DRAFT.match(path)
    earlier = _RENDERING.match(path)
    if earlier:
        if not auth.can_view(session, who.user, content):
            return _denied(request, who, urls, guid)
        rendering = session.get(Rendering, int(earlier.group(1)))
        if rendering is None or rendering.content_id != content.id or rendering.status != "succeeded":
            return _page(404, "Not found", "This content has no such rendering.")
        if earlier.group(2) is None:
            return RedirectResponse(f"/content/{guid}/{path}/", status_code=301)
        return _serve_rendering(layout, rendering, earlier.group(2))
    if draft:
        if not auth.can_manage(session, who.user, content):
            return _denied(request, who, urls, guid)
        bundle = session.get(Bundle, int(draft.group(1)))
        if bundle is None or bundle.content_id != content.id:
            return _page(404, "Not found", "This content has no such bundle.")
        if draft.group(2) is None:
            return RedirectResponse(f"/content/{guid}/{path}/", status_code=301)
        rest = draft.group(2)
    else:
        if not auth.can_view(session, who.user, content):
            return _denied(request, who, urls, guid)
        if content.bundle_id is None:
            return _page(404, "Not deployed yet", "This content has no active bundle yet.")
        bundle = session.get(Bundle, content.bundle_id)
        if bundle is None:
            return _page(404, "Not deployed yet", "This content has no active bundle yet.")
        rest = path
    return _serve_bundle(layout, session, content, bundle, rest)


def _serve_rendering(layout: DataLayout, rendering: Rendering, rest: str) -> Response:
    if rest.strip("/") == "":
        rest = rendering.primary_file
    target = safe_file(layout.output_dir(rendering.content_id, rendering.id), rest)
    if target is None:
        return _page(404, "Not found", f"This rendering has no file {rest!r}.")
    validator = hashlib.md5(f"r{rendering.id}:{target}".encode(), usedforsecurity=False).hexdigest()
    return FileResponse(target, headers={"ETag": f'"{validator}"', "Cache-Control": "no-cache"})


def _serve_bundle(
    layout: DataLayout, session: Session, content: Content, bundle: Bundle, rest: str
) -> Response:
    if bundle.app_mode in RENDERED_MODES:
        rendering = latest_rendering(session, content.id, bundle.id)
        if rendering is None:
            return _page(404, "Not rendered yet", "This content has no successful rendering yet.")
        return _serve_rendering(layout, rendering, rest)
    root = layout.bundle_dir(content.id, bundle.id)
    if bundle.app_mode == "static":
        if rest.strip("/") == "":
            primary = bundle.manifest.get("metadata", {}).get("primary_html") or "index.html"
            rest = primary
        target = safe_file(root, rest)
        if target is None:
            return _page(404, "Not found", f"This content has no file {rest!r}.")
        # Files unpacked from a bundle carry the archive's mtimes (often 0), so the default
        # validators (mtime and size) can match across bundles and a rollback would show a
        # stale page: bundles are immutable, so bundle id and path identify the bytes.
        validator = hashlib.md5(f"{bundle.id}:{target}".encode(), usedforsecurity=False).hexdigest()
        return FileResponse(target, headers={"ETag": f'"{validator}"', "Cache-Control": "no-cache"})
    return _page(
        503, "Not available", f"Podium cannot serve {bundle.app_mode!r} content on this server yet."
    )


@router.get(HANDOFF_PATH.decode())
def redeem_handoff(
    request: Request,
    code: str = "",
    next: str = "",
    urls: Urls = Depends(deps.urls),
    handoff: Handoff = Depends(deps.handoff),
    store: Store = Depends(deps.store),
) -> Response:
    """The content origin's end of the hand-off: trade a one-time code for the content
    cookie, scoped to that content item's path, and go on to ``next``."""
    redeemed = handoff.redeem(code) if _on_content_origin(request) else None
    if redeemed is None:
        return _page(400, "Sign-in expired", "This sign-in link has expired or was used already; "
                     "open the content again.")
    guid, session_id = redeemed
    # The cookie's path is the address the viewer came by: /content/{guid}/ or a vanity path.
    with store.session() as session:
        prefix = vanity.public_prefix(session, guid, next)
    if prefix is None:
        prefix = next = f"/content/{guid}/"
    response = RedirectResponse(next, status_code=303)
    response.headers["cache-control"] = "no-store"
    # Written by hand: Python's cookie module knows Partitioned only from 3.14. On a secure
    # content origin the cookie is SameSite=None (so it works inside the dashboard's frame,
    # another site) and Partitioned (CHIPS: kept apart per embedding site, so browsers that
    # block third-party cookies still keep it).
    attributes = f"Path={prefix}; Max-Age={handoff.cookie_seconds}; HttpOnly; " + (
        "Secure; SameSite=None; Partitioned" if urls.secure_content else "SameSite=Lax"
    )
    response.headers.append("set-cookie", f"{CONTENT_COOKIE}={handoff.cookie(guid, session_id)}; {attributes}")
    return response
