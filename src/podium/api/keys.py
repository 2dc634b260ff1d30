"""``v1/users/{guid}/keys``: a user's API keys (created once, listed, revoked)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.lookup import found
from podium.api.serialize import iso
from podium.changes import Changes
from podium.store.models import ApiKey, User

router = APIRouter()


def key_json(record: ApiKey, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": record.guid,
        "name": record.name,
        "prefix": record.key_prefix,
        "created_time": iso(record.created_time),
        "last_used_time": iso(record.last_used_time),
    }
    if key is not None:
        body["key"] = key
    return body


def _owner(session: Session, current: User, guid: str, admin_allowed: bool) -> User:
    if guid != current.guid and not (admin_allowed and auth.at_least(current, "administrator")):
        raise errors.forbidden("You can only manage your own API keys.")
    return found(session.scalar(select(User).where(User.guid == guid)), "user", guid)


def _key(session: Session, user: User, key_id: str) -> ApiKey:
    query = select(ApiKey).where(ApiKey.guid == key_id, ApiKey.user_id == user.id)
    return found(session.scalar(query), "API key", key_id)


@router.get("/v1/users/{guid}/keys")
def list_keys(
    guid: str, session: Session = Depends(deps.db), current: User = Depends(deps.user)
) -> list[dict[str, Any]]:
    user = _owner(session, current, guid, admin_allowed=True)
    records = session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))
    return [key_json(r) for r in records]


@router.post("/v1/users/{guid}/keys")
async def create_key(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    current: User = Depends(deps.user),
) -> dict[str, Any]:
    user = _owner(session, current, guid, admin_allowed=False)
    name = (await json_object(request)).get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise errors.bad_request("An API key needs a name of 1 to 128 characters.", code=62)
    record, key = auth.create_api_key(session, user, name.strip())
    audit.record(session, current, "add_api_key", f"Created API key {record.name!r} ({record.guid}).")
    session.commit()
    return key_json(record, key)


@router.get("/v1/users/{guid}/keys/{key_id}")
def get_key(
    guid: str, key_id: str, session: Session = Depends(deps.db), current: User = Depends(deps.user)
) -> dict[str, Any]:
    return key_json(_key(session, _owner(session, current, guid, admin_allowed=True), key_id))


@router.delete("/v1/users/{guid}/keys/{key_id}", status_code=204)
def delete_key(
    guid: str,
    key_id: str,
    changes: Changes = Depends(deps.changes),
    session: Session = Depends(deps.db),
    current: User = Depends(deps.user),
) -> Response:
    owner = _owner(session, current, guid, admin_allowed=True)
    record = _key(session, owner, key_id)
    session.delete(record)
    audit.record(
        session, current, "remove_api_key",
        f"Deleted API key {record.name!r} ({record.guid}) of {audit.describe(owner)}.",
    )
    session.commit()
    changes.users()
    return Response(status_code=204)
