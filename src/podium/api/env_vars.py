"""``v1/content/{guid}/environment``: environment variables of content.

Values are encrypted at rest and never returned (:mod:`podium.secrets`): every
answer is the sorted array of names, as Connect's.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from podium import audit, errors
from podium.api import deps
from podium.api.body import json_array
from podium.api.content import describe, managed_content
from podium.runtime import BackendError, ExecutionBackend
from podium.secrets import EnvVars, parse_env_vars
from podium.store.models import Content, User

log = logging.getLogger(__name__)

router = APIRouter()


async def _apply(
    session: Session, env_vars: EnvVars, backend: ExecutionBackend, content: Content, wanted: dict[str, str | None]
) -> None:
    """Change the variables in the database and in the backend's copy (a Kubernetes
    Secret) together: when the backend refuses, nothing changes."""
    env_vars.apply(session, content.id, wanted)
    try:
        await backend.update_content_secrets(content.guid, wanted)
    except BackendError as error:
        session.rollback()
        log.warning("content %s: its secret variables could not be updated: %s (%s)",
                    content.guid, error.message, error.detail)
        raise errors.backend_unavailable("Changing the environment variables", error.message, error.status) \
            from None
    session.commit()


def _record(session: Session, user: User, content: Content, wanted: dict[str, str | None]) -> None:
    """Audit which names were set and removed: only names, values are secrets."""
    set_names = sorted(name for name, value in wanted.items() if value is not None)
    removed = sorted(name for name, value in wanted.items() if value is None)
    parts = [f"set {', '.join(set_names)}"] if set_names else []
    parts += [f"removed {', '.join(removed)}"] if removed else []
    if parts:
        audit.record(
            session, user, "update_environment_variables",
            f"Environment variables of content {describe(content)}: {'; '.join(parts)}.",
        )


@router.get("/v1/content/{guid}/environment")
def list_env_vars(
    guid: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> list[str]:
    return EnvVars.names(session, managed_content(session, user, guid).id)


@router.patch("/v1/content/{guid}/environment")
async def update_env_vars(
    guid: str,
    request: Request,
    env_vars: EnvVars = Depends(deps.env_vars),
    backend: ExecutionBackend = Depends(deps.backend),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[str]:
    content = managed_content(session, user, guid)
    wanted = parse_env_vars(await json_array(request))
    _record(session, user, content, wanted)
    await _apply(session, env_vars, backend, content, wanted)
    return env_vars.names(session, content.id)


@router.put("/v1/content/{guid}/environment")
async def replace_env_vars(
    guid: str,
    request: Request,
    env_vars: EnvVars = Depends(deps.env_vars),
    backend: ExecutionBackend = Depends(deps.backend),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[str]:
    content = managed_content(session, user, guid)
    wanted = parse_env_vars(await json_array(request))
    for name in env_vars.names(session, content.id):
        wanted.setdefault(name, None)
    _record(session, user, content, wanted)
    await _apply(session, env_vars, backend, content, wanted)
    return env_vars.names(session, content.id)
