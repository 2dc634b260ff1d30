"""The content list (``/connect/``) and the content page with its settings panes.

Reads go through the same functions the API answers with, called on the
server with the signed-in user, so a page shows exactly what the API would let
that user see; every change is made by the page's scripts through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth
from podium.api import bundles as bundles_api
from podium.api import content as content_api
from podium.api import deps
from podium.api import env_vars as env_vars_api
from podium.api import groups as groups_api
from podium.api import jobs as jobs_api
from podium.api import oauth as oauth_api
from podium.api import packages as packages_api
from podium.api import permissions as permissions_api
from podium.api import renderings as renderings_api
from podium.api import repository as repository_api
from podium.api import schedules as schedules_api
from podium.api import users as users_api
from podium.api.serialize import user_json
from podium.render import SUPPORTED_RENDER_MODES
from podium.scheduler import Scheduler
from podium.settings import Settings
from podium.store.models import Bundle, Content, Tag, User, Vanity
from podium.urls import Urls
from podium.web import settings_view, usage_view
from podium.web.pages import PageError, as_page_errors, current_user, signed_in
from podium.web.templating import app_mode_label, render

router = APIRouter()

# Panes of the content page, in order: (slug, label, needs manage rights).
PANES: tuple[tuple[str, str, bool], ...] = (
    ("info", "Info", False),
    ("access", "Access", True),
    ("runtime", "Runtime", True),
    ("resources", "Resources", True),
    ("environment", "Execution environment", True),
    ("service-account", "Service account", True),
    ("variables", "Environment variables", True),
    ("bundles", "Bundles", True),
    ("usage", "Usage", True),
    ("packages", "Packages", True),
    ("integrations", "OAuth integrations", True),
    ("repository", "Repository", True),
    ("renderings", "Renderings", False),
    ("logs", "Logs", True),
)


def _status(scheduler: Scheduler, item: dict[str, Any]) -> str:
    if item["bundle_id"] is None:
        return "Not deployed"
    running = [p for _, p in scheduler.processes_of(int(item["id"])) if p.serving]
    if running:
        return f"Running ({len(running)} process{'es' if len(running) > 1 else ''})"
    return "Deployed"


@dataclass(frozen=True)
class PageParts:
    """What the content page reads besides the database."""

    settings: Settings
    urls: Urls
    scheduler: Scheduler


def page_parts(
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    scheduler: Scheduler = Depends(deps.scheduler),
) -> PageParts:
    return PageParts(settings, urls, scheduler)


@router.get("/connect/")
def content_list(
    request: Request,
    q: str = "",
    app_mode: str = "",
    owner: str = "",
    tag: str = "",
    urls: Urls = Depends(deps.urls),
    scheduler: Scheduler = Depends(deps.scheduler),
    session: Session = Depends(deps.db),
    user: User | None = Depends(current_user),
) -> Response:
    if user is None:
        # The fragment (#/apps/...) never reaches the server: the sign-in page keeps
        # ``next`` as /connect/ and the redirect script runs after sign-in instead.
        return render(request, "connect_redirect.html")
    items = content_api.list_content(
        request, None, None, "owner,tags", urls, session, deps.Caller(user, "session")
    )
    owners = sorted({(i["owner"]["guid"], i["owner"]["username"]) for i in items}, key=lambda o: o[1])
    modes = sorted({i["app_mode"] for i in items})
    needle = q.strip().lower()
    shown = [
        i for i in items
        if (not needle or needle in f"{i['name']} {i['title'] or ''} {i['description']}".lower())
        and (not app_mode or i["app_mode"] == app_mode)
        and (not owner or i["owner"]["guid"] == owner)
        and (not tag or tag in {t["id"] for t in i["tags"]})
    ]
    shown.sort(key=lambda i: i["last_deployed_time"] or "", reverse=True)
    for item in shown:
        item["status"] = _status(scheduler, item)
    return render(
        request, "content_list.html", user=user, items=shown, total=len(items), owners=owners,
        modes=modes, q=q, app_mode=app_mode, owner=owner, tag=tag, tags=tag_choices(session),
    )


@router.get("/connect/apps/{guid}")
def content_page_default(
    guid: str,
    request: Request,
    draft: str | None = None,
    rendering: str | None = None,
    parts: PageParts = Depends(page_parts),
    session: Session = Depends(deps.db),
    user: User = Depends(signed_in),
) -> Response:
    return content_page(guid, "info", request, draft, rendering, parts, session, user)


@router.get("/connect/apps/{guid}/draft/{bundle_id}")
def content_draft(guid: str, bundle_id: str) -> Response:
    """Connect's draft link (``#/apps/{guid}/draft/{id}``) after the fragment redirect."""
    return RedirectResponse(f"/connect/apps/{guid}?draft={bundle_id}", status_code=303)


