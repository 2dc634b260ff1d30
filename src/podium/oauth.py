"""OAuth integrations: the templates Podium knows, each with its provider's endpoints,
the rules for an integration's config, and the flows. Client secrets are kept encrypted
(:class:`podium.secrets.SecretBox`) and never leave the server; the API strips them
from every answer.

Podium stores, lists and associates integrations of every template in
:data:`TEMPLATES`. For the templates with endpoints (``custom``, ``github``, ``azure``,
``databricks``, ``snowflake``, ``salesforce``: :data:`FLOW_TEMPLATES`) it also performs
the flows through one :class:`Provider`: a viewer of a Viewer integration signs in with
the provider (authorization code with PKCE, :meth:`Provider.authorize_url` and
:meth:`Provider.exchange_code`); the proxy hands content a signed **user-session token**
(:class:`UserSessionTokens`) in ``Posit-Connect-User-Session-Token``; content trades it at
``v1/oauth/integrations/credentials`` for the viewer's access token, refreshed
(:meth:`Provider.refresh`) when it has expired. A Service Account integration's token
comes from the client credentials grant (:meth:`Provider.client_credentials`), kept in a
:class:`ServiceTokenCache` until shortly before it expires. The ``connect`` template
(Visitor API Key) is stored and associated only. See the README, "OAuth integrations".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import httpx

SECRET_FIELDS = ("client_secret",)
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
USER_SESSION_TOKEN = "urn:posit:connect:user-session-token"
CONTENT_SESSION_TOKEN = "urn:posit:connect:content-session-token"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
API_KEY = "urn:posit:connect:api-key"  # a visitor API key (connect template): not issued
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
# A cached Service Account token is asked for again this long before it expires, so
# content never receives one that dies while it uses it.
SERVICE_TOKEN_MARGIN_SECONDS = 60
AUTH_TYPES = ("Viewer", "Service Account", "Visitor API Key")
# Values put into an endpoint's path (Azure's tenant: a guid, a domain or "common").
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Template:
    """A kind of integration and, when Podium performs its flows, where its provider's
    endpoints are: ``authorize`` and ``token`` are URL patterns filled from the config
    (``{account_url}``), ``defaults`` giving the optional fields' values."""

    key: str
    name: str
    auth_types: tuple[str, ...]
    required: tuple[str, ...]  # config fields an integration of this template must have
    authorize: str | None = None  # None: Podium does not perform this template's flows
    token: str | None = None
    # Optional config fields and their values when absent (a provider's public host).
    defaults: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()  # config fields that must be https URLs (http on loopback)
    segments: tuple[str, ...] = ()  # config fields put into a path: one segment each
    scopes: str = ""  # the Viewer sign-in's scopes when the config names none
    service_scopes: str = ""  # the client credentials grant's, likewise
    basic_auth: bool = False  # the client authenticates with HTTP Basic, not in the form

    @property
    def performs_flows(self) -> bool:
        return self.token is not None

    def json(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "auth_types": list(self.auth_types),
                "fields": list(self.required)}


