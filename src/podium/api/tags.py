"""``v1/tags`` and ``v1/content/{guid}/tags``: Connect's tag hierarchy.

Top-level tags are *categories*: they organise tags and cannot be put on content.
Putting a tag on content puts every ancestor below the category there too; taking one
off takes its descendants off as well. Only administrators change tags; owners,
collaborators and administrators tag content; tag contents list only what the caller
may see. Tag names are 1 to 255 characters, unique among siblings.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from podium import audit, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.content import content_views, describe, managed_content, visible_content, visible_query
from podium.api.serialize import tag_json
from podium.store.models import Content, ContentTag, Tag, User
from podium.urls import Urls

router = APIRouter()
MAX_NAME = 255


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise errors.bad_request("A tag name cannot be empty.", code=78)
    if len(value) > MAX_NAME:
        raise errors.bad_request(f"A tag name can be at most {MAX_NAME} characters long.", code=77)
    return value


def _parent(session: Session, value: Any) -> Tag | None:
    if value is None:
        return None
    parent = session.get(Tag, int(value)) if str(value).isdigit() else None
    if parent is None:
        raise errors.bad_request(f"parent_id {value!r} names no tag; list tags with GET v1/tags.", code=157)
    return parent


def _unique(session: Session, name: str, parent_id: int | None, tag: Tag | None = None) -> None:
    siblings = select(Tag).where(Tag.name == name)
    siblings = siblings.where(Tag.parent_id.is_(None) if parent_id is None else Tag.parent_id == parent_id)
    clash = session.scalar(siblings)
    if clash is not None and clash is not tag:
        raise errors.bad_request(f"A tag named {name!r} already exists under the same parent.", code=81)


def ancestors(session: Session, tag: Tag) -> list[Tag]:
    """``tag``'s parent, its parent, ... up to the category (nearest first)."""
    found: list[Tag] = []
    while tag.parent_id is not None:
        parent = session.get(Tag, tag.parent_id)
        if parent is None:
            break
        found.append(parent)
        tag = parent
    return found


def descendant_ids(session: Session, tag_id: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for tid, parent_id in session.execute(select(Tag.id, Tag.parent_id).where(Tag.parent_id.is_not(None))).all():
        children.setdefault(parent_id or 0, []).append(tid)
    found: set[int] = set()
    todo = [tag_id]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def load_tag(session: Session, ident: str) -> Tag:
    """A tag by id, or by its comma-separated name path (``Category,Sub``)."""
    if ident.isdigit():
        tag = session.get(Tag, int(ident))
    else:
        tag = None
        parent_id: int | None = None
        for name in ident.split(","):
            query = select(Tag).where(Tag.name == name.strip())
            query = query.where(Tag.parent_id.is_(None) if parent_id is None else Tag.parent_id == parent_id)
            tag = session.scalar(query)
            if tag is None:
                break
            parent_id = tag.id
    if tag is None:
        raise errors.not_found("tag", ident)
    return tag


@router.get("/v1/tags")
def list_tags(
    name: str | None = None,
    parent_id: str | None = None,
    session: Session = Depends(deps.db),
    _: User = Depends(deps.user),
) -> list[dict[str, Any]]:
    """Every tag at every level in creation order, or those with ``name`` / ``parent_id``."""
    query = select(Tag).order_by(Tag.id)
    if name is not None:
        query = query.where(Tag.name == name)
    if parent_id is not None:
        query = query.where(Tag.parent_id == (int(parent_id) if parent_id.isdigit() else -1))
    return [tag_json(tag) for tag in session.scalars(query)]


@router.post("/v1/tags")
async def create_tag(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.administrator)
) -> dict[str, Any]:
    body = await json_object(request)
    name = check_name(body.get("name"))
    parent = _parent(session, body.get("parent_id"))
    _unique(session, name, parent.id if parent else None)
    tag = Tag(name=name, parent_id=parent.id if parent else None)
    session.add(tag)
    session.flush()
    where = f" under {parent.name!r}" if parent else " (a category)"
    audit.record(session, user, "add_tag", f"Created tag {name!r} ({tag.id}){where}.")
    session.commit()
    return tag_json(tag)


@router.get("/v1/tags/{ident}")
def get_tag(ident: str, session: Session = Depends(deps.db), _: User = Depends(deps.user)) -> dict[str, Any]:
    return tag_json(load_tag(session, ident))


