"""A small OAuth 2 authorization server on loopback that answers at the endpoints of
every template Podium performs flows for, with each provider's quirks, for tests.

``/authorize`` (at each template's path) approves at once, or with ``consent`` shows an
"Authorize" page first; the token endpoints grant codes (PKCE S256, the client secret
checked where the provider takes it: HTTP Basic for Databricks and Snowflake, the form
for the others), refresh tokens and client credentials. GitHub's answers are
form-encoded unless asked for JSON, and Salesforce's carry no ``expires_in``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from tests.conftest import free_port

CLIENT_ID = "podium-viewer-app"
CLIENT_SECRET = "provider-client-secret-9d2e"
TENANT = "contoso.onmicrosoft.com"

# template -> (authorize path, token path, client authenticates with HTTP Basic)
ENDPOINTS = {
    "custom": ("/authorize", "/token", False),
    "github": ("/login/oauth/authorize", "/login/oauth/access_token", False),
    "azure": (f"/{TENANT}/oauth2/v2.0/authorize", f"/{TENANT}/oauth2/v2.0/token", False),
    "databricks": ("/oidc/v1/authorize", "/oidc/v1/token", True),
    "snowflake": ("/oauth/authorize", "/oauth/token-request", True),
    "salesforce": ("/services/oauth2/authorize", "/services/oauth2/token", False),
}


def config(template: str, url: str, auth_type: str = "Viewer") -> dict[str, Any]:
    """An integration config of ``template`` pointing at the provider at ``url``, through
    the template's documented fields (the optional host fields for GitHub and Azure)."""
    base: dict[str, Any] = {"auth_type": auth_type, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    fields: dict[str, dict[str, Any]] = {
        "custom": {"authorization_uri": f"{url}/authorize", "token_uri": f"{url}/token", "scopes": "read"},
        "github": {"base_url": url},
        "azure": {"authority_host": url, "tenant_id": TENANT},
        "databricks": {"account_url": url},
        "snowflake": {"account_url": url},
        "salesforce": {"account_url": url},
    }
    return {**base, **fields[template]}


@dataclass
class Provider:
    url: str = ""
    expires_in: int | None = 3600  # None: answers carry no expires_in
    consent: bool = False  # show an "Authorize" page before sending the viewer back
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> user
    issued: list[str] = field(default_factory=list)  # every access and refresh token
    grants: list[str] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (template, grant) per token request
    scopes: list[tuple[str, str]] = field(default_factory=list)  # (template, scope) per authorize
    token_scopes: list[tuple[str, str]] = field(default_factory=list)  # (template, scope) per client credentials

    def app(self) -> Starlette:
        routes = []
        for template, (authorize_path, token_path, basic) in ENDPOINTS.items():
            routes += [Route(authorize_path, self._authorize(template)),
                       Route(token_path, self._token(template, basic), methods=["POST"])]
        return Starlette(routes=[*routes, Route("/approve", self._approve)])

    def _authorize(self, template: str) -> Any:
        async def authorize(request: Request) -> Response:
            q = request.query_params
            if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            self.scopes.append((template, q.get("scope", "")))
            if self.consent:
                return HTMLResponse(
                    "<!doctype html><title>Fake provider</title><h1>Authorize Podium?</h1>"
                    f"<p>Podium asks to read your {template} data.</p>"
                    f"<a role='button' href='/approve?{urllib.parse.urlencode(dict(q))}'>Authorize</a>")
            return self._approve_now(dict(q))
        return authorize

    async def _approve(self, request: Request) -> Response:
        return self._approve_now(dict(request.query_params))

    def _approve_now(self, q: dict[str, str]) -> Response:
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"]}
        query = urllib.parse.urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(f"{q['redirect_uri']}?{query}", status_code=302)

    def _token(self, template: str, basic: bool) -> Any:
        async def token(request: Request) -> Response:
            form = await request.form()
            if basic:  # the client's credentials in the Authorization header only
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                ok = request.headers.get("authorization") == f"Basic {expected}" and "client_secret" not in form
            else:
                ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
            if not ok:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            grant = str(form.get("grant_type"))
            self.grants.append(grant)
            self.calls.append((template, grant))
            if grant == "authorization_code":
                found = self.codes.pop(str(form.get("code")), None)
                verifier = str(form.get("code_verifier", ""))
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if found is None or found["redirect_uri"] != form.get("redirect_uri") or found["challenge"] != challenge:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
            elif grant == "client_credentials":
                self.token_scopes.append((template, str(form.get("scope", ""))))
                access = f"sa-{secrets.token_hex(12)}"
                self.issued.append(access)
                return self._answer(request, template, {"access_token": access, "token_type": "Bearer",
                                                        "expires_in": self.expires_in,
                                                        "scope": str(form.get("scope", ""))})
            elif grant == "refresh_token":
                if str(form.get("refresh_token")) not in self.refresh_tokens:
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
            else:
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            access, refresh = f"at-{secrets.token_hex(12)}", f"rt-{secrets.token_hex(12)}"
            self.refresh_tokens[refresh] = "viewer"
            self.issued += [access, refresh]
            return self._answer(request, template, {"access_token": access, "token_type": "Bearer",
                                                    "expires_in": self.expires_in, "refresh_token": refresh})
        return token

    @staticmethod
    def _answer(request: Request, template: str, body: dict[str, Any]) -> Response:
        if template == "salesforce":  # Salesforce says when it issued, not when it expires
            body = {**body, "expires_in": None, "issued_at": str(int(time.time()))}
        body = {k: v for k, v in body.items() if v is not None}
        if template == "github" and request.headers.get("accept") != "application/json":
            return PlainTextResponse(urllib.parse.urlencode(body), media_type="application/x-www-form-urlencoded")
        return JSONResponse(body)


@contextmanager
def running_provider() -> Iterator[Provider]:
    """A :class:`Provider` served on a free loopback port until the block ends."""
    found = Provider()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(found.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield found
    finally:
        server.should_exit = True
        thread.join(10)
