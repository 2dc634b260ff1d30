"""Package environments: one venv (or R library) per fingerprint, built as a build job.

A bundle's environment is identified by a fingerprint of the execution
environment's image and interpreter (chosen by ``podium.environments``), its
normalised requirements and the runtime packages Podium adds. The
first bundle with a fingerprint builds ``envs/<fingerprint>/`` through the
execution backend (so the build runs where content runs, with its limits and
logs); every later bundle with the same fingerprint reuses it at once. Python
environments are venvs made with uv; R libraries (``envs/r-<fingerprint>/``)
are restored with the environment's R (:mod:`podium.build.r`).

On this host an environment is published without bytecode and compiled right after
by a compile job of its own, while the deploy goes on (:mod:`podium.build.compile`;
``.podium-compiled`` says it is done); in a pod uv compiles it inside the build.

An environment deleted as a runtime cache while a process still runs from it is
*retired* (:mod:`podium.caches`): its ready marker goes, its files stay until
nothing runs from them, and the next build of its fingerprint goes to a fresh
folder beside it (``envs/<fingerprint>-g<job key>``), so nothing is pulled from under
a running process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podium.build.compile import KIND, adopt_bytecode, compile_command, compiling, is_compiled, mark_compiled
from podium.build.fingerprint import fingerprint, normalise_requirements
from podium.build.r import (
    PackageListError,
    RBuildRequest,
    RLibrary,
    RPackage,
    r_fingerprint,
    restore_script,
    wanted_packages,
)
from podium.environments.model import Installation
from podium.isolation import Isolation, interpreter_paths, make_readable
from podium.jobs import JobRunner, new_job_key, not_started_message
from podium.runtime import BackendError, JobSpec, JobState, JobStatus, Placement, Resources
from podium.runtime.base import Sandbox
from podium.tasks import TaskFailed, TaskOutput

log = logging.getLogger(__name__)
READY_MARKER = ".podium-ready"
# Network settings of the server that builds need to reach the package index
# (TLS trust stores and proxies), passed through to build jobs as they are.
_PASSTHROUGH = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy")
_TAIL_LINES = 20

__all__ = ["BuildRequest", "BuiltEnvironment", "Builder", "RBuildRequest", "RLibrary"]


@dataclass(frozen=True)
class BuildRequest:
    content_id: int
    content_guid: str
    bundle_id: int
    bundle_dir: Path
    manifest: dict[str, Any]
    extra_requirements: list[str]
    python: Installation  # chosen by environment selection (podium.environments)
    image: str | None = None  # the execution environment's image; jobs run in it
    resources: Resources = Resources()  # the content's, resolved (podium.resources)
    service_account: str | None = None
    placement: Placement | None = None  # the content's (Kubernetes)


@dataclass(frozen=True)
class BuiltEnvironment:
    fingerprint: str
    python: str  # the interpreter content runs with (the venv's, or the installation's)
    python_version: str
    managed: bool
    reused: bool
    path: Path | None = None  # the environment's folder; None when not managed


def _mark_ready(staging: Path, work: Path, version: str) -> None:
    """Write the ready marker into ``staging``, which the build job wrote (or, without a
    shared volume, uploaded): never through a link it left there, so a build cannot
    lead the server to write elsewhere."""
    if staging.is_symlink() or not staging.is_dir() or staging.resolve().parent != work.resolve():
        raise TaskFailed("The build left no package environment folder.")
    try:
        fd = os.open(staging / READY_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise TaskFailed(f"The build left {READY_MARKER} as something else than a file ({error.strerror}).") \
            from None
    with os.fdopen(fd, "w") as marker:
        marker.write(version + "\n")


def _requirements_file(bundle_dir: Path, manifest: dict[str, Any]) -> Path | None:
    python = manifest.get("python") or {}
    name = (python.get("package_manager") or {}).get("package_file") or "requirements.txt"
    root = bundle_dir.resolve()
    path = (root / name).resolve()
    if root not in path.parents:
        raise TaskFailed(f"manifest python.package_manager.package_file {name!r} is outside the bundle.")
    return path if path.is_file() else None


class Builder:
    def __init__(
        self,
        jobs: JobRunner,
        envs_dir: Path,
        cache_dir: Path,
        uv_path: str,
        index_url: str,
        timeout_seconds: int,
        r_repository_url: str = "",
        isolation: Isolation | None = None,
        start_timeout_seconds: float | None = None,
    ) -> None:
        """``isolation``: the sandbox of build jobs (they run as its builder uid, seeing the
        bundle, the interpreter, uv, their new environment and uv's cache); None: none.
        ``start_timeout_seconds``: how long a build job may wait to start (a pod being
        scheduled, an image pulled; the server's init_timeout_seconds); None: as long as
        the build may take."""
        self.jobs = jobs
        self.start_timeout_seconds = start_timeout_seconds
        self.isolation = isolation
        self.envs_dir = envs_dir
        self.cache_dir = cache_dir
        self.uv_path = uv_path
        self.index_url = index_url
        self.timeout_seconds = timeout_seconds
        self.r_repository_url = r_repository_url
        self._locks: dict[str, asyncio.Lock] = {}
        self._compiles: dict[str, asyncio.Task[None]] = {}  # environment folder: its compile

    def env_path(self, fp: str) -> Path:
        return self.envs_dir / fp

    def ready_path(self, fp: str) -> Path | None:
        """The folder of the ready environment with fingerprint ``fp``, or None: its
        first folder, else the newest one built after it was retired."""
        candidates = [self.env_path(fp), *sorted(
            self.envs_dir.glob(f"{fp}-g*"), key=lambda p: p.stat().st_mtime, reverse=True
        )]
        return next((p for p in candidates if (p / READY_MARKER).exists()), None)

    async def ensure(self, request: BuildRequest, out: TaskOutput) -> BuiltEnvironment:
        """The package environment for ``request``, built as a job or reused at once."""
        manifest = request.manifest
        environment = manifest.get("environment") or {}
        chosen = request.python
        if self.jobs.backend.name == "local" and not os.access(chosen.path, os.X_OK):
            raise TaskFailed(
                f"The execution environment's Python {chosen.version_text} at {chosen.path} is not "
                "an executable on this server; an administrator should correct the environment "
                "(GET v1/environments)."
            )
        managed = (environment.get("environment_management") or {}).get("python") is not False
        requirements_path = _requirements_file(request.bundle_dir, manifest)
        requirements = (
            normalise_requirements(requirements_path.read_text(errors="replace"))
            if requirements_path and managed
            else []
        )
        extra = request.extra_requirements if managed else []
        fp = fingerprint(
            chosen.version_text, requirements, extra, managed,
            interpreter=chosen.path, image=request.image or "",
        )
        if not managed:
            out.line("environment_management is off: packages are used as installed with the interpreter.")
            return BuiltEnvironment(fp, chosen.path, chosen.version_text, False, True)
        lock = self._locks.setdefault(fp, asyncio.Lock())
        async with lock:
            ready = self.ready_path(fp)
            if ready is not None:
                out.line(f"Reusing package environment {fp}: requirements unchanged, nothing to install.")
                if not is_compiled(ready) and self.jobs.backend.name == "local" \
                        and str(ready) not in self._compiles \
                        and str(ready) not in await asyncio.to_thread(self._compiling):
                    # its compile failed, or a server stop cut it off
                    self._compile_later(request, chosen, ready, out)
                return BuiltEnvironment(fp, str(ready / "bin" / "python"), chosen.version_text, True, True, ready)
            path = await self._build(request, chosen, fp, requirements_path, extra, out)
        return BuiltEnvironment(fp, str(path / "bin" / "python"), chosen.version_text, True, False, path)

    async def _build(
        self,
        request: BuildRequest,
        chosen: Installation,
        fp: str,
        requirements_path: Path | None,
        extra: list[str],
        out: TaskOutput,
    ) -> Path:
        key = new_job_key("build")
        work = self.envs_dir / f".{fp}.{key}"  # the job's writable folder; the venv is in it
        staging = work / "env"
        background = self.jobs.backend.name == "local"  # compile after publishing, not in the build
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        sandbox = self._sandbox(
            read_only=[request.bundle_dir, self.uv_path, *interpreter_paths(chosen.path)], work=work
        )
        work.mkdir(exist_ok=True)
        uv = shlex.quote(self.uv_path)
        target = shlex.quote(str(staging))
        steps = [f"{uv} venv --relocatable --python {shlex.quote(chosen.path)} {target}"]
        install = [f"{uv} pip install --python {target}/bin/python"]
        if requirements_path is not None:
            install.append(f"-r {shlex.quote(str(requirements_path))}")
        install += [shlex.quote(r) for r in extra]
        if requirements_path is not None or extra:
            steps.append(" ".join(install))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.cache_dir),
            "UV_CACHE_DIR": str(self.cache_dir / "uv"),
            # A pod, or a sandbox, mounts uv's cache and its new environment apart (one
            # subPath, one bind each): hardlinks cannot cross mounts, so uv copies there
            # rather than warn and copy.
            "UV_LINK_MODE": "hardlink" if self.jobs.backend.name == "local" and sandbox is None else "copy",
            "UV_NO_PROGRESS": "1",
            # Sandboxed processes see the environment read-only and would otherwise compile
            # every module again at each start (hundreds of ms for FastAPI): bytecode now in
            # a pod, on this host after the deploy (podium.build.compile).
            "UV_COMPILE_BYTECODE": "0" if background else "1",
            "UV_PYTHON_DOWNLOADS": "never",
            "LANG": "C.UTF-8",
        }
        # The server's proxies and uv settings may carry credentials: secret on Kubernetes.
        secret = {name: os.environ[name] for name in _PASSTHROUGH if name in os.environ}
        secret.update({k: v for k, v in os.environ.items() if k.startswith("UV_") and k not in env})
        index = self.index_url or os.environ.get("UV_INDEX_URL", "")
        if index:
            secret["UV_INDEX_URL"] = index
        spec = JobSpec(
            key=key, kind="build", content_guid=request.content_guid, image=request.image,
            command=["/bin/sh", "-c", "set -e\n" + "\n".join(steps)], env=env, secret_env=secret,
            workdir=str(request.bundle_dir), port=None, resources=request.resources,
            service_account=request.service_account, sandbox=sandbox, placement=request.placement,
        )
        wanted = [line.strip() for line in (
            requirements_path.read_text(errors="replace").splitlines() if requirements_path else []
        ) if line.strip() and not line.lstrip().startswith("#")]
        out.line(f"Building package environment {fp} (job {key}):"
                 + "".join(f"\n  requirement: {line}" for line in wanted))
        await self._run(spec, request.content_id, request.bundle_id, "python_restore", work, out,
                        "Building the package environment")
        _mark_ready(staging, work, chosen.version_text)
        if not background:
            mark_compiled(staging, chosen.version_text)
        final, ours = await asyncio.to_thread(self._publish, staging, fp, key, work)  # walks every file
        out.line(f"Package environment {fp} is ready.")
        if ours and background:
            self._compile_later(request, chosen, final, out)
        return final

    # --- bytecode, compiled after the deploy (podium.build.compile) ----------------------

    def _compiling(self) -> set[str]:
        with self.jobs.store.session() as session:
            return compiling(session)

    def _compile_later(self, request: BuildRequest, chosen: Installation, env: Path, out: TaskOutput) -> None:
        """Start compiling ``env`` to bytecode as a job of its own, in the background."""
        key = new_job_key(KIND)
        out.line(f"Compiling the environment's modules to bytecode in the background (job {key}); "
                 "processes started before that ends compile them in memory.")
        task = asyncio.get_running_loop().create_task(self._compile(request, chosen, env, key))
        self._compiles[str(env)] = task
        task.add_done_callback(lambda _: self._compiles.pop(str(env), None))

    async def _compile(self, request: BuildRequest, chosen: Installation, env: Path, key: str) -> None:
        guid = request.content_guid
        scratch = self.envs_dir / f".{env.name}.{key}"  # the job's writable folder
        handle = None
        try:
            scratch.mkdir()
            spec = JobSpec(
                key=key, kind="build", content_guid=guid, image=request.image,
                # a core left to the content's first process, which starts meanwhile
                command=compile_command(chosen.path, env, scratch, (os.cpu_count() or 2) - 1),
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}, secret_env={},
                workdir=str(env), port=None, resources=request.resources,
                service_account=request.service_account, placement=request.placement,
                sandbox=self._sandbox(read_only=[env, *interpreter_paths(chosen.path)], work=scratch),
            )
            handle = await self.jobs.launch(spec, request.content_id, request.bundle_id, "python_restore",
                                            meta={"environment": str(env)})
            last = await asyncio.wait_for(self._last_line(handle), self.timeout_seconds)
            status = await self.jobs.wait(handle)
            if status.state is JobState.SUCCEEDED and (env / READY_MARKER).exists():
                owner = os.geteuid() if self.isolation is not None and self.isolation.active else None
                moved = await asyncio.to_thread(adopt_bytecode, scratch, env, owner)
                await asyncio.to_thread(shutil.rmtree, scratch, True)  # before the marker says done
                await asyncio.to_thread(mark_compiled, env, chosen.version_text)
                log.info("content %s: environment %s compiled to bytecode (job %s): %s; %d files",
                         guid, env.name, key, last, moved)
            else:
                log.warning("content %s: environment %s was not compiled to bytecode (job %s: %s); "
                            "its processes compile modules in memory at each start until a deploy "
                            "reuses it", guid, env.name, key, status.message or status.state.value)
            self.jobs.record_end(key, status)  # only now: until then the environment is in use
            handle = None
        except BackendError as exc:
            log.warning("content %s: the compile job of environment %s could not start: %s",
                        guid, env.name, exc.message)
        except TimeoutError:
            log.warning("content %s: the compile job %s of environment %s took longer than %s s "
                        "and was stopped (setting build_timeout_seconds)", guid, key, env.name,
                        self.timeout_seconds)
        except Exception:
            log.exception("content %s: compiling environment %s to bytecode failed (job %s)",
                          guid, env.name, key)
        finally:
            if handle is not None:  # cancelled (a server stop): end the job first
                await asyncio.shield(self.jobs.stop(handle, 5))
            shutil.rmtree(scratch, ignore_errors=True)

    async def _last_line(self, handle: Any) -> str:
        """Follow a compile job's log to its end (into the server log at debug level);
        its last line, the summary."""
        last = ""
        async for line in self.jobs.backend.logs(handle, follow=True):
            log.debug("job %s: %s", handle.key, line.data)
            last = line.data or last
        return last

    async def close(self) -> None:
        """Stop the compile jobs still running (the next deploy that reuses their
        environments compiles them again)."""
        tasks = list(self._compiles.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _sandbox(self, read_only: list[str | Path], work: Path) -> Sandbox | None:
        """The sandbox of a build writing into ``work`` (and uv's cache), or None."""
        if self.isolation is None:
            return None
        uid = self.isolation.builder_uid
        self.isolation.own_tree(self.cache_dir, uid)  # once: the cache of unsandboxed builds
        return self.isolation.sandbox(uid, read_only, [work, self.cache_dir])

    async def _run(
        self, spec: JobSpec, content_id: int, bundle_id: int, tag: str, staging: Path,
        out: TaskOutput, what: str,
    ) -> None:
        """Run a build job, streaming its log into the task; on failure remove ``staging``
        and raise :class:`TaskFailed` with the end of the log."""
        try:
            handle = await self.jobs.launch(spec, content_id, bundle_id, tag)
        except BackendError as exc:  # say why (no sandbox here, a cluster refusing the Job ...)
            shutil.rmtree(staging, ignore_errors=True)
            raise TaskFailed(f"The build job could not start: {exc.message}") from None
        tail: list[str] = []
        streamer = asyncio.create_task(self._stream(handle, out, tail))
        ended = asyncio.Event()  # the log ends when the job does: no need to poll on
        streamer.add_done_callback(lambda _: ended.set())
        status = await self.jobs.wait(
            handle, self.timeout_seconds, self.start_timeout_seconds,
            lambda waiting: out.line(f"The build job waits to start: {waiting.message or waiting.reason}"),
            ended,
        )
        if status.state is JobState.PENDING and self.start_timeout_seconds is not None:
            message = not_started_message("The build job", status, self.start_timeout_seconds)
            self.jobs.record_end(spec.key, JobStatus(JobState.FAILED, None, status.reason, message))
            await self.jobs.stop(handle, 5)
            streamer.cancel()
            shutil.rmtree(staging, ignore_errors=True)
            raise TaskFailed(message)
        if status.state.active:
            status = await self.jobs.stop(handle, 5)
            streamer.cancel()
            shutil.rmtree(staging, ignore_errors=True)
            raise TaskFailed(
                f"The build took longer than {self.timeout_seconds} s and was stopped "
                "(setting build_timeout_seconds)."
            )
        await asyncio.wait_for(streamer, 10)
        self.jobs.record_end(spec.key, status)
        if status.state is not JobState.SUCCEEDED:
            shutil.rmtree(staging, ignore_errors=True)
            detail = status.message or f"exit code {status.exit_code}"
            raise TaskFailed(
                f"{what} failed ({detail}). Last lines of the build log:\n"
                + "\n".join(tail[-_TAIL_LINES:])
            )

    def _publish(self, staging: Path, fp: str, key: str, work: Path) -> tuple[Path, bool]:
        """Move a finished build into place (read-only to its builder and to content from
        then on), remove the job's folder ``work`` and return where the environment is,
        and whether it is this build's (else another node's, built meanwhile)."""
        if self.isolation is not None and self.isolation.active:
            make_readable(staging)
        final = self.env_path(fp)
        if final.exists() and not (final / READY_MARKER).exists():  # retired, maybe in use
            final = self.envs_dir / f"{fp}-g{key}"
        ours = not final.exists()  # else built meanwhile by another node: keep theirs
        if ours:
            os.rename(staging, final)
        shutil.rmtree(work, ignore_errors=True)
        return final, ours

    # --- R -------------------------------------------------------------------------------

    async def ensure_r(self, request: RBuildRequest, out: TaskOutput) -> RLibrary:
        """The R library for ``request``, restored as a build job or reused at once."""
        r = request.r
        if self.jobs.backend.name == "local" and not os.access(r.path, os.X_OK):
            raise TaskFailed(
                f"The execution environment's R {r.version_text} at {r.path} is not an executable "
                "on this server; an administrator should correct the environment (GET v1/environments)."
            )
        if not request.managed:
            out.line(
                f"environment_management.r is off: R packages are used as installed with R "
                f"{r.version_text} at {r.path}."
            )
            return RLibrary(None, r.path, r.version_text, None, False, True)
        try:
            packages, origin = wanted_packages(request.bundle_dir, request.manifest)
        except PackageListError as exc:
            raise TaskFailed(f"Cannot restore the bundle's R packages: {exc}") from None
        if not packages:
            out.line(f"The bundle lists no R packages ({origin}): R {r.version_text} runs with its own library.")
            return RLibrary(None, r.path, r.version_text, None, True, True)
        if not self.r_repository_url:
            raise TaskFailed(
                "The bundle lists R packages but no R package repository is configured "
                "(setting r_repository_url)."
            )
        fp = r_fingerprint(r, packages, self.r_repository_url, request.image)
        lock = self._locks.setdefault(fp, asyncio.Lock())
        async with lock:
            ready = self.ready_path(fp)
            if ready is not None:
                out.line(f"Reusing R package library {fp}: packages unchanged, nothing to install.")
                return RLibrary(fp, r.path, r.version_text, str(ready / "library"), True, True)
            path = await self._restore_r(request, fp, packages, origin, out)
        return RLibrary(fp, r.path, r.version_text, str(path / "library"), True, False)

    async def _restore_r(
        self, request: RBuildRequest, fp: str, packages: list[RPackage], origin: str, out: TaskOutput
    ) -> Path:
        key = new_job_key("build")
        work = self.envs_dir / f".{fp}.{key}"  # the job's writable folder; the library is in it
        staging = work / "env"
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        repository = urllib.parse.urlsplit(self.r_repository_url)
        local = [urllib.parse.unquote(repository.path)] if repository.scheme == "file" else []
        sandbox = self._sandbox(
            read_only=[request.bundle_dir, *interpreter_paths(request.r.path), *local], work=work
        )
        (staging / "library").mkdir(parents=True)
        (staging / "packages.dcf").write_text("\n".join(p.dcf() for p in packages))
        (staging / "restore.R").write_text(restore_script())
        if sandbox is not None:
            for folder in (staging, staging / "library"):
                os.chown(folder, sandbox.uid, sandbox.gid)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.cache_dir), "LANG": "C.UTF-8"}
        secret = {name: os.environ[name] for name in _PASSTHROUGH if name in os.environ}
        command = [
            request.r.path, "--no-echo", "--no-restore", "--no-save", f"--file={staging / 'restore.R'}",
            "--args", str(staging / "library"), str(staging / "packages.dcf"), self.r_repository_url,
        ]
        spec = JobSpec(
            key=key, kind="build", content_guid=request.content_guid, image=request.image,
            command=command, env=env, secret_env=secret, workdir=str(request.bundle_dir), port=None,
            resources=request.resources, service_account=request.service_account, sandbox=sandbox,
            placement=request.placement,
        )
        out.line(
            f"Restoring R package library {fp} with R {request.r.version_text} from "
            f"{self.r_repository_url} (job {key}); {len(packages)} "
            f"{'package' if len(packages) == 1 else 'packages'} from {origin}."
        )
        await self._run(spec, request.content_id, request.bundle_id, "packrat_restore", work, out,
                        "Restoring the R packages")
        _mark_ready(staging, work, request.r.version_text)
        final, _ = self._publish(staging, fp, key, work)
        out.line(f"R package library {fp} is ready.")
        return final

    async def _stream(self, handle: Any, out: TaskOutput, tail: list[str]) -> None:
        """Copy a build job's log into the task: what came while the last write went on
        goes in the next, in one (uv prints its list of packages all at once, at the end)."""
        pending: list[str] = []
        writer: asyncio.Task[None] | None = None

        async def write() -> None:
            while pending:
                batch = pending[:]
                del pending[:]
                await asyncio.to_thread(out.lines, batch)

        try:
            async for line in self.jobs.backend.logs(handle, follow=True):
                tail.append(line.data)
                del tail[: -_TAIL_LINES * 2]
                pending.append(line.data)
                if writer is None or writer.done():
                    writer = asyncio.create_task(write())
            if writer is not None:
                await writer
        except asyncio.CancelledError:
            if writer is not None:
                writer.cancel()
            raise