@router.get("/connect/apps/{guid}/{pane}")
def content_page(
    guid: str,
    pane: str,
    request: Request,
    draft: str | None = None,
    rendering: str | None = None,
    parts: PageParts = Depends(page_parts),
    session: Session = Depends(deps.db),
    user: User = Depends(signed_in),
) -> Response:
    with as_page_errors():
        content = content_api.visible_content(session, user, guid)
    manage = auth.can_manage(session, user, content)
    panes = [
        (slug, label) for slug, label, needs in PANES
        if (manage or not needs)
        and (slug != "renderings" or content.app_mode in SUPPORTED_RENDER_MODES)
    ]
    if pane not in {slug for slug, _ in panes}:
        if pane in {slug for slug, _, _ in PANES}:
            raise PageError(403, "Only the owner, collaborators and administrators can see this pane.")
        raise PageError(404, f"The content page has no pane {pane!r}.")
    item = content_api.content_view(session, parts.urls, user, content, {"owner", "tags"})
    item["status"] = _status(parts.scheduler, item)
    frame = parts.urls.content(content.guid)  # on the content origin, never this one
    if draft and draft.isdigit() and manage:
        frame += f"_bundle{draft}/"
    elif rendering and rendering.isdigit():
        frame += f"_rendering{rendering}/"
    context: dict[str, Any] = {
        "item": item, "content": content, "pane": pane, "panes": panes, "manage": manage,
        "frame_url": frame if content.bundle_id is not None or draft else None,
        "draft": draft if manage else None,
        "rendering": rendering if rendering and rendering.isdigit() else None,
        "mode_label": app_mode_label(content.app_mode),
    }
    with as_page_errors():
        context.update(_pane_context(pane, parts, session, user, content))
    return render(request, "content.html", user=user, **context)


def _pane_context(
    pane: str, parts: PageParts, session: Session, user: User, content: Content
) -> dict[str, Any]:
    guid = content.guid
    if pane == "access":
        permissions = permissions_api.list_permissions(guid, session, user)
        users = users_api.list_users(None, None, None, 1, 500, session, user)["results"]
        by_guid = {u["guid"]: u for u in users}
        for permission in permissions:
            permission["user"] = by_guid.get(permission["principal_guid"])
        groups = groups_api.list_groups(None, 1, 1000, True, session, user)["results"]
        by_group = {g["guid"]: g for g in groups}
        for permission in permissions:
            permission["group"] = by_group.get(permission["principal_guid"])
        granted = {p["principal_guid"] for p in permissions}
        candidates = [
            u for u in users
            if u["guid"] != content.owner.guid and not u["locked"] and u["guid"] not in granted
        ]
        group_candidates = [g for g in groups if g["guid"] not in granted]
        return {"permissions": permissions, "candidates": candidates, "group_candidates": group_candidates}
    if pane == "runtime":
        return {"runtime": settings_view.runtime_fields(parts.settings, content)}
    if pane == "resources":
        return {"resources": settings_view.resource_fields(parts.settings, content)}
    if pane == "environment":
        return {"environment": settings_view.environment_facts(parts.settings, session, user, content)}
    if pane == "variables":
        return {"variables": env_vars_api.list_env_vars(guid, session, user)}
    if pane == "bundles":
        bundles = bundles_api.list_bundles(guid, session, user)
        creators = {b["created_by"] for b in bundles if b["created_by"]}
        names = {
            u.guid: u.username
            for u in session.query(User).filter(User.guid.in_(creators))
        } if creators else {}
        for bundle in bundles:
            bundle["creator"] = names.get(bundle["created_by"], "—")
        return {"bundles": bundles}
    if pane == "repository":
        repo = repository_api.repository_of(session, content)
        return {
            "location": repository_api.location_json(repo) if repo is not None else None,
            "webhook_url": repository_api.webhook_url(parts.urls, guid),
            "webhook_configured": repo is not None and repo.webhook_secret_encrypted is not None,
            "git_enabled": parts.settings.git_enabled,
        }
    if pane == "renderings":
        caller = deps.Caller(user, "session")
        schedules = schedules_api.list_schedules(str(content.id), session, user)
        return {
            "renderings": renderings_api.list_renderings(guid, parts.urls, session, caller),
            "schedule": settings_view.schedule_view(schedules[0]) if schedules else None,
            "schedule_types": settings_view.SCHEDULE_TYPES,
        }
    if pane == "usage":
        return usage_view.usage_context(session, content.guid)
    if pane == "packages":
        environments = packages_api.active_environments(session, content)
        return {
            "packages": packages_api.content_packages(session, content),
            "package_environments": [(e.language, e.language_version) for e in environments],
            "has_lockfile": any(e.language == "Python" for e in environments),
        }
    if pane == "integrations":
        associated = [oauth_api.association_json(a) for a in oauth_api.content_associations(session, content)]
        chosen = {a["oauth_integration_guid"] for a in associated}
        integrations = oauth_api.list_integrations(session, user)
        return {"associations": associated,
                "integration_choices": [i for i in integrations if i["guid"] not in chosen]}
    if pane == "logs":
        jobs = jobs_api.list_jobs(guid, session, user)
        return {"jobs": jobs}
    if pane == "info":
        vanity = session.scalar(select(Vanity.path).where(Vanity.content_id == content.id))
        return {
            "owner": user_json(content.owner),
            "bundle_count": session.query(Bundle).filter(Bundle.content_id == content.id).count(),
            "vanity": vanity,
            "vanity_editable": parts.settings.publishers_can_manage_vanities or auth.at_least(user, "administrator"),
            "tag_choices": tag_choices(session),
        }
    return {}


def tag_choices(session: Session) -> list[dict[str, Any]]:
    """Every tag content may carry (not the categories), labelled with its path
    (``Category / Topic / Subtopic``), in the order of those labels."""
    tags = {tag.id: tag for tag in session.scalars(select(Tag))}

    def label(tag: Tag) -> str:
        parts = [tag.name]
        seen = {tag.id}
        while tag.parent_id is not None and tag.parent_id in tags and tag.parent_id not in seen:
            tag = tags[tag.parent_id]
            seen.add(tag.id)
            parts.append(tag.name)
        return " / ".join(reversed(parts))

    choices = [{"id": str(t.id), "label": label(t)} for t in tags.values() if t.parent_id is not None]
    return sorted(choices, key=lambda c: c["label"].lower())


@router.get("/connect/apps")
def apps_index() -> Response:
    return RedirectResponse("/connect/", status_code=303)
