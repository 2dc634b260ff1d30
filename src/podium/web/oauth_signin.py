"""A viewer's sign-in with a Viewer OAuth integration's provider (dashboard origin), for
every template whose flows :mod:`podium.oauth` performs (:data:`podium.oauth.FLOW_TEMPLATES`).

``/__oauth__/content/{guid}`` lists the content's Viewer integrations, each with
"Sign in" or "Disconnect". ``/__oauth__/connect/{integration}?content=...`` starts the
authorization-code flow: the ``state`` is signed and names the viewer's login session,
the integration and the content; the PKCE verifier is derived from the state with the
server key, so only this server can finish the flow. ``/__oauth__/integrations/callback``
(Connect's redirect URI, so a provider registration made for Connect serves Podium too)
checks the state against the signed-in viewer, trades the code (with the client secret) at the
template's token endpoint (:class:`podium.oauth.Provider`), keeps the tokens encrypted
per (viewer, integration) and sends the viewer back to the content. Tokens are never
logged or shown.
"""

from __future__ import annotations

import logging
import urllib.parse
import uuid
from html import escape

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from podium import audit, auth, oauth
from podium.api import deps
from podium.api.oauth import content_associations, provider_of, sign_in_url, store_tokens
from podium.auth import SessionInfo
from podium.secrets import SecretBox
from podium.settings import Settings
from podium.store.models import Content, OAuthIntegration, OAuthToken
from podium.urls import Urls

router = APIRouter()
log = logging.getLogger(__name__)
# The redirect URI the provider sends viewers back to: Connect's, so an OAuth application
# registered for Connect needs no change. Podium before 2026-12-07 sent the second; it
# still answers there, so a sign-in started before an upgrade finishes (an application
# registered with only the second needs Connect's added).
CALLBACK_PATH = "__oauth__/integrations/callback"
EARLIER_CALLBACK_PATH = "__oauth__/callback"


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - Podium</title></head>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>{escape(title)}</h1>{body}</body></html>", status_code=status,
        headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
    )


def _signed_in(request: Request, session: Session, settings: Settings) -> SessionInfo | None:
    token = request.cookies.get(auth.SESSION_COOKIE)
    return auth.user_for_session(session, token, settings.session_lifetime_seconds) if token else None


def _to_login(request: Request) -> Response:
    here = request.url.path + ("?" + request.url.query if request.url.query else "")
    return RedirectResponse("/__login__?next=" + urllib.parse.quote(here, safe="/"), status_code=303)


def _viewable(session: Session, info: SessionInfo, guid: str) -> Content | None:
    """The content ``guid`` if the viewer may open it."""
    try:
        content = session.scalar(select(Content).where(Content.guid == str(uuid.UUID(guid))))
    except ValueError:
        return None
    return content if content is not None and auth.can_view(session, info.user, content) else None


def _viewer_integrations(session: Session, content: Content) -> list[OAuthIntegration]:
    return [a.integration for a in content_associations(session, content) if a.integration.auth_type == "Viewer"]


@router.get("/__oauth__/content/{guid}")
def content_integrations(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
) -> Response:
    """The OAuth pane of a content item: its Viewer integrations and the viewer's sign-ins."""
    info = _signed_in(request, session, settings)
    if info is None:
        return _to_login(request)
    content = _viewable(session, info, guid)
    if content is None:
        return _page("No such content", "<p>No content you may view has that guid.</p>", 404)
    rows = []
    for integration in _viewer_integrations(session, content):
        connected = session.scalar(select(OAuthToken.id).where(
            OAuthToken.user_id == info.user.id, OAuthToken.integration_id == integration.id)) is not None
        if connected:
            action = (f"<form method='post' action='/__oauth__/disconnect/{integration.guid}'>"
                      f"<input type='hidden' name='csrf_token' value='{escape(info.csrf_token)}'>"
                      f"<input type='hidden' name='content' value='{content.guid}'>"
                      "<button type='submit'>Disconnect</button></form>")
        elif integration.template in oauth.FLOW_TEMPLATES:
            action = (f"<a href='{escape(sign_in_url(urls, integration, content.guid))}'>"
                      f"Sign in to {escape(integration.name)}</a>")
        else:
            action = "<em>Podium does not sign in with this template</em>"
        state = "connected" if connected else "not connected"
        rows.append(f"<li><strong>{escape(integration.name)}</strong> ({state}) {action}</li>")
    listing = "<ul>" + "".join(rows) + "</ul>" if rows else "<p>This content uses no Viewer integration.</p>"
    back = f"<p><a href='{escape(urls.content(content.guid))}'>Open the content</a></p>"
    return _page(f"OAuth sign-ins for {content.title or content.name}", listing + back)


