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
from podium.api.serialize import iso
from podium.context import Podium
from podium.render import SUPPORTED_RENDER_MODES, latest_rendering, render_bundle
from podium.render.mail import AUDIENCES, MailError
from podium.store.models import Content, Rendering, Schedule, User
from podium.tasks import TaskFailed, TaskOutput

router = APIRouter()


def start_render(ctx: Podium, content: Content, user_id: int | None, reason: str) -> str:
    """Start a task rendering the content's active bundle; return the task id."""
    if content.app_mode not in SUPPORTED_RENDER_MODES:
        raise errors.bad_request(
            f"Only rendered content ({', '.join(sorted(SUPPORTED_RENDER_MODES))}) can be rendered; "
            f"this content is {content.app_mode!r}."
        )
    if content.bundle_id is None:
        raise errors.bad_request("This content has no active bundle to render; deploy one first.")
    task_id = ctx.tasks.create("render", user_id, content.id)
    content_id = content.id

    async def body(out: TaskOutput) -> dict[str, Any]:
        async with ctx.deploy_lock(content_id):
            with ctx.store.session() as session:
                current = session.get(Content, content_id)
                if current is None or current.bundle_id is None:
                    raise TaskFailed("The content was deleted or has no active bundle.")
                bundle_id = current.bundle_id
                schedule = (
                    session.scalar(select(Schedule).where(Schedule.content_id == content_id))
                    if reason == "schedule" else None
                )
                activate = schedule is None or schedule.activate
                wanted = schedule is not None and schedule.email
            if not activate:
                out.line("The schedule has activate: false: this rendering is kept but not served.")
            rendering_id = await render_bundle(ctx, content_id, bundle_id, out, reason, activate)
        if wanted:  # a schedule with email on
            try:
                sent = await mail_rendering(ctx, content_id, rendering_id, "collaborators_viewers", None)
                out.line(f"Mailed rendering {rendering_id} to {sent} recipients.")
            except MailError as exc:  # the render itself succeeded
                out.line(f"Warning: {exc}")
        return {"rendering_id": str(rendering_id)}

    ctx.tasks.start(task_id, body)
    return task_id


async def mail_rendering(
    ctx: Podium, content_id: int, rendering_id: int, audience: str, me_id: int | None
) -> int:
    """Mail a successful rendering to ``audience``; returns how many addresses were sent to."""
    import asyncio

    from podium.render import output_dir
    from podium.render.mail import build_message, recipients, send

    if not ctx.settings.smtp_host:
        raise MailError("Email is not configured on this server (setting smtp_host).")
    with ctx.store.session() as session:
        content = session.get(Content, content_id)
        rendering = session.get(Rendering, rendering_id)
        if (content is None or rendering is None or rendering.content_id != content_id
                or rendering.status != "succeeded"):
            raise MailError(f"Rendering {rendering_id} is not a successful rendering of this content.")
        me = session.get(User, me_id) if me_id is not None else None
        to = recipients(session, content, audience, me)
        title = content.title or content.name
        page = output_dir(ctx, content_id, rendering_id) / rendering.primary_file
        url = f"{ctx.content_url(content.guid)}_rendering{rendering_id}/"
    if not to:
        return 0
    message = build_message(ctx.settings.smtp_from, to, title, url, page)
    await asyncio.to_thread(send, ctx.settings, message)
    return len(to)


def rendering_json(ctx: Podium, rendering: Rendering, content: Content, active_id: int | None) -> dict[str, Any]:
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
        "url": f"{ctx.content_url(content.guid)}_rendering{rendering.id}/" if ok else None,
    }


@router.post("/v1/content/{guid}/render")
async def render_content(
    guid: str,
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    return {"task_id": start_render(ctx, content, user.id, "api")}


@router.get("/v1/content/{guid}/renderings")
def list_renderings(
    guid: str,
    ctx: Podium = Depends(deps.podium),
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
    return [rendering_json(ctx, r, content, active.id if active else None) for r in rows]


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
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = session.get(Content, int(variant_id)) if variant_id.isdigit() else None
    if content is None or not auth.can_see_settings(session, user, content):
        raise errors.not_found("variant", variant_id)
    if not auth.can_manage(session, user, content):
        raise errors.forbidden("Only the owner, collaborators and administrators can render this content.")
    task_id = start_render(ctx, content, user.id, "api")
    snap = ctx.tasks.snapshot(task_id, 0)
    assert snap is not None
    return {
        "id": snap.id, "output": snap.output, "finished": snap.finished, "code": snap.code,
        "error": snap.error, "last": snap.last, "result": snap.result, "user_id": user.id,
    }


def run_scheduled(ctx: Podium, content_id: int) -> None:
    """Start the render a schedule claimed (called by the schedule runner, in the event loop)."""
    import logging

    with ctx.store.session() as session:
        content = session.get(Content, content_id)
        if content is None:
            return
        try:
            task_id = start_render(ctx, content, None, "schedule")
        except errors.ApiError as exc:
            logging.getLogger(__name__).warning(
                "content %s: scheduled render skipped: %s", content.guid, exc.message
            )
            return
        logging.getLogger(__name__).info("content %s: scheduled render started (task %s)", content.guid, task_id)


@router.post("/variants/{variant_id}/sender")
async def send_variant(
    variant_id: str,
    email: str = "me",
    rendering_id: str | None = None,
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    """Mail a rendering (default: the one served) to ``me``, ``collaborators`` or
    ``collaborators_viewers`` (posit-sdk's ``Variant.send_mail``)."""
    content = session.get(Content, int(variant_id)) if variant_id.isdigit() else None
    if content is None or not auth.can_see_settings(session, user, content):
        raise errors.not_found("variant", variant_id)
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
        sent = await mail_rendering(ctx, content_id, chosen, email, user_id)
    except MailError as exc:
        raise errors.bad_request(str(exc)) from None
    return {"sent": sent}
