"""``v1/content/{guid}/deploy`` and ``v1/tasks/{id}``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, auth, errors
from podium.api import deps
from podium.api.body import json_object
from podium.api.bundles import load_bundle
from podium.api.content import describe, managed_content
from podium.deploy import Deployer, DeployRequest
from podium.git.publish import GitPublisher
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, GitRepository, Task, User
from podium.tasks import TaskFailed, TaskManager, TaskOutput

router = APIRouter()


@router.post("/v1/content/{guid}/deploy")
async def deploy(
    guid: str,
    request: Request,
    tasks: TaskManager = Depends(deps.tasks),
    deployer: Deployer = Depends(deps.deployer),
    git: GitPublisher = Depends(deps.git),
    settings: Settings = Depends(deps.settings),
    store: Store = Depends(deps.store),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    body = await json_object(request)
    bundle_id = body.get("bundle_id")
    activate = body.get("activate", True)
    if not isinstance(activate, bool):
        raise errors.bad_request("activate must be true or false.")
    git_managed = settings.git_enabled and session.scalar(
        select(GitRepository.id).where(GitRepository.content_id == content.id)
    ) is not None
    if bundle_id is None and git_managed:
        # Git-backed content: fetch the branch, bundle the commit, then build it.
        audit.record(session, user, "deploy_content", f"Started deploying content {describe(content)} from git.")
        content_id, user_id = content.id, user.id
        session.commit()
        return {"task_id": git.start_deploy(content_id, user_id, activate)}
    if bundle_id is None:
        bundle = session.scalar(
            select(Bundle).where(Bundle.content_id == content.id).order_by(Bundle.id.desc())
        )
        if bundle is None:
            raise errors.not_found("bundle", "latest")
    else:
        bundle = load_bundle(session, content, bundle_id)
    if content.app_mode not in ("unknown", bundle.app_mode):
        raise errors.ApiError(
            403, 48,
            f"This content is {content.app_mode!r} and the bundle is {bundle.app_mode!r}: the app "
            "mode cannot change once deployed. Deploy the bundle as new content instead.",
        )
    task_id = tasks.create("deploy", user.id, content.id)
    job = DeployRequest(content_id=content.id, bundle_id=bundle.id, activate=activate,
                        deployer=auth.environment_user(user))
    what = f"bundle {bundle.id} of content {describe(content)} (task {task_id})"
    audit.record(session, user, "deploy_content", f"Started deploying {what}.")
    session.commit()
    actor = audit.actor(user)

    async def body_fn(out: TaskOutput) -> dict[str, Any] | None:
        try:
            result = await deployer.run(job, out)
        except Exception as exc:
            reason = exc.message if isinstance(exc, TaskFailed) else "an internal error"
            await asyncio.to_thread(
                audit.record_now, store, actor, "deploy_content_failed", f"Deploying {what} failed: {reason}"
            )
            raise
        await asyncio.to_thread(
            audit.record_now, store, actor, "deploy_content_succeeded",
            f"Deployed {what}" + (" and activated it." if activate else " as a draft."),
        )
        return result

    tasks.start(task_id, body_fn)
    return {"task_id": task_id}


def _number(name: str, value: str | None, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise errors.bad_request(f"{name} must be a number; got {value!r}.") from None


@router.get("/v1/tasks/{task_id}")
async def get_task(
    task_id: str,
    first: str | None = None,
    wait: str | None = None,
    tasks: TaskManager = Depends(deps.tasks),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    task = session.get(Task, task_id)
    if task is None or (task.user_id != user.id and user.user_role != "administrator"):
        raise errors.not_found("task", task_id)
    session.close()  # do not hold a connection during the long poll
    start = max(0, int(_number("first", first, 0)))
    seconds = min(_number("wait", wait, 0), settings.task_wait_max_seconds)
    snap = await tasks.wait(task_id, start, seconds)
    if snap is None:
        raise errors.not_found("task", task_id)
    return {
        "id": snap.id,
        "output": snap.output,
        "finished": snap.finished,
        "code": snap.code,
        "error": snap.error,
        "last": snap.last,
        "result": snap.result,
    }
