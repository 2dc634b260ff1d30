"""The scheduler: policy for interactive content processes.

For each (content, bundle, public path) there is a pool of run jobs. A request
*acquires* a lease on the least loaded ready process; the pool starts a process
on the first request (cold start), starts another when the least loaded one has
``ceil(load_factor * max_conns_per_process)`` connections and fewer than
``max_processes`` run, refuses when every process is full, keeps
``min_processes`` warm for the active bundle, stops extra idle processes after
``idle_timeout`` and notices crashed ones (the next request starts a new one).
Readiness is an HTTP answer on the process's port within ``init_timeout``: an
open port is not readiness.

Backends only start, watch and stop; every decision here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from podium.apps import launch_plan
from podium.jobs import JobRunner, handle_of, new_job_key, not_started_message
from podium.runtime import JobHandle, JobSpec, JobState, JobStatus, Placement, Resources
from podium.runtime.base import Sandbox
from podium.runtime.sandbox import prepare_writable
from podium.store.models import Job

log = logging.getLogger(__name__)
_TICK_SECONDS = 0.5
# A starting process is probed often while a cold start is usual, since whatever part of
# an interval passes between its readiness and the probe is added to the viewer's wait
# (a refused connection costs the server a few microseconds); after that, and for the
# backend's status (which may cost the Kubernetes backend an API call), less often.
_PROBE_SECONDS = 0.01
_PROBE_OFTEN_FOR_SECONDS = 10.0
_STATUS_SECONDS = 0.05


@dataclass(frozen=True)
class RuntimeLimits:
    """Effective runtime settings of one content item (server defaults applied)."""

    min_processes: int
    max_processes: int
    max_conns_per_process: int
    load_factor: float
    idle_timeout: float
    init_timeout: float
    connection_timeout: float
    read_timeout: float

    @property
    def spawn_threshold(self) -> int:
        return max(1, math.ceil(self.load_factor * self.max_conns_per_process))


@dataclass(frozen=True)
class AppTarget:
    """What to run for one pool: resolved by the caller from the database."""

    content_id: int
    content_guid: str
    bundle_id: int
    app_mode: str
    entrypoint: str | None
    python: str
    workdir: str
    base_path: str  # public prefix with trailing slash
    draft: bool
    limits: RuntimeLimits
    resources: Resources = Resources()
    service_account: str | None = None
    image: str | None = None
    resource_warnings: tuple[str, ...] = ()  # values clamped at resolution (podium.resources)
    # the local sandbox of its processes (podium.isolation); each process adds its socket folder
    sandbox: Sandbox | None = None
    placement: Placement | None = None  # the content's (Kubernetes; podium.placement)


# a new process's environment as (plain, secret): see JobSpec.secret_env
EnvFactory = Callable[[AppTarget], tuple[dict[str, str], dict[str, str]]]


@dataclass(eq=False)
class Process:
    key: str
    handle: JobHandle | None = None
    address: tuple[str, int] | None = None
    # a unix socket the process also listens on (local processes; see podium.apps)
    unix_path: str | None = None
    # where it takes WebSocket connections handed over (podium.proxy.socket_handoff)
    handoff_path: str | None = None
    strip_prefix: bool = True
    conns: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None
    stopping: bool = False
    started: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)

    @property
    def serving(self) -> bool:
        return self.ready.is_set() and self.failure is None and not self.stopping

    @property
    def starting(self) -> bool:
        return not self.ready.is_set() and self.failure is None and not self.stopping


@dataclass(eq=False)
class Pool:
    target: AppTarget
    processes: list[Process] = field(default_factory=list)
    retired: bool = False
    last_request: float = field(default_factory=time.monotonic)

    def alive(self) -> list[Process]:
        return [p for p in self.processes if p.failure is None and not p.stopping]


class Lease:
    """A connection's claim on a process; release exactly once."""

    __slots__ = ("process", "_released")

    def __init__(self, process: Process) -> None:
        self.process = process
        self._released = False
        process.conns += 1
        process.last_active = time.monotonic()

    @property
    def address(self) -> tuple[str, int]:
        assert self.process.address is not None
        return self.process.address

    @property
    def unix_path(self) -> str | None:
        return self.process.unix_path

    @property
    def handoff_path(self) -> str | None:
        return self.process.handoff_path

    @property
    def strip_prefix(self) -> bool:
        return self.process.strip_prefix

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.process.conns -= 1
            self.process.last_active = time.monotonic()


