"""The warm pool's manager: refill, claim, hand-off, cleanup (design: :mod:`.warmpool`).

Lifecycle:

- :meth:`WarmPool.start` begins the refill loop (``warm_pool_size`` > 0), or, with the
  setting at 0, discards once every unclaimed warm pod the instance left behind.
- :meth:`WarmPool.claim` runs in :meth:`KubernetesBackend.launch` for a run job of the
  pool's shape: it takes one of the image's warm pods whose container runs (a label
  patch conditional on the Job's ``resourceVersion``; a 409 means another node took
  it: the next one is tried), hands it the job, and returns the claimed Job; ``None``
  when no warm pod is ready or the hand-off failed (the claimed Job is then deleted),
  so the caller creates a normal Job. Every claim adds the image to the pooled ones.
- :meth:`WarmPool.stop` ends the loop and discards this node's unclaimed pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import socket
from collections.abc import Coroutine, Iterator
from typing import Any

from podium.runtime.base import JobSpec
from podium.runtime.kubernetes.client import KubeApiError, KubeClient
from podium.runtime.kubernetes.manifests import (
    LABEL_CONTENT,
    LABEL_KEY,
    LABEL_NODE,
    KubernetesJobConfig,
    data_paths,
    job_image,
    run_port,
    scratch,
)
from podium.runtime.kubernetes.warmpool import (
    ANNOTATION_PORT,
    LABEL_POOL,
    LABEL_WARM,
    control_port,
    pod_token,
    pool_label,
    warm_job_manifest,
    warm_job_name,
    warm_secret_manifest,
)
from podium.runtime.kubernetes.watch import Reflector
from podium.runtime.transfer import pack

log = logging.getLogger(__name__)

REFILL_SECONDS = 5.0  # a refill runs at every change of the Jobs cache, else this often
HANDOFF_TIMEOUT_SECONDS = 10.0  # for a running waiter to listen (it does in milliseconds)
STOP_TIMEOUT_SECONDS = 10.0  # for a refill under way when the node stops
PUSH_TIMEOUT_SECONDS = 60.0  # for each read or write of one hand-off
LABEL_JOB_NAME = "job-name"  # set by the Job controller on its pods
RESERVED_ENV = ("PORT", "POD_IP")


class WarmPool:
    def __init__(self, client: KubeClient, jobs: Reflector, pods: Reflector, config: KubernetesJobConfig) -> None:
        self.client = client
        self.jobs = jobs
        self.pods = pods
        self.config = config
        self.images: set[str] = {job_image(None, config)}
        self._key = config.warm_pool_key or secrets.token_bytes(32)  # without one: this node's pods only
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    # --- what the cache says --------------------------------------------------------

    def unclaimed(self, image: str | None = None) -> list[dict[str, Any]]:
        """Unclaimed warm Jobs (of ``image``'s pool), not being deleted, by name."""
        wanted = pool_label(image) if image is not None else None
        found = [job for job in self.jobs.objects.values()
                 if (pool := job["metadata"].get("labels", {}).get(LABEL_POOL))
                 and (wanted is None or pool == wanted) and not job["metadata"].get("deletionTimestamp")]
        return sorted(found, key=lambda job: str(job["metadata"]["name"]))

    def pod_of(self, job: dict[str, Any]) -> dict[str, Any] | None:
        name = job["metadata"]["name"]
        pods = [pod for pod in self.pods.objects.values()
                if pod["metadata"].get("labels", {}).get(LABEL_JOB_NAME) == name]
        return pods[-1] if pods else None

    def ready_pod(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The pod of warm Job ``job`` when its waiter runs (claimable), else None."""
        pod = self.pod_of(job)
        if pod is None or pod["metadata"].get("deletionTimestamp") or not pod.get("status", {}).get("podIP"):
            return None
        statuses = pod["status"].get("containerStatuses") or []
        running = bool(statuses) and "running" in (statuses[0].get("state") or {})
        return pod if running and pod["status"].get("phase") == "Running" else None

    def _ended(self, job: dict[str, Any]) -> bool:
        pod = self.pod_of(job)
        conditions = job.get("status", {}).get("conditions") or []
        return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions) \
            or (pod is not None and pod.get("status", {}).get("phase") in ("Succeeded", "Failed"))

    def _image(self, job: dict[str, Any]) -> str:
        return str(job["spec"]["template"]["spec"]["containers"][0]["image"])

    # --- claims ---------------------------------------------------------------------

    async def _take(self, job: dict[str, Any], labels: dict[str, str | None],
                    annotations: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Relabel unclaimed warm Job ``job`` if nobody changed it since this node saw it;
        None when another node took it first (or it is gone). A 409 with the Job still
        unclaimed (the Job controller updated its status meanwhile) tries again with the
        Job as it is now."""
        meta = job["metadata"]
        for _ in range(3):
            patch: dict[str, Any] = {"metadata": {"resourceVersion": meta["resourceVersion"],
                                                  "labels": {LABEL_POOL: None, **labels}}}
            if annotations:
                patch["metadata"]["annotations"] = annotations
            try:
                taken = await self.client.patch_job(self.config.namespace, meta["name"], patch)
            except KubeApiError as error:
                if error.status == 404:
                    return None
                if error.status != 409:
                    raise
                try:
                    current = await self.client.get_job(self.config.namespace, meta["name"])
                except KubeApiError as again:
                    if again.status == 404:
                        return None
                    raise
                fresh = current["metadata"]
                if fresh.get("uid") != meta.get("uid") or LABEL_POOL not in fresh.get("labels", {}) \
                        or fresh.get("deletionTimestamp"):
                    return None  # another node's claim came first
                meta = fresh
                continue
            self.jobs.replace(taken)
            return taken
        return None

    async def claim(self, spec: JobSpec) -> dict[str, Any] | None:
        """A warm Job now running ``spec`` (its pod has its assignment), or None."""
        image = job_image(spec.image, self.config)
        if image not in self.images:
            self.images.add(image)
            self._wake.set()
        candidates = [job for job in self.unclaimed(image) if self.ready_pod(job) is not None]
        random.shuffle(candidates)  # nodes claiming at once mostly try different pods
        labels: dict[str, str | None] = {LABEL_KEY: spec.key, LABEL_CONTENT: spec.content_guid,
                                         LABEL_WARM: "claimed"}
        if self.config.node:
            labels[LABEL_NODE] = self.config.node
        for job in candidates:
            claimed = await self._take(job, labels, {ANNOTATION_PORT: str(run_port(spec, self.config))})
            if claimed is None:
                continue
            pod = self.ready_pod(claimed)
            handed = pod is not None and await self._hand_off(spec, claimed, pod)
            self._wake.set()  # refill, once the hand-off no longer competes with it
            if pod is not None and handed:
                self._later(self._label_pod(spec, pod, labels))  # kubectl -l finds it; off the start's path
                log.info("job %s (content %s): claimed warm pod %s (image %s)",
                         spec.key, spec.content_guid, claimed["metadata"]["name"], image)
                return claimed
            with _quiet(f"job {spec.key}: could not delete the warm Job it failed to hand off"):
                await self.client.delete_job(self.config.namespace, claimed["metadata"]["name"])
        return None

    async def _label_pod(self, spec: JobSpec, pod: dict[str, Any], labels: dict[str, str | None]) -> None:
        with _quiet(f"job {spec.key}: could not label its pod"):
            await self.client.patch_pod(self.config.namespace, pod["metadata"]["name"],
                                        {"metadata": {"labels": {LABEL_POOL: None, **labels}}})

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_off(self, spec: JobSpec, job: dict[str, Any], pod: dict[str, Any]) -> bool:
        """Push the job and its files to the pod's waiter; True once it took them."""
        config = self.config
        paths = [path for path, _ in data_paths(spec, config)]
        env = {name: value for name, value in {**spec.env, **spec.secret_env}.items() if name not in RESERVED_ENV}
        env["PORT"] = str(run_port(spec, config))
        body = json.dumps({"key": spec.key, "command": list(spec.command), "env": env, "workdir": spec.workdir,
                           "paths": paths}).encode()
        token = pod_token(self._key, job["metadata"]["name"], job["metadata"]["uid"])
        files = tuple(None if scratch(path, config) else path for path in paths)
        ip, port = str(pod["status"]["podIP"]), control_port(config)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDOFF_TIMEOUT_SECONDS
        while True:
            try:
                line = await asyncio.to_thread(push_assignment, ip, port, token, body, files)
            except ConnectionRefusedError as error:  # the waiter not listening yet
                if loop.time() > deadline:
                    log.warning("job %s: warm pod %s did not take its assignment: %s",
                                spec.key, pod["metadata"]["name"], error)
                    return False
                await asyncio.sleep(0.05)
                continue
            except OSError as error:
                log.warning("job %s: handing off to warm pod %s failed: %s", spec.key, pod["metadata"]["name"], error)
                return False
            parts = line.split()
            if len(parts) > 1 and parts[1] == b"202":
                return True
            log.warning("job %s: warm pod %s refused its assignment: %r", spec.key, pod["metadata"]["name"], line[:80])
            return False

    # --- refill and cleanup -----------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="podium-k8s-warm-pool")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            change = self.jobs.change()
            try:
                await self.refill()
            except KubeApiError as error:
                log.warning("warm pool: refill failed: %s", error)
            except Exception:  # the loop must outlive any one failure; tried again soon
                log.exception("warm pool: refill failed")
            if self.config.warm_pool_size <= 0:
                return  # the setting is off: one cleanup was all
            self._wake.clear()
            waits = [asyncio.ensure_future(event.wait()) for event in (change, self._wake, self._stopping)]
            await asyncio.wait(waits, timeout=REFILL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

    async def refill(self) -> None:
        """N unclaimed pods per pooled image: ended ones discarded, missing ones made,
        extra ones (the setting dropped, two nodes filled at once) discarded."""
        size = max(0, self.config.warm_pool_size)
        self.images |= {self._image(job) for job in self.unclaimed()}
        for image in sorted(self.images):
            live = []
            for job in self.unclaimed(image):
                if self._ended(job):
                    await self.discard(job, "its pod ended")
                else:
                    live.append(job)
            for _ in range(size - len(live)):
                await self._create(image)
            for job in live[size:]:
                await self.discard(job, f"more than {size} in the pool")

    async def _create(self, image: str) -> None:
        name = warm_job_name(image, secrets.token_hex(3))
        try:
            job = await self.client.create_job(self.config.namespace, warm_job_manifest(image, name, self.config))
        except KubeApiError as error:
            if error.status == 409:
                return
            raise
        self.jobs.put(job)
        try:
            await self.client.create_secret(self.config.namespace, warm_secret_manifest(
                job, pod_token(self._key, name, job["metadata"]["uid"]), self.config))
        except KubeApiError:
            await self.discard(job, "its token could not be stored")
            raise
        log.info("warm pool: created %s (image %s)", name, image)

    async def discard(self, job: dict[str, Any], why: str) -> None:
        """Take an unclaimed warm Job out of the pool, then delete it (never one another
        node claimed meanwhile: the take is conditional)."""
        taken = await self._take(job, {})
        if taken is not None:
            log.info("warm pool: deleting %s: %s", job["metadata"]["name"], why)
            with _quiet(f"warm pool: could not delete {job['metadata']['name']}"):
                await self.client.delete_job(self.config.namespace, job["metadata"]["name"])

    async def stop(self, discard: bool = True) -> None:
        """End the refill loop; discard this node's unclaimed pods (unless not ``discard``)."""
        if self._task is not None:  # a refill under way ends first: no pod made half
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_SECONDS)
            except Exception:  # it did not end in time (or failed): cut short
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if not discard:
            return
        own = [job for job in self.unclaimed()
               if job["metadata"].get("labels", {}).get(LABEL_NODE) == self.config.node]
        for job in own:
            try:
                await self.discard(job, "this node stops")
            except KubeApiError as error:
                log.warning("warm pool: could not discard %s: %s", job["metadata"]["name"], error)
        if own:
            log.info("warm pool: discarded %d unclaimed pods", len(own))


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Log a failed best-effort API call instead of raising it (gone is fine)."""
    try:
        yield
    except KubeApiError as error:
        if error.status != 404:
            log.warning("%s: %s", what, error)


def push_assignment(ip: str, port: int, token: str, job: bytes, files: tuple[str | None, ...]) -> bytes:
    """One hand-off (blocking, in a thread): the request, the job, a tar of its files
    streamed from the data dir, then the waiter's status line."""
    with socket.create_connection((ip, port), timeout=PUSH_TIMEOUT_SECONDS) as sock, \
            sock.makefile("wb") as out, sock.makefile("rb") as reader:
        out.write(f"POST /assign HTTP/1.1\r\nHost: {ip}:{port}\r\nAuthorization: Bearer {token}\r\n"
                  "Content-Type: application/x-podium-assignment\r\nConnection: close\r\n\r\n".encode()
                  + len(job).to_bytes(8, "big") + job)
        pack(files, out)
        out.flush()
        sock.shutdown(socket.SHUT_WR)
        return reader.readline(4096)
