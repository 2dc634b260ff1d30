"""Deploying a bundle: the task behind ``POST v1/content/{guid}/deploy``.

A deploy prepares the bundle to run (static content needs nothing; Python and R
content gets its execution environment, chosen by ``podium.environments`` and
recorded on the bundle, and its package environment, a venv or an R library, built
or reused) and, when asked to
activate, makes it the content's active bundle in one database write: viewers
switch from the old bundle to the new one at once, and a failed deploy leaves
the previous bundle active and serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from podium import inventory
from podium.appmodes import PYTHON_INTERACTIVE, R_INTERACTIVE
from podium.apps import RUNTIME_REQUIREMENTS
from podium.build import Builder, BuildRequest, BuiltEnvironment, RBuildRequest
from podium.build.r import RLibrary, r_managed
from podium.bundles import missing_files
from podium.changes import Changes
from podium.environments.catalogue import resolve
from podium.environments.model import Environment, Installation, InvalidRequest
from podium.environments.select import missing_runtime
from podium.layout import DataLayout
from podium.render import KERNEL_REQUIREMENTS, SUPPORTED_RENDER_MODES, Renderer, latest_rendering
from podium.resources import for_content
from podium.scheduler import Scheduler
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, Content, Rendering, utcnow
from podium.tasks import ContentLocks, TaskFailed, TaskOutput
from podium.urls import Urls

log = logging.getLogger(__name__)
SUPPORTED_APP_MODES = frozenset({"static"}) | PYTHON_INTERACTIVE | R_INTERACTIVE | SUPPORTED_RENDER_MODES
# Modes whose package environment gets the notebook kernel packages.
_KERNEL_MODES = frozenset({"jupyter-static", "quarto-static"})


@dataclass(frozen=True)
class DeployRequest:
    content_id: int
    bundle_id: int
    activate: bool
    # the deploying user's guid, checked against environment permissions (None: an administrator)
    deployer: str | None = None


class Deployer:
    """Runs deploy tasks (:meth:`run`); one per server, made by the app."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        layout: DataLayout,
        builder: Builder,
        renderer: Renderer,
        scheduler: Scheduler,
        changes: Changes,
        locks: ContentLocks,
        urls: Urls,
    ) -> None:
        self.store = store
        self.settings = settings
        self.layout = layout
        self.builder = builder
        self.renderer = renderer
        self.scheduler = scheduler
        self.changes = changes
        self.locks = locks
        self.urls = urls

    async def run(self, request: DeployRequest, out: TaskOutput) -> dict[str, Any] | None:
        async with self.locks(request.content_id):
            with self.store.session() as session:
                content = session.get(Content, request.content_id)
                bundle = session.get(Bundle, request.bundle_id)
                if content is None or bundle is None:
                    raise TaskFailed("The content or bundle was deleted during the deploy.")
                guid, app_mode, manifest = content.guid, bundle.app_mode, dict(bundle.manifest)
            out.line(f"Deploying bundle {request.bundle_id} ({app_mode}) to content {guid}")
            bundle_dir = self.layout.bundle_dir(request.content_id, request.bundle_id)
            for name in missing_files(manifest, bundle_dir):
                out.line(
                    f"Warning: manifest.json lists {name!r}, but the bundle does not hold it; "
                    "deploying without it (add it to the bundle, or drop it from the manifest's files)."
                )
            if app_mode not in SUPPORTED_APP_MODES:
                raise TaskFailed(
                    f"This Podium server cannot run {app_mode!r} content yet; supported app modes: "
                    f"{', '.join(sorted(SUPPORTED_APP_MODES))}."
                )
            if app_mode != "static":
                await self._prepare_environment(request, out)
            else:
                out.line("Static content: nothing to build.")
            if app_mode in SUPPORTED_RENDER_MODES:
                await self._render(request, out)
            self.changes.content(guid)
            if not request.activate:
                out.line(
                    f"Bundle {request.bundle_id} is ready as a draft at "
                    f"{self.urls.content(guid)}_bundle{request.bundle_id}/ (not activated)."
                )
                return None
            self._activate(request)
            self.changes.content(guid)
            self.scheduler.retire(request.content_id, request.bundle_id, f"/content/{guid}/")
            log.info("content %s: activated bundle %s", guid, request.bundle_id)
            out.line(f"Activated bundle {request.bundle_id}; serving at {self.urls.content(guid)}")
            return None

    async def rebuild_environment(self, content_id: int, bundle_id: int, out: TaskOutput) -> None:
        """Build (or reuse) the package environments of a bundle again, as its deploy did,
        and point the bundle at them: what follows a runtime cache's deletion, so the
        content's next process starts with a fresh environment."""
        async with self.locks(content_id):
            with self.store.session() as session:
                content = session.get(Content, content_id)
                if content is None or session.get(Bundle, bundle_id) is None:
                    return
                guid = content.guid
            await self._prepare_environment(DeployRequest(content_id, bundle_id, False), out)
        self.changes.content(guid)

    def _activate(self, request: DeployRequest) -> None:
        """Make the bundle the content's active one, in one database write."""
        with self.store.session() as session:
            content = session.get(Content, request.content_id)
            bundle = session.get(Bundle, request.bundle_id)
            if content is None or bundle is None:
                raise TaskFailed("The content was deleted during the deploy.")
            content.bundle_id = request.bundle_id
            content.app_mode = bundle.app_mode
            # "site" for a multi-document Quarto project, as rsconnect writes it.
            content.content_category = str((bundle.manifest.get("metadata") or {}).get("content_category") or "")
            content.last_deployed_time = utcnow()
            for field in ("cluster_name", "image_name", "environment_guid", "py_version",
                          "r_version", "quarto_version", "py_environment_management",
                          "r_environment_management"):
                setattr(content, field, getattr(bundle, field))

    async def _prepare_environment(self, request: DeployRequest, out: TaskOutput) -> None:
        """Choose the execution environment; build the package environments the bundle needs
        (an R library when it needs R, a venv when it needs Python)."""
        with self.store.session() as session:
            content = session.get(Content, request.content_id)
            bundle = session.get(Bundle, request.bundle_id)
            if content is None or bundle is None:
                raise TaskFailed("The content or bundle was deleted during the deploy.")
            try:
                selection = resolve(
                    self.settings, session, bundle.manifest, content.default_image_name, request.deployer
                )
            except InvalidRequest as exc:
                raise TaskFailed(str(exc)) from None
            guid, manifest, app_mode = content.guid, dict(bundle.manifest), bundle.app_mode
            job = for_content(content, self.settings.job_policy)  # builds run with the content's resources
        chosen = selection.chosen
        if chosen is None:  # the failure names the request and every candidate's reason
            log.info("content %s bundle %s: no compatible environment", guid, request.bundle_id)
            raise TaskFailed(
                missing_runtime(selection, "r") or missing_runtime(selection, "quarto") or selection.failure()
            )
        for line in selection.lines():
            out.line(line)
        env = chosen.environment
        r, quarto = chosen.installation("r"), chosen.installation("quarto")
        python = chosen.installation("python")
        bundle_dir = self.layout.bundle_dir(request.content_id, request.bundle_id).resolve()
        for warning in job.warnings:
            log.warning("content %s: build of bundle %s: %s", guid, request.bundle_id, warning)
            out.line(f"Warning: {warning}")
        r_library = None
        if r is not None:
            r_library = await self.builder.ensure_r(
                RBuildRequest(
                    content_id=request.content_id, content_guid=guid, bundle_id=request.bundle_id,
                    bundle_dir=bundle_dir, manifest=manifest, r=r,
                    managed=r_managed(manifest, self.settings.r_environment_management),
                    image=env.name, resources=job.resources, service_account=job.service_account,
                    placement=job.placement,
                ),
                out,
            )
        if python is None:  # needing no Python (R content, Quarto's markdown engine)
            self._record_environment(request.bundle_id, env, None, r, quarto, r_library)
            return
        extra = list(RUNTIME_REQUIREMENTS.get(app_mode, []))
        if app_mode in _KERNEL_MODES:
            extra += KERNEL_REQUIREMENTS
        build = BuildRequest(
            content_id=request.content_id,
            content_guid=guid,
            bundle_id=request.bundle_id,
            bundle_dir=bundle_dir,
            manifest=manifest,
            extra_requirements=extra,
            python=python,
            image=env.name,
            resources=job.resources,
            service_account=job.service_account,
            placement=job.placement,
        )
        built = await self.builder.ensure(build, out)
        self._record_environment(request.bundle_id, env, built, r, quarto, r_library)

    def _record_environment(
        self, bundle_id: int, env: Environment, built: BuiltEnvironment | None,
        r: Installation | None, quarto: Installation | None, r_library: RLibrary | None,
    ) -> None:
        """Write on the bundle what it was built with (``built`` None: no Python package
        environment; ``r_library`` None: no R)."""
        with self.store.session() as session:
            bundle = session.get(Bundle, bundle_id)
            if bundle is None:
                raise TaskFailed("The bundle was deleted during the deploy.")
            if built is not None:
                bundle.env_fingerprint = built.fingerprint
                bundle.python_path = built.python
                bundle.py_version = built.python_version
                bundle.py_environment_management = built.managed
            bundle.cluster_name = env.cluster_name
            bundle.image_name = env.name
            bundle.environment_guid = env.guid
            bundle.r_version = r.version_text if r else None
            bundle.r_path = r_library.r if r_library is not None else None
            bundle.r_library = r_library.library if r_library is not None else None
            bundle.r_environment_management = r_library.managed if r_library is not None else None
            bundle.quarto_version = quarto.version_text if quarto else None
            # The package inventory (v1/packages, the runtime caches), once per environment.
            if built is not None and built.path is not None:
                venv = built.path
                inventory.link(session, bundle_id, inventory.record(
                    session, built.fingerprint, venv, inventory.PYTHON, built.python_version, env.name,
                    lambda: inventory.python_packages(venv),
                ))
            if r_library is not None and r_library.fingerprint and r_library.library:
                library = Path(r_library.library)
                inventory.link(session, bundle_id, inventory.record(
                    session, r_library.fingerprint, library.parent, inventory.R, r_library.r_version,
                    env.name, lambda: inventory.r_packages(library),
                ))

    async def _render(self, request: DeployRequest, out: TaskOutput) -> None:
        """Render the bundle unless its newest rendering already succeeded (the draft
        deploy before an activating one renders; activating then reuses that output)."""
        with self.store.session() as session:
            newest = session.scalar(
                select(Rendering).where(Rendering.content_id == request.content_id)
                .order_by(Rendering.id.desc()).limit(1)
            )
            reusable = latest_rendering(session, request.content_id, request.bundle_id)
            if newest is not None and reusable is not None and newest.id == reusable.id:
                out.line(f"Bundle {request.bundle_id} is already rendered (rendering {reusable.id}).")
                return
        await self.renderer.render_bundle(request.content_id, request.bundle_id, out, "deploy")
