"""Publishing from the browser: upload a bundle archive, or point at a git repository, and
watch it deploy.

The page's script does what a client would through the API: create the
content (or pick one the user manages), upload the archive, ask for a deploy,
and follow the task's output.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from podium import auth
from podium.api import content as content_api
from podium.api import deps
from podium.settings import Settings
from podium.store.models import User
from podium.urls import Urls
from podium.web.pages import publisher
from podium.web.templating import render

router = APIRouter()


@router.get("/connect/publish")
def publish_page(
    request: Request,
    target: str = "",
    urls: Urls = Depends(deps.urls),
    settings: Settings = Depends(deps.settings),
    session: Session = Depends(deps.db),
    user: User = Depends(publisher),
) -> Response:
    items = content_api.list_content(
        request, None, None, None, urls, session, deps.Caller(user, "session")
    )
    managed = [
        i for i in items
        if auth.can_manage(session, user, content_api.load_content(session, i["guid"]))
    ]
    managed.sort(key=lambda i: (i["title"] or i["name"]).lower())
    return render(
        request, "publish.html", user=user, managed=managed, target=target,
        max_bytes=settings.bundle_max_bytes,
    )


@router.get("/connect/publish/git")
def publish_git_page(
    request: Request,
    settings: Settings = Depends(deps.settings),
    user: User = Depends(publisher),
) -> Response:
    return render(request, "publish_git.html", user=user, git_enabled=settings.git_enabled)
