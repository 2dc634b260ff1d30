"""The composition root: :func:`build` makes every part of one server node, once.

Each part takes only the collaborators it uses; this module is the one place
that knows them all. :func:`build` opens the data dir and the database and
wires the parts; :func:`create_app` makes the FastAPI app that serves the API,
the dashboard and the content routes with them (each endpoint names the parts
it uses, see :mod:`podium.api.deps`); ``podium.serve`` puts the proxy front
before it. ``docs/architecture.md`` draws the layers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from podium import __version__, errors, hitlog, web
from podium.api import (
    audit_logs,
    bundles,
    caches,
    content,
    deploy,
    env_vars,
    environments,
    groups,
    instrumentation,
    jobs,
    keys,
    oauth,
    packages,
    permissions,
    renderings,
    repository,
    schedules,
    server,
    tags,
    transfer,
    users,
    vanities,
)
from podium.apps import write_runner
from podium.build import Builder
from podium.caches import RuntimeCaches
from podium.changefeed import ChangeFeed
from podium.changes import Changes
from podium.deploy import Deployer
from podium.environments.catalogue import sync_catalogue
from podium.environments.host import local_environment
from podium.environments.python import discover_pythons
from podium.git.publish import GitPublisher
from podium.git.remote import GitRunner
from podium.handoff import Handoff
from podium.isolation import Isolation
from podium.jobs import JobRunner
from podium.layout import DataLayout, NodeDirs
from podium.leases import Leases
from podium.nodes import DeadNode, NodeHeartbeat
from podium.oauth import ContentSessionTokens, ServiceTokenCache, Signer, UserSessionTokens
from podium.proxy import routes as content_routes
from podium.proxy.router import ContentRouter
from podium.render import Renderer, fail_interrupted_renderings
from podium.render.schedules import ScheduleRunner
from podium.render.tasks import RenderTasks
from podium.resources import for_content
from podium.runtime import ExecutionBackend, LocalBackend, allocate_port
from podium.runtime.sandbox import SandboxSupport, probe_sandbox
from podium.runtime.transfer import TransferTokens
from podium.scheduler import Scheduler
from podium.secrets import EnvVars, SecretBox
from podium.settings import Settings, SettingsError
from podium.store import Store
from podium.targets import AppTargets
from podium.tasks import ContentLocks, TaskManager
from podium.throttle import Throttle, policies_from_settings
from podium.urls import Urls
from podium.usage import UsageRecorder

log = logging.getLogger(__name__)
API = "/__api__"
# Duties one node of several does at a time, each under a lease of this name (podium.leases).
DUTY_MINIMUMS = "scheduler-minimums"  # keeping content's min_processes running
DUTY_SCHEDULES = "render-schedules"  # starting due scheduled renders
DUTIES = (DUTY_MINIMUMS, DUTY_SCHEDULES)


@dataclass(frozen=True)
class Node:
    """The parts of one server node that outlive requests (see :func:`build`)."""

    settings: Settings
    store: Store
    layout: DataLayout
    dirs: NodeDirs
    heartbeat: NodeHeartbeat
    feed: ChangeFeed
    urls: Urls
    changes: Changes
    env_vars: EnvVars
    handoff: Handoff
    oauth_signer: Signer
    service_tokens: ServiceTokenCache
    isolation: Isolation
    backend: ExecutionBackend
    jobs: JobRunner
    tasks: TaskManager
    scheduler: Scheduler
    targets: AppTargets
    deployer: Deployer
    caches: RuntimeCaches
    secret_box: SecretBox
    usage: UsageRecorder | None
    render_tasks: RenderTasks
    router: ContentRouter
    throttle: Throttle
    transfer_tokens: TransferTokens
    git: GitPublisher


def make_backend(
    settings: Settings, layout: DataLayout, urls: Urls | None = None, tokens: TransferTokens | None = None,
    pool_key: bytes = b"",
) -> ExecutionBackend:
    """The local backend, or the Kubernetes one when ``kubernetes_enabled`` is set."""
    if not settings.kubernetes_enabled:
        return LocalBackend(layout.jobs, node_id=settings.effective_node_id)
    # Imported here: the Kubernetes client (aiohttp) adds half a second to every start.
    from podium.runtime import Placement
    from podium.runtime.kubernetes.backend import KubernetesBackend
    from podium.runtime.kubernetes.client import AsyncioKubeClient, own_service_account
    from podium.runtime.kubernetes.keptlogs import KeptLogs
    from podium.runtime.kubernetes.manifests import KubernetesJobConfig

    own = own_service_account()
    if own and own not in settings.kubernetes_denied_service_accounts:  # never content's
        settings.kubernetes_denied_service_accounts = [*settings.kubernetes_denied_service_accounts, own]
    config = KubernetesJobConfig(
        namespace=settings.kubernetes_namespace,
        instance=settings.kubernetes_instance,
        default_image=settings.kubernetes_default_image,
        data_pvc=settings.kubernetes_data_pvc or None,
        data_sub_path=settings.kubernetes_data_sub_path,
        data_mount_path=str(layout.root),
        image_pull_policy=settings.kubernetes_image_pull_policy,
        image_pull_secrets=tuple(settings.kubernetes_image_pull_secrets),
        ttl_seconds_after_finished=settings.kubernetes_job_ttl_seconds,
        default_service_account=settings.default_service_account or None,
        job_template_patch=settings.kubernetes_job_template_patch,
        run_as_user=settings.kubernetes_run_as_user,
        run_as_group=settings.kubernetes_run_as_group,
        tmp_size_limit_bytes=settings.kubernetes_tmp_size_limit_bytes or None,
        node=settings.effective_node_id,
        placement=Placement(
            node_selector=dict(settings.kubernetes_node_selector),
            tolerations=tuple(settings.kubernetes_tolerations),
            affinity=dict(settings.kubernetes_affinity),
            priority_class_name=settings.kubernetes_priority_class_name or None,
            runtime_class_name=settings.kubernetes_runtime_class_name or None,
        ),
        shared_volume=settings.kubernetes_shared_volume,
        transfer_url=settings.kubernetes_transfer_url or (urls.public if urls is not None else ""),
        transfer_token_ttl_seconds=settings.kubernetes_transfer_token_ttl_seconds,
        transfer_upload_ttl_seconds=settings.kubernetes_transfer_upload_ttl_seconds,
        transfer_scratch=(str(layout.cache),),  # a build pod starts with an empty uv cache
        warm_pool_size=settings.kubernetes_warm_pool_size,
        # the default shape: what content that sets none of its own resources gets
        warm_pool_resources=for_content(object(), settings.job_policy).resources,
        warm_pool_key=pool_key,
    )
    kubeconfig = str(settings.kubernetes_kubeconfig) if settings.kubernetes_kubeconfig else None
    days = settings.kubernetes_job_log_retention_days
    kept = KeptLogs(layout.jobs / "kubernetes", days * 86400.0) if days else None
    return KubernetesBackend(lambda: AsyncioKubeClient.connect(kubeconfig), config, kept, tokens)


def make_isolation(settings: Settings, data_dir: Path) -> Isolation:
    """The local sandbox policy, with what this host can do found by a real probe (said
    loudly when content cannot be isolated)."""
    if settings.kubernetes_enabled:  # pods: the same sandboxes, as volumes and a security context
        return Isolation.for_pods(settings.kubernetes_run_as_user, settings.kubernetes_run_as_group, data_dir)
    support = SandboxSupport(False, "the sandbox setting is off")
    isolation = Isolation(settings.sandbox, settings.sandbox_uid_base, support, data_dir)
    if settings.sandbox != "off":
        uid = isolation.content_uid(1)
        isolation.support = probe_sandbox(uid, uid)
    problem = isolation.problem()
    if problem:
        log.error("%s", problem)
    else:
        log.info("content runs sandboxed: %s", isolation.support.reason)
    return isolation


def build(settings: Settings) -> Node:
    """Make the data dir, migrate the database and wire every part of the server."""
    from uv import find_uv_bin

    layout = DataLayout(settings.data_dir.resolve()).create()
    node_id = settings.effective_node_id
    runtime_dir = settings.effective_runtime_dir.resolve()
    if runtime_dir.is_relative_to(layout.root):
        raise SettingsError(f"runtime_dir {runtime_dir} is inside data_dir, which several nodes may share; "
                            "give each node a directory of its own elsewhere")
    try:
        dirs = NodeDirs(runtime_dir).create()
    except (OSError, RuntimeError) as exc:
        raise SettingsError(f"runtime_dir: {exc}") from exc
    log.info("node %s: runtime dir %s", node_id, dirs.root)
    store = Store(settings.effective_database_url)
    store.migrate()
    leases = Leases(store, node_id, settings.node_timeout_seconds)
    for duty in DUTIES:
        leases.want(duty)
    urls = Urls.from_settings(settings)
    changes = Changes()
    box = SecretBox.from_file(settings.effective_secret_key_file)
    env_vars = EnvVars(box)
    handoff = Handoff(box.derive("content-pass"), settings.content_session_lifetime_seconds)
    oauth_signer = Signer(box.derive("oauth"))
    tokens = TransferTokens(layout.root)
    backend = make_backend(settings, layout, urls, tokens, box.derive("warm-pool"))
    jobs = JobRunner(store, backend, node_id)
    tasks = TaskManager(store, node_id)
    locks = ContentLocks()
    installations = discover_pythons(settings.python_installations)
    log.info("Python installations: %s", ", ".join(f"{i.version_text} ({i.path})" for i in installations) or "none")
    local = local_environment(
        installations, settings.r_installations, settings.quarto_installations,
        settings.local_environment_matching,
    )
    sync_catalogue(store, settings.declared_environments, local)
    isolation = make_isolation(settings, layout.root)
    if isinstance(backend, LocalBackend) and isolation.support.available:
        backend.sandbox_probed()  # the first build need not run the same probe again
    builder = Builder(
        jobs, layout.envs, layout.cache, find_uv_bin(), settings.package_index_url,
        settings.build_timeout_seconds, settings.r_repository_url, isolation,
        start_timeout_seconds=settings.init_timeout_seconds,
    )
    targets = AppTargets(store, settings, layout, env_vars, urls, isolation, ContentSessionTokens(oauth_signer))
    socket_dir, listen_host = None, "$(POD_IP)"  # pods: bind the pod IP, as the kubelet expands it
    if not settings.kubernetes_enabled:  # processes on this host: reach them by unix socket
        socket_dir, listen_host = dirs.sockets, "127.0.0.1"
    scheduler = Scheduler(
        jobs, str(write_runner(layout.runtime)), targets.content_env, settings.stop_grace_seconds,
        allocate_port, socket_dir, listen_host, warm_targets=targets.warm_targets,
        keeps_minimums=lambda: leases.held(DUTY_MINIMUMS), active_bundles=targets.active_bundles,
        websocket_handoff=settings.websocket_handoff,
    )

    async def take_over(dead: DeadNode) -> None:
        await scheduler.take_over(dead.job_keys, dead.node_id, dead.hostname, targets.wanted_target)

    heartbeat = NodeHeartbeat(
        store, node_id, leases, settings.node_heartbeat_seconds, settings.node_timeout_seconds, take_over
    )
    renderer = Renderer(store, settings, layout, jobs, env_vars, urls, isolation, changes,
                        ContentSessionTokens(oauth_signer))
    usage = (UsageRecorder(store, settings.usage_flush_seconds, settings.usage_retention_days,
                           spool=layout.usage_spool, node=node_id,
                           import_delay_seconds=settings.usage_import_delay_seconds)
             if settings.usage_recording else None)
    if usage is not None and not hitlog.COMPILED:
        log.warning("usage is recorded in Python, which costs each request served for content about a "
                    "microsecond more: podium._hitlog was not built (it needs a C compiler and Python's "
                    "headers at install: make install)")
    router = ContentRouter(
        store, settings.session_lifetime_seconds, targets.app_target, scheduler, urls, handoff, layout,
        usage=usage, oauth_sessions=UserSessionTokens(oauth_signer),
        starting_page_after_seconds=settings.starting_page_after_seconds,
    )
    changes.on_content(router.invalidate)
    changes.on_content(scheduler.content_changed)
    changes.on_users(router.forget_users)
    deployer = Deployer(store, settings, layout, builder, renderer, scheduler, changes, locks, urls)
    runner = GitRunner(settings.git_timeout_seconds, settings.git_allow_local_repositories)
    if settings.git_enabled and not runner.available:
        log.warning("git is not installed on this server: deploys from git repositories will fail")
    git = GitPublisher(store, settings, layout, box, runner, deployer, tasks)
    feed = ChangeFeed(settings.effective_database_url, node_id, changes.apply)
    changes.on_nodes(heartbeat.wake)  # another node left its jobs: claim them now
    changes.publish_to(feed.publish)
    return Node(
        settings=settings,
        store=store,
        layout=layout,
        dirs=dirs,
        heartbeat=heartbeat,
        feed=feed,
        urls=urls,
        changes=changes,
        env_vars=env_vars,
        handoff=handoff,
        oauth_signer=oauth_signer,
        service_tokens=ServiceTokenCache(),
        isolation=isolation,
        backend=backend,
        jobs=jobs,
        tasks=tasks,
        scheduler=scheduler,
        targets=targets,
        deployer=deployer,
        caches=RuntimeCaches(store, deployer),
        usage=usage,
        secret_box=box,
        render_tasks=RenderTasks(store, settings, layout, renderer, tasks, locks, urls),
        router=router,
        throttle=Throttle(store, policies_from_settings(settings)),
        transfer_tokens=tokens,
        git=git,
    )


def _error_response(exc: errors.ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def api_error(_request: Request, exc: errors.ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        )
        return _error_response(errors.bad_request(f"Invalid request: {problems}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return _error_response(errors.unsupported_endpoint(request.url.path))
        return _error_response(errors.ApiError(exc.status_code, 1, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(errors.internal())


def _install_health(app: FastAPI, node: Node) -> None:
    """Probes for a load balancer or Kubernetes, unauthenticated and saying nothing secret:
    ``/__ping__`` answers while the process does (liveness; Connect has it too);
    ``/__ready__`` answers 200 only while this node can serve: its database answers and,
    with the Kubernetes backend, its watches of the cluster's Jobs and Pods are up."""

    def database() -> None:
        with node.store.session() as session:
            session.execute(text("SELECT 1"))

    @app.get("/__ping__", include_in_schema=False)
    async def ping() -> dict[str, str]:
        return {}

    @app.get("/__ready__", include_in_schema=False)
    async def ready() -> JSONResponse:
        if getattr(app.state, "stopping", False):
            return JSONResponse({"ready": False, "problems": ["the server is stopping"]}, status_code=503)
        problems = []
        try:
            await asyncio.wait_for(asyncio.to_thread(database), 5.0)
        except Exception as exc:
            log.warning("readiness: the database does not answer (%s)", exc.__class__.__name__)
            problems.append("the database does not answer")
        if node.settings.kubernetes_enabled:
            from podium.runtime.kubernetes.backend import KubernetesBackend

            if isinstance(node.backend, KubernetesBackend):
                problem = await node.backend.watching()
                if problem:
                    problems.append(problem)
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503)
        return JSONResponse({"ready": True})


