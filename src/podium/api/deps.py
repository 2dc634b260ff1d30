"""Request dependencies: the server's parts an endpoint uses, the database session, the caller.

``app.py`` puts each part on ``app.state`` once; an endpoint names the ones it uses
in its signature (``settings: Settings = Depends(deps.settings)``), so what an
endpoint touches is read from its parameters.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import credentials
from podium.caches import RuntimeCaches
from podium.changes import Changes
from podium.deploy import Deployer
from podium.git.publish import GitPublisher
from podium.handoff import Handoff
from podium.jobs import JobRunner
from podium.layout import DataLayout
from podium.oauth import ServiceTokenCache, Signer
from podium.render.tasks import RenderTasks
from podium.runtime import ExecutionBackend
from podium.runtime.transfer import TransferTokens
from podium.scheduler import Scheduler
from podium.secrets import EnvVars, SecretBox
from podium.settings import Settings
from podium.store import Store
from podium.store.models import User
from podium.tasks import TaskManager
from podium.urls import Urls

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def store(request: Request) -> Store:
    return cast(Store, request.app.state.store)


def layout(request: Request) -> DataLayout:
    return cast(DataLayout, request.app.state.layout)


def urls(request: Request) -> Urls:
    return cast(Urls, request.app.state.urls)


def changes(request: Request) -> Changes:
    return cast(Changes, request.app.state.changes)


def env_vars(request: Request) -> EnvVars:
    return cast(EnvVars, request.app.state.env_vars)


def backend(request: Request) -> ExecutionBackend:
    return cast(ExecutionBackend, request.app.state.backend)


def handoff(request: Request) -> Handoff:
    return cast(Handoff, request.app.state.handoff)


def tasks(request: Request) -> TaskManager:
    return cast(TaskManager, request.app.state.tasks)


def jobs(request: Request) -> JobRunner:
    return cast(JobRunner, request.app.state.jobs)


def scheduler(request: Request) -> Scheduler:
    return cast(Scheduler, request.app.state.scheduler)


def deployer(request: Request) -> Deployer:
    return cast(Deployer, request.app.state.deployer)


def caches(request: Request) -> RuntimeCaches:
    return cast(RuntimeCaches, request.app.state.caches)


def oauth_signer(request: Request) -> Signer:
    return cast(Signer, request.app.state.oauth_signer)


def service_tokens(request: Request) -> ServiceTokenCache:
    return cast(ServiceTokenCache, request.app.state.service_tokens)


def secret_box(request: Request) -> SecretBox:
    return cast(SecretBox, request.app.state.secret_box)


def git(request: Request) -> GitPublisher:
    return cast(GitPublisher, request.app.state.git)


def render_tasks(request: Request) -> RenderTasks:
    return cast(RenderTasks, request.app.state.render_tasks)


def db(parts: Store = Depends(store)) -> Iterator[Session]:
    """A session for one request. Endpoints that change data commit themselves,
    so the change is durable before the response leaves."""
    session = parts.new_session()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@dataclass(frozen=True)
class Caller:
    user: User | None
    via: str  # "key", "session" or "anonymous"


def _from_elsewhere(request: Request, settings: Settings) -> bool:
    """Whether a browser sent this request from a page of another origin (the content
    origin, say): ``Sec-Fetch-Site`` says so, or an ``Origin`` that is not the dashboard's."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return True
    origin = request.headers.get("origin")
    if origin is None:
        return False
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}",
           urllib.parse.urljoin(settings.effective_public_url, "/").rstrip("/")}
    return origin not in own


def resolve_caller(request: Request, settings: Settings, session: Session) -> Caller:
    """Who is calling: an API key, else a login session cookie, else nobody.

    A key that does not match is an error (401, code 30) rather than anonymous
    access, so a mistyped key is reported instead of silently showing less; wrong keys
    are counted per client address and throttled (:mod:`podium.api.credentials`).

    The session cookie counts only for the dashboard's own pages. A cookie-authenticated
    request sent by a page of another origin is refused (403) when it would change
    state and is anonymous otherwise, except a top-level navigation (a link followed
    to the dashboard). Requests that change state must also carry the session's CSRF
    token in ``X-CSRF-Token``, which only dashboard pages hold (``request.state.csrf_token``
    hands it to the page being rendered); API keys need neither.
    """
    key = auth.parse_authorization(request.headers.get("authorization"))
    if key is None:
        key = request.headers.get("x-rsc-authorization") or None
    if key is not None:
        user = credentials.user_for_key(request, session, key)
        session.commit()
        return Caller(user, "key")
    token = request.cookies.get(auth.SESSION_COOKIE)
    if token:
        safe = request.method in _SAFE_METHODS
        if _from_elsewhere(request, settings):
            if not safe:
                raise errors.forbidden(
                    "Refused: this request changes state with the dashboard's session cookie but "
                    "comes from a page of another origin. Only the dashboard's own pages may do "
                    "that; scripts and other clients use an API key."
                )
            if request.headers.get("sec-fetch-mode") != "navigate":
                return Caller(None, "anonymous")
        info = auth.user_for_session(session, token, settings.session_lifetime_seconds)
        if info is not None:
            request.state.csrf_token = info.csrf_token
            if not safe and not auth.csrf_ok(
                info.csrf_token, request.headers.get("x-csrf-token")
            ):
                raise errors.forbidden(
                    "Missing or wrong X-CSRF-Token header for a cookie-authenticated request."
                )
            session.commit()
            return Caller(info.user, "session")
    return Caller(None, "anonymous")


def caller(
    request: Request, config: Settings = Depends(settings), session: Session = Depends(db)
) -> Caller:
    return resolve_caller(request, config, session)


def user(who: Caller = Depends(caller)) -> User:
    """The authenticated user; 401 when there is none."""
    if who.user is None:
        raise errors.auth_required()
    return who.user


def publisher(current: User = Depends(user)) -> User:
    if not auth.at_least(current, "publisher"):
        raise errors.forbidden("This operation needs the publisher or administrator role.")
    return current


def administrator(current: User = Depends(user)) -> User:
    if not auth.at_least(current, "administrator"):
        raise errors.forbidden("This operation needs the administrator role.")
    return current


def transfer_tokens(request: Request) -> TransferTokens:
    return cast(TransferTokens, request.app.state.transfer_tokens)
