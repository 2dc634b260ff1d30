"""Routing of ``/content/{guid}/...``: authorise, pick the bundle, serve it.

The caller may view content following its ``access_type`` and permissions;
drafts (``/content/{guid}/_bundle{id}/``) only by those who may manage it.
Browsers without a session are sent to the login page; API clients get a
plain status.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import deps
from podium.layout import DataLayout
from podium.render import RENDERED_MODES, latest_rendering
from podium.settings import Settings
from podium.store.models import Bundle, Content, Rendering

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


def _denied(request: Request, who: deps.Caller) -> Response:
    if who.user is None and _wants_html(request):
        target = urllib.parse.quote(request.url.path, safe="/")
        return RedirectResponse(f"/__login__?next={target}", status_code=303)
    if who.user is None:
        return _page(401, "Sign in needed", "This content is only for signed-in users with access.")
    return _page(403, "No access", "You do not have permission to view this content. Ask its owner.")


def safe_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None when it escapes or is absent.

    Directories resolve to their ``index.html``.
    """
    root = root.resolve()
    target = (root / relative.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


@router.api_route("/content/{guid}", methods=["GET", "HEAD"])
def content_no_slash(guid: str, request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/content/{guid}/{query}", status_code=301)


@router.api_route("/content/{guid}/{path:path}", methods=["GET", "HEAD"])
def serve_content(
    guid: str,
    path: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    layout: DataLayout = Depends(deps.layout),
    session: Session = Depends(deps.db),
) -> Response:
    try:
        uuid.UUID(guid)
    except ValueError:
        return _page(404, "Not found", "There is no content at this address.")
    try:
        who = deps.resolve_caller(request, settings, session)
    except errors.ApiError as exc:
        return _page(exc.status, "Not signed in", exc.message)
    content = session.scalar(select(Content).where(Content.guid == guid))
    if content is None:
        return _page(404, "Not found", "There is no content at this address.")

    draft = _DRAFT.match(path)
    earlier = _RENDERING.match(path)
    if earlier:
        if not auth.can_view(session, who.user, content):
            return _denied(request, who)
        rendering = session.get(Rendering, int(earlier.group(1)))
        if rendering is None or rendering.content_id != content.id or rendering.status != "succeeded":
            return _page(404, "Not found", "This content has no such rendering.")
        if earlier.group(2) is None:
            return RedirectResponse(f"/content/{guid}/{path}/", status_code=301)
        return _serve_rendering(layout, rendering, earlier.group(2))
    if draft:
        if not auth.can_manage(session, who.user, content):
            return _denied(request, who)
        bundle = session.get(Bundle, int(draft.group(1)))
        if bundle is None or bundle.content_id != content.id:
            return _page(404, "Not found", "This content has no such bundle.")
        if draft.group(2) is None:
            return RedirectResponse(f"/content/{guid}/{path}/", status_code=301)
        rest = draft.group(2)
    else:
        if not auth.can_view(session, who.user, content):
            return _denied(request, who)
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
