"""The catalogue of execution environments in the database.

Records become :class:`~podium.environments.model.Environment` values here, so
selection never sees the ORM. At start :func:`sync_catalogue` makes the
database hold the environments declared in the settings file and the host's
``Local`` environment, marked with ``managed_by``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.environments.model import (
    RUNTIMES,
    Environment,
    Installation,
    parse_semver,
    request_from_manifest,
)
from podium.environments.select import Policy, Selection, select_environment
from podium.environments.validate import INSTALLATION_FIELDS, validate_environment
from podium.settings import Settings
from podium.store import Store
from podium.store.models import EnvironmentPermission, ExecutionEnvironment, utcnow

log = logging.getLogger(__name__)
SETTINGS = "settings"


def _installations(items: list[dict[str, str]]) -> tuple[Installation, ...]:
    result = []
    for item in items or []:
        version = parse_semver(item.get("version", ""))
        if version is not None and item.get("path"):
            result.append(Installation(version, item["path"], item["version"]))
    return tuple(result)


def to_value(record: ExecutionEnvironment, allowed_users: frozenset[str] = frozenset()) -> Environment:
    return Environment(
        id=record.id,
        guid=record.guid,
        name=record.name,
        title=record.title,
        cluster_name=record.cluster_name,
        matching=record.matching,
        managed_by=record.managed_by,
        python=_installations(record.python),
        r=_installations(record.r),
        quarto=_installations(record.quarto),
        allowed_users=allowed_users,
    )


def load_environments(session: Session) -> list[Environment]:
    records = session.scalars(select(ExecutionEnvironment).order_by(ExecutionEnvironment.id))
    allowed: dict[int, set[str]] = {}
    for permission in session.scalars(select(EnvironmentPermission)):
        allowed.setdefault(permission.environment_id, set()).add(permission.user_guid)
    return [to_value(record, frozenset(allowed.get(record.id, ()))) for record in records]


def apply_fields(record: ExecutionEnvironment, fields: Mapping[str, Any]) -> None:
    for name, value in fields.items():
        setattr(record, name, value)
    record.updated_time = utcnow()


def _managed(body: Mapping[str, Any], managed_by: str) -> dict[str, Any]:
    fields = validate_environment(body, creating=True)
    fields.setdefault("description", "")
    fields.setdefault("supervisor", None)
    for name in INSTALLATION_FIELDS:
        fields.setdefault(name, [])
    fields["managed_by"] = managed_by
    return fields


def sync_catalogue(store: Store, declared: list[dict[str, Any]], local: Mapping[str, Any] | None) -> None:
    """Create or update the declared and host environments; drop declarations since removed.

    An environment created through the API whose image is now declared is taken
    over by the settings file.
    """
    from podium.environments.host import HOST

    wanted = [_managed(body, SETTINGS) for body in declared]
    if local is not None:
        wanted.append(_managed(local, HOST))
    names = {fields["name"] for fields in wanted}
    with store.session() as session:
        existing = {r.name: r for r in session.scalars(select(ExecutionEnvironment))}
        for record in existing.values():
            if record.managed_by in (SETTINGS, HOST) and record.name not in names:
                log.info("environment %s (%s) is no longer declared: removed", record.name, record.guid)
                session.delete(record)
        for fields in wanted:
            found = existing.get(fields["name"])
            if found is None:
                found = ExecutionEnvironment()
                session.add(found)
                log.info("environment %s added (managed by %s)", fields["name"], fields["managed_by"])
            elif found.managed_by is None:
                log.warning("environment %s is now managed by the %s", fields["name"], fields["managed_by"])
            changed = {k: v for k, v in fields.items() if getattr(found, k, None) != v}
            if changed:
                apply_fields(found, changed)


def policy(settings: Settings) -> Policy:
    return Policy(python_matching=settings.python_version_matching, r_matching=settings.r_version_matching)


def resolve(
    settings: Settings, session: Session, manifest: Mapping[str, Any], content_image: str | None,
    user: str | None = None,
) -> Selection:
    """Which environment a bundle with ``manifest`` gets on this server, and why.

    ``user``: the deploying user's guid, for environments restricted by permissions
    (None for administrators).

    Raises :class:`~podium.environments.model.InvalidRequest` for an unreadable
    runtime request in the manifest.
    """
    return select_environment(
        request_from_manifest(manifest),
        load_environments(session),
        content_image=content_image or None,
        server_image=settings.default_image_name or None,
        policy=policy(settings),
        user=user,
    )


def selection_json(selection: Selection) -> dict[str, Any]:
    """An explanation as the API returns it."""

    def candidate(c: Any) -> dict[str, Any]:
        env = c.environment
        return {
            "guid": env.guid,
            "name": env.name,
            "title": env.title,
            "cluster_name": env.cluster_name,
            "matching": env.matching,
            "compatible": c.compatible,
            "reason": c.reason,
            **{
                name: {"version": i.version_text, "path": i.path}
                for name in RUNTIMES
                if (i := c.installation(name)) is not None
            },
        }

    request = selection.request
    return {
        "source": selection.source,
        "target": selection.target,
        "requested": selection.requested,
        "needs": selection.needs,
        "request": {
            "image": request.image,
            "identifier": request.identifier,
            **{
                name: {
                    "version": r.version_text or None,
                    "requires": str(r.requires) if r.requires is not None else None,
                }
                for name in request.needed
                if (r := request.runtime(name)) is not None
            },
        },
        "chosen": candidate(selection.chosen) if selection.chosen else None,
        "rejected": [candidate(c) for c in selection.others],
        "explanation": selection.lines(),
        "error": None if selection.chosen else selection.failure(),
    }
