"""The Kubernetes execution backend: every job one ``batch/v1`` Job with one pod.

Lifecycle, in the terms of :class:`~podium.runtime.base.ExecutionBackend`:

- :meth:`launch` puts the job's ``secret_env`` into its content's Secret (one per
  content item, :func:`.manifests.content_secret_manifest`: created when missing, keys
  updated by merge patch), then creates the Job (:func:`.manifests.job_manifest`); it
  returns at once: the job is PENDING until its pod's container runs. A 409 means the
  key exists: its Job is adopted. :meth:`update_content_secrets` and
  :meth:`forget_content` keep the Secret in step with the content's variables and
  delete it with the content.
- :meth:`status` answers from one shared list+watch cache of this server's Jobs and
  Pods (:mod:`.watch`). States that may pass stay PENDING with the Kubernetes reason
  and message, so callers can show them and wait up to their ``init_timeout``:
  ``Unschedulable`` (a cluster autoscaler adds a node), ``FailedCreate`` (from the
  Job's events: quota, an admission webhook, a missing service account),
  ``ErrImagePull``/``ImagePullBackOff`` (a registry answering 429) and
  ``CreateContainerConfigError``. Only what cannot pass fails at once
  (``InvalidImageName``, ``ErrImageNeverPull``, ``DeadlineExceeded``); an ended
  container gives ``OOMKilled``, ``StartError``, ``Signalled`` (exit code > 128) or
  ``Exited``. Final states are remembered so they never change for this backend.
- A Job that no longer exists while its handle records a uid was deleted: STOPPED (by
  :meth:`stop`, by another server, or by ``ttlSecondsAfterFinished`` after the DB
  recorded its end). A handle without a uid and no Job is UNKNOWN/``NotFound``.
- :meth:`address` is the pod IP and container port once the pod is Ready (a claimed
  warm pod's: its job's port, once its container runs; the caller judges readiness
  by HTTP).
- :meth:`logs` reads the pod log API (``follow`` streams until the container ends).
  The API merges stdout and stderr: every line comes back as ``stdout``. With
  ``kept_logs``, each job's log is saved when the job ends or is stopped, and served
  from there once the pod is gone (:mod:`.keptlogs`).
- With ``warm_pool_size`` > 0 (:mod:`.warmpool`, :mod:`.pool`), :meth:`launch` of a
  run job in the pool's shape first claims a warm pod of its image and hands it the
  job; its handle names the warm Job, and everything above holds for it unchanged
  (its pod is found by the Job's name). Without a ready warm pod: a normal Job.
- :meth:`stop` deletes the Job with ``propagationPolicy=Background`` and its pods with
  ``gracePeriodSeconds`` (rounded up to a whole second, at least 1), then waits until
  they are gone. An ended Job is left for its TTL; 404 means done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from podium.runtime.base import BackendError, JobHandle, JobSpec, JobState, JobStatus, LogLine
from podium.runtime.kubernetes.client import KubeApiError, KubeClient
from podium.runtime.kubernetes.keptlogs import KeptLogs
from podium.runtime.kubernetes.manifests import (
    LABEL_KEY,
    LABEL_KIND,
    LABEL_NODE,
    KubernetesJobConfig,
    content_secret_manifest,
    content_secret_name,
    fetch_token_key,
    job_manifest,
    job_name,
    job_secret_values,
    label_selector,
    scratch,
    secret_data,
    secret_key,
    selector_labels,
    transfers,
    upload_token_key,
)
from podium.runtime.kubernetes.pool import LABEL_JOB_NAME, WarmPool
from podium.runtime.kubernetes.warmpool import ANNOTATION_PORT, LABEL_WARM, unclaimable
from podium.runtime.kubernetes.watch import Reflector
from podium.runtime.transfer import TransferTokens

log = logging.getLogger(__name__)

# Container waiting reasons after which the pod will never start.
FATAL_WAITING = {"InvalidImageName", "ErrImageNeverPull"}
# Waiting reasons the kubelet retries: a registry may answer again, a Secret appear.
TRANSIENT_WAITING = {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "CreateContainerError"}
# Reasons a job stays PENDING with (shown to the caller, who decides how long to wait).
TRANSIENT = TRANSIENT_WAITING | {"Unschedulable", "FailedCreate"}
# Reasons the backend fails a job for while the cluster still counts it active.
FAIL_FAST = FATAL_WAITING
SYNC_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 60.0  # after the grace period: pod deletion confirmed by the kubelet
EVENTS_TTL_SECONDS = 1.0
LOG_END_WAIT_SECONDS = 10.0
KEEP_LOG_TIMEOUT_SECONDS = 10.0

ClientFactory = Callable[[], Awaitable[KubeClient]]


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, connect: ClientFactory, config: KubernetesJobConfig, kept_logs: KeptLogs | None = None,
                 tokens: TransferTokens | None = None) -> None:
        self._connect = connect
        self.config = config
        self.kept_logs = kept_logs
        self.tokens = tokens  # without a shared volume: the transfer tokens of jobs' files
        self._token_keys: dict[str, tuple[str, list[str]]] = {}  # job key -> (content, Secret keys)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: KubeClient | None = None
        self._jobs: Reflector | None = None
        self._pods: Reflector | None = None
        self._final: dict[str, JobStatus] = {}
        self._events: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self.pool: WarmPool | None = None

    # --- plumbing ---------------------------------------------------------------------

    async def _ready(self) -> tuple[KubeClient, Reflector, Reflector]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or the old event loop is gone
            self._loop, self._client, self._jobs, self._pods, self.pool = loop, None, None, None, None
        if self._client is None:
            self._client = await self._wrap(self._connect())
            selector = label_selector(selector_labels(self.config))
            self._jobs = Reflector(self._client, "jobs", self.config.namespace, selector)
            self._pods = Reflector(self._client, "pods", self.config.namespace, selector)
            self._jobs.start()
            self._pods.start()
        assert self._jobs is not None and self._pods is not None
        for reflector in (self._jobs, self._pods):
            if not reflector.synced.is_set():
                try:
                    await asyncio.wait_for(reflector.synced.wait(), SYNC_TIMEOUT_SECONDS)
                except TimeoutError:
                    error = reflector.error
                    raise BackendError(
                        "ClusterUnavailable",
                        "The Kubernetes API server could not be reached.",
                        status=503, detail=str(error) if error else "list timed out",
                    ) from None
        if self.pool is None:  # also with the setting at 0: one cleanup of what is left
            self.pool = WarmPool(self._client, self._jobs, self._pods, self.config)
            self.pool.start()
        return self._client, self._jobs, self._pods

    @staticmethod
    async def _wrap(call: Awaitable[Any]) -> Any:
        try:
            return await call
        except KubeApiError as error:
            raise _backend_error(error) from error

    def _check(self, handle: JobHandle) -> None:
        if handle.backend != self.name:
            raise BackendError(
                "WrongBackend", f"Job {handle.key} belongs to the {handle.backend} backend.", status=400
            )

    def _handle(self, job: dict[str, Any]) -> JobHandle:
        meta = job["metadata"]
        return JobHandle(self.name, meta["labels"][LABEL_KEY], {
            "namespace": meta.get("namespace", self.config.namespace),
            "name": meta["name"], "uid": meta.get("uid", ""),
        })

    def _objects(self, handle: JobHandle) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        assert self._jobs is not None and self._pods is not None
        name = str(handle.data.get("name") or job_name(handle.key))
        job = self._jobs.objects.get(name)
        uid = handle.data.get("uid")
        if job is not None and uid and job["metadata"].get("uid") != uid:
            job = None  # a newer Job under the same name is not this handle's job
        pods = self._pods_of(handle, name)
        pods.sort(key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))
        return job, (pods[-1] if pods else None)

    def _pods_of(self, handle: JobHandle, name: str | None = None) -> list[dict[str, Any]]:
        """The job's pods: labelled with its key, or made by its Job (a claimed warm pod)."""
        assert self._pods is not None
        name = name or str(handle.data.get("name") or job_name(handle.key))
        return [pod for pod in self._pods.objects.values()
                if pod["metadata"].get("labels", {}).get(LABEL_KEY) == handle.key
                or pod["metadata"].get("labels", {}).get(LABEL_JOB_NAME) == name]

    # --- the interface ----------------------------------------------------------------

    async def launch(self, spec: JobSpec) -> JobHandle:
        client, jobs, _ = await self._ready()
        if self.pool is not None and self.config.warm_pool_size > 0 and spec.kind == "run":
            reason = unclaimable(spec, self.config)
            if reason is None:
                claimed = await self._wrap(self.pool.claim(spec))
                if claimed is not None:
                    return self._handle(claimed)
            else:
                log.info("job %s (content %s): a normal Job, not a warm pod: %s", spec.key, spec.content_guid, reason)
        namespace = self.config.namespace
        manifest = job_manifest(spec, self.config)
        name = manifest["metadata"]["name"]
        values: dict[str, str | None] = dict(job_secret_values(spec))
        values.update(self._issue_tokens(spec))
        if values:
            await self._put_secret_values(client, spec.content_guid, values)
        try:
            job = await client.create_job(namespace, manifest)
        except KubeApiError as error:
            if error.status != 409:
                self._drop_tokens(spec.key)  # a half-failed launch leaves no token behind
                raise _backend_error(error, f"Job {spec.key} could not be created") from error
            job = jobs.objects.get(name) or await self._wrap(client.get_job(namespace, name))
            log.info("job %s (content %s): adopted the existing Job %s", spec.key, spec.content_guid, name)
            return self._handle(job)
        jobs.put(job)
        log.info(
            "job %s (content %s): created Job %s/%s (image %s)",
            spec.key, spec.content_guid, self.config.namespace, name,
            manifest["spec"]["template"]["spec"]["containers"][0]["image"],
        )
        return self._handle(job)

    def _issue_tokens(self, spec: JobSpec) -> dict[str, str]:
        """Without a shared volume: the job's fetch and upload tokens, by Secret key."""
        paths, uploads = transfers(spec, self.config)
        if not paths:
            return {}
        if self.tokens is None or not self.config.transfer_url:
            raise BackendError("TransferUnavailable", "Pods cannot fetch their files: this server issues no "
                               "transfer tokens (set kubernetes_transfer_url).")
        config = self.config
        tokens = {fetch_token_key(spec): self.tokens.issue(
            spec.key, spec.content_guid, "fetch", [None if scratch(path, config) else path for path, _ in paths],
            config.transfer_token_ttl_seconds)}
        for index, path in enumerate(uploads):
            tokens[upload_token_key(spec, index)] = self.tokens.issue(  # a venv links its interpreter
                spec.key, spec.content_guid, "upload", [path], config.transfer_upload_ttl_seconds,
                absolute_links=spec.kind == "build")
        self._token_keys[spec.key] = (spec.content_guid, list(tokens))
        return tokens

    def _drop_tokens(self, key: str) -> None:
        """The job ended: its tokens allow nothing more, and leave its content's Secret."""
        if self.tokens is not None:
            self.tokens.revoke(key)
        owner = self._token_keys.pop(key, None)
        if owner is not None and self._client is not None:
            client, (guid, keys) = self._client, owner

            async def remove() -> None:
                try:
                    await self._put_secret_values(client, guid, dict.fromkeys(keys))
                except BackendError as error:
                    log.warning("job %s: could not remove its transfer tokens from the Secret: %s", key, error.detail)
            self._background(remove())

    async def _put_secret_values(self, client: KubeClient, content_guid: str,
                                 values: Mapping[str, str | None]) -> None:
        """Set (``None``: remove) keys of the content's Secret, creating it when missing.
        A merge patch first (the usual case: it exists), so Podium never reads Secrets."""
        namespace, name = self.config.namespace, content_secret_name(content_guid)
        for _ in range(3):  # a create racing another server's: patch again
            try:
                await client.patch_secret(namespace, name, {"data": secret_data(values)})
                return
            except KubeApiError as error:
                if error.status != 404:
                    raise _backend_error(error, f"The Secret of content {content_guid} could not be updated") \
                        from error
            kept = {key: value for key, value in values.items() if value is not None}
            if not kept:  # only removals, and no Secret: nothing to do (never make an empty one)
                return
            try:
                await client.create_secret(namespace, content_secret_manifest(content_guid, kept, self.config))
                log.info("content %s: created its Secret %s/%s", content_guid, namespace, name)
                return
            except KubeApiError as error:
                if error.status != 409:
                    raise _backend_error(error, f"The Secret of content {content_guid} could not be created") \
                        from error
        raise BackendError("Conflict", f"The Secret of content {content_guid} kept changing; try again.")

    async def update_content_secrets(self, content_guid: str, changes: Mapping[str, str | None]) -> None:
        """The content's variables changed (``None``: removed): its Secret follows at once,
        so no value removed in Podium stays in the cluster. Running pods keep the values
        they started with, as on Connect."""
        if not changes:
            return
        client, _, _ = await self._ready()
        await self._put_secret_values(client, content_guid, {
            secret_key("run", name): value for name, value in changes.items()})
        log.info("content %s: updated its Secret (%d variables changed)", content_guid, len(changes))

    async def forget_content(self, content_guid: str) -> None:
        """The content is deleted: delete its Secret (gone already is fine)."""
        client, _, _ = await self._ready()
        with _gone_ok():
            await client.delete_secret(self.config.namespace, content_secret_name(content_guid))
        log.info("content %s: deleted its Secret", content_guid)

    async def status(self, handle: JobHandle) -> JobStatus:
        self._check(handle)
        if handle.key in self._final:
            return self._final[handle.key]
        client, _, _ = await self._ready()
        job, pod = self._objects(handle)
        if job is None:
            if pod is not None:  # an orphaned or still-terminating pod
                status = _pod_status(pod)
            elif handle.data.get("uid"):
                status = JobStatus(JobState.STOPPED, reason="Stopped",
                                   message="the Job no longer exists in the cluster")
            else:
                return JobStatus(JobState.UNKNOWN, reason="NotFound", message="no such job")
        else:
            status = _job_failure(job) or (_pod_status(pod) if pod else None) \
                or await self._events_status(client, job) or JobStatus(JobState.PENDING)
        if status.reason in FAIL_FAST | TRANSIENT and status.message \
                and not status.message.startswith(status.reason):
            # Shown as-is in deploy tasks and the dashboard: name the Kubernetes reason.
            status = dataclasses.replace(status, message=f"{status.reason}: {status.message}")
        if not status.state.active:
            self._final[handle.key] = status
            self._drop_tokens(handle.key)
            if pod is not None and _container_started(pod):
                self._background(self._keep_log(client, handle.key, pod))
            if status.state is JobState.FAILED:
                log.info("job %s: failed: %s (%s)", handle.key, status.reason, status.message)
            if job is not None and status.reason in FAIL_FAST and not _job_finished(job):
                # The cluster still counts the Job as active (it would keep pulling or
                # scheduling): delete it so the job the backend calls failed never runs.
                self._background(self._delete_failed(client, handle, job))
        return status

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _keep_log(self, client: KubeClient, key: str, pod: dict[str, Any]) -> None:
        """Save the pod's log for after the pod is gone (once per job)."""
        if self.kept_logs is None or self.kept_logs.has(key):
            return
        try:
            lines = await asyncio.wait_for(self._read_log(client, pod), KEEP_LOG_TIMEOUT_SECONDS)
            await asyncio.to_thread(self.kept_logs.save, key, lines)
        except (KubeApiError, TimeoutError, OSError) as error:
            log.warning("job %s: could not keep its log: %s", key, error)

    async def _read_log(self, client: KubeClient, pod: dict[str, Any]) -> list[str]:
        return [raw async for raw in client.pod_log(pod["metadata"]["namespace"], pod["metadata"]["name"], False)]

    async def _delete_failed(self, client: KubeClient, handle: JobHandle, job: dict[str, Any]) -> None:
        try:
            with _gone_ok():
                await client.delete_job(job["metadata"]["namespace"], job["metadata"]["name"])
            _, pod = self._objects(handle)
            if pod is not None:
                with _gone_ok():
                    await client.delete_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], 1)
        except BackendError as error:
            log.warning("job %s: could not delete the failed Job: %s", handle.key, error.detail)

    async def _events_status(self, client: KubeClient, job: dict[str, Any]) -> JobStatus | None:
        """PENDING with ``FailedCreate`` while the Job controller cannot create the pod."""
        name, uid = job["metadata"]["name"], job["metadata"].get("uid", "")
        cached = self._events.get(uid)
        if cached is None or time.monotonic() - cached[0] > EVENTS_TTL_SECONDS:
            try:
                events = await client.list_events(
                    self.config.namespace, f"involvedObject.name={name},involvedObject.kind=Job"
                )
            except KubeApiError as error:
                log.warning("job %s: could not list events: %s", name, error)
                events = []
            cached = self._events[uid] = (time.monotonic(), events)
        failed = [event for event in cached[1] if event.get("reason") == "FailedCreate"
                  and event.get("involvedObject", {}).get("uid") in (uid, None)]
        if failed:  # the Job controller retries; the newest says why it still cannot
            failed.sort(key=lambda event: str(event.get("lastTimestamp") or ""))
            return JobStatus(JobState.PENDING, reason="FailedCreate", message=str(failed[-1].get("message", "")))
        return None

    async def address(self, handle: JobHandle) -> tuple[str, int] | None:
        status = await self.status(handle)
        if status.state is not JobState.RUNNING:
            return None
        job, pod = self._objects(handle)
        if pod is None or pod["metadata"].get("labels", {}).get(LABEL_KIND) != "run":
            return None
        pod_status = pod.get("status", {})
        ports = [int(port["containerPort"]) for port in pod["spec"]["containers"][0].get("ports") or []]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod_status.get("conditions") or [])
        meta = job["metadata"] if job is not None else {}
        if meta.get("labels", {}).get(LABEL_WARM) == "claimed":  # the job's port, at once (see .warmpool)
            ports, ready = [int(meta.get("annotations", {}).get(ANNOTATION_PORT, 0))], True
        if not ready or not pod_status.get("podIP") or not ports or not ports[0] \
                or pod["metadata"].get("deletionTimestamp"):
            return None
        return (str(pod_status["podIP"]), ports[0])

    async def logs(self, handle: JobHandle, follow: bool = False) -> AsyncIterator[LogLine]:
        self._check(handle)
        client, _, pods = await self._ready()
        while True:
            change = pods.change()
            _, pod = self._objects(handle)
            started = pod is not None and _container_started(pod)
            if started or not follow or not (await self.status(handle)).state.active:
                break
            await pods.wait_changed(1.0, change)
        if pod is None or not started:
            if self.kept_logs is not None:  # the pod is gone: the log Podium kept
                for raw in self.kept_logs.read(handle.key):
                    stamp, _, data = raw.partition(" ")
                    yield LogLine("stdout", _parse_time(stamp) or datetime.now(UTC), data)
            return
        try:
            async for raw in client.pod_log(self.config.namespace, pod["metadata"]["name"], follow):
                stamp, _, data = raw.partition(" ")
                yield LogLine("stdout", _parse_time(stamp) or datetime.now(UTC), data)
        except KubeApiError as error:
            if error.status not in (400, 404):  # gone, or never started: nothing to read
                raise _backend_error(error, f"Logs of job {handle.key} could not be read") from error
        # The log stream ends when the container does; the watch may report it a moment
        # later. Following ends once the job has ended, so wait for the cache to agree.
        deadline = time.monotonic() + LOG_END_WAIT_SECONDS
        while follow and time.monotonic() < deadline:
            change = pods.change()
            if not (await self.status(handle)).state.active:
                break
            await pods.wait_changed(0.5, change)

    async def stop(self, handle: JobHandle, grace_seconds: float) -> None:
        self._check(handle)
        status = await self.status(handle)
        if not status.state.active:
            return
        client, jobs, pods = await self._ready()
        job, pod = self._objects(handle)
        namespace = str(handle.data.get("namespace") or self.config.namespace)
        log.info("job %s: stopping (grace %g s)", handle.key, grace_seconds)
        if pod is not None and _container_started(pod):  # its log goes with the pod
            await self._keep_log(client, handle.key, pod)
        if job is not None:
            with _gone_ok():
                await client.delete_job(namespace, job["metadata"]["name"])
        grace = max(1, math.ceil(grace_seconds))
        for candidate in self._pods_of(handle):
            with _gone_ok():
                await client.delete_pod(namespace, candidate["metadata"]["name"], grace)
        deadline = time.monotonic() + grace + STOP_TIMEOUT_SECONDS
        while True:
            changes = [jobs.change(), pods.change()]
            job, pod = self._objects(handle)
            if job is None and pod is None:
                break
            if time.monotonic() > deadline:
                raise BackendError("StopFailed", f"Job {handle.key} was not gone in time.")
            waits = [asyncio.ensure_future(change.wait()) for change in changes]
            await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
        self._drop_tokens(handle.key)
        self._final[handle.key] = JobStatus(
            JobState.STOPPED, reason="Stopped", message="stopped",
            started_at=status.started_at, finished_at=datetime.now(UTC),
        )

    async def list_jobs(self) -> list[JobHandle]:
        _, jobs, _ = await self._ready()
        handles = []
        for job in sorted(jobs.objects.values(), key=lambda j: str(j["metadata"].get("creationTimestamp"))):
            labels = job["metadata"].get("labels", {})
            if job["metadata"].get("deletionTimestamp") or LABEL_KEY not in labels:
                continue
            if labels.get(LABEL_NODE, self.config.node) != self.config.node:
                continue  # another replica's: it alone adopts or deletes it
            handle = self._handle(job)
            if (await self.status(handle)).state.active:
                handles.append(handle)
        return handles

    async def watching(self, timeout: float = 5.0) -> str | None:
        """Whether the Jobs and Pods watches are up: ``None``, or what is wrong (for a
        readiness probe: a node that cannot see the cluster should get no traffic)."""
        try:
            _, jobs, pods = await asyncio.wait_for(self._ready(), timeout)
        except (TimeoutError, BackendError) as exc:
            return f"the Kubernetes API server is not reachable ({exc.__class__.__name__})"
        for reflector in (jobs, pods):
            if reflector.error is not None:
                return f"the Kubernetes {reflector.kind} watch is failing (HTTP {reflector.error.status})"
        return None

    async def close(self) -> None:
        """Stop watching and close the connection pool; Jobs keep running."""
        if self._loop is asyncio.get_running_loop():
            if self.pool is not None:
                await self.pool.stop()  # this node's unclaimed warm pods go
            if self._cleanups:
                await asyncio.gather(*self._cleanups, return_exceptions=True)
            for reflector in (self._jobs, self._pods):
                if reflector is not None:
                    await reflector.stop()
            if self._client is not None:
                await self._client.close()
        self._loop, self._client, self._jobs, self._pods, self.pool = None, None, None, None, None


