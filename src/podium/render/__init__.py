"""Render jobs: documents turned into stored output versions (renderings).

:func:`render_bundle` runs one render of a bundle as a ``render`` job through the
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
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.context import Podium
from podium.jobs import new_job_key
from podium.render.commands import (
    KERNEL_REQUIREMENTS,
    TAGS,
    RenderPlan,
    notebook_plan,
    primary_file,
    quarto_plan,
    rmarkdown_plan,
)
from podium.runtime import BackendError, JobSpec, JobState
from podium.store.models import Bundle, Content, Rendering, utcnow
from podium.tasks import TaskFailed, TaskOutput

log = logging.getLogger(__name__)
RENDERED_MODES = frozenset(TAGS)
SUPPORTED_RENDER_MODES = frozenset({"jupyter-static", "quarto-static", "rmd-static"})
_TAIL_LINES = 20

__all__ = [
    "KERNEL_REQUIREMENTS",
    "fail_interrupted_renderings",
    "RENDERED_MODES",
    "SUPPORTED_RENDER_MODES",
    "latest_rendering",
    "output_dir",
    "render_bundle",
]


def output_dir(ctx: Podium, content_id: int, rendering_id: int) -> Path:
    return ctx.data_dir / "outputs" / str(content_id) / str(rendering_id)


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


def fail_interrupted_renderings(store: Any) -> int:
    """Renderings left running by a stopped server can never finish (their jobs are
    stopped at start, see ``Scheduler.adopt``): record them as failed. Returns how many."""
    from sqlalchemy import update

    with store.session() as session:
        done = session.execute(
            update(Rendering)
            .where(Rendering.status == "running")
            .values(status="failed", error="The server stopped while this render ran.", end_time=utcnow())
        )
        return int(getattr(done, "rowcount", 0) or 0)


def _plan(ctx: Podium, session: Session, content: Content, bundle: Bundle, out_dir: Path) -> RenderPlan:
    manifest = bundle.manifest
    if bundle.app_mode == "jupyter-static":
        if not bundle.python_path:
            raise TaskFailed("The bundle has no package environment; deploy it again.")
        return notebook_plan(bundle.python_path, manifest, str(out_dir))
    if bundle.app_mode == "quarto-static":
        from podium.environments.catalogue import resolve
        from podium.environments.model import InvalidRequest
        from podium.environments.select import missing_runtime

        try:
            selection = resolve(ctx.settings, session, manifest, content.default_image_name)
        except InvalidRequest as exc:
            raise TaskFailed(str(exc)) from None
        missing = missing_runtime(selection, "quarto")
        if missing:
            raise TaskFailed(missing)
        quarto = selection.chosen.installation("quarto") if selection.chosen else None
        if quarto is None:
            raise TaskFailed(selection.failure())
        root = ctx.bundle_dir(content.id, bundle.id)
        files = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        try:
            return quarto_plan(quarto.path, bundle.python_path, manifest, files, str(out_dir))
        except ValueError as exc:
            raise TaskFailed(f"Cannot render this Quarto bundle: {exc}.") from None
    if bundle.app_mode == "rmd-static":
        if not bundle.r_path:
            raise TaskFailed("The bundle has no R installation recorded; deploy it again.")
        root = ctx.bundle_dir(content.id, bundle.id)
        files = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        try:
            return rmarkdown_plan(bundle.r_path, manifest, files, str(out_dir))
        except ValueError as exc:
            raise TaskFailed(f"Cannot render this R Markdown bundle: {exc}.") from None
    raise TaskFailed(f"Podium cannot render {bundle.app_mode!r} content on this server yet.")


def _job_env(ctx: Podium, session: Session, content: Content, bundle: Bundle, plan: RenderPlan) -> dict[str, str]:
    from podium.api.env_vars import decrypted_env

    home = ctx.data_dir / "home" / content.guid
    home.mkdir(parents=True, exist_ok=True)
    paths = [str(Path(bundle.python_path).parent)] if bundle.python_path else []
    env = {
        "PATH": ":".join([*paths, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CONNECT_SERVER": ctx.settings.effective_public_url,
        "CONNECT_CONTENT_GUID": content.guid,
        "RSTUDIO_PRODUCT": "CONNECT",
        "POSIT_PRODUCT": "CONNECT",
        **plan.env,
    }
    if bundle.r_library:  # the bundle's restored R packages, ahead of the environment's
        env["R_LIBS"] = bundle.r_library
    return {**decrypted_env(ctx, session, content.id), **env}


def _finish(ctx: Podium, rendering_id: int, error: str, primary: str | None = None) -> None:
    with ctx.store.session() as session:
        row = session.get(Rendering, rendering_id)
        if row is not None:
            row.status = "failed" if error else "succeeded"
            row.error = error
            row.end_time = utcnow()
            if primary:
                row.primary_file = primary


async def render_bundle(
    ctx: Podium, content_id: int, bundle_id: int, out: TaskOutput, reason: str, activate: bool = True
) -> int:
    """Render ``bundle_id`` into a new rendering and return its id.

    With ``activate`` false (a schedule's ``activate: false``) the rendering is kept in
    the history but never served in place of the current one.

    Raises :class:`TaskFailed` when the render cannot start or fails; the rendering
    is then recorded as failed (when it got that far) and earlier output stays served.
    The caller holds the content's deploy lock.
    """
    with ctx.store.session() as session:
        rendering = Rendering(content_id=content_id, bundle_id=bundle_id, reason=reason, activated=activate)
        session.add(rendering)
        session.flush()
        rendering_id = rendering.id
    out_dir = output_dir(ctx, content_id, rendering_id).resolve()
    key = new_job_key("render")
    try:
        with ctx.store.session() as session:
            content = session.get(Content, content_id)
            bundle = session.get(Bundle, bundle_id)
            if content is None or bundle is None:
                raise TaskFailed("The content or bundle was deleted before the render.")
            plan = _plan(ctx, session, content, bundle, out_dir)
            job = ctx.job_resources(content)
            guid, tag = content.guid, TAGS[bundle.app_mode]
            spec = JobSpec(
                key=key, kind="render", content_guid=guid, image=bundle.image_name,
                command=plan.argv, env=_job_env(ctx, session, content, bundle, plan),
                workdir=str(ctx.bundle_dir(content_id, bundle_id).resolve()), port=None,
                resources=job.resources, service_account=job.service_account,
            )
            row = session.get(Rendering, rendering_id)
            if row is not None:
                row.job_key = key
    except TaskFailed as exc:
        _finish(ctx, rendering_id, exc.message)
        raise
    out_dir.mkdir(parents=True, exist_ok=True)
    out.line(f"Rendering bundle {bundle_id} as rendering {rendering_id} (job {key}).")
    try:
        handle = await ctx.jobs.launch(spec, content_id, bundle_id, tag, meta={"rendering_id": rendering_id})
    except BackendError as exc:
        _finish(ctx, rendering_id, exc.message)
        raise TaskFailed(f"The render job could not start: {exc.message}") from None
    tail: list[str] = []
    streamer = asyncio.create_task(_stream(ctx, handle, out, tail))
    timeout = ctx.settings.render_timeout_seconds
    status = await ctx.jobs.wait(handle, timeout)
    if status.state.active:
        status = await ctx.jobs.stop(handle, ctx.settings.stop_grace_seconds)
        streamer.cancel()
        message = f"The render took longer than {timeout} s and was stopped (setting render_timeout_seconds)."
        _finish(ctx, rendering_id, message)
        shutil.rmtree(out_dir, ignore_errors=True)
        raise TaskFailed(message)
    try:
        await asyncio.wait_for(streamer, 10)
    except TimeoutError:
        streamer.cancel()
    ctx.jobs.record_end(key, status)
    primary = primary_file(out_dir, plan.primary_candidates) if status.state is JobState.SUCCEEDED else None
    if primary is None:
        detail = status.message or f"exit code {status.exit_code}"
        if status.state is JobState.SUCCEEDED:
            detail = "it wrote no HTML page"
        message = f"Rendering failed ({detail}); earlier output stays served. Last lines of the job log:\n"
        _finish(ctx, rendering_id, message.split(";")[0] + ".")
        shutil.rmtree(out_dir, ignore_errors=True)
        log.info("content %s: render job %s failed: %s", guid, key, detail)
        raise TaskFailed(message + "\n".join(tail[-_TAIL_LINES:]))
    _finish(ctx, rendering_id, "", primary)
    _prune(ctx, content_id, ctx.settings.renderings_kept)
    log.info("content %s: rendering %s of bundle %s ready (job %s)", guid, rendering_id, bundle_id, key)
    out.line(f"Rendering {rendering_id} is ready.")
    return rendering_id


def _prune(ctx: Podium, content_id: int, kept: int) -> None:
    """Delete renderings (rows and output) beyond the newest ``kept``, never the served one."""
    if kept <= 0:
        return
    with ctx.store.session() as session:
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
        shutil.rmtree(output_dir(ctx, content_id, rendering_id), ignore_errors=True)
    if doomed:
        log.info("content %s: deleted %d old renderings", content_id, len(doomed))


async def _stream(ctx: Podium, handle: Any, out: TaskOutput, tail: list[str]) -> None:
    async for line in ctx.jobs.backend.logs(handle, follow=True):
        tail.append(line.data)
        del tail[: -_TAIL_LINES * 2]
        await asyncio.to_thread(out.line, line.data)
