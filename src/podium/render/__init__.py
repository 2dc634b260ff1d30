"""Render jobs: documents turned into stored output versions (renderings).

:meth:`Renderer.render_bundle` runs one render of a bundle as a ``render`` job through the
execution backend, in the content's package environment and execution
environment, and records it as a :class:`~podium.store.models.Rendering` whose
output lives in ``outputs/<content_id>/<rendering_id>/``. Viewers are served the
newest successful rendering of the active bundle (:func:`latest_rendering`), so a
failed render keeps the previous output served; its error is in the job log, the
task and the rendering record.

Renders of one content never overlap: they hold the content's deploy lock.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from podium.apps.environment import process_env, split_secret
from podium.changes import Changes
from podium.environments.catalogue import resolve
from podium.environments.model import InvalidRequest
from podium.environments.select import missing_runtime
from podium.isolation import Isolation, interpreter_paths
from podium.jobs import JobRunner, new_job_key, not_started_message
from podium.layout import DataLayout
from podium.oauth import CONTENT_SESSION_VARIABLE, ContentSessionTokens
from podium.render.commands import (
    KERNEL_REQUIREMENTS,
    TAGS,
    RenderPlan,
    notebook_plan,
    primary_file,
    quarto_plan,
    rmarkdown_plan,
)
from podium.resources import for_content
from podium.runtime import BackendError, JobHandle, JobSpec, JobState, JobStatus
from podium.secrets import EnvVars
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, Content, Rendering, utcnow
from podium.tasks import TaskFailed, TaskOutput
from podium.urls import Urls

log = logging.getLogger(__name__)
RENDERED_MODES = frozenset(TAGS)
SUPPORTED_RENDER_MODES = frozenset({"jupyter-static", "quarto-static", "rmd-static"})
_TAIL_LINES = 20

__all__ = [
    "KERNEL_REQUIREMENTS",
    "RENDERED_MODES",
    "SUPPORTED_RENDER_MODES",
    "Renderer",
    "fail_interrupted_renderings",
    "latest_rendering",
    "prune_renderings",
]


def latest_rendering(session: Session, content_id: int, bundle_id: int) -> Rendering | None:
    """The newest successful, activated rendering of ``bundle_id``: what viewers are served."""
    return session.scalar(
        select(Rendering)
        .where(
            Rendering.content_id == content_id,
            Rendering.bundle_id == bundle_id,
            Rendering.status == "succeeded",
            Rendering.activated.is_(True),
        )
        .order_by(Rendering.id.desc())
        .limit(1)
    )


def fail_interrupted_renderings(store: Store, node_id: str | None = None) -> int:
    """Renderings left running by this node when it stopped can never finish (their jobs
    are stopped at start, see ``Scheduler.adopt``): record them as failed. Returns how many."""
    with store.session() as session:
        done = session.execute(
            update(Rendering)
            .where(Rendering.status == "running", Rendering.node_id == node_id)
            .values(status="failed", error="The server stopped while this render ran.", end_time=utcnow())
        )
        return int(getattr(done, "rowcount", 0) or 0)


def prune_renderings(store: Store, layout: DataLayout, content_id: int, kept: int) -> None:
    """Delete renderings (rows and output) beyond the newest ``kept``, never the served one."""
    if kept <= 0:
        return
    with store.session() as session:
        content = session.get(Content, content_id)
        served = latest_rendering(session, content_id, content.bundle_id) if content and content.bundle_id else None
        old = list(
            session.scalars(
                select(Rendering)
                .where(Rendering.content_id == content_id, Rendering.status != "running")
                .order_by(Rendering.id.desc())
                .offset(kept)
            )
        )
        doomed = [row.id for row in old if served is None or row.id != served.id]
        for row in old:
            if row.id in doomed:
                session.delete(row)
    for rendering_id in doomed:
        shutil.rmtree(layout.output_dir(content_id, rendering_id), ignore_errors=True)
    if doomed:
        log.info("content %s: deleted %d old renderings", content_id, len(doomed))


class Renderer:
    """Runs render jobs and keeps the renderings of each content (see the module docs)."""

    def __init__(
        self, store: Store, settings: Settings, layout: DataLayout, jobs: JobRunner, env_vars: EnvVars,
        urls: Urls, isolation: Isolation, changes: Changes | None = None,
        content_sessions: ContentSessionTokens | None = None,
    ) -> None:
        self.store = store
        # Gives each render its CONNECT_CONTENT_SESSION_TOKEN (Service Account integrations).
        self.content_sessions = content_sessions
        # Told when a new rendering is served, so the proxy's file caches move on to it.
        self.changes = changes
        self.settings = settings
        self.layout = layout
        self.jobs = jobs
        self.env_vars = env_vars
        self.urls = urls
        self.isolation = isolation

    async def render_bundle(
        self, content_id: int, bundle_id: int, out: TaskOutput, reason: str, activate: bool = True
    ) -> int:
        """Render ``bundle_id`` into a new rendering and return its id.

        With ``activate`` false (a schedule's ``activate: false``) the rendering is kept in
        the history but never served in place of the current one.

        Raises :class:`TaskFailed` when the render cannot start or fails; the rendering
        is then recorded as failed (when it got that far) and earlier output stays served.
        The caller holds the content's deploy lock.
        """
        with self.store.session() as session:
            rendering = Rendering(content_id=content_id, bundle_id=bundle_id, reason=reason, activated=activate,
                                  node_id=self.jobs.node_id)
            session.add(rendering)
            session.flush()
            rendering_id = rendering.id
        out_dir = self.layout.output_dir(content_id, rendering_id).resolve()
        key = new_job_key("render")
        try:
            with self.store.session() as session:
                content = session.get(Content, content_id)
                bundle = session.get(Bundle, bundle_id)
                if content is None or bundle is None:
                    raise TaskFailed("The content or bundle was deleted before the render.")
                plan = self._plan(session, content, bundle, out_dir)
                job = for_content(content, self.settings.job_policy)
                start_timeout = float(content.init_timeout if content.init_timeout is not None
                                      else self.settings.init_timeout_seconds)
                guid, tag = content.guid, TAGS[bundle.app_mode]
                workdir = str(self.layout.bundle_dir(content_id, bundle_id).resolve())
                out_dir.mkdir(parents=True, exist_ok=True)
                sandbox = self.isolation.sandbox(
                    self.isolation.content_uid(content_id),
                    read_only=[workdir, bundle.r_library, *(
                        path for program in (bundle.python_path, bundle.r_path, plan.argv[0])
                        for path in interpreter_paths(program)
                    )],
                    writable=[out_dir, self.layout.home(guid)],
                )
                env, secret = self._job_env(session, content, bundle, plan)
                spec = JobSpec(
                    key=key, kind="render", content_guid=guid, image=bundle.image_name,
                    command=plan.argv, env=env, secret_env=secret,
                    workdir=workdir, port=None, resources=job.resources,
                    service_account=job.service_account, sandbox=sandbox, placement=job.placement,
                )
                row = session.get(Rendering, rendering_id)
                if row is not None:
                    row.job_key = key
        except TaskFailed as exc:
            self._finish(rendering_id, exc.message)
            raise
        out.line(f"Rendering bundle {bundle_id} as rendering {rendering_id} (job {key}).")
        try:
            handle = await self.jobs.launch(spec, content_id, bundle_id, tag, meta={"rendering_id": rendering_id})
        except BackendError as exc:
            self._finish(rendering_id, exc.message)
            raise TaskFailed(f"The render job could not start: {exc.message}") from None
        tail: list[str] = []
        streamer = asyncio.create_task(self._stream(handle, out, tail))
        timeout = self.settings.render_timeout_seconds
        status = await self.jobs.wait(
            handle, timeout, start_timeout,
            lambda waiting: out.line(f"The render job waits to start: {waiting.message or waiting.reason}"),
        )
        if status.state is JobState.PENDING:
            message = not_started_message("The render job", status, start_timeout)
            self.jobs.record_end(key, JobStatus(JobState.FAILED, None, status.reason, message))
            await self.jobs.stop(handle, self.settings.stop_grace_seconds)
            streamer.cancel()
            self._finish(rendering_id, message)
            shutil.rmtree(out_dir, ignore_errors=True)
            raise TaskFailed(message)
        if status.state.active:
            status = await self.jobs.stop(handle, self.settings.stop_grace_seconds)
            streamer.cancel()
            message = f"The render took longer than {timeout} s and was stopped (setting render_timeout_seconds)."
            self._finish(rendering_id, message)
            shutil.rmtree(out_dir, ignore_errors=True)
            raise TaskFailed(message)
        try:
            await asyncio.wait_for(streamer, 10)
        except TimeoutError:
            streamer.cancel()
        self.jobs.record_end(key, status)
        primary = primary_file(out_dir, plan.primary_candidates) if status.state is JobState.SUCCEEDED else None
        if primary is None:
            detail = status.message or f"exit code {status.exit_code}"
            if status.state is JobState.SUCCEEDED:
                detail = "it wrote no HTML page"
            message = f"Rendering failed ({detail}); earlier output stays served. Last lines of the job log:\n"
            self._finish(rendering_id, message.split(";")[0] + ".")
            shutil.rmtree(out_dir, ignore_errors=True)
            log.info("content %s: render job %s failed: %s", guid, key, detail)
            raise TaskFailed(message + "\n".join(tail[-_TAIL_LINES:]))
        self._finish(rendering_id, "", primary)
        if activate and self.changes is not None:
            self.changes.content(guid)
        prune_renderings(self.store, self.layout, content_id, self.settings.renderings_kept)
        log.info("content %s: rendering %s of bundle %s ready (job %s)", guid, rendering_id, bundle_id, key)
        out.line(f"Rendering {rendering_id} is ready.")
        return rendering_id

    def _plan(self, session: Session, content: Content, bundle: Bundle, out_dir: Path) -> RenderPlan:
        manifest = bundle.manifest
        if bundle.app_mode == "jupyter-static":
            if not bundle.python_path:
                raise TaskFailed("The bundle has no package environment; deploy it again.")
            return notebook_plan(bundle.python_path, manifest, str(out_dir))
        root = self.layout.bundle_dir(content.id, bundle.id)
        files = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        if bundle.app_mode == "quarto-static":
            try:
                selection = resolve(self.settings, session, manifest, content.default_image_name)
            except InvalidRequest as exc:
                raise TaskFailed(str(exc)) from None
            missing = missing_runtime(selection, "quarto")
            if missing:
                raise TaskFailed(missing)
            quarto = selection.chosen.installation("quarto") if selection.chosen else None
            if quarto is None:
                raise TaskFailed(selection.failure())
            try:
                return quarto_plan(quarto.path, bundle.python_path, manifest, files, str(out_dir))
            except ValueError as exc:
                raise TaskFailed(f"Cannot render this Quarto bundle: {exc}.") from None
        if bundle.app_mode == "rmd-static":
            if not bundle.r_path:
                raise TaskFailed("The bundle has no R installation recorded; deploy it again.")
            try:
                return rmarkdown_plan(bundle.r_path, manifest, files, str(out_dir))
            except ValueError as exc:
                raise TaskFailed(f"Cannot render this R Markdown bundle: {exc}.") from None
        raise TaskFailed(f"Podium cannot render {bundle.app_mode!r} content on this server yet.")

    def _job_env(
        self, session: Session, content: Content, bundle: Bundle, plan: RenderPlan
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The render's environment as (plain, secret): the content's own values are secret."""
        content_vars = self.env_vars.decrypted(session, content.id)
        plain, secret = split_secret(process_env(
            public_url=self.urls.public,
            content_guid=content.guid,
            home=self.layout.home(content.guid),
            interpreter=bundle.python_path,
            r_library=bundle.r_library,
            content_vars=content_vars,
            extra=plan.env,
        ), content_vars)
        if self.content_sessions is not None:
            secret[CONTENT_SESSION_VARIABLE] = self.content_sessions.issue(content.guid)
        return plain, secret

    def _finish(self, rendering_id: int, error: str, primary: str | None = None) -> None:
        with self.store.session() as session:
            row = session.get(Rendering, rendering_id)
            if row is not None:
                row.status = "failed" if error else "succeeded"
                row.error = error
                row.end_time = utcnow()
                if primary:
                    row.primary_file = primary

    async def _stream(self, handle: JobHandle, out: TaskOutput, tail: list[str]) -> None:
        async for line in self.jobs.backend.logs(handle, follow=True):
            tail.append(line.data)
            del tail[: -_TAIL_LINES * 2]
            await asyncio.to_thread(out.line, line.data)
