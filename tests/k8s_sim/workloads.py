"""The simulated cluster's controllers: the Job controller, the scheduler, the kubelet,
the garbage collector and the TTL controller, over one :class:`~.store.Store`.

The kubelet runs each pod's container as a local process through Podium's own
:class:`~podium.runtime.LocalBackend` (sessions, SIGTERM → SIGKILL, cgroup limits,
OOM reporting); every pod gets its own loopback IP (``127.10.x.y``), passed to the
process through the downward API (``$POD_IP``). With ``enforce_mounts`` the process
runs in the local bubblewrap sandbox as the pod's ``runAsUser``/``runAsGroup``, seeing
only the image (the host's system directories and the image's own) and the pod's
volume mounts: a PVC ``subPath`` mount is the claim's host folder (``volumes``) joined
with the sub path, and must be mounted at that same path (the sandbox binds paths
where they are); ``/tmp`` is private; ``readOnly`` mounts are read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.runtime import JobHandle, JobSpec, JobState, LocalBackend, Resources
from podium.runtime.base import Sandbox

from .podsecurity import ENFORCE_LABEL, restricted_violations
from .scheduling import failed_scheduling_message, node, refusal, requests_of
from .store import Store, now

log = logging.getLogger(__name__)
NODE = "sim-node"
NODE_CPU = 2.0
NODE_MEMORY = 8 * 2**30
PROBE_PERIOD = 0.1  # faster than the real 1 s minimum, to keep tests quick
BACKOFF_AFTER_PULL = 0.5
RETRY_SECONDS = 0.5  # the Job controller's and the kubelet's retries (real: with backoff)

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTORS = {None: 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity as a number; ValueError when it does not parse."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"quantities must match the regular expression {_QUANTITY.pattern!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_references(text: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion in command and args (from the container's
    env): a defined variable is replaced, an undefined reference stays as written,
    ``$$`` is ``$``. (Env values referring to earlier env entries are not expanded.)"""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


@dataclass
class PodRun:
    ip: str
    handle: JobHandle | None = None
    task: asyncio.Task[None] | None = None
    stops: list[asyncio.Task[None]] = field(default_factory=list)


class MountError(Exception):
    """A pod's volumes cannot be given to it (CreateContainerConfigError)."""


