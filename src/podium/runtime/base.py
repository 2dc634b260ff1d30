"""The execution-backend interface: what a job is, how it is watched, how it ends.

Every process Podium starts (a build, a render, a content process) is a *job*,
described by a :class:`JobSpec` and launched through an :class:`ExecutionBackend`.
The backend answers with a :class:`JobHandle`, a small JSON-serialisable record the
caller stores in the DB, so that a restarted server can rebuild the handle and carry
on watching, streaming and stopping the job.

Backends are mechanism only: they start, watch, stop and stream. Readiness, timeouts,
retries and restarts are policy and live in ``scheduler`` and ``build``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal, Protocol

JobKind = Literal["build", "render", "run"]
JOB_KINDS: tuple[JobKind, ...] = ("build", "render", "run")

# Keys name directories, cgroups and Kubernetes objects and labels: a label value is at
# most 63 characters of [A-Za-z0-9._-], starting and ending with an alphanumeric.
# https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")


def valid_key(key: str) -> bool:
    """Whether ``key`` can name a job (a Kubernetes label value; safe as a file name)."""
    return _KEY.fullmatch(key) is not None


class BackendError(RuntimeError):
    """A backend could not do what was asked.

    ``reason`` is short and machine-readable (``"Conflict"``, ``"LaunchFailed"``),
    ``message`` is safe to show a user, ``status`` is the HTTP status the API answers
    with, and ``detail`` (never shown to users) keeps the underlying OS or client error
    for the server log.
    """

    def __init__(
        self, reason: str, message: str, *, status: int = 500, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Resources:
    """CPU in cores (fractional), memory in bytes; ``None`` or 0 means no request/limit.

    Values arrive already resolved against the server defaults and maxima. Requests
    are scheduling hints for Kubernetes; the local backend enforces only limits.
    """

    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request: int | None = None
    memory_limit: int | None = None
    # whole GPUs (Kubernetes limits nvidia.com/gpu, amd.com/gpu); the local backend has none
    nvidia_gpu_limit: int | None = None
    amd_gpu_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit",
                     "nvidia_gpu_limit", "amd_gpu_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")


@dataclass(frozen=True)
class VolumeMount:
    """A volume an execution environment mounts into its jobs at ``path``: an NFS export
    (``nfs_host``, ``nfs_export_path``) or a PersistentVolumeClaim (``pvc_name``).
    Kubernetes mounts it; jobs of the local backend see the host's file system."""

    path: str
    read_only: bool = False
    pvc_name: str | None = None
    nfs_host: str | None = None
    nfs_export_path: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> VolumeMount:
        """From Connect's ``{source: {volume_type, nfs_host, nfs_export_path, pvc_name},
        target: {path, read_only}}``; ValueError says which field is wrong."""
        source, target = record.get("source"), record.get("target")
        if not isinstance(source, Mapping) or not isinstance(target, Mapping):
            raise ValueError("a volume mount is an object {source, target}")
        path, read_only = target.get("path"), target.get("read_only", False)
        if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
            raise ValueError(f"target.path must be an absolute path; got {path!r}")
        if not isinstance(read_only, bool):
            raise ValueError("target.read_only must be true or false")
        kind = str(source.get("volume_type") or "").lower()
        if kind == "nfs":
            host, export = source.get("nfs_host"), source.get("nfs_export_path")
            if not (isinstance(host, str) and host and isinstance(export, str) and export.startswith("/")):
                raise ValueError("an nfs volume needs nfs_host and an absolute nfs_export_path")
            return cls(path, read_only, nfs_host=host, nfs_export_path=export)
        if kind in ("pvc", "persistentvolumeclaim"):
            claim = source.get("pvc_name")
            if not (isinstance(claim, str) and claim):
                raise ValueError("a pvc volume needs pvc_name")
            return cls(path, read_only, pvc_name=claim)
        raise ValueError(f"source.volume_type must be 'nfs' or 'pvc'; got {source.get('volume_type')!r}")


# Mounted by the sandbox itself: a spec may not bind anything there.
_SANDBOX_MANAGED = ("/proc", "/dev")