@router.get("/__oauth__/connect/{integration_guid}")
def connect(
    integration_guid: str,
    request: Request,
    content: str = "",
    session: Session = Depends(deps.db),
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    box: SecretBox = Depends(deps.secret_box),
    signer: oauth.Signer = Depends(deps.oauth_signer),
) -> Response:
    """Start the viewer's authorization-code flow with the integration's provider."""
    info = _signed_in(request, session, settings)
    if info is None:
        return _to_login(request)
    item = _viewable(session, info, content)
    integration = session.scalar(select(OAuthIntegration).where(OAuthIntegration.guid == integration_guid))
    if item is None or integration is None or integration not in _viewer_integrations(session, item):
        return _page("No such integration", "<p>That content has no such Viewer integration.</p>", 404)
    if integration.template not in oauth.FLOW_TEMPLATES:
        return _page("Not supported", f"<p>Podium does not sign in with {escape(integration.name)} "
                     f"({escape(integration.template)} template).</p>", 400)
    session.commit()
    state = signer.sign("oauth-state", (str(info.id), integration.guid, item.guid), oauth.STATE_SECONDS)
    try:
        target = provider_of(box, integration).authorize_url(urls.public + CALLBACK_PATH, state,
                                                             signer.derive(state))
    except oauth.FlowError as exc:
        return _page("Cannot sign in", f"<p>{escape(str(exc))}</p>", 400)
    response = RedirectResponse(target, status_code=303)
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


@router.get("/" + CALLBACK_PATH)
@router.get("/" + EARLIER_CALLBACK_PATH)
def callback(
    request: Request,
    code: str = "",
    state: str = "",
    error: str = "",
    session: Session = Depends(deps.db),
    settings: Settings = Depends(deps.settings),
    urls: Urls = Depends(deps.urls),
    box: SecretBox = Depends(deps.secret_box),
    signer: oauth.Signer = Depends(deps.oauth_signer),
) -> Response:
    """The provider sends the viewer back here with a code (or an error)."""
    info = _signed_in(request, session, settings)
    if info is None:
        return _to_login(request)
    opened = signer.open("oauth-state", state, 3)
    if opened is None or opened[0] != str(info.id):
        return _page("Sign-in failed", "<p>The sign-in has expired or was started by another session: "
                     "start it again from the content.</p>", 400)
    _, integration_guid, content_guid, _ = opened
    integration = session.scalar(select(OAuthIntegration).where(OAuthIntegration.guid == integration_guid))
    if integration is None:
        return _page("Sign-in failed", "<p>The integration no longer exists.</p>", 400)
    if error or not code:
        return _page("Sign-in failed", f"<p>The provider answered: {escape(error or 'no code')}.</p>", 400)
    try:
        # The token request names the redirect URI the sign-in was sent back to.
        called = EARLIER_CALLBACK_PATH if request.url.path.endswith("/" + EARLIER_CALLBACK_PATH) else CALLBACK_PATH
        tokens = provider_of(box, integration).exchange_code(code, urls.public + called, signer.derive(state))
    except oauth.FlowError as exc:
        log.warning("OAuth integration %s: sign-in of user %s failed: %s", integration.guid, info.user.guid, exc)
        return _page("Sign-in failed", f"<p>{escape(str(exc))}</p>", 502)
    store_tokens(session, box, integration, info.user, tokens)
    audit.record(session, info.user, "oauth_sign_in",
                 f"Signed in with OAuth integration {integration.name!r} ({integration.guid}).")
    session.commit()
    response = RedirectResponse(urls.content(content_guid), status_code=303)
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response


@router.post("/__oauth__/disconnect/{integration_guid}")
def disconnect(
    integration_guid: str,
    request: Request,
    csrf_token: str = Form(""),
    content: str = Form(""),
    session: Session = Depends(deps.db),
    settings: Settings = Depends(deps.settings),
) -> Response:
    """Forget the viewer's tokens from the integration."""
    info = _signed_in(request, session, settings)
    if info is None:
        return _to_login(request)
    if not auth.csrf_ok(info.csrf_token, csrf_token):
        return HTMLResponse("Disconnecting needs the page's CSRF token.", status_code=403)
    integration = session.scalar(select(OAuthIntegration).where(OAuthIntegration.guid == integration_guid))
    if integration is not None:
        session.execute(delete(OAuthToken).where(
            OAuthToken.user_id == info.user.id, OAuthToken.integration_id == integration.id))
        audit.record(session, info.user, "oauth_sign_out",
                     f"Disconnected from OAuth integration {integration.name!r} ({integration.guid}).")
    session.commit()
    try:
        back = f"/__oauth__/content/{uuid.UUID(content)}"
    except ValueError:
        back = "/connect/"
    return RedirectResponse(back, status_code=303)