# Each provider's documented endpoints beside its template. Config fields besides those
# named here: client_id, client_secret, auth_type, scopes (space-separated; replaces the
# template's default), and for custom authorization_uri (Viewer) and token_uri.
TEMPLATES = {t.key: t for t in (
    Template("custom", "Custom", ("Viewer", "Service Account"), ("client_id", "token_uri"),
             authorize="{authorization_uri}", token="{token_uri}", urls=("authorization_uri", "token_uri")),
    # https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
    # base_url: a GitHub Enterprise Server's address (https://github.example.com); the
    # token endpoint answers JSON only when asked with Accept: application/json.
    Template("github", "GitHub", ("Viewer",), ("client_id",),
             authorize="{base_url}/login/oauth/authorize", token="{base_url}/login/oauth/access_token",
             defaults=(("base_url", "https://github.com"),), urls=("base_url",)),
    # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
    # authority_host: a sovereign cloud's sign-in host (https://login.microsoftonline.us,
    # https://login.chinacloudapi.cn). A Service Account's scopes name a resource's
    # ".default" (the grant refuses anything else), Microsoft Graph's unless configured.
    Template("azure", "Microsoft Azure", ("Viewer", "Service Account"), ("client_id", "tenant_id"),
             authorize="{authority_host}/{tenant_id}/oauth2/v2.0/authorize",
             token="{authority_host}/{tenant_id}/oauth2/v2.0/token",
             defaults=(("authority_host", "https://login.microsoftonline.com"),), urls=("authority_host",),
             segments=("tenant_id",), scopes="openid offline_access",
             service_scopes="https://graph.microsoft.com/.default"),
    # https://docs.databricks.com/dev-tools/auth/oauth-u2m and oauth-m2m: account_url is
    # the workspace URL; the client authenticates with HTTP Basic.
    Template("databricks", "Databricks", ("Viewer", "Service Account"), ("client_id", "account_url"),
             authorize="{account_url}/oidc/v1/authorize", token="{account_url}/oidc/v1/token",
             urls=("account_url",), scopes="all-apis offline_access", service_scopes="all-apis",
             basic_auth=True),
    # https://docs.snowflake.com/user-guide/oauth-custom: account_url is
    # https://<account>.snowflakecomputing.com; HTTP Basic client authentication.
    Template("snowflake", "Snowflake", ("Viewer",), ("client_id", "account_url"),
             authorize="{account_url}/oauth/authorize", token="{account_url}/oauth/token-request",
             urls=("account_url",), scopes="refresh_token", basic_auth=True),
    # https://help.salesforce.com (OAuth 2.0 web server flow): account_url is the My
    # Domain URL (https://<domain>.my.salesforce.com); tokens carry no expires_in.
    Template("salesforce", "Salesforce", ("Viewer",), ("client_id", "account_url"),
             authorize="{account_url}/services/oauth2/authorize", token="{account_url}/services/oauth2/token",
             urls=("account_url",), scopes="api refresh_token"),
    # A viewer's short-lived Connect API key; not performed (README, "OAuth integrations").
    Template("connect", "Posit Connect", ("Visitor API Key",), ()),
)}
# Templates whose flows Podium performs (viewer sign-in, exchange, client credentials).
FLOW_TEMPLATES = tuple(k for k, t in TEMPLATES.items() if t.performs_flows)