@router.patch("/v1/tags/{ident}")
async def update_tag(
    ident: str, request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.administrator)
) -> dict[str, Any]:
    tag = load_tag(session, ident)
    body = await json_object(request)
    name = check_name(body["name"]) if "name" in body else tag.name
    parent_id = tag.parent_id
    if "parent_id" in body:
        parent = _parent(session, body["parent_id"])
        if parent is not None and (parent.id == tag.id or parent.id in descendant_ids(session, tag.id)):
            raise errors.bad_request("A tag cannot be moved under itself or one of its descendants.", code=157)
        parent_id = parent.id if parent else None
    if (name, parent_id) != (tag.name, tag.parent_id):
        _unique(session, name, parent_id, tag)
        audit.record(session, user, "update_tag", f"Tag {tag.id}: now {name!r} under parent {parent_id}.")
        tag.name, tag.parent_id = name, parent_id
        session.commit()
    return tag_json(tag)


@router.delete("/v1/tags/{ident}", status_code=204)
def delete_tag(ident: str, session: Session = Depends(deps.db), user: User = Depends(deps.administrator)) -> Response:
    tag = load_tag(session, ident)
    doomed = {tag.id, *descendant_ids(session, tag.id)}
    audit.record(session, user, "remove_tag", f"Deleted tag {tag.name!r} ({tag.id}) and {len(doomed) - 1} descendants.")
    session.execute(delete(ContentTag).where(ContentTag.tag_id.in_(doomed)))
    session.execute(delete(Tag).where(Tag.id.in_(doomed)))
    session.commit()
    return Response(status_code=204)


@router.get("/v1/tags/{ident}/content")
def tag_content(
    ident: str,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[dict[str, Any]]:
    """Content carrying the tag, each item once, only what the caller may see."""
    tag = load_tag(session, ident)
    tagged = select(ContentTag.content_id).where(ContentTag.tag_id == tag.id)
    items = list(session.scalars(visible_query(session, user).where(Content.id.in_(tagged))))
    return content_views(session, urls, user, items)


@router.get("/v1/content/{guid}/tags")
def content_tags(guid: str, session: Session = Depends(deps.db), who: deps.Caller = Depends(deps.caller)) -> list[dict[str, Any]]:
    content = visible_content(session, who.user, guid)
    tags = session.scalars(
        select(Tag).join(ContentTag, ContentTag.tag_id == Tag.id).where(ContentTag.content_id == content.id).order_by(Tag.id)
    )
    return [tag_json(tag) for tag in tags]


@router.post("/v1/content/{guid}/tags")
async def tag_content_item(
    guid: str, request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    tag_id = (await json_object(request)).get("tag_id")
    tag = session.get(Tag, int(str(tag_id))) if str(tag_id).isdigit() else None
    if tag is None:
        raise errors.bad_request(f"tag_id {tag_id!r} names no tag; list tags with GET v1/tags.", code=158)
    if tag.parent_id is None:
        raise errors.bad_request(
            f"{tag.name!r} is a category (a top-level tag); put one of its tags on content instead.", code=79
        )
    linked = set(session.scalars(select(ContentTag.tag_id).where(ContentTag.content_id == content.id)))
    # The tag and its ancestors below the category.
    for each in [tag, *ancestors(session, tag)[:-1]]:
        if each.id not in linked:
            session.add(ContentTag(content_id=content.id, tag_id=each.id))
    audit.record(session, user, "tag_content", f"Tagged content {describe(content)} with {tag.name!r} ({tag.id}).")
    session.commit()
    return tag_json(tag)


@router.delete("/v1/content/{guid}/tags/{tag_id}", status_code=204)
def untag_content_item(
    guid: str, tag_id: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> Response:
    content = managed_content(session, user, guid)
    tag = load_tag(session, tag_id)
    doomed = {tag.id, *descendant_ids(session, tag.id)}
    session.execute(delete(ContentTag).where(ContentTag.content_id == content.id, ContentTag.tag_id.in_(doomed)))
    audit.record(session, user, "untag_content", f"Took tag {tag.name!r} ({tag.id}) and its descendants off content {describe(content)}.")
    session.commit()
    return Response(status_code=204)