def create_app(node: Node) -> FastAPI:
    """The FastAPI app of ``node``: API, dashboard and content routes, and the node's
    background duties (process adoption, scaling, render schedules) in its lifespan."""
    settings = node.settings
    # A clean stop that leaves its content running hands it to the other nodes at once
    # when they can reach it: Kubernetes Jobs, as in a rolling update (podium.nodes).
    hand_over = settings.kubernetes_enabled and settings.effective_keep_processes_on_shutdown

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        leases = node.heartbeat.leases
        render_schedules = ScheduleRunner(
            node.store, settings.schedule_poll_seconds, node.render_tasks.run_scheduled,
            on_duty=lambda: leases.held(DUTY_SCHEDULES),
        )
        try:
            node.heartbeat.register()
            node.feed.start()  # other nodes' changes reach this node's caches
            node.tasks.fail_interrupted()
            fail_interrupted_renderings(node.store, node.heartbeat.node_id)
            await node.scheduler.adopt(node.targets.wanted_target)
            node.scheduler.start()
            node.heartbeat.start()
            render_schedules.start()
            node.throttle.start()
            if settings.git_enabled:
                node.git.start()
            if node.usage is not None:
                node.usage.start()
        except BaseException as exc:
            # What had started (content processes adopted or started, background tasks,
            # the importer) is stopped as at a normal stop, not left running without
            # its server; each close does nothing for what had not started. (uvicorn
            # shows the traceback.)
            log.error("the start failed (%s: %s); stopping what had started", type(exc).__name__, exc)
            await stop(application, render_schedules)
            raise
        log.info("Podium %s started; the front opens %s next", __version__, settings.listen)
        yield
        await stop(application, render_schedules)

    async def stop(application: FastAPI, render_schedules: ScheduleRunner) -> None:
        # Each step runs whatever became of the ones before it: one that raises (a bug,
        # a failure it does not handle itself) is logged, and content processes are still
        # stopped or handed over rather than left running without their server.
        failed: list[str] = []

        async def step(what: str, close: Callable[[], Awaitable[object] | None]) -> None:
            try:
                done = close()
                if done is not None:
                    await done
            except Exception:
                log.exception("stopping: %s failed; the stop goes on", what)
                failed.append(what)

        await step("the heartbeat", node.heartbeat.close)  # first: its duties move to another node at once
        await step("git polling", node.git.close)
        await step("the change feed", node.feed.close)
        await step("API key throttling", node.throttle.close)
        if node.usage is not None:
            await step("usage recording", node.usage.close)  # what is buffered is written
        await step("render schedules", render_schedules.close)
        await step("tasks", node.tasks.shutdown)
        await step("the builder", node.deployer.builder.close)  # compile jobs: the next deploy compiles again
        await step("content processes", functools.partial(
            node.scheduler.close, stop_processes=not settings.effective_keep_processes_on_shutdown))
        if hand_over:
            try:
                await asyncio.to_thread(node.heartbeat.leave)
            except Exception:
                log.exception("node %s: could not hand its jobs over (another node takes them after "
                              "node_timeout_seconds)", node.heartbeat.node_id)
            else:
                # live nodes claim them now, not at their next beat
                await step("announcing the hand-over", functools.partial(node.feed.announce, "nodes"))
        await step("the execution backend", node.backend.close)
        await step("the database connections", node.store.dispose)
        if failed:
            log.error("the stop was not clean: %s failed (logged above); the rest of it went on",
                      ", ".join(failed))
        application.state.stop_failed = failed  # podium.serve exits 1

    app = FastAPI(
        title="Podium",
        version=__version__,
        description="Posit Connect-compatible server API of Podium.",
        docs_url="/__docs__",
        redoc_url=None,
        openapi_url=f"{API}/openapi.json",
        lifespan=lifespan,
    )
    # What endpoints may ask for (podium.api.deps), one attribute per part.
    for name in ("settings", "store", "layout", "urls", "changes", "env_vars", "handoff", "oauth_signer", "isolation",
                 "backend", "tasks", "jobs", "scheduler", "deployer", "render_tasks", "throttle", "caches",
                 "secret_box", "service_tokens", "transfer_tokens", "git", "usage"):
        setattr(app.state, name, getattr(node, name))
    _install_error_handlers(app)
    _install_health(app, node)
    for module in (
        server, users, keys, content, bundles, deploy, env_vars, permissions, jobs, environments,
        renderings, schedules, audit_logs, groups, tags, vanities, packages, caches, oauth, transfer,
        repository, instrumentation,
    ):
        app.include_router(module.router, prefix=API)
    app.include_router(content_routes.router)
    web.install(app)
    return app