class Workloads:
    def __init__(self, store: Store, root: Path, images: set[str], volumes: dict[str, Path] | None = None,
                 image_dirs: tuple[str, ...] = (), enforce_mounts: bool = False) -> None:
        self.store = store
        self.root = root
        self.images = images
        self.volumes = volumes if volumes is not None else {}  # claim name -> host folder
        self.image_dirs = image_dirs  # what every image holds beyond the host's system dirs
        self.enforce_mounts = enforce_mounts
        # seconds between a pod's scheduling and its first container starting (image pull,
        # volume setup, a runtime copying files): what a warm pool saves (bench/k8s_warmpool.py)
        self.start_delay_seconds = 0.0
        self.local = LocalBackend(root / "kubelet")
        self.runs: dict[str, PodRun] = {}  # by pod uid
        self.problems: list[str] = []
        self._ips = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.waiting: dict[str, dict[str, Any]] = {}  # unschedulable pods by uid
        store.create("nodes", "", node(NODE, cpu=NODE_CPU, memory=NODE_MEMORY))

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("simulated cluster: controller failed")
            self.problems.append(repr(error))

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str, type_: str = "Warning") -> None:
        meta = obj["metadata"]
        self.store.create("events", meta["namespace"], {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}."},
            "involvedObject": {"apiVersion": obj.get("apiVersion", "v1"), "kind": kind,
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "sim"},
        })

    # --- Job controller ---------------------------------------------------------------

    def job_created(self, job: dict[str, Any]) -> None:
        if not self._create_pod(job):
            self.spawn(self._retry_create(job))

    async def _retry_create(self, job: dict[str, Any]) -> None:
        """The Job controller tries again while the Job exists (a service account may be
        created, an admission rule relaxed)."""
        meta = job["metadata"]
        while self.store.get("jobs", meta["namespace"], meta["name"]) is job:
            await asyncio.sleep(RETRY_SECONDS)
            if self.store.get("jobs", meta["namespace"], meta["name"]) is job and self._create_pod(job):
                return

    def _create_pod(self, job: dict[str, Any]) -> bool:
        meta, spec = job["metadata"], job["spec"]
        namespace = meta["namespace"]
        template = copy.deepcopy(spec["template"])
        pod_spec = template["spec"]
        account = pod_spec.get("serviceAccountName") or "default"
        if account != "default" and self.store.get("serviceaccounts", namespace, account) is None:
            self.event(job, "Job", "FailedCreate",
                       f'Error creating: pods "{meta["name"]}-" is forbidden: error looking up service '
                       f'account {namespace}/{account}: serviceaccount "{account}" not found')
            return False
        labels_of_namespace = ((self.store.get("namespaces", "", namespace) or {}).get("metadata") or {}) \
            .get("labels") or {}
        if labels_of_namespace.get(ENFORCE_LABEL) == "restricted":
            violations = restricted_violations(pod_spec)
            if violations:
                self.event(job, "Job", "FailedCreate",
                           f'Error creating: pods "{meta["name"]}-" is forbidden: violates PodSecurity '
                           f'"restricted:latest": {"; ".join(violations)}')
                return False
        pod_spec.setdefault("serviceAccountName", account)
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        labels = {**template.get("metadata", {}).get("labels", {}),
                  "job-name": meta["name"], "controller-uid": meta["uid"],
                  "batch.kubernetes.io/job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": meta["uid"]}
        pod = self.store.create("pods", namespace, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{meta['name']}-{secrets.token_hex(3)[:5]}", "labels": labels,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                              "uid": meta["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": pod_spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        })
        job["status"] = {"active": 1, "startTime": now()}
        self.store.update("jobs", job)
        if spec.get("activeDeadlineSeconds"):
            self.spawn(self._deadline(job, float(spec["activeDeadlineSeconds"])))
        self.schedule(pod)
        return True

    async def _deadline(self, job: dict[str, Any], seconds: float) -> None:
        await asyncio.sleep(seconds)
        if job["status"].get("active") and self.store.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"]) is job:
            self.finish_job(job, failed=True, reason="DeadlineExceeded",
                            message="Job was active longer than specified deadline")
            for pod in self.pods_of(job):
                self.delete_pod(pod, 0)

    def pods_of(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return [pod for pod in self.store.items("pods", job["metadata"]["namespace"])
                if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])]

    def finish_job(self, job: dict[str, Any], failed: bool, reason: str, message: str) -> None:
        if any(c["type"] in ("Complete", "Failed") for c in job["status"].get("conditions", [])):
            return
        stamp = now()
        kinds = ("FailureTarget", "Failed") if failed else ("SuccessCriteriaMet", "Complete")
        job["status"].update(active=0, ready=0, conditions=[
            {"type": kind, "status": "True", "reason": reason, "message": message,
             "lastProbeTime": stamp, "lastTransitionTime": stamp} for kind in kinds
        ])
        job["status"]["failed" if failed else "succeeded"] = 1
        if not failed:
            job["status"]["completionTime"] = stamp
        self.store.update("jobs", job)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            self.spawn(self._ttl(job, float(ttl)))

    async def _ttl(self, job: dict[str, Any], seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.store.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"]) is job:
            self.delete_job(job, "Background")

    def pod_ended(self, pod: dict[str, Any]) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            job = self.store.get("jobs", pod["metadata"]["namespace"], ref["name"])
            if job is None or job["metadata"]["uid"] != ref["uid"]:
                continue
            if pod["status"]["phase"] == "Succeeded":
                self.finish_job(job, False, "CompletionsReached", "Reached expected number of succeeded pods")
            else:
                self.finish_job(job, True, "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def delete_job(self, job: dict[str, Any], propagation: str | None) -> None:
        """``batch/v1`` Jobs orphan their pods unless told otherwise, as the API server does."""
        pods = self.pods_of(job)
        self.store.remove("jobs", job)
        for secret in self.store.items("secrets", job["metadata"]["namespace"]):
            if any(ref.get("uid") == job["metadata"]["uid"] for ref in secret["metadata"].get("ownerReferences") or []):
                self.store.remove("secrets", secret)  # the garbage collector: owned by the Job
        for pod in pods:
            if propagation in ("Background", "Foreground"):
                self.delete_pod(pod, None)
            else:
                pod["metadata"]["ownerReferences"] = []
                self.store.update("pods", pod)

    # --- scheduler and kubelet --------------------------------------------------------

    def _all_pods(self) -> list[dict[str, Any]]:
        return [pod for (kind, _), bucket in list(self.store.objects.items()) if kind == "pods"
                for pod in bucket.values()]

    def _used(self, node_name: str) -> dict[str, float]:
        used: dict[str, float] = {}
        for other in self._all_pods():
            if other["spec"].get("nodeName") == node_name and other["status"].get("phase") not in ("Succeeded", "Failed"):
                for resource, amount in requests_of(other, parse_quantity).items():
                    used[resource] = used.get(resource, 0.0) + amount
        return used

    def schedule(self, pod: dict[str, Any]) -> None:
        """Bind ``pod`` to the first node that takes it, or mark it Unschedulable and keep
        it for :meth:`reschedule` (a node added, a pod ended)."""
        nodes = self.store.items("nodes", "")
        missing = [volume["persistentVolumeClaim"]["claimName"] for volume in pod["spec"].get("volumes") or []
                   if "persistentVolumeClaim" in volume
                   and volume["persistentVolumeClaim"]["claimName"] not in self.volumes]
        reasons = []
        chosen = None
        if missing:
            message = f'persistentvolumeclaim "{missing[0]}" not found'
        else:
            for candidate in nodes:
                why = refusal(pod, candidate, self._used(candidate["metadata"]["name"]), parse_quantity)
                if why is None:
                    chosen = candidate
                    break
                reasons.append(why)
            message = failed_scheduling_message(reasons, len(nodes))
        stamp = now()
        if chosen is None:
            old = (pod["status"].get("conditions") or [{}])[0]
            if old.get("reason") != "Unschedulable" or old.get("message") != message:
                pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": message, "lastTransitionTime": stamp}]
                self.store.update("pods", pod)
                self.event(pod, "Pod", "FailedScheduling", message)
            self.waiting[pod["metadata"]["uid"]] = pod
            return
        self.waiting.pop(pod["metadata"]["uid"], None)
        pod["spec"]["nodeName"] = chosen["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        self._ips += 1
        ip = f"127.10.{self._ips // 250}.{self._ips % 250 + 1}"
        run = self.runs[pod["metadata"]["uid"]] = PodRun(ip)
        pod["status"].update(
            hostIP="127.0.0.1", podIP=ip, podIPs=[{"ip": ip}], startTime=stamp,
            conditions=[{"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
                        {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                         "lastTransitionTime": stamp}],
            containerStatuses=[self._container_status(container, {"waiting": {"reason": "ContainerCreating"}})],
        )
        self.store.update("pods", pod)
        run.task = asyncio.get_running_loop().create_task(self._guard(self._run(pod, run)))

    def reschedule(self) -> None:
        """Try the Unschedulable pods again, oldest first."""
        for uid, pod in list(self.waiting.items()):
            meta = pod["metadata"]
            if self.store.get("pods", meta["namespace"], meta["name"]) is not pod:
                self.waiting.pop(uid, None)
            else:
                self.schedule(pod)

    def add_node(self, obj: dict[str, Any]) -> dict[str, Any]:
        created = self.store.create("nodes", "", obj)
        self.reschedule()
        return created

    @staticmethod
    def _container_status(container: dict[str, Any], state: dict[str, Any], ready: bool = False,
                          started: bool = False) -> dict[str, Any]:
        return {"name": container["name"], "image": container["image"], "imageID": "",
                "ready": ready, "started": started, "restartCount": 0, "state": state}

    def _set(self, pod: dict[str, Any], state: dict[str, Any], ready: bool = False, phase: str | None = None) -> None:
        container = pod["spec"]["containers"][0]
        pod["status"]["containerStatuses"] = [self._container_status(container, state, ready, "running" in state)]
        for condition in pod["status"]["conditions"]:
            if condition["type"] == "Ready" and (condition["status"] == "True") != ready:
                condition.update(status="True" if ready else "False", lastTransitionTime=now())
                condition.pop("reason", None)
        if phase:
            pod["status"]["phase"] = phase
        self.store.update("pods", pod)

    async def _run(self, pod: dict[str, Any], run: PodRun) -> None:
        container = pod["spec"]["containers"][0]
        image = container["image"]
        if image not in self.images:
            message = f'failed to pull image "{image}": not found in the simulated cluster\'s images'
            self._set(pod, {"waiting": {"reason": "ErrImagePull", "message": message}})
            self.event(pod, "Pod", "Failed", message)
            await asyncio.sleep(BACKOFF_AFTER_PULL)
            self._set(pod, {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}})
            return
        if self.start_delay_seconds:
            self._set(pod, {"waiting": {"reason": "ContainerCreating"}})
            await asyncio.sleep(self.start_delay_seconds)
        for init in pod["spec"].get("initContainers") or []:  # one after the other, each to its end
            self._set_init(pod, init, {"running": {"startedAt": now()}})
            handle = run.handle = await self._launch(pod, init, run)  # deleting the pod stops it
            while (status := await self.local.status(handle)).state.active:
                await asyncio.sleep(0.03)
            code = status.exit_code if status.exit_code is not None else 137
            self._set_init(pod, init, {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                      "startedAt": now(), "finishedAt": now()}})
            if code != 0:  # restartPolicy Never: the pod fails, its container never starts
                self._set(pod, {"waiting": {"reason": "PodInitializing"}}, False, "Failed")
                self.pod_ended(pod)
                self.reschedule()
                return
        run.handle = await self._launch(pod, container, run)
        probe = container.get("readinessProbe") or {}
        running = False
        while True:
            status = await self.local.status(run.handle)
            if status.state is JobState.RUNNING:
                ready = await self._probe(run.ip, probe)
                stamp = (status.started_at.strftime("%Y-%m-%dT%H:%M:%SZ") if status.started_at else now())
                current = pod["status"]["containerStatuses"][0]
                if not running or current["ready"] != ready:
                    running = True
                    pod["status"]["phase"] = "Running"
                    self._set(pod, {"running": {"startedAt": stamp}}, ready)
            elif not status.state.active:
                self._terminated(pod, status)
                return
            await asyncio.sleep(PROBE_PERIOD if running and probe else 0.03)

    def _set_init(self, pod: dict[str, Any], init: dict[str, Any], state: dict[str, Any]) -> None:
        statuses = [s for s in pod["status"].get("initContainerStatuses") or [] if s["name"] != init["name"]]
        ended = "terminated" in state and state["terminated"]["exitCode"] == 0
        statuses.append(self._container_status(init, state, ended, "running" in state))
        pod["status"]["initContainerStatuses"] = statuses
        self._set(pod, {"waiting": {"reason": "PodInitializing"}})

    async def _launch(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> JobHandle:
        """Start one container's process (the kubelet retries until its Secrets and
        volumes are there)."""
        while True:
            try:
                env = self._env(pod, container, run)
                sandbox, sources = self._sandbox(pod, container) if self.enforce_mounts else (None, {})
                break
            except MountError as error:
                waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
                if pod["status"]["containerStatuses"][0]["state"] != waiting:
                    self._set(pod, waiting)
                    self.event(pod, "Pod", "Failed", f"Error: {error}")
                await asyncio.sleep(RETRY_SECONDS)
        limits = (container.get("resources") or {}).get("limits") or {}
        command = [expand_references(arg, env) for arg in [*container.get("command", []), *container.get("args", [])]]
        workdir = container.get("workingDir") or "/"
        if sandbox is not None and not sandbox.binds(workdir):  # a folder of the image: cd there inside
            # a container runtime creates a missing workingDir (here: where the job may write)
            command = ["/bin/sh", "-c", 'mkdir -p "$0" 2>/dev/null; cd "$0" && exec "$@"', workdir, *command]
            workdir = sandbox.read_only[0] if sandbox.read_only else "/"
        if sandbox is not None and sources:
            # emptyDir mounts: a host folder bound at another path, which the local sandbox
            # (binding paths where they are) cannot do; bubblewrap can, run directly here.
            command = self._bwrap(sandbox, sources, command, workdir)
            sandbox, workdir = None, "/"
        spec = JobSpec(
            key=f"{pod['metadata']['uid']}-{container['name']}", kind="build", content_guid=pod["metadata"]["name"],
            image=None, command=command, env=env, workdir=workdir, port=None, sandbox=sandbox,
            resources=Resources(
                cpu_limit=parse_quantity(limits["cpu"]) if "cpu" in limits else None,
                memory_limit=int(parse_quantity(limits["memory"])) if "memory" in limits else None,
            ),
        )
        return await self.local.launch(spec)

    def _bwrap(self, sandbox: Sandbox, sources: dict[str, str], command: list[str], workdir: str) -> list[str]:
        from podium.runtime.sandbox import bwrap_argv

        argv = bwrap_argv(sandbox, command, workdir, privileged=True, system_dirs=self.local.system_dirs,
                          bwrap=self.local.bwrap)
        argv = argv[: len(argv) - len(command) - 3] + command  # no setup script: the env is passed as is
        for index in range(len(argv) - 2):
            if argv[index] in ("--bind", "--ro-bind") and argv[index + 2] in sources:
                argv[index + 1] = sources[argv[index + 2]]
        return argv

    def _env(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> dict[str, str]:
        import base64

        env = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[item["name"]] = run.ip
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[item["name"]] = pod["metadata"]["name"]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.store.get("secrets", pod["metadata"]["namespace"], ref["name"])
                data = (secret or {}).get("data") or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise MountError(f'secret "{ref["name"]}" not found' if secret is None
                                     else f'couldn\'t find key {ref["key"]} in Secret {ref["name"]}')
                env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return env

    def _sandbox(self, pod: dict[str, Any], container: dict[str, Any]) -> tuple[Sandbox, dict[str, str]]:
        """What the pod's process may see: the image's folders, its mounts (PVC subPaths
        at their own host path; ``emptyDir`` folders of the pod, as the second value's
        mount path -> host folder), as the pod's uid/gid (never root here)."""
        claims = {volume["name"]: volume["persistentVolumeClaim"]["claimName"]
                  for volume in pod["spec"].get("volumes") or [] if "persistentVolumeClaim" in volume}
        empty = {volume["name"] for volume in pod["spec"].get("volumes") or [] if "emptyDir" in volume}
        read_only, writable, sources = list(self.image_dirs), [], {}
        for mount in container.get("volumeMounts") or []:
            if mount["mountPath"] == "/tmp":
                continue  # /tmp is the sandbox's own
            if mount["name"] in empty:
                host = self.root / "emptydir" / pod["metadata"]["uid"] / mount["name"] / mount.get("subPath", "")
                if not host.exists():  # the kubelet creates a missing subPath (a file stays one)
                    host.mkdir(parents=True)
                    host.chmod(0o777)
                sources[mount["mountPath"]] = str(host)
                (read_only if mount.get("readOnly") else writable).append(mount["mountPath"])
                continue
            if mount["name"] not in claims:
                continue  # other volume kinds are not modelled
            host = (self.volumes[claims[mount["name"]]] / mount.get("subPath", "")).resolve()
            if str(host) != mount["mountPath"]:
                raise MountError(f"the simulated kubelet mounts a volume only at its own host path: "
                                 f"{mount['mountPath']} is {host} on the host")
            host.mkdir(parents=True, exist_ok=True)  # the kubelet creates a missing subPath
            (read_only if mount.get("readOnly") else writable).append(str(host))
        context = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid, gid = int(context.get("runAsUser") or 65534), int(context.get("runAsGroup") or 65534)
        return Sandbox(uid, gid, tuple(dict.fromkeys(p for p in read_only if p not in writable)),
                       tuple(dict.fromkeys(writable))), sources

    @staticmethod
    async def _probe(ip: str, probe: dict[str, Any]) -> bool:
        if not probe:
            return True
        port = (probe.get("tcpSocket") or probe.get("httpGet") or {}).get("port")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(ip, int(port)), 1)
        except (OSError, TimeoutError, ValueError, TypeError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def _terminated(self, pod: dict[str, Any], status: Any) -> None:
        code = status.exit_code
        if status.reason == "StartError":
            code, reason = 128, "StartError"
        elif status.reason == "OOMKilled":
            code, reason = 137, "OOMKilled"
        else:
            code = 0 if code is None and status.state is JobState.SUCCEEDED else (code if code is not None else 137)
            reason = "Completed" if code == 0 else "Error"
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        terminated = {"exitCode": code, "reason": reason,
                      "startedAt": status.started_at.strftime(fmt) if status.started_at else now(),
                      "finishedAt": status.finished_at.strftime(fmt) if status.finished_at else now()}
        if reason == "StartError":
            terminated["message"] = status.message or "failed to start"
        self._set(pod, {"terminated": terminated}, False, "Succeeded" if code == 0 else "Failed")
        self.pod_ended(pod)
        self.reschedule()  # its requests are free again

    def delete_pod(self, pod: dict[str, Any], grace: int | None) -> None:
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        meta = pod["metadata"]
        if not meta.get("deletionTimestamp"):
            meta.update(deletionTimestamp=now(), deletionGracePeriodSeconds=grace)
            self.store.update("pods", pod)
        run = self.runs.get(meta["uid"])
        if run is None or run.handle is None or pod["status"].get("phase") in ("Succeeded", "Failed"):
            if run is not None and run.task is not None and run.handle is None:
                run.task.cancel()
            self.waiting.pop(meta["uid"], None)
            self.store.remove("pods", pod)
            self.reschedule()
            return
        run.stops.append(asyncio.get_running_loop().create_task(self._guard(self._kill(pod, run, grace))))

    async def _kill(self, pod: dict[str, Any], run: PodRun, grace: int) -> None:
        assert run.handle is not None
        await self.local.stop(run.handle, grace)
        if run.task is not None:
            run.task.cancel()
        status = await self.local.status(run.handle)
        if pod["status"].get("phase") not in ("Succeeded", "Failed"):
            self._terminated(pod, status)
        self.store.remove("pods", pod)
        self.reschedule()

    async def shutdown(self) -> None:
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
            if run.handle is not None:
                await self.local.stop(run.handle, 0)
        for task in list(self._tasks):
            task.cancel()
        tasks = [run.task for run in self.runs.values() if run.task is not None] + list(self._tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
        # a container whose launch was under way has a process but no handle yet: every
        # process the kubelet started goes, so no test leaves one behind
        for handle in await self.local.list_jobs():
            await self.local.stop(handle, 0)
