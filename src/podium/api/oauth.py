"""``v1/oauth``: OAuth integrations (administrators change them; publishers read them to
associate their content), their templates, content associations (replace-all PUT) and
the credentials exchange, for every template whose flows :mod:`podium.oauth` performs.
Client secrets are encrypted at rest and stripped from every answer; Service Account
tokens are kept per process (:class:`podium.oauth.ServiceTokenCache`) until they near
their expiry, and forgotten when their integration changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.parse
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from podium import audit, auth, errors, oauth
from podium.api import deps
from podium.api.body import json_array, json_object
from podium.api.content import describe, managed_content, visible_content
from podium.api.lookup import by_guid
from podium.api.serialize import iso
from podium.changes import Changes
from podium.secrets import SecretBox
from podium.store.models import Content, OAuthAssociation, OAuthIntegration, OAuthToken, User, utcnow
from podium.urls import Urls

log = logging.getLogger(__name__)
# An access token this close to expiring is refreshed before it is handed out.
REFRESH_MARGIN = timedelta(seconds=30)

router = APIRouter()


def integration_json(integration: OAuthIntegration) -> dict[str, Any]:
    return {
        "id": str(integration.id),
        "guid": integration.guid,
        "created_time": iso(integration.created_time),
        "updated_time": iso(integration.updated_time),
        "name": integration.name,
        "description": integration.description,
        "template": integration.template,
        "auth_type": integration.auth_type,
        "config": {k: v for k, v in integration.config.items() if k not in oauth.SECRET_FIELDS},
    }


def association_json(association: OAuthAssociation) -> dict[str, Any]:
    integration = association.integration
    return {
        "app_guid": association.content.guid,
        "oauth_integration_guid": integration.guid,
        "oauth_integration_name": integration.name,
        "oauth_integration_description": integration.description,
        "oauth_integration_template": integration.template,
        "oauth_integration_auth_type": integration.auth_type,
        "created_time": iso(association.created_time),
    }


def _text(body: dict[str, Any], field: str, default: str | None = None) -> str:
    value = body.get(field, default)
    if not isinstance(value, str) or (field == "name" and not value.strip()):
        raise errors.bad_request(f"{field} must be {'a non-empty' if field == 'name' else 'a'} string.", code=25)
    return value


def _apply(integration: OAuthIntegration, template: Any, config: Any, box: SecretBox) -> None:
    try:
        chosen, auth_type, public, secret = oauth.check(
            template, config, integration.client_secret_encrypted is not None
        )
    except oauth.InvalidIntegration as exc:
        raise errors.bad_request(str(exc), code=25) from None
    integration.template, integration.auth_type, integration.config = chosen.key, auth_type, public
    if secret is not None:
        integration.client_secret_encrypted = box.encrypt(secret)


@router.get("/v1/oauth/templates")
def list_templates(_user: User = Depends(deps.publisher)) -> list[dict[str, Any]]:
    return [t.json() for t in oauth.TEMPLATES.values()]


@router.get("/v1/oauth/templates/{key}")
def get_template(key: str, _user: User = Depends(deps.publisher)) -> dict[str, Any]:
    if key not in oauth.TEMPLATES:
        raise errors.not_found("OAuth template", key)
    return oauth.TEMPLATES[key].json()


@router.get("/v1/oauth/integrations")
def list_integrations(
    session: Session = Depends(deps.db), _user: User = Depends(deps.publisher)
) -> list[dict[str, Any]]:
    return [integration_json(i) for i in session.scalars(select(OAuthIntegration).order_by(OAuthIntegration.id))]


@router.post("/v1/oauth/integrations")
async def create_integration(
    request: Request,
    session: Session = Depends(deps.db),
    box: SecretBox = Depends(deps.secret_box),
    admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    body = await json_object(request)
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise errors.bad_request("description must be a string.", code=25)
    integration = OAuthIntegration(name=_text(body, "name"), description=description)
    _apply(integration, body.get("template"), body.get("config", {}), box)
    session.add(integration)
    session.flush()
    audit.record(session, admin, "add_oauth_integration",
                 f"Created OAuth integration {integration.name!r} ({integration.guid}, {integration.template}).")
    session.commit()
    return integration_json(integration)


def sign_in_url(urls: Urls, integration: OAuthIntegration, content_guid: str) -> str:
    """Where a viewer signs in with ``integration``'s provider, coming back to the content."""
    return (f"{urls.public}__oauth__/connect/{integration.guid}?"
            f"{urllib.parse.urlencode({'content': content_guid})}")


