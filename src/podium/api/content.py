"""``v1/content``: create, list, read, update and delete content items."""

from __future__ import annotations

import re
import shutil
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.lookup import by_guid
from podium.api.serialize import content_json
from podium.api.validate import validate_content_patch
from podium.appmodes import APP_MODE_ORDINALS
from podium.changes import Changes
from podium.layout import DataLayout
from podium.runtime import BackendError, ExecutionBackend
from podium.scheduler import Scheduler
from podium.settings import Settings
from podium.store.models import Content, ContentTag, Permission, Tag, User, Vanity
from podium.urls import Urls

router = APIRouter()
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{3,64}$")


def load_content(session: Session, guid: str) -> Content:
    """The content with ``guid``; 400 for a malformed id, 404 when absent."""
    return by_guid(session, Content, guid, "content")


def visible_content(session: Session, user: User | None, guid: str) -> Content:
    """Content whose record the caller may read; 404 (not 403) hides the rest."""
    content = load_content(session, guid)
    if not auth.can_see_settings(session, user, content):
        raise errors.not_found("content", guid)
    return content


def managed_content(session: Session, user: User | None, guid: str) -> Content:
    """Content the caller may change: owner, collaborators and administrators."""
    content = visible_content(session, user, guid)
    if not auth.can_manage(session, user, content):
        raise errors.forbidden("Only the owner, collaborators and administrators can change this content.")
    return content


def describe(content: Content) -> str:
    """How audit entries name content: ``'name' (guid)``."""
    return f"{content.name!r} ({content.guid})"


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise errors.bad_request(
            f"The content name {name!r} is not valid: use 3 to 64 letters, digits, '-' or '_'.",
            code=5,
        )
    return name


