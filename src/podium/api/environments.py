"""``v1/environments``: the execution environment catalogue, and explaining a choice.

Administrators create, update and delete environments; publishers list and read
them; viewers cannot see them (reference/connect-semantics.md §1.2). Records
managed by the settings file or derived from the host refuse API changes.
``POST v1/environments/explain`` and ``GET v1/content/{guid}/bundles/{id}/environment``
show which environment a bundle gets and why every other one was not chosen.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.bundles import load_bundle
from podium.api.content import visible_content
from podium.api.lookup import by_guid, found
from podium.api.serialize import RUNTIME_RECORD_FIELDS, iso
from podium.environments.catalogue import apply_fields, resolve, selection_json
from podium.environments.host import HOST
from podium.environments.model import InvalidRequest
from podium.environments.validate import (
    INSTALLATION_FIELDS,
    NAME_EXISTS,
    UPDATABLE,
    validate_environment,
)
from podium.settings import Settings
from podium.store.models import EnvironmentPermission, ExecutionEnvironment, User

router = APIRouter()


def environment_json(record: ExecutionEnvironment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(record.id),
        "guid": record.guid,
        "created_time": iso(record.created_time),
        "updated_time": iso(record.updated_time),
        "title": record.title,
        "description": record.description,
        "cluster_name": record.cluster_name,
        "environment_type": record.environment_type,
        "name": record.name,
        "matching": record.matching,
        "supervisor": record.supervisor,
        "managed_by": record.managed_by,
        "volume_mounts": list(record.volume_mounts or []),
        "placement": record.placement,
    }
    for field in INSTALLATION_FIELDS:
        body[field] = {"installations": list(getattr(record, field) or [])}
    return body


def _load(session: Session, guid: str) -> ExecutionEnvironment:
    return by_guid(session, ExecutionEnvironment, guid, "environment")


def _editable(record: ExecutionEnvironment) -> ExecutionEnvironment:
    if record.managed_by == HOST:
        raise errors.forbidden(
            f"Environment {record.name!r} describes this host's interpreters and is kept by Podium "
            "at start; change it with the settings python_installations, r_installations, "
            "quarto_installations and local_environment_matching."
        )
    if record.managed_by is not None:
        raise errors.forbidden(
            f"Environment {record.name!r} is managed by the settings file "
            "([[environments.declared_environments]]); change it there and restart the server."
        )
    return record


def _describe(record: ExecutionEnvironment) -> str:
    return f"{record.name!r} ({record.guid})"


def _name_taken(name: str) -> errors.ApiError:
    return errors.ApiError(
        409, NAME_EXISTS, f"An environment with the image name {name!r} already exists."
    )


@router.get("/v1/environments")
def list_environments(
    session: Session = Depends(deps.db), _user: User = Depends(deps.publisher)
) -> list[dict[str, Any]]:
    records = session.scalars(select(ExecutionEnvironment).order_by(ExecutionEnvironment.id))
    return [environment_json(record) for record in records]


@router.post("/v1/environments")
async def create_environment(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.administrator)
) -> dict[str, Any]:
    fields = validate_environment(await json_object(request), creating=True)
    if session.scalar(select(ExecutionEnvironment.id).where(ExecutionEnvironment.name == fields["name"])):
        raise _name_taken(fields["name"])
    record = ExecutionEnvironment()
    apply_fields(record, fields)
    session.add(record)
    try:
        session.flush()
        audit.record(session, user, "add_environment", f"Created execution environment {_describe(record)}.")
        session.commit()
    except IntegrityError:
        session.rollback()
        raise _name_taken(fields["name"]) from None
    return environment_json(record)


@router.post("/v1/environments/explain")
async def explain(
    request: Request,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.publisher),
) -> dict[str, Any]:
    """Which environment a bundle with ``manifest`` would get, and why not the others.

    Body: ``{"manifest": {...}, "content_guid": "..."}``; with a content guid the
    content's ``default_image_name`` takes part, as in a deploy.
    """
    body = await json_object(request)
    manifest = body.get("manifest")
    if not isinstance(manifest, dict):
        raise errors.bad_request("The body needs \"manifest\": the bundle's manifest.json object.")
    content_image = None
    if body.get("content_guid") is not None:
        content_image = visible_content(session, user, str(body["content_guid"])).default_image_name
    try:
        selection = resolve(settings, session, manifest, content_image, auth.environment_user(user))
    except InvalidRequest as exc:
        raise errors.bad_request(str(exc), code=38) from None
    return selection_json(selection)


@router.get("/v1/environments/{guid}")
def get_environment(
    guid: str, session: Session = Depends(deps.db), _user: User = Depends(deps.publisher)
) -> dict[str, Any]:
    return environment_json(_load(session, guid))


@router.put("/v1/environments/{guid}")
async def update_environment(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.administrator),
) -> dict[str, Any]:
    record = _editable(_load(session, guid))
    body = await json_object(request)
    fields = validate_environment({k: v for k, v in body.items() if k in UPDATABLE}, creating=False)
    apply_fields(record, fields)
    if fields:
        audit.record(
            session, user, "update_environment",
            f"Changed {', '.join(sorted(fields))} of execution environment {_describe(record)}.",
        )
    session.commit()
    return environment_json(record)


@router.delete("/v1/environments/{guid}", status_code=204)
def delete_environment(
    guid: str, session: Session = Depends(deps.db), user: User = Depends(deps.administrator)
) -> Response:
    record = _editable(_load(session, guid))
    audit.record(session, user, "remove_environment", f"Deleted execution environment {_describe(record)}.")
    session.delete(record)
    session.commit()
    return Response(status_code=204)


@router.get("/v1/content/{guid}/bundles/{bundle_id}/environment")
def bundle_environment(
    guid: str,
    bundle_id: str,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.publisher),
) -> dict[str, Any]:
    """The environment a bundle was built with (``recorded``) and what it would get now, and why."""
    content = visible_content(session, user, guid)
    bundle = load_bundle(session, content, bundle_id)
    try:
        body = selection_json(resolve(settings, session, bundle.manifest, content.default_image_name))
    except InvalidRequest as exc:
        raise errors.bad_request(str(exc), code=38) from None
    body["recorded"] = {name: getattr(bundle, name) for name in RUNTIME_RECORD_FIELDS}
    return body


# --- permissions: who may deploy with an environment ---------------------------------


def permission_json(permission: EnvironmentPermission, environment: ExecutionEnvironment) -> dict[str, Any]:
    return {
        "id": str(permission.id),
        "guid": permission.guid,
        "environment_guid": environment.guid,
        "user_guid": permission.user_guid,
        "group_guid": None,
    }


@router.get("/v1/environments/{guid}/permissions")
def list_environment_permissions(
    guid: str, session: Session = Depends(deps.db), _user: User = Depends(deps.publisher)
) -> list[dict[str, Any]]:
    """The users allowed to deploy with the environment; none listed means everyone."""
    record = _load(session, guid)
    rows = session.scalars(
        select(EnvironmentPermission)
        .where(EnvironmentPermission.environment_id == record.id)
        .order_by(EnvironmentPermission.id)
    )
    return [permission_json(row, record) for row in rows]


@router.post("/v1/environments/{guid}/permissions")
async def add_environment_permission(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.administrator),
) -> dict[str, Any]:
    """Allow a user (``{"user_guid": ...}``) to deploy with the environment. Once an
    environment has a permission, only the users listed (and administrators) may use it."""
    record = _load(session, guid)
    body = await json_object(request)
    if body.get("group_guid"):
        raise errors.bad_request(
            "Podium has no groups yet: allow users one by one with {\"user_guid\": ...}."
        )
    user_guid = body.get("user_guid")
    allowed = session.scalar(select(User).where(User.guid == user_guid)) if isinstance(user_guid, str) else None
    if not isinstance(user_guid, str) or allowed is None:
        raise errors.bad_request(f"user_guid must name an existing user; got {user_guid!r}.")
    permission = EnvironmentPermission(environment_id=record.id, user_guid=user_guid)
    session.add(permission)
    try:
        session.flush()
        audit.record(
            session, user, "add_environment_permission",
            f"Allowed {audit.describe(allowed)} to deploy with execution environment {_describe(record)}.",
        )
        session.commit()
    except IntegrityError:  # uq_environment_permission_user: the user is listed already
        session.rollback()
        raise errors.ApiError(409, 3, f"User {user_guid} already has a permission on this environment.") from None
    return permission_json(permission, record)


@router.delete("/v1/environments/{guid}/permissions/{permission_guid}", status_code=204)
def delete_environment_permission(
    guid: str,
    permission_guid: str,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.administrator),
) -> Response:
    record = _load(session, guid)
    permission = found(
        session.scalar(
            select(EnvironmentPermission).where(
                EnvironmentPermission.environment_id == record.id, EnvironmentPermission.guid == permission_guid
            )
        ),
        "environment permission", permission_guid,
    )
    audit.record(
        session, user, "remove_environment_permission",
        f"Removed the permission of user {permission.user_guid} on execution environment {_describe(record)}.",
    )
    session.delete(permission)
    session.commit()
    return Response(status_code=204)
