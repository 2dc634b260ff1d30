"""Admin → Packages ("which content uses package X version Y"), Runtime caches (list,
delete as a task) and OAuth integrations (create, delete, see their content), each
through the API's own functions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import oauth
from podium.api import deps
from podium.api import oauth as oauth_api
from podium.api import packages as packages_api
from podium.caches import list_caches
from podium.store.models import Content, OAuthIntegration, User
from podium.web.admin import TABS
from podium.web.pages import administrator, as_page_errors
from podium.web.templating import render

router = APIRouter()
PACKAGE_ROWS = 500


@router.get("/connect/admin/packages")
def packages_page(
    request: Request,
    name: str = "",
    version: str = "",
    language: str = "",
    session: Session = Depends(deps.db),
    user: User = Depends(administrator),
) -> Response:
    rows: list[dict[str, str | None]] = []
    if name:
        with as_page_errors():
            query = packages_api.package_query(session, user, name=name.strip(), version=version.strip() or None,
                                               language=language or None)
            rows = [packages_api.package_json(r) for r in session.execute(query.limit(PACKAGE_ROWS)).all()]
        titles = {}
        for row in rows:
            guid = str(row["content_guid"])
            if guid not in titles:
                content = session.scalar(select(Content).where(Content.guid == guid))
                titles[guid] = (content.title or content.name) if content is not None else guid
            row["title"] = titles[guid]
    return render(request, "admin_packages.html", user=user, tabs=TABS, tab="packages", rows=rows,
                  name=name, version=version, language=language, limit=PACKAGE_ROWS)


@router.get("/connect/admin/caches")
def caches_page(request: Request, session: Session = Depends(deps.db), user: User = Depends(administrator)) -> Response:
    return render(request, "admin_caches.html", user=user, tabs=TABS, tab="caches",
                  caches=[key.json() for key in list_caches(session)])


@router.get("/connect/admin/oauth")
def oauth_page(request: Request, session: Session = Depends(deps.db), user: User = Depends(administrator)) -> Response:
    integrations = []
    for integration in session.scalars(select(OAuthIntegration).order_by(OAuthIntegration.id)):
        shown = oauth_api.integration_json(integration)
        shown["secret_set"] = integration.client_secret_encrypted is not None
        shown["content"] = oauth_api.integration_associations(integration.guid, session, user)
        integrations.append(shown)
    return render(request, "admin_oauth.html", user=user, tabs=TABS, tab="oauth", integrations=integrations,
                  templates=list(oauth.TEMPLATES.values()))
