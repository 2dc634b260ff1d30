"""OAuth integrations: the templates Podium knows and the rules for an integration's
config. Client secrets are kept encrypted (:class:`podium.secrets.SecretBox`) and never
leave the server; the API strips them from every answer.

Podium stores, lists and associates integrations of every template below, so content
and clients that read them (posit-sdk's ``client.oauth``) work. For Viewer integrations
of the templates in :data:`FLOW_TEMPLATES` it also performs the flows: a viewer signs in
with the provider (authorization code with PKCE, :func:`authorize_url` and
:func:`exchange_code`); the proxy hands content a signed **user-session token**
(:class:`UserSessionTokens`) in ``Posit-Connect-User-Session-Token``; content trades it at
``v1/oauth/integrations/credentials`` for the viewer's access token, refreshed
(:func:`refresh`) when it has expired. See the README, "OAuth integrations".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

SECRET_FIELDS = ("client_secret",)
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
USER_SESSION_TOKEN = "urn:posit:connect:user-session-token"
CONTENT_SESSION_TOKEN = "urn:posit:connect:content-session-token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
# The header the proxy adds, for content with an associated integration.
SESSION_HEADER = "Posit-Connect-User-Session-Token"
# How long a user-session token is good for: the proxy mints one per request.
USER_SESSION_SECONDS = 3600
# How long the content session token a content process starts with is good for (it lives
# as long as the process, which may run for months; removing the content's Service
# Account associations takes its use away at once).
CONTENT_SESSION_SECONDS = 365 * 24 * 3600
CONTENT_SESSION_VARIABLE = "CONNECT_CONTENT_SESSION_TOKEN"
# How long a viewer has to finish signing in with the provider.
STATE_SECONDS = 600
TOKEN_TIMEOUT_SECONDS = 20
# Templates whose provider Podium signs viewers in with (standard authorization code):
# their config names authorization_uri and token_uri. Other templates' flows are not done.
FLOW_TEMPLATES = ("custom",)
AUTH_TYPES = ("Viewer", "Service Account", "Visitor API Key")


@dataclass(frozen=True)
class Template:
    key: str
    name: str
    auth_types: tuple[str, ...]
    required: tuple[str, ...]  # config fields an integration of this template must have

    def json(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "auth_types": list(self.auth_types),
                "fields": list(self.required)}


TEMPLATES = {t.key: t for t in (
    Template("custom", "Custom", ("Viewer", "Service Account"), ("client_id", "token_uri")),
    Template("github", "GitHub", ("Viewer",), ("client_id",)),
    Template("azure", "Microsoft Azure", ("Viewer", "Service Account"), ("client_id", "tenant_id")),
    Template("databricks", "Databricks", ("Viewer", "Service Account"), ("client_id", "account_url")),
    Template("snowflake", "Snowflake", ("Viewer",), ("client_id", "account_url")),
    Template("salesforce", "Salesforce", ("Viewer",), ("client_id", "account_url")),
    Template("connect", "Posit Connect", ("Visitor API Key",), ()),
)}


class InvalidIntegration(ValueError):
    """An integration request that breaks a rule; the message says which."""


def check(template: Any, config: Any, secret_known: bool) -> tuple[Template, str, dict[str, Any], str | None]:
    """The template, auth type, config without its secret and the new secret (None: keep
    the stored one) of an integration, or :class:`InvalidIntegration`."""
    if not isinstance(template, str) or template not in TEMPLATES:
        raise InvalidIntegration(
            f"template must be one of {', '.join(sorted(TEMPLATES))}; got {template!r}."
        )
    chosen = TEMPLATES[template]
    if not isinstance(config, dict):
        raise InvalidIntegration("config must be a JSON object.")
    auth_type = config.get("auth_type", chosen.auth_types[0])
    if auth_type not in chosen.auth_types:
        raise InvalidIntegration(
            f"The {chosen.name} template takes auth_type {' or '.join(chosen.auth_types)}; got {auth_type!r}."
        )
    missing = [f for f in chosen.required if not isinstance(config.get(f), str) or not config[f]]
    if missing:
        raise InvalidIntegration(f"The {chosen.name} template needs config fields: {', '.join(missing)}.")
    secret = config.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise InvalidIntegration("config.client_secret must be a string.")
    if template == "custom" and auth_type == "Service Account" and not (secret or secret_known):
        raise InvalidIntegration("A Service Account integration needs config.client_secret.")
    public = {k: v for k, v in config.items() if k not in SECRET_FIELDS}
    public["auth_type"] = auth_type
    return chosen, auth_type, public, secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """HMAC-signed, expiring passes of ``kind`` carrying a few ``:``-free fields."""

    def __init__(self, key: bytes, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def sign(self, kind: str, fields: tuple[str, ...], seconds: int) -> str:
        expires = int(self._clock()) + seconds
        payload = ":".join((kind, *fields, str(expires), secrets.token_urlsafe(9)))
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return f"{_b64(payload.encode())}.{_b64(mac)}"

    def open(self, kind: str, token: str, count: int) -> tuple[str, ...] | None:
        """The ``count`` fields and nonce of a valid, unexpired ``kind`` pass, or None."""
        try:
            raw, _, mac = token.partition(".")
            payload = _unb64(raw)
            if not hmac.compare_digest(_unb64(mac), hmac.new(self._key, payload, hashlib.sha256).digest()):
                return None
            parts = payload.decode().split(":")
            if len(parts) != count + 3 or parts[0] != kind or int(parts[-2]) < self._clock():
                return None
            return (*parts[1:-2], parts[-1])
        except (ValueError, UnicodeDecodeError):
            return None

    def derive(self, text: str) -> str:
        """A value only this server can compute from ``text`` (a PKCE verifier)."""
        return _b64(hmac.new(self._key, f"derive:{text}".encode(), hashlib.sha256).digest())


class UserSessionTokens:
    """The user-session tokens the proxy gives content: the viewer and content item."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def issue(self, user_guid: str, content_guid: str) -> str:
        return self._signer.sign("user-session", (user_guid, content_guid), USER_SESSION_SECONDS)

    def open(self, token: str) -> tuple[str, str] | None:
        """(user guid, content guid) of a valid token, or None."""
        opened = self._signer.open("user-session", token, 2)
        return None if opened is None else (opened[0], opened[1])