def _includes(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def generated_name(session: Session, title: Any) -> str:
    """A valid name no content has yet, for content created without one (as Connect
    does): the title made safe (rsconnect's rule), else ``content``, numbered when taken."""
    base = re.sub(r"[^a-z0-9_ -]", "", str(title or "").lower()).strip().replace(" ", "_")
    base = re.sub(r"_+", "_", base)[:56] or "content"
    base = base.ljust(3, "_")
    taken = set(session.scalars(select(Content.name).where(Content.name.like(f"{base}%"))))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def content_views(
    session: Session, urls: Urls, user: User | None, items: list[Content], includes: set[str] | None = None
) -> list[dict[str, Any]]:
    """``content_json`` of each item with its vanity path, role and (``include=tags``) tags,
    loaded in one query each for the whole list."""
    ids = [item.id for item in items]
    vanities: dict[int, str] = dict(
        session.execute(select(Vanity.content_id, Vanity.path).where(Vanity.content_id.in_(ids))).all()
    )
    tags: dict[int, list[Tag]] = {}
    if includes and "tags" in includes:
        rows = session.execute(
            select(ContentTag.content_id, Tag).join(Tag, Tag.id == ContentTag.tag_id)
            .where(ContentTag.content_id.in_(ids)).order_by(Tag.id)
        ).all()
        for content_id, tag in rows:
            tags.setdefault(content_id, []).append(tag)
    roles = auth.app_roles(session, user, items)
    return [
        content_json(urls, item, roles[item.id], includes, vanities.get(item.id), tags.get(item.id, []))
        for item in items
    ]


def content_view(
    session: Session, urls: Urls, user: User | None, item: Content, includes: set[str] | None = None
) -> dict[str, Any]:
    return content_views(session, urls, user, [item], includes)[0]


def visible_query(session: Session, user: User | None) -> Any:
    """Content the caller may see, in creation order: administrators all; others what is
    public, for signed-in users, theirs, or shared with them or one of their groups."""
    # The owner is in every item's JSON: loaded with the list, not one item at a time.
    query = select(Content).options(selectinload(Content.owner)).order_by(Content.id)
    if auth.at_least(user, "administrator"):
        return query
    visible = [Content.access_type == "all"]
    if user is not None and not user.locked:
        shared = select(Permission.content_id).where(
            Permission.principal_guid.in_(auth.principal_guids(session, user))
        )
        visible += [
            Content.access_type == "logged_in",
            Content.owner_id == user.id,
            Content.id.in_(shared),
        ]
    return query.where(or_(*visible))


@router.get("/v1/content")
def list_content(
    request: Request,
    name: str | None = None,
    owner_guid: str | None = None,
    include: str | None = None,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> list[dict[str, Any]]:
    query = visible_query(session, who.user)
    if name is not None:
        query = query.where(Content.name == name)
    if owner_guid is not None:
        query = query.join(User, Content.owner_id == User.id).where(User.guid == owner_guid)
    return content_views(session, urls, who.user, list(session.scalars(query)), _includes(include))


@router.post("/v1/content")
async def create_content(
    request: Request,
    urls: Urls = Depends(deps.urls),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.publisher),
) -> dict[str, Any]:
    body = await json_object(request)
    name = check_name(body["name"]) if body.get("name") is not None else generated_name(session, body.get("title"))
    content = Content(name=name, owner_id=user.id, title=None)
    patch = validate_content_patch(settings, user, content, body, creating=True)
    for field, value in patch.items():
        setattr(content, field, value)
    session.add(content)
    try:
        session.flush()
        audit.record(session, user, "add_content", f"Created content {describe(content)}.")
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.name_exists(name) from None
    return content_view(session, urls, user, content)


@router.get("/v1/content/{guid}")
def get_content(
    guid: str,
    include: str | None = None,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> dict[str, Any]:
    content = visible_content(session, who.user, guid)
    return content_view(session, urls, who.user, content, _includes(include))


@router.patch("/v1/content/{guid}")
async def update_content(
    guid: str,
    request: Request,
    urls: Urls = Depends(deps.urls),
    settings: Settings = Depends(deps.settings),
    changes: Changes = Depends(deps.changes),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    body = await json_object(request)
    patch = validate_content_patch(settings, user, content, body, creating=False)
    if "name" in body:
        patch["name"] = check_name(body["name"])
    changed = sorted(field for field, value in patch.items() if getattr(content, field) != value)
    for field, value in patch.items():
        setattr(content, field, value)
    if changed:
        # Which settings, never their values.
        audit.record(session, user, "update_content", f"Changed {', '.join(changed)} of content {describe(content)}.")
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.name_exists(str(body.get("name"))) from None
    changes.content(content.guid)
    return content_view(session, urls, user, content)


@router.delete("/v1/content/{guid}", status_code=204)
def delete_content(
    guid: str,
    changes: Changes = Depends(deps.changes),
    scheduler: Scheduler = Depends(deps.scheduler),
    layout: DataLayout = Depends(deps.layout),
    backend: ExecutionBackend = Depends(deps.backend),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> Response:
    content = managed_content(session, user, guid)
    content_id = content.id
    try:  # first: a refusal leaves the content as it was; its Secret comes back with a job
        anyio.from_thread.run(backend.forget_content, guid)
    except BackendError as error:
        raise errors.backend_unavailable("Deleting the content", error.message, error.status) from None
    audit.record(session, user, "remove_content", f"Deleted content {describe(content)}.")
    session.delete(content)
    session.commit()
    changes.content(guid)
    scheduler.retire(content_id, None, None)
    for path in layout.content_dirs(content_id):
        shutil.rmtree(path, ignore_errors=True)
    return Response(status_code=204)


@router.get("/applications/{ident}")
def get_application_v0(
    ident: str,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> dict[str, Any]:
    """The v0 record rsconnect resolves a numeric ``--app-id`` through."""
    query = select(Content)
    query = query.where(Content.id == int(ident)) if ident.isdigit() else query.where(Content.guid == ident)
    content = session.scalar(query)
    if content is None or not auth.can_see_settings(session, who.user, content):
        raise errors.not_found("content", ident)
    body = content_view(session, urls, who.user, content)
    body.update(
        {
            "id": content.id,
            "url": body["content_url"],
            "app_mode": APP_MODE_ORDINALS.get(content.app_mode, 0),
            "owner_username": content.owner.username,
            "owner_first_name": content.owner.first_name,
            "owner_last_name": content.owner.last_name,
            "owner_email": content.owner.email,
            "has_parameters": False,
            "build_status": 2 if content.bundle_id else 0,
        }
    )
    return body
