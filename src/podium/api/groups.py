"""``v1/groups``: groups, their members and owner.

Any signed-in user may list and read groups (to pick one when sharing); publishers and
administrators create them; a group's owner (its creator unless changed) and
administrators rename it, change its members and delete it. Deleting a group removes its
content permissions. Membership reaches the content proxy through
:meth:`podium.changes.Changes.users` (the proxy loads a viewer's groups with the viewer).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.content import content_views
from podium.api.lookup import by_guid
from podium.api.paging import like_prefix, page
from podium.api.serialize import group_json, user_json
from podium.changes import Changes
from podium.store.models import Content, Group, GroupMember, Permission, User
from podium.urls import Urls

router = APIRouter()
MAX_NAME = 64
_MEMBER_SORTS = {"first_name", "last_name", "username", "email"}


def check_name(value: Any) -> str:
    if (
        not isinstance(value, str) or not value.strip() or value != value.strip()
        or len(value) > MAX_NAME or not value.isprintable()
    ):
        raise errors.bad_request(
            f"The group name {value!r} is not valid: use 1 to {MAX_NAME} printable characters, "
            "without spaces at either end.", code=14,
        )
    return value


def _unique(session: Session, name: str, group: Group | None = None) -> None:
    clash = session.scalar(select(Group).where(func.lower(Group.name) == name.lower()))
    if clash is not None and clash is not group:
        raise errors.ApiError(409, 15, f"A group named {clash.name!r} already exists; choose another name.")


def _load(session: Session, guid: str) -> Group:
    return by_guid(session, Group, guid, "group")


def managed_group(session: Session, user: User, guid: str) -> Group:
    group = _load(session, guid)
    if not (auth.at_least(user, "administrator") or (group.owner_id == user.id and not user.locked)):
        raise errors.forbidden("Only the group's owner and administrators can change this group.")
    return group


def _user(session: Session, guid: Any, field: str) -> User:
    user = session.scalar(select(User).where(User.guid == str(guid)))
    if user is None:
        raise errors.bad_request(
            f"{field} {guid!r} names no user; list users with GET v1/users.", code=4
        )
    return user


@router.get("/v1/groups")
def list_groups(
    prefix: str | None = None,
    page_number: int = 1,
    page_size: int = 500,
    asc_order: bool = True,
    session: Session = Depends(deps.db),
    _: User = Depends(deps.user),
) -> dict[str, Any]:
    """Groups by name (ascending unless ``asc_order=false``); ``prefix`` matches the start
    of the name, ignoring case."""
    query = select(Group)
    if prefix:
        query = query.where(Group.name.ilike(like_prefix(prefix), escape="\\"))
    order = Group.name.asc() if asc_order else Group.name.desc()
    return page(session, query.order_by(order, Group.id), page_number, page_size, group_json)


@router.post("/v1/groups")
async def create_group(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.publisher)
) -> dict[str, Any]:
    body = await json_object(request)
    name = check_name(body.get("name"))
    _unique(session, name)
    group = Group(name=name, owner_id=user.id)
    session.add(group)
    session.flush()
    audit.record(session, user, "add_group", f"Created group {name!r} ({group.guid}).")
    session.commit()
    return group_json(group)


@router.get("/v1/groups/{guid}")
def get_group(guid: str, session: Session = Depends(deps.db), _: User = Depends(deps.user)) -> dict[str, Any]:
    return group_json(_load(session, guid))


@router.patch("/v1/groups/{guid}")
async def update_group(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> dict[str, Any]:
    group = managed_group(session, user, guid)
    body = await json_object(request)
    said: list[str] = []
    if "name" in body and body["name"] != group.name:
        name = check_name(body["name"])
        _unique(session, name, group)
        said.append(f"renamed {group.name!r} to {name!r}")
        group.name = name
    if "owner_guid" in body:
        owner = _user(session, body["owner_guid"], "owner_guid")
        if owner.id != group.owner_id:
            said.append(f"gave it to {audit.describe(owner)}")
            group.owner_id = owner.id
    if said:
        audit.record(session, user, "update_group", f"Group {group.guid}: {', '.join(said)}.")
    session.commit()
    changes.users()  # the identity header names groups
    return group_json(group)


@router.delete("/v1/groups/{guid}", status_code=204)
def delete_group(
    guid: str,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> Response:
    group = managed_group(session, user, guid)
    removed = session.execute(delete(Permission).where(Permission.principal_guid == group.guid))
    audit.record(
        session, user, "remove_group",
        f"Deleted group {group.name!r} ({group.guid}) and its {removed.rowcount} content permissions.",  # type: ignore[attr-defined]
    )
    session.delete(group)
    session.commit()
    changes.content(None)
    changes.users()
    return Response(status_code=204)


@router.get("/v1/groups/{guid}/members")
def list_members(
    guid: str,
    page_number: int = 1,
    page_size: int = 500,
    sort: str = "first_name",
    asc_order: bool = True,
    session: Session = Depends(deps.db),
    _: User = Depends(deps.user),
) -> dict[str, Any]:
    """Members ordered by ``sort`` (first_name unless told), ties in the order added."""
    group = _load(session, guid)
    if sort not in _MEMBER_SORTS:
        raise errors.bad_request(f"sort must be one of {', '.join(sorted(_MEMBER_SORTS))}; got {sort!r}.", code=25)
    column = getattr(User, sort)
    query = (
        select(User).join(GroupMember, GroupMember.user_id == User.id)
        .where(GroupMember.group_id == group.id)
        .order_by(column.asc() if asc_order else column.desc(), GroupMember.id)
    )
    return page(session, query, page_number, page_size, user_json)


@router.post("/v1/groups/{guid}/members", status_code=204)
async def add_member(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> Response:
    group = managed_group(session, user, guid)
    member = _user(session, (await json_object(request)).get("user_guid"), "user_guid")
    if session.scalar(
        select(GroupMember.id).where(GroupMember.group_id == group.id, GroupMember.user_id == member.id)
    ):
        raise errors.ApiError(409, 16, f"{member.username} is already a member of group {group.name!r}.")
    session.add(GroupMember(group_id=group.id, user_id=member.id))
    audit.record(session, user, "add_group_member", f"Added {audit.describe(member)} to group {group.name!r}.")
    session.commit()
    changes.users()
    return Response(status_code=204)


@router.delete("/v1/groups/{guid}/members/{user_guid}", status_code=204)
def remove_member(
    guid: str,
    user_guid: str,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> Response:
    group = managed_group(session, user, guid)
    row = session.scalar(
        select(GroupMember).join(User, User.id == GroupMember.user_id)
        .where(GroupMember.group_id == group.id, User.guid == user_guid)
    )
    if row is None:
        raise errors.not_found("group member", user_guid)
    audit.record(session, user, "remove_group_member", f"Removed {audit.describe(row.user)} from group {group.name!r}.")
    session.delete(row)
    session.commit()
    changes.users()
    return Response(status_code=204)


@router.get("/v1/experimental/groups/{guid}/content")
def group_content(
    guid: str,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[dict[str, Any]]:
    """The content whose permissions name the group, as far as the caller may see it."""
    group = _load(session, guid)
    shared = select(Permission.content_id).where(Permission.principal_guid == group.guid)
    items = [
        item for item in session.scalars(select(Content).where(Content.id.in_(shared)).order_by(Content.id))
        if auth.can_see_settings(session, user, item)
    ]
    return content_views(session, urls, user, items)