class ContentSessionTokens:
    """The content session tokens content processes start with (``CONNECT_CONTENT_SESSION_TOKEN``),
    naming the content item: they buy the access token of its Service Account integrations."""

    def __init__(self, signer: Signer) -> None:
        self._signer = signer

    def issue(self, content_guid: str) -> str:
        return self._signer.sign("content-session", (content_guid,), CONTENT_SESSION_SECONDS)

    def open(self, token: str) -> str | None:
        """The content guid of a valid token, or None."""
        opened = self._signer.open("content-session", token, 1)
        return None if opened is None else opened[0]


class FlowError(RuntimeError):
    """The provider refused or could not be reached; the message says why (no secrets)."""


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str | None
    token_type: str
    expires_in: int | None


def pkce_challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


def authorize_url(config: dict[str, Any], redirect_uri: str, state: str, verifier: str) -> str:
    uri = config.get("authorization_uri")
    if not isinstance(uri, str) or not uri:
        raise FlowError("The integration has no config.authorization_uri to sign in at.")
    query = {"response_type": "code", "client_id": config["client_id"], "redirect_uri": redirect_uri,
             "state": state, "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    if config.get("scopes"):
        query["scope"] = str(config["scopes"])
    return f"{uri}{'&' if '?' in uri else '?'}{urllib.parse.urlencode(query)}"


def _token_request(config: dict[str, Any], secret: str | None, form: dict[str, str]) -> Tokens:
    form = {**form, "client_id": str(config["client_id"])}
    if secret:
        form["client_secret"] = secret
    try:
        answer = httpx.post(str(config["token_uri"]), data=form, headers={"accept": "application/json"},
                            timeout=TOKEN_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        raise FlowError(f"The provider's token endpoint could not be reached: {type(exc).__name__}.") from None
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        error = body.get("error") if isinstance(body, dict) else None
        raise FlowError(f"The provider refused the token request (HTTP {answer.status_code}"
                        f"{', ' + str(error) if isinstance(error, str) else ''}).")
    expires = body.get("expires_in")
    refresh_token = body.get("refresh_token")
    return Tokens(body["access_token"], refresh_token if isinstance(refresh_token, str) else None,
                  str(body.get("token_type") or "Bearer"),
                  int(expires) if isinstance(expires, int | float | str) and str(expires).isdigit() else None)


def exchange_code(config: dict[str, Any], secret: str | None, code: str, redirect_uri: str,
                  verifier: str) -> Tokens:
    return _token_request(config, secret, {"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": redirect_uri, "code_verifier": verifier})


def refresh(config: dict[str, Any], secret: str | None, refresh_token: str) -> Tokens:
    return _token_request(config, secret, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def client_credentials(config: dict[str, Any], secret: str | None) -> Tokens:
    form = {"grant_type": "client_credentials"}
    if config.get("scopes"):
        form["scope"] = str(config["scopes"])
    return _token_request(config, secret, form)
