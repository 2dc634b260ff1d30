"""Render schedules through Connect's v0 calls, as posit-sdk's ``content.schedule`` makes them.

- ``GET variants/{id}/schedules``: the content's schedule as a list (empty or one).
- ``POST schedules`` with ``app_id``, ``variant_id``, ``type``, ``schedule`` (a JSON
  string such as ``"{\\"N\\": 2}"``), ``start_time`` (RFC 3339), ``timezone``,
  ``email``, ``activate``: create.
- ``GET schedules/{id}``, ``POST schedules/{id}`` (replace), ``DELETE schedules/{id}``.

A variant's id is its content's id (see :mod:`podium.api.renderings`). The rules and
the runner live in :mod:`podium.render.schedules`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.lookup import by_number, found, variant_content
from podium.api.serialize import iso
from podium.render import SUPPORTED_RENDER_MODES
from podium.render.schedules import InvalidSchedule, next_run
from podium.store.models import Content, Schedule, User

router = APIRouter()


def schedule_json(row: Schedule) -> dict[str, Any]:
    return {
        "id": row.id,
        "app_id": row.content_id,
        "variant_id": row.content_id,
        "type": row.type,
        "schedule": row.schedule,
        "start_time": iso(row.start_time),
        "timezone": row.timezone,
        "next_run": iso(row.next_run),
        "email": row.email,
        "activate": row.activate,
        "created_time": iso(row.created_time),
        "updated_time": iso(row.updated_time),
    }


def _content(session: Session, user: User, variant_id: Any, manage: bool) -> Content:
    content = variant_content(session, user, str(variant_id))
    if manage and not auth.can_manage(session, user, content):
        raise errors.forbidden("Only the owner, collaborators and administrators can schedule this content.")
    return content


def _apply(row: Schedule, body: dict[str, Any]) -> None:
    """Validate ``body`` and write it on ``row`` with a fresh ``next_run``."""
    type_ = body.get("type", row.type)
    rule = body.get("schedule", row.schedule or "{}")
    timezone = body.get("timezone", row.timezone or "UTC")
    start_text = body.get("start_time")
    if not isinstance(type_, str) or not isinstance(rule, str) or not isinstance(timezone, str):
        raise errors.bad_request("type, schedule and timezone must be strings.")
    start = row.start_time
    if start_text is not None:
        try:
            start = datetime.fromisoformat(str(start_text).replace("Z", "+00:00"))
        except ValueError:
            raise errors.bad_request(f"start_time {start_text!r} is not an RFC 3339 time.") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    if start is None:
        raise errors.bad_request("start_time is required.")
    now = datetime.now(UTC)
    try:
        following = next_run(type_, rule, start, timezone, now)
    except InvalidSchedule as exc:
        raise errors.bad_request(str(exc)) from None
    row.type, row.schedule, row.timezone, row.start_time = type_, rule, timezone, start.astimezone(UTC)
    # A start time not yet passed is itself the first run.
    row.next_run = start.astimezone(UTC) if start > now else following
    for name in ("email", "activate"):
        if name in body:
            if not isinstance(body[name], bool):
                raise errors.bad_request(f"{name} must be true or false.")
            setattr(row, name, body[name])


@router.get("/variants/{variant_id}/schedules")
def list_schedules(
    variant_id: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> list[dict[str, Any]]:
    content = _content(session, user, variant_id, manage=False)
    row = session.scalar(select(Schedule).where(Schedule.content_id == content.id))
    return [schedule_json(row)] if row else []


@router.post("/schedules")
async def create_schedule(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    body = await json_object(request)
    content = _content(session, user, body.get("variant_id", body.get("app_id")), manage=True)
    if content.app_mode not in SUPPORTED_RENDER_MODES:
        raise errors.bad_request(f"Only rendered content can be scheduled; this content is {content.app_mode!r}.")
    if session.scalar(select(Schedule).where(Schedule.content_id == content.id)) is not None:
        raise errors.ApiError(409, 26, "This content already has a schedule; change it with POST schedules/{id}.")
    row = Schedule(content_id=content.id, start_time=None)
    _apply(row, {"timezone": "UTC", **body})
    session.add(row)
    session.commit()
    return schedule_json(row)


def _row(session: Session, user: User, schedule_id: str, manage: bool) -> Schedule:
    row = found(by_number(session, Schedule, schedule_id), "schedule", schedule_id)
    _content(session, user, row.content_id, manage)
    return row


@router.get("/schedules/{schedule_id}")
def get_schedule(
    schedule_id: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    return schedule_json(_row(session, user, schedule_id, manage=False))


@router.post("/schedules/{schedule_id}")
async def update_schedule(
    schedule_id: str, request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    body = await json_object(request)
    row = _row(session, user, schedule_id, manage=True)
    _apply(row, body)
    session.commit()
    return schedule_json(row)


@router.delete("/schedules/{schedule_id}", status_code=204)
def delete_schedule(
    schedule_id: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> Response:
    session.delete(_row(session, user, schedule_id, manage=True))
    session.commit()
    return Response(status_code=204)