def _below(path: str, parent: str) -> bool:
    """Whether ``path`` is ``parent`` or inside it (both normalised and absolute)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@dataclass(frozen=True)
class Sandbox:
    """Run a job isolated from the host and from other content.

    The job's process runs as ``uid``/``gid`` (never 0), without supplementary groups,
    capabilities or the right to gain privileges, in a file system of its own that
    holds only the host's system directories (read-only), the ``read_only`` paths
    (bundle, package environment, interpreter installations), the ``writable`` paths
    (output, home or scratch, socket directory), a private ``/tmp``, a minimal ``/dev``
    and its own ``/proc``: it sees no other process, no data dir, no key, no database.
    Paths are absolute and keep their names inside; they must exist when the job is
    launched, and the caller owns (and chowns) them: see
    :func:`podium.runtime.sandbox.prepare_writable`. The network is the host's.

    The local backend enforces this with bubblewrap (:mod:`podium.runtime.sandbox`) or
    refuses to launch (``"SandboxUnavailable"``); it never runs such a job unsandboxed.
    The Kubernetes backend keeps the same promise with volumes: the pod runs as
    ``uid``/``gid`` (non-root, restricted security context), the paths inside the data
    volume are mounted one by one (``subPath``, read-only or writable as listed), ``/tmp``
    is an ``emptyDir``, and everything else comes from the image, read-only.
    """

    uid: int
    gid: int
    read_only: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_only", tuple(self.read_only))
        object.__setattr__(self, "writable", tuple(self.writable))
        for name in ("uid", "gid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"sandbox {name} must be a positive integer (not root), got {value!r}")
        paths = [*self.read_only, *self.writable]
        for path in paths:
            if (
                not isinstance(path, str) or not path.startswith("/") or path.startswith("//")
                or "\x00" in path or path == "/" or posixpath.normpath(path) != path
            ):
                raise ValueError(f"sandbox paths must be absolute and normalised, not '/'; got {path!r}")
            if any(_below(path, managed) for managed in _SANDBOX_MANAGED):
                raise ValueError(f"sandbox path {path} is inside {', '.join(_SANDBOX_MANAGED)}")
        if len(set(paths)) != len(paths):
            raise ValueError("a sandbox path is listed twice")
        for path in paths:
            for parent in self.writable:
                # bubblewrap (as root) would create the mount point through a directory
                # the job can write to, and so could be led elsewhere by a symlink.
                if path != parent and _below(path, parent):
                    raise ValueError(f"sandbox path {path} is inside the writable path {parent}")

    def binds(self, path: str) -> bool:
        """Whether ``path`` is one of the bound paths or inside one."""
        return any(_below(path, bound) for bound in (*self.read_only, *self.writable))


@dataclass(frozen=True)
class Placement:
    """Where a job's pod may run, already merged from the server, the execution
    environment and the content (an administrator's choices). Kubernetes only: every
    field maps to the pod spec field of the same meaning; mappings and lists are plain
    JSON (``tolerations`` and ``affinity`` exactly as Kubernetes spells them)."""

    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict, hash=False)
    image_pull_secrets: tuple[str, ...] = ()
    priority_class_name: str | None = None
    runtime_class_name: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.node_selector or self.tolerations or self.affinity or self.image_pull_secrets
                    or self.priority_class_name or self.runtime_class_name)

    def over(self, base: Placement | None) -> Placement:
        """This placement merged over ``base``: node selector labels, affinity, priority
        and runtime class of this one win; tolerations and pull secrets add up."""
        if base is None:
            return self
        return Placement(
            node_selector={**base.node_selector, **self.node_selector},
            tolerations=(*base.tolerations, *(t for t in self.tolerations if t not in base.tolerations)),
            affinity=self.affinity or base.affinity,
            image_pull_secrets=tuple(dict.fromkeys((*base.image_pull_secrets, *self.image_pull_secrets))),
            priority_class_name=self.priority_class_name or base.priority_class_name,
            runtime_class_name=self.runtime_class_name or base.runtime_class_name,
        )


@dataclass(frozen=True)
class JobSpec:
    """Everything a backend needs to run one job; no ORM objects.

    ``env`` is the job's whole environment (backends add only what they document, such
    as ``PORT`` for run jobs); ``workdir`` is the bundle directory as the job sees it;
    ``port`` is the port a run job listens on, or ``None`` to let the backend choose one.
    ``sandbox``, when set, isolates the job (see :class:`Sandbox`; its ``workdir`` must
    then be a bound path); ``None`` runs it as the server's own user, seeing the host
    (on Kubernetes: seeing nothing of the data volume).
    ``secret_env`` is more of the environment whose values a backend must keep out of
    any stored object (the content's variables, credentials of the build's index): the
    local backend adds them to ``env``; Kubernetes puts them in the content's own Secret
    (one per content item) and references them from the pod. ``placement`` says where
    the job may run (Kubernetes only).
    """

    key: str
    kind: JobKind
    content_guid: str
    image: str | None
    command: list[str]
    env: Mapping[str, str]
    workdir: str
    port: int | None
    resources: Resources = Resources()
    service_account: str | None = None
    # the execution environment's volumes (mounted by Kubernetes; see VolumeMount)
    volume_mounts: tuple[VolumeMount, ...] = ()
    sandbox: Sandbox | None = None
    secret_env: Mapping[str, str] = field(default_factory=dict, hash=False)
    placement: Placement | None = None

    def __post_init__(self) -> None:
        if set(self.secret_env) & set(self.env):
            raise ValueError("a variable is both in env and secret_env: "
                             + ", ".join(sorted(set(self.secret_env) & set(self.env))))
        if not valid_key(self.key):
            raise ValueError(
                f"job key {self.key!r} must be 1-63 characters of [A-Za-z0-9._-], "
                "starting and ending with a letter or digit"
            )
        if self.kind not in JOB_KINDS:
            raise ValueError(f"job kind must be one of {JOB_KINDS}, got {self.kind!r}")
        if not self.command:
            raise ValueError("a job needs a command")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, got {self.port}")
        if self.sandbox is not None and not self.sandbox.binds(posixpath.normpath(self.workdir)):
            raise ValueError(
                f"workdir {self.workdir} must be one of the sandbox's read-only or writable "
                "paths, or inside one"
            )


@dataclass(frozen=True)
class JobHandle:
    """A launched job, as stored in the DB: which backend, which key, backend data.

    ``data`` is backend-specific and JSON-serialisable; callers treat it as opaque. A
    handle rebuilt with :meth:`from_json` after a server restart works like the original.
    """

    backend: str
    key: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "key": self.key, "data": dict(self.data)})

    @classmethod
    def from_json(cls, text: str) -> JobHandle:
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("data", {}), dict):
            message = "a job handle is a JSON object with backend, key and data"
            raise ValueError(message)
        return cls(backend=str(raw["backend"]), key=str(raw["key"]), data=raw.get("data", {}))


class JobState(str, Enum):
    """Where a job is in its life. Only PENDING and RUNNING are :attr:`active`."""

    PENDING = "pending"  # accepted, no process yet (e.g. a pod being scheduled)
    RUNNING = "running"  # a process exists; readiness is the scheduler's call
    SUCCEEDED = "succeeded"  # exited 0 on its own
    FAILED = "failed"  # exited non-zero, was killed, could not start, or was lost
    STOPPED = "stopped"  # ended because stop() was called while it was active
    UNKNOWN = "unknown"  # the backend has no record of this job

    @property
    def active(self) -> bool:
        return self in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class JobStatus:
    """A job's state, with the exit code and a reason once it has ended.

    ``reason`` is short and machine-readable: ``"Completed"``, ``"Exited"``,
    ``"Signalled"``, ``"OOMKilled"``, ``"StartError"``, ``"Stopped"``, ``"Lost"``,
    ``"NotFound"`` (backends may add their own, such as ``"ImagePullBackOff"``).
    A PENDING job may carry a reason too: why it has not started yet, a state that may
    pass (``"Unschedulable"`` until a node is added, ``"ErrImagePull"`` while a
    registry refuses); the caller decides how long to wait (``init_timeout``).
    ``message`` is safe to show a user. A process killed by signal N has exit code
    128 + N, as container runtimes report it.
    """

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class LogLine:
    """One line of a job's output (without its newline), with the time it was read."""

    stream: Literal["stdout", "stderr"]
    timestamp: datetime
    data: str


