"""Renderings of rendered content: re-render on demand and the output history.

- ``POST v1/content/{guid}/render`` renders the active bundle again; answers
  ``{"task_id"}`` like a deploy. The task's ``result`` holds the ``rendering_id``.
- ``GET v1/content/{guid}/renderings``: every rendering, newest first; ``active``
  marks the one viewers are served; ``url`` views any successful one
  (``/content/{guid}/_rendering{id}/``).
- Connect's v0 variant calls that posit-sdk's ``content.render()`` makes:
  ``GET applications/{guid}/variants`` (one default variant per content, its id
  the content's id) and ``POST variants/{id}/render`` (answers the task itself).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import deps
from podium.api.content import managed_content, visible_content
from podium.api.lookup import variant_content
from podium.api.serialize import iso
from podium.render import latest_rendering
from podium.render.mail import AUDIENCES, MailError
from podium.render.tasks import RenderTasks
from podium.store.models import Content, Rendering, User
from podium.tasks import TaskManager
from podium.urls import Urls

router = APIRouter()


def rendering_json(urls: Urls, rendering: Rendering, content: Content, active_id: int | None) -> dict[str, Any]:
    ok = rendering.status == "succeeded"
    return {
        "id": str(rendering.id),
        "content_guid": content.guid,
        "bundle_id": str(rendering.bundle_id),
        "job_key": rendering.job_key,
        "status": rendering.status,
        "reason": rendering.reason,
        "error": rendering.error,
        "start_time": iso(rendering.start_time),
        "end_time": iso(rendering.end_time),
        "active": rendering.id == active_id,
        "activated": rendering.activated,
        "url": f"{urls.content(content.guid)}_rendering{rendering.id}/" if ok else None,
    }


@router.post("/v1/content/{guid}/render")
async def render_content(
    guid: str,
    render_tasks: RenderTasks = Depends(deps.render_tasks),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    return {"task_id": render_tasks.start(content, user.id, "api")}


@router.get("/v1/content/{guid}/renderings")
def list_renderings(
    guid: str,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> list[dict[str, Any]]:
    content = visible_content(session, who.user, guid)
    if not auth.can_view(session, who.user, content):
        raise errors.not_found("content", guid)
    active = latest_rendering(session, content.id, content.bundle_id) if content.bundle_id else None
    rows = session.scalars(
        select(Rendering).where(Rendering.content_id == content.id).order_by(Rendering.id.desc())
    )
    return [rendering_json(urls, r, content, active.id if active else None) for r in rows]


def _variant_json(session: Session, content: Content) -> dict[str, Any]:
    active = latest_rendering(session, content.id, content.bundle_id) if content.bundle_id else None
    return {
        "id": content.id,
        "app_id": content.id,
        "key": content.guid.replace("-", "")[:8],
        "bundle_id": content.bundle_id,
        "is_default": True,
        "name": "default",
        "email_collaborators": False,
        "email_viewers": False,
        "created_time": iso(content.created_time),
        "rendering_id": active.id if active else None,
        "render_time": iso(active.end_time) if active else None,
        "render_duration": None,
        "visibility": "public",
        "owner_id": content.owner_id,
    }


@router.get("/applications/{guid}/variants")
def list_variants(
    guid: str,
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> list[dict[str, Any]]:
    content = visible_content(session, who.user, guid)
    return [_variant_json(session, content)]


@router.post("/variants/{variant_id}/render")
async def render_variant(
    variant_id: str,
    render_tasks: RenderTasks = Depends(deps.render_tasks),
    tasks: TaskManager = Depends(deps.tasks),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = variant_content(session, user, variant_id)
    if not auth.can_manage(session, user, content):
        raise errors.forbidden("Only the owner, collaborators and administrators can render this content.")
    task_id = render_tasks.start(content, user.id, "api")
    snap = tasks.snapshot(task_id, 0)
    assert snap is not None
    return {
        "id": snap.id, "output": snap.output, "finished": snap.finished, "code": snap.code,
        "error": snap.error, "last": snap.last, "result": snap.result, "user_id": user.id,
    }


@router.post("/variants/{variant_id}/sender")
async def send_variant(
    variant_id: str,
    email: str = "me",
    rendering_id: str | None = None,
    render_tasks: RenderTasks = Depends(deps.render_tasks),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    """Mail a rendering (default: the one served) to ``me``, ``collaborators`` or
    ``collaborators_viewers`` (posit-sdk's ``Variant.send_mail``)."""
    content = variant_content(session, user, variant_id)
    if email not in AUDIENCES:
        raise errors.bad_request(f"email must be one of {', '.join(AUDIENCES)}; got {email!r}.")
    if email != "me" and not auth.can_manage(session, user, content):
        raise errors.forbidden("Only the owner, collaborators and administrators can mail others.")
    if rendering_id:
        chosen = int(rendering_id) if rendering_id.isdigit() else -1
    else:
        active = latest_rendering(session, content.id, content.bundle_id) if content.bundle_id else None
        chosen = active.id if active else -1
    content_id, user_id = content.id, user.id
    session.close()
    try:
        sent = await render_tasks.mail(content_id, chosen, email, user_id)
    except MailError as exc:
        raise errors.bad_request(str(exc)) from None
    return {"sent": sent}