def _associated(session: Session, content: Content, auth_type: str, audience: str | None) -> OAuthIntegration:
    """The content's one associated integration of ``auth_type`` (``audience``: that guid)."""
    found = [a.integration for a in content_associations(session, content)
             if a.integration.auth_type == auth_type]
    if audience:
        found = [i for i in found if i.guid == audience]
    if not found:
        raise errors.bad_request(
            f"The content has no associated {auth_type} OAuth integration"
            + (f" with guid {audience!r}." if audience else "."), code=25)
    if len(found) > 1:
        raise errors.bad_request(f"The content has several {auth_type} OAuth integrations: "
                                 "give the one wanted as audience.", code=25)
    return found[0]


def provider_of(box: SecretBox, integration: OAuthIntegration) -> oauth.Provider:
    """The integration's provider, with its client secret decrypted for the flows."""
    secret = (box.decrypt(integration.client_secret_encrypted)
              if integration.client_secret_encrypted is not None else None)
    return oauth.Provider(oauth.TEMPLATES[integration.template], integration.config, secret)


def _version(integration: OAuthIntegration) -> str:
    """A digest of what a Service Account token depends on: template, config (scopes
    included) and the encrypted secret. Any change, made on any node, changes it."""
    digest = hashlib.sha256(json.dumps([integration.template, integration.auth_type, integration.config],
                                       sort_keys=True, default=str).encode())
    digest.update(integration.client_secret_encrypted or b"")
    return digest.hexdigest()


def _service_account_token(box: SecretBox, cache: oauth.ServiceTokenCache,
                           integration: OAuthIntegration) -> oauth.Tokens:
    """An access token for the integration's own account (client credentials grant),
    from the cache while it is fresh."""
    if integration.template not in oauth.FLOW_TEMPLATES:
        raise errors.bad_request(f"Service Account credentials from {integration.template!r} integrations "
                                 "are not supported.", code=25)
    version = _version(integration)
    cached = cache.get(integration.guid, version)
    if cached is not None:
        return cached
    try:
        granted = provider_of(box, integration).client_credentials()
    except oauth.FlowError as exc:
        log.warning("OAuth integration %s: client credentials grant failed: %s", integration.guid, exc)
        raise errors.bad_request(f"The provider of {integration.name!r} refused: {exc}", code=25) from None
    cache.put(integration.guid, version, granted)
    return granted


def viewer_access_token(session: Session, box: SecretBox, integration: OAuthIntegration, user: User,
                        sign_in: str) -> OAuthToken:
    """The viewer's stored tokens for ``integration``, refreshed when the access token has
    expired; 400 naming ``sign_in`` when there are none (or they cannot be refreshed)."""
    stored = session.scalar(select(OAuthToken).where(
        OAuthToken.user_id == user.id, OAuthToken.integration_id == integration.id))
    if stored is None:
        raise errors.bad_request(
            f"{user.username} has not signed in with the OAuth integration {integration.name!r}: "
            f"sign in at {sign_in}", code=25)
    if stored.expires_time is not None and stored.expires_time <= utcnow() + REFRESH_MARGIN:
        if stored.refresh_token_encrypted is None:
            raise errors.bad_request(
                f"The access token from {integration.name!r} has expired: sign in again at {sign_in}", code=25)
        try:
            fresh = provider_of(box, integration).refresh(box.decrypt(stored.refresh_token_encrypted))
        except oauth.FlowError as exc:
            log.warning("OAuth integration %s: refreshing a token of user %s failed: %s",
                        integration.guid, user.guid, exc)
            raise errors.bad_request(
                f"The access token from {integration.name!r} could not be refreshed ({exc}): "
                f"sign in again at {sign_in}", code=25) from None
        store_tokens(session, box, integration, user, fresh, stored)
        session.commit()
    return stored


def store_tokens(session: Session, box: SecretBox, integration: OAuthIntegration, user: User,
                 tokens: oauth.Tokens, stored: OAuthToken | None = None) -> OAuthToken:
    """Keep ``tokens`` encrypted as the viewer's for ``integration`` (a refresh that
    brings no new refresh token keeps the old one); the caller commits."""
    if stored is None:
        stored = session.scalar(select(OAuthToken).where(
            OAuthToken.user_id == user.id, OAuthToken.integration_id == integration.id))
    if stored is None:
        stored = OAuthToken(user_id=user.id, integration_id=integration.id)
        session.add(stored)
    stored.access_token_encrypted = box.encrypt(tokens.access_token)
    if tokens.refresh_token is not None:
        stored.refresh_token_encrypted = box.encrypt(tokens.refresh_token)
    stored.token_type = tokens.token_type[:64]
    stored.expires_time = utcnow() + timedelta(seconds=tokens.expires_in) if tokens.expires_in is not None else None
    return stored


