"""The local execution backend: every job a process group on this host.

Each job has a directory ``<root>/<key>/`` (the data dir's ``jobs/``) and a supervisor
process (:mod:`podium.runtime._supervise`, whose docstring describes the files) that
owns the job's process: it copies the output into the job log, enforces limits through
cgroups (or rlimits, with a warning), and records how the job ended. The backend only
reads those files and signals process groups, which is why a restarted server, or any
other ``LocalBackend`` on the same root, can watch, stream and stop a job it did not
launch.

What a job gets: ``spec.command`` run in ``spec.workdir``, in a session of its own,
with exactly ``spec.env`` and ``spec.secret_env`` plus ``PATH`` (the server's, when the
spec has none) and, for run jobs, ``PORT``; standard input is ``/dev/null``. ``spec.image`` and
``spec.service_account`` have no meaning on the host and are ignored, as are CPU and
memory requests; limits are enforced as :mod:`podium.runtime.cgroups` describes.

A job whose spec has a ``sandbox`` runs inside bubblewrap, as
:mod:`podium.runtime.sandbox` describes, still in its cgroups. Launching one fails
with ``"SandboxUnavailable"`` when this host cannot make sandboxes (the first success
of :func:`~podium.runtime.sandbox.probe_sandbox` is kept) and with ``"SandboxInvalid"``
when a path to bind does not exist: it is never run unsandboxed.

Linux only (``/proc``, process groups, cgroups). If Podium runs under systemd, use
``KillMode=mixed`` or ``process`` so that restarting the server leaves jobs running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from podium.runtime import cgroups, sandbox
from podium.runtime._supervise import (
    EXIT,
    LOG,
    RECORD,
    STOP,
    SUPERVISOR_LOG,
    process_start,
    read_json,
    utc_now,
    write_json,
)
from podium.runtime.base import (
    BackendError,
    JobHandle,
    JobSpec,
    JobState,
    JobStatus,
    LogLine,
    Sandbox,
    valid_key,
)

log = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).with_name("_supervise.py")
# Runs the supervisor (its path the first argument) as a module loaded from its file, not
# as a script: a module's bytecode is cached (a script is compiled again at every launch,
# a few milliseconds of every cold start), and nothing beside it lands on sys.path.
_RUN_SUPERVISOR = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('_podium_supervise', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "sys.exit(module.main())\n"
)
LAUNCH_TIMEOUT_SECONDS = 15.0
KILL_TIMEOUT_SECONDS = 10.0  # after SIGKILL: drain the output, remove cgroups, record
POLL_SECONDS = 0.05
LOCALHOST = "127.0.0.1"


def allocate_port(host: str = LOCALHOST) -> int:
    """A port free on ``host`` right now. Another process may take it before the job
    binds it; the scheduler's readiness timeout covers that rare case."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalBackend:
    """Runs jobs as supervised host processes; job directories live under ``root``.

    ``node_id`` is the server node launching jobs here: :meth:`list_jobs` lists only its
    own (and jobs recorded before nodes were), as the job directories may be on a volume
    several nodes share. ``cgroup_root`` is where cgroup hierarchies are mounted; ``python`` runs the
    supervisor (any Python 3.11+, standard library only); ``bwrap`` and
    ``system_dirs`` are what sandboxed jobs run in and see of the host.
    """

    name = "local"

    def __init__(
        self,
        root: Path,
        *,
        node_id: str | None = None,
        cgroup_root: str = cgroups.CGROUP_ROOT,
        python: str = sys.executable,
        bwrap: str = sandbox.BWRAP,
        system_dirs: tuple[str, ...] = sandbox.SYSTEM_DIRS,
    ) -> None:
        self.root = Path(root)
        self.node_id = node_id
        self.cgroup_root = cgroup_root
        self.python = python
        self.bwrap = bwrap
        self.system_dirs = system_dirs
        self._sandbox_works = False  # probed once, when the first sandboxed job comes

    async def update_content_secrets(self, content_guid: str, changes: Mapping[str, str | None]) -> None:
        """Nothing to do: local jobs get their secret values at launch from the database."""

    async def forget_content(self, content_guid: str) -> None:
        """Nothing to do: a local job keeps nothing of its content beyond its own folder."""

    def sandbox_probed(self) -> None:
        """Say that :func:`~podium.runtime.sandbox.probe_sandbox` found sandboxes working
        on this host (the server's own probe at its start): the first sandboxed launch
        does not run it again."""
        self._sandbox_works = True

    async def launch(self, spec: JobSpec) -> JobHandle:
        if spec.volume_mounts:
            log.info(
                "job %s: the environment's volume mounts apply on Kubernetes only; local jobs "
                "see the host's file system", spec.key,
            )
        job_dir = self.root / spec.key
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            job_dir.mkdir(mode=0o700)
        except FileExistsError:
            existing = read_json(str(job_dir / RECORD))
            if existing is not None:
                return self._handle(existing)
            raise BackendError(
                "Conflict", f"Job {spec.key} is already being launched.", status=409
            ) from None
        except OSError as error:
            raise BackendError(
                "LaunchFailed", "Could not create the job directory.", detail=str(error)
            ) from error

        env = {**spec.env, **spec.secret_env}
        env.setdefault("PATH", os.environ.get("PATH", os.defpath))
        port = spec.port
        if spec.kind == "run":
            port = port or allocate_port()
            env["PORT"] = str(port)
        plan = cgroups.LimitPlan()
        try:
            job: dict[str, Any] = {"command": list(spec.command), "cwd": spec.workdir, "env": env}
            if spec.sandbox is not None:
                job = await self._sandboxed(spec, spec.sandbox, env)
            plan = await asyncio.to_thread(
                cgroups.plan_limits,
                spec.key,
                spec.resources.memory_limit,
                spec.resources.cpu_limit,
                root=self.cgroup_root,
            )
            for warning in plan.warnings:
                log.warning("job %s (content %s): %s", spec.key, spec.content_guid, warning)
            payload = {
                "key": spec.key,
                "kind": spec.kind,
                "content_guid": spec.content_guid,
                "node": self.node_id,
                "job_dir": str(job_dir),
                **job,
                "port": port,
                "limits": plan.to_dict(),
            }
            record = await self._start_supervisor(job_dir, payload)
        except BaseException:
            # A half-failed launch leaves nothing behind. Once the supervisor has
            # recorded the job (a cancelled launch), it exists: list_jobs() reports it
            # and the caller's reconciliation adopts or stops it.
            if not (job_dir / RECORD).exists():
                cgroups.remove(plan)
                shutil.rmtree(job_dir, ignore_errors=True)
            raise
        log.info(
            "job %s (content %s): launched %s job, pid %s, limits %s/%s",
            spec.key, spec.content_guid, spec.kind, record.get("pid"),
            plan.memory_mode, plan.cpu_mode,
        )
        return self._handle(record)

    async def status(self, handle: JobHandle) -> JobStatus:
        record = self._record(handle)
        if record is None:
            return _not_found()
        job_dir = self.root / handle.key
        started = _time(record.get("started_at"))
        ended = read_json(str(job_dir / EXIT))
        if ended is None and _running(record):
            return JobStatus(JobState.RUNNING, started_at=started)
        ended = ended or read_json(str(job_dir / EXIT))  # it may have just ended
        stopped = read_json(str(job_dir / STOP))
        if ended is None:
            if not job_dir.is_dir():
                return _not_found()  # only the handle was left, and its processes are gone
            await asyncio.to_thread(cgroups.remove, _plan(record))
            ended = {
                "reason": "Lost",
                "message": "the job ended without recording an exit status (its supervisor "
                "was killed, or the host restarted)",
            }
        finished = _time(ended.get("finished_at"))
        exit_code = ended.get("exit_code")
        if stopped is not None:
            message = "stopped"
            if stopped.get("killed"):
                message += f" (killed after the grace period of {stopped['grace_seconds']:g} s)"
            return JobStatus(JobState.STOPPED, exit_code, "Stopped", message, started, finished)
        state = JobState.SUCCEEDED if ended["reason"] == "Completed" else JobState.FAILED
        return JobStatus(state, exit_code, ended["reason"], ended["message"], started, finished)

    async def address(self, handle: JobHandle) -> tuple[str, int] | None:
        record = self._record(handle)
        if record is None or record.get("kind") != "run" or not record.get("port"):
            return None
        if (await self.status(handle)).state is not JobState.RUNNING:
            return None
        return (LOCALHOST, int(record["port"]))

    async def logs(self, handle: JobHandle, follow: bool = False) -> AsyncIterator[LogLine]:
        record = self._record(handle)
        if record is None:
            return
        job_dir = self.root / handle.key
        try:
            file = open(job_dir / LOG, "rb")  # noqa: SIM115 (local file, kept open)
        except OSError:
            return
        with file:
            pending = b""
            while True:
                # Decide before reading: whatever is written before the job ends is read.
                last = not follow or not self._active(job_dir, record)
                while chunk := file.read(65536):
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for raw in lines:
                        line = parse_log_line(raw.decode("utf-8", "replace"))
                        if line is not None:
                            yield line
                if last:
                    return
                await asyncio.sleep(POLL_SECONDS)

    async def stop(self, handle: JobHandle, grace_seconds: float) -> None:
        record = self._record(handle)
        if record is None:
            return
        job_dir = self.root / handle.key
        if not self._active(job_dir, record):
            if read_json(str(job_dir / EXIT)) is None:
                await asyncio.to_thread(cgroups.remove, _plan(record))  # a lost job's leftovers
            return
        stop_file = str(job_dir / STOP)
        marker = read_json(stop_file) or {
            "requested_at": utc_now(), "grace_seconds": grace_seconds, "killed": False
        }
        _try_write(stop_file, marker)
        log.info("job %s (content %s): stopping", handle.key, record.get("content_guid"))
        _signal(record, signal.SIGTERM)
        if await self._ended(job_dir, record, grace_seconds):
            return
        _try_write(stop_file, {**marker, "killed": True})
        log.info(
            "job %s (content %s): still running after %g s, sending SIGKILL",
            handle.key, record.get("content_guid"), grace_seconds,
        )
        _signal(record, signal.SIGKILL)
        if not await self._ended(job_dir, record, KILL_TIMEOUT_SECONDS):
            raise BackendError(
                "StopFailed",
                f"Job {handle.key} did not end {KILL_TIMEOUT_SECONDS:g} s after SIGKILL.",
            )

    async def list_jobs(self) -> list[JobHandle]:
        try:
            job_dirs = sorted(path for path in self.root.iterdir() if path.is_dir())
        except FileNotFoundError:
            return []
        handles = []
        for job_dir in job_dirs:
            record = read_json(str(job_dir / RECORD))
            if record is None or record.get("node") not in (None, self.node_id):
                continue  # another node's job: its pid means nothing on this host
            if self._active(job_dir, record):
                handles.append(self._handle(record))
        return handles

    async def close(self) -> None:
        """Nothing to release: the backend holds no connections or tasks."""

    async def _sandboxed(
        self, spec: JobSpec, box: Sandbox, env: dict[str, str]
    ) -> dict[str, Any]:
        """The payload entries that run ``spec`` in ``box``; BackendError if it cannot."""
        switch = os.geteuid() != 0 and (box.uid, box.gid) != (os.geteuid(), os.getegid())
        if switch or not self._sandbox_works:
            support = await asyncio.to_thread(
                sandbox.probe_sandbox, box.uid, box.gid, bwrap=self.bwrap,
                system_dirs=self.system_dirs,
            )
            if not support.available:
                log.error(
                    "job %s (content %s): cannot run sandboxed: %s",
                    spec.key, spec.content_guid, support.reason,
                )
                raise BackendError(
                    "SandboxUnavailable", f"This job must run in a sandbox: {support.reason}."
                )
            self._sandbox_works = True
        missing = [path for path in (*box.read_only, *box.writable) if not os.path.exists(path)]
        if missing:
            raise BackendError(
                "SandboxInvalid", f"The sandbox's path {missing[0]} does not exist."
            )
        try:
            setup = sandbox.setup_script(env)
        except ValueError as error:
            raise BackendError("SandboxInvalid", f"{error}.") from error
        argv = sandbox.bwrap_argv(
            box, spec.command, spec.workdir, privileged=os.geteuid() == 0,
            system_dirs=self.system_dirs, bwrap=shutil.which(self.bwrap) or self.bwrap,
        )
        # bwrap, and setpriv as root, get no environment: the setup script, read as the
        # job's user inside the sandbox, sets the job's.
        return {
            "command": argv, "cwd": "/", "env": {},
            "sandbox": {"uid": box.uid, "gid": box.gid, "setup": setup},
        }

    async def _start_supervisor(self, job_dir: Path, payload: dict[str, Any]) -> dict[str, Any]:
        # The supervisor's own environment is not the job's (that travels in the
        # payload), and carries none of the server's settings or secrets.
        env = {k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ}
        # A plain subprocess in a thread, not the event loop's: under uvloop the
        # launcher's pipes stay open in the daemonised supervisor, so EOF never comes.
        try:
            done = await asyncio.to_thread(
                subprocess.run,
                [self.python, "-I", "-S", "-c", _RUN_SUPERVISOR, str(SUPERVISOR)],
                input=json.dumps(payload).encode(),
                capture_output=True,
                cwd="/",
                env=env,
                timeout=LAUNCH_TIMEOUT_SECONDS,
                check=False,
            )
        except OSError as error:
            raise BackendError(
                "LaunchFailed", "Could not start the job supervisor.", detail=str(error)
            ) from error
        except subprocess.TimeoutExpired:
            raise BackendError(
                "LaunchTimeout",
                f"The job did not start within {LAUNCH_TIMEOUT_SECONDS:g} s.",
                status=503,
            ) from None
        out, err = done.stdout, done.stderr
        try:
            record = json.loads(out.splitlines()[0])
        except (IndexError, ValueError):
            supervisor_log = (job_dir / SUPERVISOR_LOG).read_text(errors="replace") if (
                job_dir / SUPERVISOR_LOG
            ).exists() else ""
            raise BackendError(
                "LaunchFailed",
                "The job supervisor failed to start the job.",
                detail=(err.decode(errors="replace") + supervisor_log).strip()[-4000:],
            ) from None
        return dict(record)

    def _record(self, handle: JobHandle) -> dict[str, Any] | None:
        """What the job directory says about the job; failing that, what the handle says
        (enough to find and signal its processes); ``None`` for an unknown job."""
        if handle.backend != self.name:
            raise BackendError(
                "WrongBackend", f"Job {handle.key} belongs to the {handle.backend!r} backend."
            )
        if not valid_key(handle.key):
            return None
        record = read_json(str(self.root / handle.key / RECORD))
        if record is None and handle.data.get("supervisor_pid"):
            record = dict(handle.data)
        return record

    def _active(self, job_dir: Path, record: dict[str, Any]) -> bool:
        return not (job_dir / EXIT).exists() and _running(record)

    async def _ended(self, job_dir: Path, record: dict[str, Any], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._active(job_dir, record):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    def _handle(self, record: dict[str, Any]) -> JobHandle:
        return JobHandle(backend=self.name, key=record["key"], data=record)


def parse_log_line(line: str) -> LogLine | None:
    """``"<ISO-8601 UTC> <stdout|stderr> <data>"``, as the supervisor writes it."""
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[1] not in ("stdout", "stderr"):
        return None
    try:
        timestamp = datetime.fromisoformat(parts[0])
    except ValueError:
        return None
    stream: Literal["stdout", "stderr"] = "stdout" if parts[1] == "stdout" else "stderr"
    return LogLine(stream, timestamp, parts[2] if len(parts) == 3 else "")


def _running(record: dict[str, Any]) -> bool:
    """Whether the job's supervisor or its main process still runs (same pid, same start
    time: a reused pid is another process)."""
    for pid, start in (
        (record.get("supervisor_pid"), record.get("supervisor_start")),
        (record.get("pid"), record.get("pid_start")),
    ):
        if pid and start is not None and process_start(int(pid)) == start:
            return True
    return False


def _signal(record: dict[str, Any], sig: signal.Signals) -> None:
    """Signal the job's process group and everything in its cgroups."""
    pgid = record.get("pgid")
    # A process group outlives its leader while members remain, and Linux does not
    # reuse a pid that is still a group id; but a live leader with another start time
    # means the pid was reused.
    leader_start = record.get("pgid_start", record.get("pid_start"))
    if pgid and process_start(int(pgid)) in (None, leader_start):
        try:
            os.killpg(int(pgid), sig)
        except (ProcessLookupError, PermissionError):
            pass
    # A sandbox's monitor (bwrap, outside the job's group) would end the whole sandbox
    # with SIGKILL if it died of SIGTERM: only SIGKILL is for it, and its death takes
    # every process of the sandbox along.
    monitor = int(record["pid"]) if record.get("sandbox") and record.get("pid") else None
    if monitor and sig == signal.SIGKILL and process_start(monitor) == record.get("pid_start"):
        try:
            os.kill(monitor, sig)
        except ProcessLookupError:
            pass
    spare = (monitor,) if monitor and sig != signal.SIGKILL else ()
    cgroups.signal_all(_plan(record), sig, spare)


def _plan(record: dict[str, Any]) -> cgroups.LimitPlan:
    return cgroups.LimitPlan.from_dict(record.get("limits") or {})


def _try_write(path: str, data: dict[str, Any]) -> None:
    try:
        write_json(path, data)
    except OSError:
        pass  # the job directory is gone; only the handle was left


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _not_found() -> JobStatus:
    return JobStatus(JobState.UNKNOWN, reason="NotFound", message="no such job")
