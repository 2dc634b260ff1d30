"""Job records: every process launched through the backend is a row in ``jobs``.

:class:`JobRunner` is the one place that launches jobs, so each gets its
record (key, kind, tag, host, handle, times) and each end is written down with
its exit code and reason, whatever launched it: a build, a render or the
scheduler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import socket
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from podium.placement import to_placement
from podium.runtime import ExecutionBackend, JobHandle, JobSpec, JobState, JobStatus, VolumeMount
from podium.store import Store
from podium.store.models import ExecutionEnvironment, Job, utcnow

log = logging.getLogger(__name__)


def new_job_key(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:16]}"


class JobRunner:
    """Launches and ends jobs for one server node, ``node_id``, which owns every job it
    launches (recorded on the job): it alone stops, adopts or deletes them, until it dies
    and another node takes them over (:mod:`podium.nodes`)."""

    def __init__(self, store: Store, backend: ExecutionBackend, node_id: str | None = None) -> None:
        self.store = store
        self.backend = backend
        self.hostname = socket.gethostname()
        self.node_id = node_id

    async def launch(
        self,
        spec: JobSpec,
        content_id: int,
        bundle_id: int | None,
        tag: str,
        meta: dict[str, Any] | None = None,
    ) -> JobHandle:
        """Record and launch ``spec``, run under its execution environment's supervisor
        and with its volume mounts (the environment named by ``spec.image``)."""
        with self.store.session() as session:
            spec = _in_environment(spec, session.scalar(
                select(ExecutionEnvironment).where(ExecutionEnvironment.name == spec.image)
            ) if spec.image else None)
            session.add(
                Job(
                    key=spec.key, content_id=content_id, bundle_id=bundle_id, kind=spec.kind,
                    tag=tag, backend=self.backend.name, hostname=self.hostname, image=spec.image,
                    meta=meta or {}, node_id=self.node_id,
                )
            )
        try:
            handle = await self.backend.launch(spec)
        except Exception as exc:
            self.record_end(spec.key, JobStatus(JobState.FAILED, reason="LaunchFailed", message=str(exc)))
            raise
        with self.store.session() as session:
            job = session.scalar(select(Job).where(Job.key == spec.key))
            if job is not None:
                job.handle = {"backend": handle.backend, "key": handle.key, "data": dict(handle.data)}
                job.start_time = utcnow()
                job.last_heartbeat_time = job.start_time
                pid = handle.data.get("pid")
                job.pid = pid if isinstance(pid, int) else None
        log.info("job %s (%s) launched for content %s", spec.key, tag, spec.content_guid)
        return handle

    def record_end(self, key: str, status: JobStatus) -> None:
        """Write a job's end once; later calls for the same job change nothing."""
        with self.store.session() as session:
            job = session.scalar(select(Job).where(Job.key == key))
            if job is None or job.status != 0:
                return
            job.status = 1
            job.exit_code = status.exit_code
            job.end_time = utcnow()
            # A job stopped on purpose (idle, redeploy, a user) did not fail.
            if status.state not in (JobState.SUCCEEDED, JobState.STOPPED):
                job.error = status.message or status.reason or status.state.value
        log.info("job %s ended: %s (%s)", key, status.state.value, status.reason)

    async def wait(
        self,
        handle: JobHandle,
        timeout_seconds: float | None = None,
        start_timeout_seconds: float | None = None,
        on_pending: Callable[[JobStatus], None] | None = None,
        ended: asyncio.Event | None = None,
    ) -> JobStatus:
        """Poll until the job ends; on timeout return its last (active) status.
        ``ended``: set when the caller learns that the job has ended (its log stream
        closed), so the next poll comes at once, not after the poll interval (up to 0.5 s).

        A job still PENDING after ``start_timeout_seconds`` (the content's
        ``init_timeout``) is returned then, PENDING, with the backend's last reason for
        the wait (``Unschedulable``, ``ErrImagePull``...): the caller stops it and fails
        with that reason. ``on_pending`` hears each new such reason as it comes.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
        start_deadline = None if start_timeout_seconds is None else loop.time() + start_timeout_seconds
        delay = 0.05
        said: tuple[str | None, str | None] = (None, None)
        while True:
            status = await self.backend.status(handle)
            if not status.state.active:
                return status
            if status.state is JobState.PENDING and status.reason and (status.reason, status.message) != said:
                said = (status.reason, status.message)
                log.info("job %s waits to start: %s", handle.key, status.message or status.reason)
                if on_pending is not None:
                    on_pending(status)
            if deadline is not None and loop.time() >= deadline:
                return status
            if status.state is JobState.PENDING and start_deadline is not None and loop.time() >= start_deadline:
                return status
            if ended is None or ended.is_set():
                await asyncio.sleep(delay)
            else:
                try:
                    await asyncio.wait_for(ended.wait(), delay)
                except TimeoutError:
                    pass
            delay = min(delay * 1.5, 0.5)

    async def stop(self, handle: JobHandle, grace_seconds: float) -> JobStatus:
        await self.backend.stop(handle, grace_seconds)
        status = await self.backend.status(handle)
        self.record_end(handle.key, status)
        return status

    def active_rows(self) -> list[Job]:
        """This node's active jobs."""
        with self.store.session() as session:
            return list(session.scalars(select(Job).where(Job.status == 0, Job.node_id == self.node_id)))

    def active_keys(self) -> set[str]:
        """The keys of every node's active jobs."""
        with self.store.session() as session:
            return set(session.scalars(select(Job.key).where(Job.status == 0)))

    def rows(self, keys: tuple[str, ...]) -> list[Job]:
        """The active jobs among ``keys``."""
        with self.store.session() as session:
            return list(session.scalars(select(Job).where(Job.key.in_(keys), Job.status == 0)))


