"""The server's shared state: settings, store, secret box, tasks, jobs, scheduler.

One ``Podium`` object is made by ``open_podium(settings)`` and hung off the app;
nothing in Podium is a module-level singleton.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from podium.appmodes import PYTHON_INTERACTIVE, R_INTERACTIVE
from podium.crypto import SecretBox
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, Content
from podium.tasks import TaskManager

if TYPE_CHECKING:
    from podium.build import Builder
    from podium.jobs import JobRunner
    from podium.proxy.router import ContentRouter
    from podium.resources import JobResources
    from podium.runtime import ExecutionBackend
    from podium.scheduler import AppTarget, RuntimeLimits, Scheduler

log = logging.getLogger(__name__)


@dataclass
class Podium:
    settings: Settings
    store: Store
    secrets: SecretBox
    tasks: TaskManager
    backend: ExecutionBackend
    jobs: JobRunner
    builder: Builder
    scheduler: Scheduler
    router: ContentRouter = field(init=False)
    deploy_locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from podium.proxy.router import ContentRouter

        self.router = ContentRouter(self)
        self.scheduler.env_factory = self.content_env
        self.scheduler.warm_targets = self.warm_targets

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def bundle_archive(self, content_id: int, bundle_id: int) -> Path:
        return self.data_dir / "bundles" / str(content_id) / f"{bundle_id}.tar.gz"

    def bundle_dir(self, content_id: int, bundle_id: int) -> Path:
        return self.data_dir / "apps" / str(content_id) / str(bundle_id)

    def tmp_dir(self) -> Path:
        path = self.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def content_url(self, guid: str) -> str:
        return f"{self.settings.effective_public_url}content/{guid}/"

    def dashboard_url(self, guid: str) -> str:
        return f"{self.settings.effective_public_url}connect/#/apps/{guid}"

    def deploy_lock(self, content_id: int) -> asyncio.Lock:
        return self.deploy_locks.setdefault(content_id, asyncio.Lock())

    def content_changed(self, guid: str | None = None) -> None:
        """Forget cached routing facts about content (all content when ``guid`` is None)."""
        self.router.invalidate(guid)

    def users_changed(self) -> None:
        self.router.forget_users()

    # --- what the scheduler runs ----------------------------------------------------------

    def limits(self, content: Content) -> RuntimeLimits:
        from podium.scheduler import RuntimeLimits

        s = self.settings

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        return RuntimeLimits(
            min_processes=int(pick(content.min_processes, s.min_processes)),
            max_processes=int(pick(content.max_processes, s.max_processes)),
            max_conns_per_process=int(pick(content.max_conns_per_process, s.max_conns_per_process)),
            load_factor=pick(content.load_factor, s.load_factor),
            idle_timeout=pick(content.idle_timeout, s.idle_timeout_seconds),
            init_timeout=pick(content.init_timeout, s.init_timeout_seconds),
            connection_timeout=pick(content.connection_timeout, s.connection_timeout_seconds),
            read_timeout=pick(content.read_timeout, s.read_timeout_seconds),
        )

    def job_resources(self, content: Content) -> JobResources:
        """Resources and service account of every job of ``content`` (:mod:`podium.resources`)."""
        from podium.resources import for_content

        return for_content(content, self.settings)

    def app_target(self, content_id: int, bundle_id: int, draft: bool) -> AppTarget | None:
        """What runs for ``bundle_id`` of a content, or None when it is not runnable."""
        from podium.scheduler import AppTarget

        with self.store.session() as session:
            content = session.get(Content, content_id)
            bundle = session.get(Bundle, bundle_id)
            if content is None or bundle is None or bundle.content_id != content_id:
                return None
            # Python apps run with their venv's python, R apps with the environment's R.
            if bundle.app_mode in PYTHON_INTERACTIVE:
                interpreter = bundle.python_path
            elif bundle.app_mode in R_INTERACTIVE:
                interpreter = bundle.r_path
            else:
                return None
            if not interpreter:
                return None
            if not draft and content.bundle_id != bundle_id:
                return None
            base = f"/content/{content.guid}/" + (f"_bundle{bundle_id}/" if draft else "")
            job = self.job_resources(content)
            return AppTarget(
                content_id=content.id,
                content_guid=content.guid,
                bundle_id=bundle.id,
                app_mode=bundle.app_mode,
                entrypoint=(bundle.manifest.get("metadata") or {}).get("entrypoint"),
                python=interpreter,
                workdir=str(self.bundle_dir(content.id, bundle.id).resolve()),
                base_path=base,
                draft=draft,
                limits=self.limits(content),
                resources=job.resources,
                service_account=job.service_account,
                resource_warnings=job.warnings,
                image=bundle.image_name,
            )

    def wanted_target(self, content_id: int, bundle_id: int | None, base_path: str) -> AppTarget | None:
        if bundle_id is None:
            return None
        draft = "/_bundle" in base_path
        target = self.app_target(content_id, bundle_id, draft)
        return target if target is not None and target.base_path == base_path else None

    def warm_targets(self) -> list[AppTarget]:
        """Active bundles whose content keeps processes warm (``min_processes`` > 0)."""
        with self.store.session() as session:
            query = select(Content.id, Content.bundle_id, Content.min_processes).where(
                Content.bundle_id.is_not(None), Content.app_mode.in_(PYTHON_INTERACTIVE | R_INTERACTIVE)
            )
            rows = list(session.execute(query))
        targets = []
        for content_id, bundle_id, min_processes in rows:
            wanted = self.settings.min_processes if min_processes is None else min_processes
            if wanted > 0 and bundle_id is not None:
                target = self.app_target(content_id, bundle_id, draft=False)
                if target is not None:
                    targets.append(target)
        return targets

    def content_env(self, target: AppTarget) -> dict[str, str]:
        """The environment of a content process: Podium's variables, then the content's."""
        from podium.api.env_vars import decrypted_env

        python_bin = str(Path(target.python).parent)
        home = self.data_dir / "home" / target.content_guid
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "CONNECT_SERVER": self.settings.effective_public_url,
            "CONNECT_CONTENT_GUID": target.content_guid,
            "RSTUDIO_PRODUCT": "CONNECT",
            "POSIT_PRODUCT": "CONNECT",
        }
        with self.store.session() as session:
            user_env = decrypted_env(self, session, target.content_id)
            bundle = session.get(Bundle, target.bundle_id)
            if bundle is not None and bundle.r_library:  # its R packages ahead of the environment's
                env["R_LIBS"] = bundle.r_library
        return {**user_env, **env}


def make_backend(settings: Settings, data: Path) -> ExecutionBackend:
    """The local backend, or the Kubernetes one when ``kubernetes_enabled`` is set."""
    from podium.runtime import LocalBackend

    if not settings.kubernetes_enabled:
        return LocalBackend(data / "jobs")
    from podium.runtime.kubernetes.backend import KubernetesBackend
    from podium.runtime.kubernetes.client import AsyncioKubeClient
    from podium.runtime.kubernetes.manifests import KubernetesJobConfig

    config = KubernetesJobConfig(
        namespace=settings.kubernetes_namespace,
        instance=settings.kubernetes_instance,
        default_image=settings.kubernetes_default_image,
        data_pvc=settings.kubernetes_data_pvc or None,
        data_sub_path=settings.kubernetes_data_sub_path,
        data_mount_path=str(data),
        image_pull_policy=settings.kubernetes_image_pull_policy,
        image_pull_secrets=tuple(settings.kubernetes_image_pull_secrets),
        ttl_seconds_after_finished=settings.kubernetes_job_ttl_seconds,
        default_service_account=settings.default_service_account or None,
        job_template_patch=settings.kubernetes_job_template_patch,
    )
    kubeconfig = str(settings.kubernetes_kubeconfig) if settings.kubernetes_kubeconfig else None
    return KubernetesBackend(lambda: AsyncioKubeClient.connect(kubeconfig), config)


def open_podium(settings: Settings) -> Podium:
    """Make the data dir, migrate the database and assemble the server state."""
    from uv import find_uv_bin

    from podium.apps import runner_source
    from podium.build import Builder
    from podium.build.python import discover_pythons
    from podium.environments.catalogue import sync_catalogue
    from podium.environments.host import local_environment
    from podium.jobs import JobRunner
    from podium.runtime import allocate_port
    from podium.scheduler import Scheduler

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    data = settings.data_dir.resolve()
    store = Store(settings.effective_database_url)
    store.migrate()
    backend = make_backend(settings, data)
    jobs = JobRunner(store, backend)
    installations = discover_pythons(settings.python_installations)
    log.info("Python installations: %s", ", ".join(f"{i.version_text} ({i.path})" for i in installations) or "none")
    local = local_environment(
        installations, settings.r_installations, settings.quarto_installations,
        settings.local_environment_matching,
    )
    sync_catalogue(store, settings.declared_environments, local)
    builder = Builder(
        jobs, data / "envs", data / "cache", find_uv_bin(), settings.package_index_url,
        settings.build_timeout_seconds, settings.r_repository_url,
    )
    runtime_dir = data / "runtime"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runner = runtime_dir / "podium_runner.py"
    tmp = runner.with_suffix(".tmp")
    tmp.write_text(runner_source())
    tmp.replace(runner)
    socket_dir, listen_host = None, "$(POD_IP)"  # pods: bind the pod IP, as the kubelet expands it
    if not settings.kubernetes_enabled:  # processes on this host: reach them by unix socket
        socket_dir, listen_host = data / "run" / "sockets", "127.0.0.1"
        socket_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.chmod(0o700)
    scheduler = Scheduler(
        jobs, str(runner), lambda _target: {}, settings.stop_grace_seconds, allocate_port,
        socket_dir, listen_host,
    )
    return Podium(
        settings=settings,
        store=store,
        secrets=SecretBox.from_file(settings.effective_secret_key_file),
        tasks=TaskManager(store),
        backend=backend,
        jobs=jobs,
        builder=builder,
        scheduler=scheduler,
    )