class InvalidIntegration(ValueError):
    """An integration request that breaks a rule; the message says which."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, value: str, whole: bool) -> None:
    """``value`` is an https URL (http only on loopback, for local providers) without
    credentials or fragment; a base others are appended to (not ``whole``) has no query."""
    parts = urllib.parse.urlsplit(value)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host or parts.username is not None or parts.fragment:
        raise InvalidIntegration(f"config.{name} must be an https URL; got {value!r}.")
    if parts.scheme == "http" and not _loopback(host):
        raise InvalidIntegration(f"config.{name} must use https (http only for a loopback address); "
                                 f"got {value!r}.")
    if parts.query and not whole:
        raise InvalidIntegration(f"config.{name} must have no query; got {value!r}.")


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
    for name in chosen.urls:
        value = config.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidIntegration(f"config.{name} must be a string.")
        _check_url(name, value, whole=f"{{{name}}}" in (chosen.authorize, chosen.token))
    for name in chosen.segments:
        if not _PATH_SEGMENT.fullmatch(str(config[name])):
            raise InvalidIntegration(f"config.{name} must be letters, digits, '.', '-' or '_'; "
                                     f"got {config[name]!r}.")
    secret = config.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise InvalidIntegration("config.client_secret must be a string.")
    if auth_type == "Service Account" and chosen.performs_flows and not (secret or secret_known):
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


@dataclass(frozen=True)
class Provider:
    """An integration as its provider sees it: the template (endpoints and quirks), the
    config and the client secret. Every template's flows go through these methods."""

    template: Template
    config: dict[str, Any]
    secret: str | None = field(default=None, repr=False)

    def endpoint(self, which: str) -> str:
        """The ``authorize`` or ``token`` URL, filled from the config and the defaults."""
        pattern = getattr(self.template, which)
        if pattern is None:
            raise FlowError(f"Podium does not perform the flows of {self.template.name} integrations.")
        values = dict(self.template.defaults)
        values.update({k: v.rstrip("/") if k in self.template.urls and pattern != f"{{{k}}}" else v
                       for k, v in self.config.items() if isinstance(v, str) and v})
        try:
            return str(pattern.format_map(values))
        except KeyError as exc:
            raise FlowError(f"The integration has no config.{exc.args[0]} to sign in at.") from None

    def _scopes(self, default: str) -> str:
        scopes = self.config.get("scopes")
        return str(scopes) if isinstance(scopes, str) and scopes.strip() else default

    def authorize_url(self, redirect_uri: str, state: str, verifier: str) -> str:
        uri = self.endpoint("authorize")
        query = {"response_type": "code", "client_id": str(self.config["client_id"]),
                 "redirect_uri": redirect_uri, "state": state, "code_challenge": pkce_challenge(verifier),
                 "code_challenge_method": "S256"}
        scopes = self._scopes(self.template.scopes)
        if scopes:
            query["scope"] = scopes
        return f"{uri}{'&' if '?' in uri else '?'}{urllib.parse.urlencode(query)}"

    def exchange_code(self, code: str, redirect_uri: str, verifier: str) -> Tokens:
        return self._token_request({"grant_type": "authorization_code", "code": code,
                                    "redirect_uri": redirect_uri, "code_verifier": verifier})

    def refresh(self, refresh_token: str) -> Tokens:
        return self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def client_credentials(self) -> Tokens:
        form = {"grant_type": "client_credentials"}
        scopes = self._scopes(self.template.service_scopes)
        if scopes:
            form["scope"] = scopes
        return self._token_request(form)

    def _token_request(self, form: dict[str, str]) -> Tokens:
        client_id = str(self.config["client_id"])
        auth: tuple[str, str] | None = None
        if self.secret and self.template.basic_auth:
            auth = (client_id, self.secret)
        else:
            form = {**form, "client_id": client_id}
            if self.secret:
                form["client_secret"] = self.secret
        try:  # GitHub answers form-encoded unless asked for JSON
            answer = httpx.post(self.endpoint("token"), data=form, auth=auth,
                                headers={"accept": "application/json"}, timeout=TOKEN_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            raise FlowError(f"The provider's token endpoint could not be reached: {type(exc).__name__}.") from None
        try:
            body = answer.json()
        except ValueError:
            body = {}
        # GitHub refuses with HTTP 200 and an "error" field: no access_token is a refusal.
        if answer.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            raise FlowError(f"The provider refused the token request (HTTP {answer.status_code}"
                            f"{', ' + str(error) if isinstance(error, str) else ''}).")
        expires = body.get("expires_in")
        refresh_token = body.get("refresh_token")
        return Tokens(body["access_token"], refresh_token if isinstance(refresh_token, str) else None,
                      str(body.get("token_type") or "Bearer"),
                      int(expires) if isinstance(expires, int | float | str) and str(expires).isdigit() else None)


class ServiceTokenCache:
    """Service Account access tokens of this server process, kept until
    :data:`SERVICE_TOKEN_MARGIN_SECONDS` before they expire. The key names the
    integration's guid and a version of its config and secret, so a change made on any
    node misses; a token without ``expires_in`` is not kept. Holds tokens in memory only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 margin_seconds: float = SERVICE_TOKEN_MARGIN_SECONDS) -> None:
        self._clock = clock
        self._margin = margin_seconds
        self._lock = threading.Lock()
        self._held: dict[tuple[str, Hashable], tuple[float, Tokens]] = {}

    def get(self, guid: str, version: Hashable) -> Tokens | None:
        with self._lock:
            found = self._held.get((guid, version))
            if found is None or found[0] <= self._clock():
                return None
            return found[1]

    def put(self, guid: str, version: Hashable, tokens: Tokens) -> None:
        if tokens.expires_in is None or tokens.expires_in <= self._margin:
            return
        now = self._clock()
        with self._lock:
            self._held = {k: v for k, v in self._held.items() if v[0] > now and k[0] != guid}
            self._held[(guid, version)] = (now + tokens.expires_in - self._margin, tokens)

    def forget(self, guid: str) -> None:
        """Drop the integration's tokens (it was changed or deleted)."""
        with self._lock:
            self._held = {k: v for k, v in self._held.items() if k[0] != guid}