def handle_of(job: Job) -> JobHandle | None:
    if not job.handle:
        return None
    return JobHandle(
        backend=str(job.handle["backend"]), key=str(job.handle["key"]), data=job.handle.get("data", {})
    )


def _in_environment(spec: JobSpec, environment: ExecutionEnvironment | None) -> JobSpec:
    """``spec`` wrapped in the environment's ``supervisor`` (``<supervisor> <command...>``,
    split as a shell would; a supervisor given by its path is shown to a sandboxed job),
    given its ``volume_mounts`` and placed where it says (under the content's placement)."""
    if environment is None:
        return spec
    changes: dict[str, Any] = {}
    if environment.supervisor:
        words = shlex.split(environment.supervisor)
        changes["command"] = [*words, *spec.command]
        program = os.path.normpath(words[0])
        if spec.sandbox is not None and os.path.isabs(program) and not spec.sandbox.binds(program):
            changes["sandbox"] = dataclasses.replace(
                spec.sandbox, read_only=(*spec.sandbox.read_only, program)
            )
    mounts = []
    for record in environment.volume_mounts or []:
        try:
            mounts.append(VolumeMount.from_record(record))
        except ValueError as exc:  # validated when stored: only an old or edited record
            log.warning("environment %s: volume mount %r skipped: %s", environment.name, record, exc)
    if mounts:
        changes["volume_mounts"] = tuple(mounts)
    placement = to_placement(environment.placement)
    if placement is not None:  # the content's own placement goes over its environment's
        changes["placement"] = spec.placement.over(placement) if spec.placement else placement
    return dataclasses.replace(spec, **changes) if changes else spec


def not_started_message(what: str, status: JobStatus, timeout_seconds: float) -> str:
    """Why a job that never started failed: the backend's last reason, and the setting."""
    reason = status.message or status.reason or "it was still waiting to be scheduled"
    return (
        f"{what} did not start within init_timeout ({timeout_seconds:g} s): {reason}. "
        "Raise init_timeout (the content's, or the server's init_timeout_seconds) if the "
        "cluster needs longer."
    )
