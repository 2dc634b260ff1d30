"""The profile page: who you are, and your API keys (created once, revoked)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from podium.api import deps
from podium.api import keys as keys_api
from podium.api.serialize import user_json
from podium.store.models import User
from podium.web.pages import signed_in
from podium.web.templating import render

router = APIRouter()


@router.get("/connect/profile")
def profile_page(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(signed_in)
) -> Response:
    keys = keys_api.list_keys(user.guid, session, user)
    return render(request, "profile.html", user=user, me=user_json(user), keys=keys)
