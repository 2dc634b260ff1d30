"""``v1/content/{guid}/jobs``: the processes of content, their logs, and killing one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import errors
from podium.api import deps
from podium.api.content import managed_content
from podium.api.serialize import iso
from podium.jobs import JobRunner, handle_of
from podium.runtime import ExecutionBackend, LogLine
from podium.scheduler import Scheduler
from podium.settings import Settings
from podium.store.models import Content, Job, User

router = APIRouter()


def job_json(job: Job, content: Content) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "ppid": None,
        "pid": job.pid,
        "key": job.key,
        "remote_id": job.key if job.backend != "local" else None,
        "app_id": str(content.id),
        "content_id": str(content.id),
        "content_guid": content.guid,
        "variant_id": None,
        "bundle_id": str(job.bundle_id) if job.bundle_id is not None else None,
        "start_time": iso(job.start_time),
        "end_time": iso(job.end_time),
        "last_heartbeat_time": iso(job.last_heartbeat_time),
        "queued_time": iso(job.queued_time),
        "queue_name": None,
        "status": job.status,
        "exit_code": job.exit_code,
        "hostname": job.hostname,
        "cluster": "Local" if job.backend == "local" else "Kubernetes",
        "image": job.image,
        "run_as": None,
        "tag": job.tag,
        "kind": job.kind,
        "error": job.error or None,
    }


def _job(session: Session, content: Content, key: str) -> Job:
    job = session.scalar(select(Job).where(Job.key == key, Job.content_id == content.id))
    if job is None:
        raise errors.not_found("job", key)
    return job


def _entry(line: LogLine) -> dict[str, Any]:
    return {"source": line.stream, "timestamp": iso(line.timestamp), "data": line.data}


@router.get("/v1/content/{guid}/jobs")
def list_jobs(
    guid: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> list[dict[str, Any]]:
    content = managed_content(session, user, guid)
    jobs = session.scalars(select(Job).where(Job.content_id == content.id).order_by(Job.id.desc()))
    return [job_json(job, content) for job in jobs]


@router.get("/v1/content/{guid}/jobs/{key}")
def get_job(
    guid: str, key: str, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    return job_json(_job(session, content, key), content)


@router.get("/v1/content/{guid}/jobs/{key}/log")
async def job_log(
    guid: str,
    key: str,
    maxLogLines: int | None = None,  # noqa: N803 - Connect's parameter name
    backend: ExecutionBackend = Depends(deps.backend),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    job = _job(session, content, key)
    handle = handle_of(job)
    session.close()
    entries: list[dict[str, Any]] = []
    if handle is not None:
        async for line in backend.logs(handle):
            entries.append(_entry(line))
    if maxLogLines is not None and maxLogLines >= 0:
        entries = entries[-maxLogLines:] if maxLogLines else []
    return {"source": "both", "entries": entries}


@router.get("/v1/content/{guid}/jobs/{key}/tail")
async def job_tail(
    guid: str,
    key: str,
    backend: ExecutionBackend = Depends(deps.backend),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> StreamingResponse:
    """Follow a job's log as server-sent events until the job ends."""
    content = managed_content(session, user, guid)
    handle = handle_of(_job(session, content, key))
    session.close()

    async def events() -> AsyncIterator[bytes]:
        if handle is None:
            return
        async for line in backend.logs(handle, follow=True):
            yield f"data: {json.dumps(_entry(line))}\n\n".encode()
        yield b"event: end\ndata: {}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@router.delete("/v1/content/{guid}/jobs/{key}")
async def kill_job(
    guid: str,
    key: str,
    scheduler: Scheduler = Depends(deps.scheduler),
    jobs: JobRunner = Depends(deps.jobs),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    job = _job(session, content, key)
    if job.status != 0:
        raise errors.ApiError(409, 163, f"Job {key} is not active; there is nothing to stop.")
    if job.backend == "local" and job.hostname and job.hostname != jobs.hostname:
        # a process of another host: only the node there can signal it
        raise errors.ApiError(
            409, 163, f"Job {key} runs on host {job.hostname}; stop it through a server node there."
        )
    handle = handle_of(job)
    result = {"guid": content.guid, "app_id": str(content.id), "app_guid": content.guid,
              "job_id": str(job.id), "job_key": key, "result": "Order to kill job registered"}
    session.close()
    if not await scheduler.stop_job(key) and handle is not None:
        await asyncio.shield(jobs.stop(handle, settings.stop_grace_seconds))
    return result