class ExecutionBackend(Protocol):
    """Starts, watches, stops and streams jobs. One contract test suite covers them all.

    Lifecycle rules every backend keeps:

    - **Handles outlive servers.** A handle rebuilt from :meth:`JobHandle.to_json` by a
      new backend instance (after a server restart) answers :meth:`status`,
      :meth:`address`, :meth:`logs` and :meth:`stop` exactly like the original.
    - **Unknown handles are not errors.** For a handle the backend has no record of,
      :meth:`status` is UNKNOWN with reason ``"NotFound"``, :meth:`address` is ``None``,
      :meth:`logs` yields nothing and :meth:`stop` does nothing. A handle made by a
      different backend raises :class:`BackendError` (``"WrongBackend"``).
    - **Jobs outlive the backend object.** :meth:`close` releases the backend's own
      resources and leaves jobs running; :meth:`list_jobs` finds them again.
    - Errors from the OS or a client library leave a backend only as
      :class:`BackendError`.
    """

    name: str

    async def launch(self, spec: JobSpec) -> JobHandle:
        """Create the job and return its handle once the backend has accepted it.

        Returns once the job exists: for the local backend, once its process runs
        (status RUNNING, or FAILED already if the command could not start: a command
        that cannot be started is a failed job, reported by :meth:`status` with reason
        ``"StartError"``, not an exception). Launching a key that already exists
        returns the existing job's handle, whatever its state (keys are single-use).
        Raises :class:`BackendError` only when the job could not be created at all.
        """
        ...

    async def status(self, handle: JobHandle) -> JobStatus:
        """The job's state now.

        PENDING until a process exists, RUNNING while it runs (the backend does not
        judge readiness), then SUCCEEDED (exit code 0), FAILED (with ``exit_code`` when
        there is one, and a ``reason``), or STOPPED once :meth:`stop` ended it. A job
        whose processes vanished without an exit status (its supervisor was killed, the
        host restarted) is FAILED with reason ``"Lost"``. Final states never change.
        """
        ...

    async def address(self, handle: JobHandle) -> tuple[str, int] | None:
        """Host and port to reach a RUNNING run job at; ``None`` in any other case.

        An address is not readiness: the process may not listen yet.
        """
        ...

    def logs(self, handle: JobHandle, follow: bool = False) -> AsyncIterator[LogLine]:
        """The job's output so far, in order; with ``follow``, also new lines until the
        job has ended (then the iterator finishes). Lines of an ended job stay
        readable; an unknown handle yields nothing."""
        ...

    async def stop(self, handle: JobHandle, grace_seconds: float) -> None:
        """End the job and everything it started: SIGTERM (or the backend's equivalent),
        then SIGKILL after ``grace_seconds``. Returns once the job has ended; its status
        is then STOPPED. Idempotent: an ended or unknown job is left as it is."""
        ...

    async def list_jobs(self) -> list[JobHandle]:
        """Handles of every job of this backend that is still active and was launched by
        this server node (the backend's node id; jobs launched before nodes were recorded
        count as its own), including jobs launched by an earlier process of this node, so
        a restarted node can adopt the ones it wants and stop the others. Another node's
        jobs are never listed: that node alone stops them (or, once it is dead, the node
        that claimed it, by handle)."""
        ...

    async def update_content_secrets(self, content_guid: str, changes: Mapping[str, str | None]) -> None:
        """A content item's own variables changed (``None``: removed). A backend that keeps
        ``secret_env`` values outside Podium's database (Kubernetes: one Secret per content
        item) updates them now; jobs already running keep what they started with."""
        ...

    async def forget_content(self, content_guid: str) -> None:
        """The content item was deleted: drop whatever the backend keeps for it beyond its
        jobs (Kubernetes: its Secret). Idempotent."""
        ...

    async def close(self) -> None:
        """Release the backend's own resources; running jobs keep running."""
        ...
