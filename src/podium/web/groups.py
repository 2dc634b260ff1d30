"""The Groups pages: every group with its owner and members; create, rename, members.

What a page does goes through the API (:mod:`podium.api.groups`) with the signed-in
user, so it obeys the same rules: anyone signed in reads, publishers create, a group's
owner and administrators change it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from podium import auth
from podium.api import deps
from podium.api import groups as groups_api
from podium.api import users as users_api
from podium.store.models import Group, GroupMember, User
from podium.web.pages import as_page_errors, signed_in
from podium.web.templating import render

router = APIRouter()


@router.get("/connect/groups")
def groups_page(
    request: Request, prefix: str = "", session: Session = Depends(deps.db), user: User = Depends(signed_in)
) -> Response:
    listing = groups_api.list_groups(prefix or None, 1, 1000, True, session, user)
    counts = dict(
        session.execute(select(GroupMember.group_id, func.count()).group_by(GroupMember.group_id)).all()
    )
    ids = dict(session.execute(select(Group.guid, Group.id)).all())
    owners = dict(session.execute(select(User.guid, User.username)).all())
    for group in listing["results"]:
        group["members"] = counts.get(ids.get(group["guid"], 0), 0)
        group["owner"] = owners.get(group["owner_guid"] or "", "—")
    return render(
        request, "groups.html", user=user, groups=listing["results"], prefix=prefix,
        can_create=auth.at_least(user, "publisher"),
    )


@router.get("/connect/groups/{guid}")
def group_page(
    guid: str, request: Request, session: Session = Depends(deps.db), user: User = Depends(signed_in)
) -> Response:
    with as_page_errors():
        group = groups_api.get_group(guid, session, user)
        members = groups_api.list_members(guid, 1, 1000, "username", True, session, user)["results"]
    record = session.scalar(select(Group).where(Group.guid == guid))
    manage = record is not None and (
        auth.at_least(user, "administrator") or (record.owner_id == user.id and not user.locked)
    )
    candidates: list[dict[str, object]] = []
    if manage:
        everyone = users_api.list_users(None, None, None, 1, 1000, session, user)["results"] if auth.at_least(
            user, "publisher") else []
        inside = {m["guid"] for m in members}
        candidates = [u for u in everyone if u["guid"] not in inside]
    owner = session.scalar(select(User.username).where(User.guid == group["owner_guid"])) if group["owner_guid"] else None
    return render(
        request, "group.html", user=user, group=group, members=members, manage=manage,
        candidates=candidates, owner=owner or "—",
    )
