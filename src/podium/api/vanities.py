"""``v1/content/{guid}/vanity`` and ``v1/vanities``: content at a path of its own choosing.

Paths follow :mod:`podium.vanity`. A path already used by other content, or an
ancestor or descendant of one, is refused (409, code 51) unless ``force`` asks to move
that same path here, which needs the right to manage both items. The content proxy
serves vanity paths from a cached map that :meth:`podium.changes.Changes.content`
invalidates, with the guids of both items involved.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from podium import audit, auth, errors, vanity
from podium.api import deps
from podium.api.body import json_object
from podium.api.content import describe, managed_content, visible_content
from podium.api.serialize import iso
from podium.changes import Changes
from podium.settings import Settings
from podium.store.models import Content, User, Vanity

router = APIRouter()


def vanity_json(record: Vanity, content: Content) -> dict[str, Any]:
    return {"content_guid": content.guid, "path": record.path, "created_time": iso(record.created_time)}


def _may_manage_vanity(session: Session, settings: Settings, user: User, guid: str) -> Content:
    content = managed_content(session, user, guid)
    if not settings.publishers_can_manage_vanities and not auth.at_least(user, "administrator"):
        raise errors.forbidden(
            "Only administrators can set vanity paths on this server (setting "
            "publishers_can_manage_vanities is off)."
        )
    return content


@router.get("/v1/content/{guid}/vanity")
def get_vanity(guid: str, session: Session = Depends(deps.db), who: deps.Caller = Depends(deps.caller)) -> dict[str, Any]:
    content = visible_content(session, who.user, guid)
    record = session.scalar(select(Vanity).where(Vanity.content_id == content.id))
    if record is None:
        raise errors.not_found("vanity URL of content", guid)
    return vanity_json(record, content)


@router.put("/v1/content/{guid}/vanity")
async def set_vanity(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    changes: Changes = Depends(deps.changes),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = _may_manage_vanity(session, settings, user, guid)
    body = await json_object(request)
    path = vanity.normalise(body.get("path"))
    force = body.get("force", False) is True
    moved_from: Content | None = None
    for other in session.scalars(select(Vanity).where(Vanity.content_id != content.id)):
        if not vanity.overlaps(path, other.path):
            continue
        if not (force and other.path == path):
            hint = " (force: true moves it here)" if other.path == path else ""
            raise errors.ApiError(
                409, 51, f"The vanity path {path!r} clashes with {other.path!r}, used by other content{hint}.",
            )
        if not auth.can_manage(session, user, other.content):
            raise errors.forbidden("Moving a vanity path needs the right to manage the content that has it.")
        moved_from = other.content
        session.delete(other)
        session.flush()
    record = session.scalar(select(Vanity).where(Vanity.content_id == content.id))
    if record is None:
        record = Vanity(content_id=content.id, path=path)
        session.add(record)
    elif record.path != path:
        session.delete(record)
        session.flush()
        record = Vanity(content_id=content.id, path=path)
        session.add(record)
    moved = f" (moved from content {describe(moved_from)})" if moved_from is not None else ""
    audit.record(session, user, "set_vanity", f"Set the vanity path of content {describe(content)} to {path!r}{moved}.")
    try:
        session.commit()
    except IntegrityError:  # another request took the path meanwhile
        session.rollback()
        raise errors.ApiError(409, 51, f"The vanity path {path!r} was just taken by other content.") from None
    changes.content(content.guid)
    if moved_from is not None:
        changes.content(moved_from.guid)
    return vanity_json(record, content)


@router.delete("/v1/content/{guid}/vanity", status_code=204)
def delete_vanity(
    guid: str,
    settings: Settings = Depends(deps.settings),
    changes: Changes = Depends(deps.changes),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> Response:
    content = _may_manage_vanity(session, settings, user, guid)
    record = session.scalar(select(Vanity).where(Vanity.content_id == content.id))
    if record is None:
        raise errors.not_found("vanity URL of content", guid)
    audit.record(session, user, "remove_vanity", f"Removed the vanity path {record.path!r} of content {describe(content)}.")
    session.delete(record)
    session.commit()
    changes.content(content.guid)
    return Response(status_code=204)


@router.get("/v1/vanities")
def list_vanities(session: Session = Depends(deps.db), _: User = Depends(deps.administrator)) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Vanity, Content).join(Content, Content.id == Vanity.content_id).order_by(Vanity.id)
    ).all()
    return [vanity_json(record, content) for record, content in rows]