@contextlib.contextmanager
def _gone_ok() -> Any:
    try:
        yield
    except KubeApiError as error:
        if error.status != 404:
            raise _backend_error(error, "Could not delete") from error


def _backend_error(error: KubeApiError, what: str = "The Kubernetes API server refused") -> BackendError:
    reason = {0: "ClusterUnavailable", 403: "Forbidden", 409: "Conflict", 422: "Invalid"}.get(
        error.status, "KubernetesError"
    )
    return BackendError(reason, f"{what}: {error.message or error.reason}",
                        status=503 if error.status == 0 else 500, detail=str(error))


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        text = str(value).replace("Z", "+00:00")
        if "." in text:  # RFC 3339 with nanoseconds: Python takes at most microseconds
            head, _, tail = text.partition(".")
            digits = "".join(ch for ch in tail if ch.isdigit())
            text = f"{head}.{digits[:6]}{tail[len(digits):]}"
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return dict(statuses[0].get("state") or {}) if statuses else {}


def _container_started(pod: dict[str, Any]) -> bool:
    state = _container_state(pod)
    return "running" in state or "terminated" in state


def _job_finished(job: dict[str, Any]) -> bool:
    return any(condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True"
               for condition in job.get("status", {}).get("conditions") or [])


def _job_failure(job: dict[str, Any]) -> JobStatus | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True" \
                and condition.get("reason") == "DeadlineExceeded":
            return JobStatus(JobState.FAILED, reason="DeadlineExceeded",
                             message=str(condition.get("message") or "the job ran past its deadline"))
    return None


