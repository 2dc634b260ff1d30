"""``v1/content/{guid}/permissions``: who may view or collaborate on content."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.content import describe, managed_content, visible_content
from podium.api.lookup import by_number
from podium.api.serialize import permission_json
from podium.changes import Changes
from podium.store.models import Content, Group, Permission, User

router = APIRouter()
ROLES = ("viewer", "owner")


def _check(session: Session, content: Content, body: dict[str, Any]) -> tuple[str, str, str]:
    """The (principal guid, type, role) ``body`` asks for, each checked: a user or a group
    that exists, a role Connect knows; collaborators must be able to publish."""
    principal_type = body.get("principal_type", "user")
    if principal_type not in ("user", "group"):
        raise errors.bad_request(
            f"principal_type must be 'user' or 'group'; got {principal_type!r}.", code=152
        )
    role = body.get("role")
    if role not in ROLES:
        raise errors.bad_request(
            f"role must be 'viewer' or 'owner' (collaborator); got {role!r}.", code=25
        )
    principal_guid = str(body.get("principal_guid"))
    if principal_type == "group":
        group = session.scalar(select(Group).where(Group.guid == principal_guid))
        if group is None:
            raise errors.bad_request(
                f"There is no group with guid {principal_guid!r}; list groups with GET v1/groups.",
                code=153,
            )
        return group.guid, principal_type, role
    user = session.scalar(select(User).where(User.guid == principal_guid))
    if user is None:
        raise errors.bad_request(
            f"There is no user with guid {principal_guid!r}; list users with GET v1/users.", code=4
        )
    if user.id == content.owner_id:
        raise errors.bad_request("The owner of content cannot be added as a collaborator or viewer.", code=34)
    if role == "owner" and not auth.at_least(user, "publisher"):
        raise errors.bad_request(
            f"{user.username} is a viewer; only publishers and administrators can collaborate.",
            code=33,
        )
    return user.guid, principal_type, role


def _principal(session: Session, principal_guid: str) -> str:
    """How audit entries name the user or group a permission is for."""
    user = session.scalar(select(User).where(User.guid == principal_guid))
    if user is not None:
        return audit.describe(user)
    group = session.scalar(select(Group).where(Group.guid == principal_guid))
    return f"group {group.name!r}" if group is not None else principal_guid


def _load(session: Session, content: Content, permission_id: str) -> Permission:
    permission = by_number(session, Permission, permission_id)
    if permission is None or permission.content_id != content.id:
        raise errors.not_found("permission", permission_id)
    return permission


@router.get("/v1/content/{guid}/permissions")
def list_permissions(
    guid: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> list[dict[str, Any]]:
    content = visible_content(session, user, guid)
    items = session.scalars(
        select(Permission).where(Permission.content_id == content.id).order_by(Permission.id)
    )
    return [permission_json(p, content) for p in items]


@router.post("/v1/content/{guid}/permissions")
async def add_permission(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    principal_guid, principal_type, role = _check(session, content, await json_object(request))
    existing = session.scalar(
        select(Permission).where(
            Permission.content_id == content.id, Permission.principal_guid == principal_guid
        )
    )
    if existing is not None:
        raise errors.ApiError(
            409, 155 if principal_type == "group" else 154,
            f"This {principal_type} already has a permission on this content; update it instead "
            f"(PUT v1/content/{content.guid}/permissions/{existing.id}).",
        )
    permission = Permission(
        content_id=content.id, principal_guid=principal_guid, principal_type=principal_type, role=role
    )
    session.add(permission)
    audit.record(
        session, user, "add_permission",
        f"Gave {_principal(session, principal_guid)} the role {role} on content {describe(content)}.",
    )
    session.commit()
    changes.content(content.guid)
    return permission_json(permission, content)


@router.get("/v1/content/{guid}/permissions/{permission_id}")
def get_permission(
    guid: str, permission_id: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    content = visible_content(session, user, guid)
    return permission_json(_load(session, content, permission_id), content)


@router.put("/v1/content/{guid}/permissions/{permission_id}")
async def update_permission(
    guid: str,
    permission_id: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    permission = _load(session, content, permission_id)
    body = await json_object(request)
    body.setdefault("principal_guid", permission.principal_guid)
    body.setdefault("principal_type", permission.principal_type)
    principal_guid, principal_type, role = _check(session, content, body)
    if principal_guid != permission.principal_guid and session.scalar(
        select(Permission.id).where(
            Permission.content_id == content.id, Permission.principal_guid == principal_guid
        )
    ):
        raise errors.ApiError(
            409, 155 if principal_type == "group" else 154,
            f"This {principal_type} already has another permission on this content.",
        )
    permission.principal_guid, permission.principal_type, permission.role = (
        principal_guid, principal_type, role,
    )
    audit.record(
        session, user, "update_permission",
        f"Gave {_principal(session, principal_guid)} the role {role} on content {describe(content)} "
        f"(permission {permission.id}).",
    )
    session.commit()
    changes.content(content.guid)
    return permission_json(permission, content)


@router.delete("/v1/content/{guid}/permissions/{permission_id}", status_code=204)
def delete_permission(
    guid: str,
    permission_id: str,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> Response:
    content = managed_content(session, user, guid)
    permission = _load(session, content, permission_id)
    audit.record(
        session, user, "remove_permission",
        f"Removed the {permission.role} role of {_principal(session, permission.principal_guid)} on "
        f"content {describe(content)}.",
    )
    session.delete(permission)
    session.commit()
    changes.content(content.guid)
    return Response(status_code=204)