class Unavailable(Exception):
    """No process can take the connection. ``status`` 503 (full/starting) or 502 (failed)."""

    def __init__(self, status: int, message: str, starting: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.starting = starting


PoolKey = tuple[int, int, str]
# (content id, bundle id, public path) -> the target a job should serve, or None
Want = Callable[[int, int | None, str], AppTarget | None]
# sun_path holds 108 bytes with its terminating NUL on Linux
_MAX_UNIX_PATH = 108


class Scheduler:
    def __init__(
        self,
        jobs: JobRunner,
        runner_path: str,
        env_factory: EnvFactory,
        stop_grace_seconds: float,
        port_allocator: Callable[[], int],
        socket_dir: Path | None = None,
        listen_host: str = "127.0.0.1",
        warm_targets: Callable[[], list[AppTarget]] | None = None,
        keeps_minimums: Callable[[], bool] | None = None,
        active_bundles: Callable[[set[int]], dict[int, int | None]] | None = None,
        websocket_handoff: bool = True,
    ) -> None:
        """``env_factory``: the environment of a new process of a target. ``socket_dir``:
        where processes on this host also listen on unix sockets (the local backend; None
        where the proxy reaches processes over the network). ``listen_host``: the address
        processes bind (see :func:`podium.apps.launch_plan`). ``warm_targets``: the targets
        that keep ``min_processes`` running (asked every few seconds; None: none).
        ``keeps_minimums``: whether this node keeps them now (the node holding the
        ``scheduler-minimums`` lease, so one node of several does; None: always). Idle
        extras and crashed processes are each node's own business: a node only ever
        reaps the processes it launched, so that needs no lease. ``active_bundles``: the
        active bundle of content ids (None: no check); after :meth:`content_changed`
        (a change on any node), pools of bundles no longer active retire.
        ``websocket_handoff``: processes that can (ASGI content) also get a hand-off socket
        in ``socket_dir``, where the proxy hands them WebSocket connections
        (:mod:`podium.proxy.socket_handoff`)."""
        self.jobs = jobs
        self.socket_dir = socket_dir
        self.websocket_handoff = websocket_handoff
        self.listen_host = listen_host
        self.runner_path = runner_path
        self.env_factory = env_factory
        self.stop_grace_seconds = stop_grace_seconds
        self.port_allocator = port_allocator
        self.pools: dict[PoolKey, Pool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.warm_targets = warm_targets
        self.keeps_minimums = keeps_minimums
        self.active_bundles = active_bundles
        self._recheck = False  # set from any thread; read by the housekeeping loop

    # --- requests -----------------------------------------------------------------------

    async def acquire(self, target: AppTarget, patience: float | None = None) -> Lease:
        """A lease on a process of ``target``'s pool, starting one if policy says so.

        A request that finds the pool starting waits for it: up to ``init_timeout``, or
        with ``patience`` seconds given, that long, and then raises :class:`Unavailable`
        (``starting``), so browsers are shown a "starting" page only when a start takes
        longer than that (0: at once). Every request that arrives during one start waits
        for the same process.
        """
        pool = self._pool(target)
        pool.last_request = time.monotonic()
        limits = target.limits
        serving = [p for p in pool.processes if p.serving]
        best = min(serving, key=lambda p: p.conns, default=None)
        if best is not None and best.conns < limits.spawn_threshold:
            return Lease(best)
        starting = [p for p in pool.processes if p.starting]
        if len(pool.alive()) < limits.max_processes and not starting:
            starting.append(self._spawn(pool))
        if best is not None and best.conns < limits.max_conns_per_process:
            return Lease(best)
        if not starting:
            raise Unavailable(
                503,
                f"All {len(serving)} processes of this content are serving their maximum of "
                f"{limits.max_conns_per_process} connections (max_processes "
                f"{limits.max_processes}); try again shortly.",
            )
        if patience is not None and patience <= 0:
            raise Unavailable(503, "The content is starting.", starting=True)
        return await self._await_ready(pool, starting, patience)

    async def _await_ready(self, pool: Pool, starting: list[Process], patience: float | None) -> Lease:
        waiters = {asyncio.ensure_future(p.ready.wait()): p for p in starting}
        timeout = pool.target.limits.init_timeout + 1
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout if patience is None else min(patience, timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        for waiter in done:
            process = waiters[waiter]
            if process.serving:
                return Lease(process)
            raise Unavailable(502, process.failure or "The content process failed to start.")
        if patience is not None and any(p.starting for p in starting):
            raise Unavailable(503, "The content is starting.", starting=True)
        raise Unavailable(
            504,
            f"The content did not start within init_timeout ({pool.target.limits.init_timeout:g} s).",
        )

    def _pool(self, target: AppTarget) -> Pool:
        key = (target.content_id, target.bundle_id, target.base_path)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(target)
        else:
            pool.target = target
            pool.retired = False
        return pool

    # --- starting -----------------------------------------------------------------------

    def _socket_path(self, key: str, sandboxed: bool, name: str = "app") -> str | None:
        """The unix socket ``name`` of process ``key``, or None (no socket dir, or a path
        too long for a unix socket address: the process is then reached over TCP only). A
        sandboxed process gets a folder of its own, the only one of the socket dir it sees."""
        if self.socket_dir is None:
            return None
        if sandboxed:
            path = str(self.socket_dir / key / f"{name}.sock")
        else:
            path = str(self.socket_dir / (f"{key}.sock" if name == "app" else f"{key}.{name}.sock"))
        return path if len(path.encode()) < _MAX_UNIX_PATH else None

    def _spawn(self, pool: Pool) -> Process:
        process = Process(new_job_key("run"))
        pool.processes.append(process)
        self._background(self._start(pool, process))
        return process

    async def _start(self, pool: Pool, process: Process) -> None:
        target = pool.target
        try:
            port = self.port_allocator()
            sandbox = target.sandbox
            socket = self._socket_path(process.key, sandbox is not None)
            if sandbox is not None and socket is not None:
                folder = prepare_writable(os.path.dirname(socket), sandbox.uid, sandbox.gid)
                sandbox = replace(sandbox, writable=(*sandbox.writable, str(folder)))
            handoff = None
            if self.websocket_handoff and socket is not None:
                handoff = self._socket_path(process.key, sandbox is not None, "handoff")
            plan = launch_plan(
                target.app_mode, target.entrypoint, target.python, self.runner_path, port,
                target.base_path, socket, self.listen_host, handoff,
            )
            process.strip_prefix = plan.strip_prefix
            process.unix_path = plan.unix_socket
            process.handoff_path = plan.handoff_socket
            plain, secret = await asyncio.to_thread(self.env_factory, target)
            env = {**plain, **plan.env, "PORT": str(port)}
            spec = JobSpec(
                key=process.key, kind="run", content_guid=target.content_guid, image=target.image,
                command=plan.argv, env=env, workdir=target.workdir, port=port,
                secret_env={name: value for name, value in secret.items() if name not in env},
                placement=target.placement,
                resources=target.resources, service_account=target.service_account, sandbox=sandbox,
            )
            meta: dict[str, object] = {
                "base_path": target.base_path, "strip_prefix": plan.strip_prefix,
                "unix_socket": plan.unix_socket, "handoff_socket": plan.handoff_socket,
            }
            for warning in target.resource_warnings:
                log.warning("content %s: job %s: %s", target.content_guid, process.key, warning)
            if target.resource_warnings:
                meta["resource_warnings"] = list(target.resource_warnings)
            process.handle = await self.jobs.launch(
                spec, target.content_id, target.bundle_id, plan.tag, meta
            )
            await self._wait_ready(pool, process)
        except Exception as exc:  # any failure to start is this process's failure
            log.exception("content %s: process %s failed to start", target.content_guid, process.key)
            await self._fail(pool, process, f"The content process could not start: {exc}")

    async def _wait_ready(self, pool: Pool, process: Process) -> None:
        assert process.handle is not None
        target = pool.target
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.limits.init_timeout
        probe_path = "/" if process.strip_prefix else target.base_path
        waiting: JobStatus | None = None  # the backend's last reason the job has not started
        status: JobStatus | None = None
        asked = -math.inf  # when the backend was last asked for the job's status
        while loop.time() < deadline and not process.stopping:
            if status is None or loop.time() - asked >= _STATUS_SECONDS:
                asked = loop.time()
                status = await self.jobs.backend.status(process.handle)
            if status.state is JobState.PENDING and status.reason and status != waiting:
                waiting = status
                log.info("content %s: process %s waits to start: %s", target.content_guid, process.key,
                         status.message or status.reason)
            if not status.state.active:
                message = (
                    f"The content process stopped while starting: {_ended_message(status)}. "
                    f"Its log: /__api__/v1/content/{target.content_guid}/jobs/{process.key}/log"
                )
                await self._fail(pool, process, message, status)
                return
            if process.address is None:
                process.address = await self.jobs.backend.address(process.handle)
            if process.address is not None and await _answers_http(process.address, probe_path):
                if process.unix_path is not None and not os.path.exists(process.unix_path):
                    process.unix_path = None  # TCP works; the socket did not appear
                if process.handoff_path is not None and not os.path.exists(process.handoff_path):
                    process.handoff_path = None  # websockets are tunnelled
                process.last_active = time.monotonic()
                process.ready.set()
                log.info(
                    "content %s: process %s ready in %.2f s", target.content_guid, process.key,
                    time.monotonic() - process.started,
                )
                return
            await asyncio.sleep(
                _PROBE_SECONDS if time.monotonic() - process.started < _PROBE_OFTEN_FOR_SECONDS
                else _STATUS_SECONDS
            )
        if not process.stopping:
            if waiting is not None and status is not None and status.state is JobState.PENDING:
                await self._fail(pool, process, not_started_message(
                    "The content process", waiting, target.limits.init_timeout))
                return
            await self._fail(
                pool, process,
                f"The content process did not answer HTTP within init_timeout "
                f"({target.limits.init_timeout:g} s); raise the content's init_timeout if it "
                "needs longer to start.",
            )

    async def _fail(
        self, pool: Pool, process: Process, message: str, status: JobStatus | None = None
    ) -> None:
        process.failure = message
        process.ready.set()
        if process.handle is not None:
            if status is None or status.state.active:
                # Recorded before the stop, which would record a plain "stopped" first.
                self.jobs.record_end(process.key, JobStatus(JobState.FAILED, None, "StartFailed", message))
                await self.jobs.stop(process.handle, self.stop_grace_seconds)
            else:
                self.jobs.record_end(process.key, status)
        self._remove(pool, process)

    def _remove(self, pool: Pool, process: Process) -> None:
        if process in pool.processes:
            pool.processes.remove(process)
        for path in (process.unix_path, process.handoff_path):
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # left behind when the process was killed
        if self.socket_dir is not None:  # a sandboxed process's socket folder
            shutil.rmtree(self.socket_dir / process.key, ignore_errors=True)

    async def _stop(self, pool: Pool, process: Process, why: str) -> None:
        process.stopping = True
        log.info("content %s: stopping process %s (%s)", pool.target.content_guid, process.key, why)
        if process.handle is not None:
            await self.jobs.stop(process.handle, self.stop_grace_seconds)
        self._remove(pool, process)

    # --- housekeeping -------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        warm_every, last_warm = 2.0, 0.0
        while True:
            try:
                if self._recheck:
                    self._recheck = False
                    await self._retire_replaced()
                await self.tick()
                on_duty = self.keeps_minimums is None or self.keeps_minimums()
                if self.warm_targets is not None and on_duty and time.monotonic() - last_warm > warm_every:
                    last_warm = time.monotonic()
                    for target in await asyncio.to_thread(self.warm_targets):
                        self.keep_warm(target)
            except Exception:
                log.exception("scheduler housekeeping failed; retrying")
            await asyncio.sleep(_TICK_SECONDS)

    def keep_warm(self, target: AppTarget) -> None:
        """Start processes until the active bundle has ``min_processes``."""
        pool = self._pool(target)
        missing = target.limits.min_processes - len(pool.alive())
        for _ in range(max(0, missing)):
            self._spawn(pool)

    async def tick(self) -> None:
        """One round: notice crashes, stop idle extras and retired processes."""
        now = time.monotonic()
        for key, pool in list(self.pools.items()):
            limits = pool.target.limits
            keep = 0 if (pool.retired or pool.target.draft) else limits.min_processes
            for process in list(pool.processes):
                if process.handle is None or not process.serving:
                    continue
                status = await self.jobs.backend.status(process.handle)
                if not status.state.active:
                    log.warning(
                        "content %s: process %s ended: %s", pool.target.content_guid, process.key,
                        _ended_message(status),
                    )
                    process.failure = _ended_message(status)
                    self.jobs.record_end(process.key, status)
                    self._remove(pool, process)
                    continue
                idle_for = now - process.last_active
                if process.conns == 0 and len(pool.alive()) > keep and (
                    pool.retired or idle_for >= limits.idle_timeout
                ):
                    await self._stop(pool, process, "retired" if pool.retired else "idle")
            if not pool.processes and (pool.retired or now - pool.last_request > 60):
                del self.pools[key]

    def content_changed(self, _guid: str | None = None) -> None:
        """A content item changed, here or on another node (:class:`podium.changes.Changes`):
        look again at which bundles are active at the next housekeeping round."""
        self._recheck = True

    async def _retire_replaced(self) -> None:
        """Retire pools of bundles that are no longer their content's active one (a deploy
        or deletion through another node; this node's own retire at once)."""
        if self.active_bundles is None:
            return
        serving = {p.target.content_id for p in self.pools.values() if not p.target.draft and not p.retired}
        active = await asyncio.to_thread(self.active_bundles, serving)
        for pool in self.pools.values():
            target = pool.target
            if not target.draft and not pool.retired and active.get(target.content_id) != target.bundle_id:
                log.info("content %s: bundle %s is no longer active; retiring its processes",
                         target.content_guid, target.bundle_id)
                pool.retired = True

    def retire(self, content_id: int, keep_bundle_id: int | None, keep_base_path: str | None) -> None:
        """Stop serving other bundles of a content (after an activation or deletion):
        their processes stop as soon as their connections end."""
        for (cid, bid, base), pool in self.pools.items():
            if cid == content_id and (bid, base) != (keep_bundle_id, keep_base_path):
                pool.retired = True

    async def adopt(self, want: Want) -> None:
        """After a restart: adopt this node's run jobs that still run and are wanted, stop
        the rest of its jobs, and jobs of this node's backend that no node recorded.

        ``want(content_id, bundle_id, base_path)`` returns the target a job should
        serve, or ``None`` when it is no longer wanted.
        """
        known: set[str] = set()
        for row in await asyncio.to_thread(self.jobs.active_rows):
            known.add(row.key)
            await self._adopt_row(row, want, "the server stopped while launching it", None)
        known |= await asyncio.to_thread(self.jobs.active_keys)
        for handle in await self.jobs.backend.list_jobs():
            if handle.key not in known:
                log.warning("stopping unknown job %s found running", handle.key)
                await self.jobs.backend.stop(handle, self.stop_grace_seconds)

    async def take_over(self, keys: tuple[str, ...], dead_node: str, dead_hostname: str, want: Want) -> None:
        """Adopt or end the active jobs ``keys`` of a dead node, already made this node's
        (:mod:`podium.nodes`): wanted run jobs this node can reach (Kubernetes; local
        processes on this host) serve from its pools, the rest are stopped, and those it
        cannot reach (local processes of another host) are recorded as lost."""
        why = f"its server node {dead_node} stopped responding"
        rows = await asyncio.to_thread(self.jobs.rows, keys)
        for row in rows:
            if row.backend == "local" and row.hostname != self.jobs.hostname:
                self.jobs.record_end(row.key, JobStatus(JobState.FAILED, reason="Lost", message=why))
                continue
            await self._adopt_row(row, want, why, why)

    async def _adopt_row(self, row: Job, want: Want, lost: str, stopped_why: str | None) -> None:
        handle = handle_of(row)
        if handle is None:
            self.jobs.record_end(row.key, JobStatus(JobState.FAILED, reason="Lost", message=lost))
            return
        status = await self.jobs.backend.status(handle)
        if not status.state.active:
            self.jobs.record_end(row.key, status)
            return
        target = (
            await asyncio.to_thread(want, row.content_id, row.bundle_id, str(row.meta.get("base_path", "")))
            if row.kind == "run"
            else None
        )
        if target is None:
            log.info("stopping job %s left by an earlier server", row.key)
            if stopped_why is not None:  # recorded first: the stop would record a plain "stopped"
                self.jobs.record_end(row.key, JobStatus(JobState.FAILED, reason="Lost", message=stopped_why))
            await self.jobs.stop(handle, self.stop_grace_seconds)
            return
        pool = self._pool(target)
        unix, handoff = row.meta.get("unix_socket"), row.meta.get("handoff_socket")
        process = Process(
            row.key, handle=handle, strip_prefix=bool(row.meta.get("strip_prefix", True)),
            unix_path=unix if isinstance(unix, str) and os.path.exists(unix) else None,
            handoff_path=handoff if isinstance(handoff, str) and os.path.exists(handoff) else None,
        )
        process.address = await self.jobs.backend.address(handle)
        pool.processes.append(process)
        log.info("adopted process %s of content %s", row.key, target.content_guid)
        self._background(self._wait_ready(pool, process))

    def processes_of(self, content_id: int) -> list[tuple[Pool, Process]]:
        return [
            (pool, process)
            for (cid, _, _), pool in self.pools.items()
            if cid == content_id
            for process in pool.processes
        ]

    async def stop_job(self, key: str) -> bool:
        for pool in list(self.pools.values()):
            for process in list(pool.processes):
                if process.key == key:
                    await self._stop(pool, process, "stopped by a user")
                    return True
        return False

    async def close(self, stop_processes: bool) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if stop_processes:
            await asyncio.gather(
                *(self._stop(pool, p, "server shutdown") for pool in list(self.pools.values())
                  for p in list(pool.processes)),
                return_exceptions=True,
            )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ended_message(status: JobStatus) -> str:
    if status.message:
        return status.message
    if status.exit_code is not None:
        return f"the process exited with code {status.exit_code}"
    return f"the process ended ({status.reason or status.state.value})"


async def _answers_http(address: tuple[str, int], path: str) -> bool:
    """Whether something at ``address`` answers an HTTP request with a status line."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
            "User-Agent: podium-readiness\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5.0)
        return line.startswith(b"HTTP/")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