def _init_failure(pod: dict[str, Any]) -> JobStatus | None:
    """FAILED when an init container (fetching the job's files) ended in error: with
    ``restartPolicy: Never`` the pod never starts its container."""
    for init in pod.get("status", {}).get("initContainerStatuses") or []:
        ended = (init.get("state") or {}).get("terminated") or {}
        if ended and int(ended.get("exitCode", 0)) != 0:
            return JobStatus(JobState.FAILED, int(ended["exitCode"]), "InitFailed",
                             f"init container {init.get('name')} exited with code {ended['exitCode']}"
                             f"{': ' + str(ended['message']) if ended.get('message') else ''}")
    return None


def _pod_status(pod: dict[str, Any]) -> JobStatus:
    status = pod.get("status", {})
    phase = status.get("phase")
    failed_init = _init_failure(pod)
    if failed_init is not None:
        return failed_init
    state = _container_state(pod)
    if phase in (None, "Pending") and not {"running", "terminated"} & set(state):
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING | TRANSIENT_WAITING:
            final = waiting["reason"] in FATAL_WAITING
            return JobStatus(JobState.FAILED if final else JobState.PENDING, reason=str(waiting["reason"]),
                             message=str(waiting.get("message") or waiting["reason"]))
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return JobStatus(JobState.PENDING, reason="Unschedulable",
                                 message=str(condition.get("message") or "no node can run the job"))
        return JobStatus(JobState.PENDING)
    if "running" in state and phase not in ("Succeeded", "Failed"):
        return JobStatus(JobState.RUNNING, started_at=_parse_time(state["running"].get("startedAt")))
    ended = state.get("terminated")
    if phase == "Failed" and status.get("reason") == "DeadlineExceeded":
        return JobStatus(JobState.FAILED, reason="DeadlineExceeded", message=str(status.get("message", "")))
    if not ended:
        if phase in ("Succeeded", "Failed"):
            return JobStatus(JobState.FAILED, reason="Lost", message="the pod ended without an exit status")
        return JobStatus(JobState.PENDING)
    code = int(ended.get("exitCode", 0))
    times = {"started_at": _parse_time(ended.get("startedAt")), "finished_at": _parse_time(ended.get("finishedAt"))}
    reason = ended.get("reason")
    if code == 0 and phase == "Succeeded":
        return JobStatus(JobState.SUCCEEDED, 0, "Completed", "exited with code 0", **times)
    if reason == "OOMKilled":
        return JobStatus(JobState.FAILED, code, "OOMKilled",
                         "killed for using more memory than its limit", **times)
    if reason in ("StartError", "ContainerCannotRun"):
        return JobStatus(JobState.FAILED, code, "StartError", str(ended.get("message") or reason), **times)
    if 128 < code <= 128 + 64:
        return JobStatus(JobState.FAILED, code, "Signalled",
                         f"killed by signal {_signal_name(code - 128)}", **times)
    return JobStatus(JobState.FAILED, code, "Exited", f"exited with code {code}", **times)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