@router.post("/v1/oauth/integrations/credentials")
async def exchange_credentials(
    request: Request,
    session: Session = Depends(deps.db),
    box: SecretBox = Depends(deps.secret_box),
    signer: oauth.Signer = Depends(deps.oauth_signer),
    service_tokens: oauth.ServiceTokenCache = Depends(deps.service_tokens),
    urls: Urls = Depends(deps.urls),
) -> dict[str, Any]:
    """Connect's credentials exchange (RFC 8693 form): a user-session token, which the
    proxy gave the content for one viewer, buys that viewer's access token from the
    content's Viewer integration; a content session token (the content process's
    ``CONNECT_CONTENT_SESSION_TOKEN``) buys an access token of the content's Service
    Account integration (client credentials grant, cached until shortly before it expires).
    The signed token is the credential; an API key is not needed."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if fields.get("grant_type") != oauth.GRANT_TYPE:
        raise errors.bad_request(f"grant_type must be {oauth.GRANT_TYPE}.", code=25)
    token_type = fields.get("subject_token_type")
    if token_type not in (oauth.USER_SESSION_TOKEN, oauth.CONTENT_SESSION_TOKEN):
        raise errors.bad_request(f"subject_token_type must be {oauth.USER_SESSION_TOKEN} or "
                                 f"{oauth.CONTENT_SESSION_TOKEN}.", code=25)
    wanted = fields.get("requested_token_type")
    if wanted == oauth.API_KEY:
        raise errors.bad_request("Podium does not issue visitor API keys: the Visitor API Key flow of "
                                 "connect integrations is not performed.", code=25)
    if wanted and wanted != oauth.ACCESS_TOKEN:
        raise errors.bad_request(f"requested_token_type must be {oauth.ACCESS_TOKEN}.", code=25)
    if token_type == oauth.CONTENT_SESSION_TOKEN:
        guid = oauth.ContentSessionTokens(signer).open(fields.get("subject_token", ""))
        item = session.scalar(select(Content).where(Content.guid == guid)) if guid else None
        if item is None:
            raise errors.bad_request("The content session token is invalid or has expired.", code=25)
        integration = _associated(session, item, "Service Account", fields.get("audience"))
        # The provider may take seconds to answer: not on the event loop.
        granted = await run_in_threadpool(_service_account_token, box, service_tokens, integration)
        return {"access_token": granted.access_token, "issued_token_type": oauth.ACCESS_TOKEN,
                "token_type": granted.token_type}
    opened = oauth.UserSessionTokens(signer).open(fields.get("subject_token", ""))
    if opened is None:
        raise errors.bad_request("The user-session token is invalid or has expired.", code=25)
    user_guid, content_guid = opened
    user = session.scalar(select(User).where(User.guid == user_guid))
    content = session.scalar(select(Content).where(Content.guid == content_guid))
    if user is None or user.locked or content is None:
        raise errors.bad_request("The user-session token is invalid or has expired.", code=25)
    if not auth.can_view(session, user, content):  # access taken away since the token was made
        raise errors.forbidden(f"{user.username} may no longer view this content.")
    integration = _associated(session, content, "Viewer", fields.get("audience"))
    stored = await run_in_threadpool(viewer_access_token, session, box, integration, user,
                                     sign_in_url(urls, integration, content.guid))
    return {"access_token": box.decrypt(stored.access_token_encrypted),
            "issued_token_type": oauth.ACCESS_TOKEN, "token_type": stored.token_type}


@router.get("/v1/oauth/integrations/{guid}")
def get_integration(
    guid: str, session: Session = Depends(deps.db), _user: User = Depends(deps.publisher)
) -> dict[str, Any]:
    return integration_json(by_guid(session, OAuthIntegration, guid, "OAuth integration"))


@router.patch("/v1/oauth/integrations/{guid}")
async def update_integration(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    changes: Changes = Depends(deps.changes),
    box: SecretBox = Depends(deps.secret_box),
    service_tokens: oauth.ServiceTokenCache = Depends(deps.service_tokens),
    admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    integration = by_guid(session, OAuthIntegration, guid, "OAuth integration")
    body = await json_object(request)
    if "name" in body:
        integration.name = _text(body, "name")
    if "description" in body:
        integration.description = _text(body, "description")
    if "template" in body or "config" in body:
        config = body.get("config", integration.config)
        _apply(integration, body.get("template", integration.template), config, box)
    audit.record(session, admin, "update_oauth_integration",
                 f"Changed OAuth integration {integration.name!r} ({integration.guid}).")
    session.commit()
    service_tokens.forget(integration.guid)
    changes.content(None)  # the auth type may have changed
    return integration_json(integration)


@router.delete("/v1/oauth/integrations/{guid}", status_code=204)
def delete_integration(
    guid: str,
    session: Session = Depends(deps.db),
    changes: Changes = Depends(deps.changes),
    service_tokens: oauth.ServiceTokenCache = Depends(deps.service_tokens),
    admin: User = Depends(deps.administrator),
) -> Response:
    integration = by_guid(session, OAuthIntegration, guid, "OAuth integration")
    session.execute(delete(OAuthAssociation).where(OAuthAssociation.integration_id == integration.id))
    session.execute(delete(OAuthToken).where(OAuthToken.integration_id == integration.id))  # viewers' tokens
    session.delete(integration)
    audit.record(session, admin, "remove_oauth_integration",
                 f"Deleted OAuth integration {integration.name!r} ({integration.guid}).")
    session.commit()
    service_tokens.forget(integration.guid)
    changes.content(None)  # content that had it no longer gets user-session tokens
    return Response(status_code=204)


@router.get("/v1/oauth/integrations/{guid}/associations")
def integration_associations(
    guid: str, session: Session = Depends(deps.db), _admin: User = Depends(deps.administrator)
) -> list[dict[str, Any]]:
    integration = by_guid(session, OAuthIntegration, guid, "OAuth integration")
    rows = session.scalars(
        select(OAuthAssociation).where(OAuthAssociation.integration_id == integration.id).order_by(OAuthAssociation.id)
    )
    return [association_json(a) for a in rows]


def content_associations(session: Session, content: Content) -> list[OAuthAssociation]:
    return list(session.scalars(
        select(OAuthAssociation).where(OAuthAssociation.content_id == content.id).order_by(OAuthAssociation.id)
    ))


@router.get("/v1/content/{guid}/oauth/integrations/associations")
def get_content_associations(
    guid: str, session: Session = Depends(deps.db), who: deps.Caller = Depends(deps.caller)
) -> list[dict[str, Any]]:
    content = visible_content(session, who.user, guid)
    return [association_json(a) for a in content_associations(session, content)]


def replace_associations(session: Session, user: User, content: Content, wanted: list[Any]) -> None:
    """Make ``wanted`` (``[{"oauth_integration_guid": ...}, ...]``) the content's whole set."""
    integrations: list[OAuthIntegration] = []
    for item in wanted:
        guid = item.get("oauth_integration_guid") if isinstance(item, dict) else None
        if not isinstance(guid, str):
            raise errors.bad_request("Each association must be {\"oauth_integration_guid\": \"...\"}.", code=25)
        integration = session.scalar(select(OAuthIntegration).where(OAuthIntegration.guid == guid))
        if integration is None:
            raise errors.bad_request(f"No OAuth integration has guid {guid!r}.", code=25)
        if integration not in integrations:
            integrations.append(integration)
    kept = {a.integration_id: a for a in content_associations(session, content)}
    for integration_id, association in kept.items():
        if integration_id not in {i.id for i in integrations}:
            session.delete(association)
    for integration in integrations:
        if integration.id not in kept:
            session.add(OAuthAssociation(content_id=content.id, integration_id=integration.id))
    audit.record(session, user, "update_oauth_associations",
                 f"Set the OAuth integrations of content {describe(content)}: "
                 f"{', '.join(repr(i.name) for i in integrations) or 'none'}.")


@router.put("/v1/content/{guid}/oauth/integrations/associations", status_code=204)
async def put_content_associations(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    changes: Changes = Depends(deps.changes),
    user: User = Depends(deps.user),
) -> Response:
    content = managed_content(session, user, guid)
    replace_associations(session, user, content, await json_array(request))
    session.commit()
    changes.content(content.guid)  # the proxy adds (or stops adding) user-session tokens
    return Response(status_code=204)
