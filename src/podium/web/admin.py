"""Administration pages: users, running processes, execution environments, the audit log."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, auth
from podium.api import audit_logs as audit_api
from podium.api import deps
from podium.api import environments as environments_api
from podium.api import repository as repository_api
from podium.api import users as users_api
from podium.api.jobs import job_json
from podium.environments.model import MATCHING
from podium.environments.validate import CLUSTERS
from podium.resources import for_content
from podium.scheduler import Scheduler
from podium.settings import Settings
from podium.store.models import Job, User
from podium.web.pages import administrator, as_page_errors
from podium.web.templating import render

router = APIRouter()
RUNTIMES = (("python", "Python"), ("r", "R"), ("quarto", "Quarto"))
TABS = (
    ("users", "Users"), ("processes", "Processes"), ("environments", "Environments"), ("tags", "Tags"),
    ("usage", "Usage"), ("packages", "Packages"), ("caches", "Runtime caches"), ("oauth", "OAuth integrations"),
    ("git", "Git credentials"), ("audit", "Audit log"),
)
AUDIT_PAGE_SIZE = 50


@router.get("/connect/admin")
@router.get("/connect/admin/")
def admin_index() -> Response:
    return RedirectResponse("/connect/admin/users", status_code=303)


@router.get("/connect/admin/users")
def users_page(
    request: Request,
    prefix: str = "",
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    listing = users_api.list_users(prefix or None, None, None, 1, 500, session, user)
    return render(
        request, "admin_users.html", user=user, tabs=TABS, tab="users",
        users=listing["results"], total=listing["total"], prefix=prefix, roles=auth.ROLES,
    )


@dataclass(frozen=True)
class ProcessRow:
    job: dict[str, Any]
    content_title: str
    content_guid: str
    cpu_limit: float | None
    memory_limit: int | None
    connections: int | None
    state: str


def running_processes(settings: Settings, scheduler: Scheduler, session: Session) -> list[ProcessRow]:
    """Every active job, with the limits it runs under and its connections."""
    rows = []
    for job in session.scalars(select(Job).where(Job.status == 0).order_by(Job.id)):
        content = job.content
        # Builds and renders run under the content's resolved resources, as processes do.
        resolved = for_content(content, settings.job_policy).resources
        cpu, memory, conns, state = resolved.cpu_limit, resolved.memory_limit, None, "running"
        for pool, process in scheduler.processes_of(content.id):
            if process.key == job.key:
                cpu = pool.target.resources.cpu_limit
                memory = pool.target.resources.memory_limit
                conns = process.conns
                state = "serving" if process.serving else "starting" if process.starting else "stopping"
        rows.append(
            ProcessRow(job_json(job, content), content.title or content.name, content.guid,
                       cpu, memory, conns, state)
        )
    return rows


@router.get("/connect/admin/processes")
def processes_page(
    request: Request,
    settings: Settings = Depends(deps.settings),
    scheduler: Scheduler = Depends(deps.scheduler),
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    return render(
        request, "admin_processes.html", user=user, tabs=TABS, tab="processes",
        processes=running_processes(settings, scheduler, session),
    )


def _installation_lines(environment: dict[str, Any], runtime: str) -> str:
    return "\n".join(
        f"{i['version']} {i['path']}" for i in environment[runtime]["installations"]
    )


@router.get("/connect/admin/environments")
def environments_page(
    request: Request,
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    environments = environments_api.list_environments(session, user)
    for environment in environments:
        environment["lines"] = {r: _installation_lines(environment, r) for r, _ in RUNTIMES}
    return render(
        request, "admin_environments.html", user=user, tabs=TABS, tab="environments",
        environments=environments, runtimes=RUNTIMES, matching=MATCHING, clusters=CLUSTERS,
    )


@router.get("/connect/admin/git")
def git_page(
    request: Request,
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    return render(
        request, "admin_git.html", user=user, tabs=TABS, tab="git",
        credentials=repository_api.list_credentials(session, user),
        allow_local=settings.git_allow_local_repositories, interval=settings.git_polling_interval_seconds,
    )


@router.get("/connect/admin/audit")
def audit_page(
    request: Request,
    action: str = "",
    user_guid: str = "",
    older: str = "",
    newer: str = "",
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    """The audit log, newest first, :data:`AUDIT_PAGE_SIZE` entries a page; filters by
    action and by acting user. ``older``/``newer`` are the API's cursors."""
    with as_page_errors():
        page = audit_api.audit_page(
            session, AUDIT_PAGE_SIZE, False, audit_api.parse_cursor("older", older),
            audit_api.parse_cursor("newer", newer), action or None, user_guid or None,
        )
    users = users_api.list_users(None, None, None, 1, 500, session, user)["results"]
    entries = [
        {**audit_api.entry_json(e), "shown_time": e.time.strftime("%Y-%m-%d %H:%M:%S UTC")}
        for e in page.entries
    ]
    filters = {k: v for k, v in (("action", action), ("user_guid", user_guid)) if v}
    return render(
        request, "admin_audit.html", user=user, tabs=TABS, tab="audit", entries=entries,
        actions=audit.ACTIONS, users=users, action=action, user_guid=user_guid,
        newest=_audit_link(filters) if page.previous is not None else None,
        newer=_audit_link(filters, newer=page.previous) if page.previous is not None else None,
        older=_audit_link(filters, older=page.next) if page.next is not None else None,
    )


def _audit_link(filters: dict[str, str], **cursor: int) -> str:
    query = urllib.parse.urlencode({**filters, **{k: str(v) for k, v in cursor.items()}})
    return "/connect/admin/audit" + (f"?{query}" if query else "")
