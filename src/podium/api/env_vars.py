"""``v1/content/{guid}/environment``: environment variables of content.

Values are encrypted at rest and never returned: every answer is the sorted
array of names, as Connect's.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import errors
from podium.api import deps
from podium.api.body import json_array
from podium.api.content import managed_content
from podium.context import Podium
from podium.store.models import Content, EnvVar, User

router = APIRouter()
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by Podium for every content process; content cannot override them.
RESERVED = frozenset(
    {"CONNECT_SERVER", "CONNECT_API_KEY", "CONNECT_CONTENT_GUID", "RSTUDIO_PRODUCT",
     "POSIT_PRODUCT", "CONNECT_CONTENT_SESSION_TOKEN", "CONNECT_CONTENT_SESSION_TOKEN_FILE",
     "PORT", "HOME", "PATH"}
)


def _names(session: Session, content: Content) -> list[str]:
    return sorted(
        session.scalars(select(EnvVar.name).where(EnvVar.content_id == content.id)).all()
    )


def _parse(items: list[Any]) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.bad_request('Each item must be {"name": "...", "value": "..." | null}.')
        name, value = item["name"], item.get("value")
        if not NAME_RE.match(name):
            raise errors.bad_request(
                f"{name!r} is not a valid environment variable name: use letters, digits and '_', "
                "not starting with a digit."
            )
        if name in RESERVED:
            raise errors.bad_request(
                f"{name} is set by Podium for every content process and cannot be changed.",
                code=108,
            )
        if name in wanted:
            raise errors.bad_request(f"{name} is given twice.", code=149)
        if value is not None and not isinstance(value, str):
            raise errors.bad_request(f"The value of {name} must be a string or null.")
        wanted[name] = value
    return wanted


def _apply(ctx: Podium, session: Session, content: Content, wanted: dict[str, str | None]) -> None:
    existing = {
        var.name: var
        for var in session.scalars(select(EnvVar).where(EnvVar.content_id == content.id))
    }
    for name, value in wanted.items():
        if value is None:
            if name in existing:
                session.delete(existing[name])
        elif name in existing:
            existing[name].value_encrypted = ctx.secrets.encrypt(value)
        else:
            session.add(
                EnvVar(content_id=content.id, name=name, value_encrypted=ctx.secrets.encrypt(value))
            )


@router.get("/v1/content/{guid}/environment")
def list_env_vars(
    guid: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> list[str]:
    return _names(session, managed_content(session, user, guid))


@router.patch("/v1/content/{guid}/environment")
async def update_env_vars(
    guid: str,
    request: Request,
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[str]:
    content = managed_content(session, user, guid)
    _apply(ctx, session, content, _parse(await json_array(request)))
    session.commit()
    return _names(session, content)


@router.put("/v1/content/{guid}/environment")
async def replace_env_vars(
    guid: str,
    request: Request,
    ctx: Podium = Depends(deps.podium),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[str]:
    content = managed_content(session, user, guid)
    wanted = _parse(await json_array(request))
    for name in _names(session, content):
        wanted.setdefault(name, None)
    _apply(ctx, session, content, wanted)
    session.commit()
    return _names(session, content)


def decrypted_env(ctx: Podium, session: Session, content_id: int) -> dict[str, str]:
    """The content's variables in clear, for launching its processes only."""
    return {
        var.name: ctx.secrets.decrypt(var.value_encrypted)
        for var in session.scalars(select(EnvVar).where(EnvVar.content_id == content_id))
    }
