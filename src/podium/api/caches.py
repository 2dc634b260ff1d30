"""``v1/system/caches/runtime``: list and delete runtime caches (administrators only).

A cache is named by language, version and image (:mod:`podium.caches`). Deleting takes
a JSON body ``{language, version, image_name, dry_run}``; a dry run only says the cache
exists; otherwise the deletion runs as a task whose id is returned.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from podium import audit, errors
from podium.api import deps
from podium.api.body import json_object
from podium.caches import CacheKey, RuntimeCaches, environments_of, list_caches
from podium.store.models import User
from podium.tasks import TaskManager, TaskOutput

router = APIRouter()


@router.get("/v1/system/caches/runtime")
def get_runtime_caches(
    session: Session = Depends(deps.db), _admin: User = Depends(deps.administrator)
) -> dict[str, Any]:
    return {"caches": [key.json() for key in list_caches(session)]}


def _key(body: dict[str, Any]) -> CacheKey:
    values = {}
    for field in ("language", "version", "image_name"):
        value = body.get(field, "Local" if field == "image_name" else None)
        if not isinstance(value, str) or not value:
            raise errors.bad_request(f"{field} must be a non-empty string.", code=25)
        values[field] = value
    return CacheKey(values["language"], values["version"], values["image_name"])


@router.delete("/v1/system/caches/runtime")
async def delete_runtime_cache(
    request: Request,
    session: Session = Depends(deps.db),
    tasks: TaskManager = Depends(deps.tasks),
    caches: RuntimeCaches = Depends(deps.caches),
    admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    body = await json_object(request)
    key = _key(body)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise errors.bad_request("dry_run must be true or false.", code=25)
    if not environments_of(session, key):
        raise errors.not_found("runtime cache", f"{key.language} {key.version} {key.image_name}")
    if dry_run:
        return {**key.json(), "task_id": None}
    task_id = tasks.create("delete_runtime_cache", admin.id, None)
    audit.record(session, admin, "remove_runtime_cache",
                 f"Deleted the {key.language} {key.version} runtime cache of image {key.image_name} "
                 f"(task {task_id}).")
    session.commit()

    async def body_fn(out: TaskOutput) -> None:
        await caches.delete(key, out)

    tasks.start(task_id, body_fn)
    return {**key.json(), "task_id": task_id}
