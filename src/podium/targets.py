"""What runs for a content item's bundle: the scheduler's targets, resolved from the database.

:class:`AppTargets` turns a (content, bundle) into an :class:`~podium.scheduler.AppTarget`
(the interpreter, the bundle directory, the public prefix, the effective runtime limits
and resources) and gives each process its environment. The content router asks it what
a request's bundle runs; the scheduler asks it which targets stay warm and what
environment a new process gets.
"""

from __future__ import annotations

from sqlalchemy import select

from podium.appmodes import PYTHON_INTERACTIVE, R_INTERACTIVE
from podium.apps.environment import process_env, split_secret
from podium.isolation import Isolation, interpreter_paths
from podium.layout import DataLayout
from podium.oauth import CONTENT_SESSION_VARIABLE, ContentSessionTokens
from podium.resources import for_content
from podium.scheduler import AppTarget, RuntimeLimits
from podium.secrets import EnvVars
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Bundle, Content
from podium.urls import Urls


class AppTargets:
    def __init__(
        self, store: Store, settings: Settings, layout: DataLayout, env_vars: EnvVars, urls: Urls,
        isolation: Isolation, content_sessions: ContentSessionTokens | None = None,
    ) -> None:
        self.store = store
        # Gives each process its CONNECT_CONTENT_SESSION_TOKEN (Service Account integrations).
        self.content_sessions = content_sessions
        self.settings = settings
        self.layout = layout
        self.env_vars = env_vars
        self.urls = urls
        self.isolation = isolation

    def limits(self, content: Content) -> RuntimeLimits:
        """The content's runtime settings with the server defaults for those left ``null``."""
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

    def app_target(self, content_id: int, bundle_id: int, draft: bool) -> AppTarget | None:
        """What runs for ``bundle_id`` of a content, or None when it is not runnable."""
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
            job = for_content(content, self.settings.job_policy)
            workdir = str(self.layout.bundle_dir(content.id, bundle.id).resolve())
            sandbox = self.isolation.sandbox(
                self.isolation.content_uid(content.id),
                read_only=[workdir, *interpreter_paths(interpreter), bundle.r_library, self.layout.runtime],
                writable=[self.layout.home(content.guid)],
            )
            return AppTarget(
                content_id=content.id,
                content_guid=content.guid,
                bundle_id=bundle.id,
                app_mode=bundle.app_mode,
                entrypoint=(bundle.manifest.get("metadata") or {}).get("entrypoint"),
                python=interpreter,
                workdir=workdir,
                base_path=base,
                draft=draft,
                limits=self.limits(content),
                resources=job.resources,
                service_account=job.service_account,
                resource_warnings=job.warnings,
                image=bundle.image_name,
                sandbox=sandbox,
                placement=job.placement,
            )

    def wanted_target(self, content_id: int, bundle_id: int | None, base_path: str) -> AppTarget | None:
        """The target a process found running at start should serve, or None to stop it."""
        if bundle_id is None:
            return None
        draft = "/_bundle" in base_path
        target = self.app_target(content_id, bundle_id, draft)
        return target if target is not None and target.base_path == base_path else None

    def active_bundles(self, content_ids: set[int]) -> dict[int, int | None]:
        """The active bundle of each of ``content_ids`` that still exists."""
        if not content_ids:
            return {}
        with self.store.session() as session:
            rows = session.execute(select(Content.id, Content.bundle_id).where(Content.id.in_(content_ids)))
            return {content_id: bundle_id for content_id, bundle_id in rows}

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

    def content_env(self, target: AppTarget) -> tuple[dict[str, str], dict[str, str]]:
        """The environment of a content process, Podium's variables over the content's, as
        (plain, secret): the content's own values are secret."""
        with self.store.session() as session:
            bundle = session.get(Bundle, target.bundle_id)
            content_vars = self.env_vars.decrypted(session, target.content_id)
            plain, secret = split_secret(process_env(
                public_url=self.urls.public,
                content_guid=target.content_guid,
                home=self.layout.home(target.content_guid),
                interpreter=target.python,
                r_library=bundle.r_library if bundle is not None else None,
                content_vars=content_vars,
                extra={"PODIUM_ACCESS_LOG": "1"} if self.settings.content_access_log else None,
            ), content_vars)
        if self.content_sessions is not None:
            secret[CONTENT_SESSION_VARIABLE] = self.content_sessions.issue(target.content_guid)
        return plain, secret
