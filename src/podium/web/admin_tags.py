"""Admin → Tags: the tag tree; create categories and tags, rename, move and delete them
(through ``v1/tags``, administrators only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from podium.api import deps
from podium.store.models import ContentTag, Tag, User
from podium.web.admin import TABS
from podium.web.pages import administrator
from podium.web.templating import render

router = APIRouter()


def tag_tree(session: Session) -> list[dict[str, Any]]:
    """Every tag, depth first in name order, with its depth and how much content has it."""
    tags = list(session.scalars(select(Tag)))
    counts = dict(session.execute(select(ContentTag.tag_id, func.count()).group_by(ContentTag.tag_id)).all())
    children: dict[int | None, list[Tag]] = {}
    for tag in tags:
        children.setdefault(tag.parent_id, []).append(tag)
    rows: list[dict[str, Any]] = []

    def walk(parent: int | None, depth: int, path: str) -> None:
        for tag in sorted(children.get(parent, []), key=lambda t: t.name.lower()):
            label = f"{path} / {tag.name}" if path else tag.name
            rows.append({"id": str(tag.id), "name": tag.name, "depth": depth, "label": label,
                         "category": tag.parent_id is None, "content": counts.get(tag.id, 0)})
            walk(tag.id, depth + 1, label)

    walk(None, 0, "")
    return rows


@router.get("/connect/admin/tags")
def tags_page(request: Request, session: Session = Depends(deps.db), user: User = Depends(administrator)) -> Response:
    return render(request, "admin_tags.html", user=user, tabs=TABS, tab="tags", tags=tag_tree(session))
