"""The OAuth flows end to end, against a real OAuth provider on loopback
(:mod:`tests.oauth_provider`): a viewer signs in with a Viewer integration of every
template Podium performs flows for (authorization code + PKCE at the template's
endpoints), deployed content reads the user-session token the proxy gives it and trades
it through posit-sdk's ``client.oauth.get_credentials`` for the provider's access token,
which is refreshed when it expires. Service Account tokens (``get_content_credentials``)
are cached until they near their expiry. Tokens are encrypted at rest and never logged."""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, tar_gz
from tests.oauth_provider import CLIENT_ID, CLIENT_SECRET, ENDPOINTS, Provider, config, running_provider


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data")
    yield running
    running.stop()


APP = '''
import os
from fastapi import FastAPI, Request
from posit import connect

app = FastAPI()

@app.get("/")
def credentials(request: Request, audience: str = ""):
    token = request.headers.get("Posit-Connect-User-Session-Token")
    if token is None:
        return {"session_token": None}
    client = connect.Client(os.environ["CONNECT_SERVER"], "content-has-no-key")
    try:
        return {"credentials": dict(client.oauth.get_credentials(token, audience=audience or None))}
    except Exception as exc:
        return {"error": str(exc)}

@app.get("/content-credentials")
def content_credentials():
    client = connect.Client(os.environ["CONNECT_SERVER"], "content-has-no-key")
    try:
        return {"credentials": dict(client.oauth.get_content_credentials() or {})}
    except Exception as exc:
        return {"error": str(exc)}

@app.get("/token")
def token(request: Request):
    return {"session_token": request.headers.get("Posit-Connect-User-Session-Token")}
'''


def _bundle() -> bytes:
    manifest = {
        "version": 1, "locale": "en_US.UTF-8",
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
        "files": {"requirements.txt": {}, "app.py": {}},
    }
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": "fastapi\nposit-sdk==0.17.0\n",
                   "app.py": APP})


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


class Browser:
    """A signed-in browser, as far as HTTP goes: it follows redirects across the
    dashboard, the provider and the content origin, keeping the content origin's cookies
    (Python's cookie jar will not keep ``Secure`` cookies of http://localhost, which
    browsers treat as a secure context)."""

    def __init__(self, session: requests.Session, content_origin: str) -> None:
        self.session = session
        self.content_origin = content_origin
        self.content_cookies: dict[str, str] = {}

    def get(self, url: str, headers: dict[str, str] | None = None) -> tuple[requests.Response, list[str]]:
        hops: list[str] = []
        for _ in range(90):
            mine = dict(headers or {})
            if url.startswith(self.content_origin) and self.content_cookies:
                mine["cookie"] = "; ".join(f"{k}={v}" for k, v in self.content_cookies.items())
            answer = self.session.get(url, headers=mine, allow_redirects=False)
            if url.startswith(self.content_origin):
                for value in answer.raw.headers.getlist("set-cookie"):
                    name, _, rest = value.partition("=")
                    self.content_cookies[name] = rest.split(";", 1)[0]
            hops.append(url)
            if answer.status_code == 503 and "refresh" in answer.text:  # starting: the page reloads
                time.sleep(1)
                continue
            if answer.status_code not in (302, 303, 307):
                return answer, hops
            url = urllib.parse.urljoin(url, answer.headers["location"])
        raise AssertionError(f"too many redirects: {hops}")

    def json(self, url: str, headers: dict[str, str] | None = None) -> Any:
        answer, _ = self.get(url, headers)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _sign_in(server: RunningServer, username: str, password: str) -> requests.Session:
    """A browser-like session (it asks for pages, so the content origin hands it off)."""
    browser = requests.Session()
    browser.headers["accept"] = "text/html,application/json"
    form = browser.get(f"{server.url}/__login__")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    signed = browser.post(f"{server.url}/__login__", allow_redirects=False, data={
        "username": username, "password": password, "next": "/connect/", "csrf_token": token.group(1)})
    assert signed.status_code == 303, signed.text
    return browser


def _integration(server: RunningServer, provider: Provider, name: str, template: str = "custom",
                 auth_type: str = "Viewer") -> dict[str, Any]:
    made = server.api().post(_api(server, "v1/oauth/integrations"), json={
        "name": name, "template": template, "config": config(template, provider.url, auth_type)})
    assert made.status_code == 200, made.text
    return dict(made.json())


def _content(server: RunningServer, key: str, name: str, viewer_guid: str) -> dict[str, Any]:
    made = server.api(key).post(_api(server, "v1/content"), json={"name": name}).json()
    shared = server.api(key).post(_api(server, f"v1/content/{made['guid']}/permissions"),
                                  json={"principal_guid": viewer_guid, "principal_type": "user", "role": "viewer"})
    assert shared.status_code == 200, shared.text
    _, task = deploy(server, key, made["guid"], _bundle())
    assert task["code"] == 0, task["all_output"][-20:]
    return dict(made)


def _associate(server: RunningServer, key: str, guid: str, integrations: list[str]) -> None:
    answer = server.api(key).put(_api(server, f"v1/content/{guid}/oauth/integrations/associations"),
                                 json=[{"oauth_integration_guid": g} for g in integrations])
    assert answer.status_code == 204, answer.text


def test_viewer_signs_in_and_content_gets_the_providers_token(server: RunningServer, provider: Provider) -> None:
    publisher = server.user_key("oauth_publisher", "publisher")
    viewer = server.api().post(_api(server, "v1/users"), json={
        "username": "oauth_viewer", "user_role": "viewer", "password": "oauth-viewer-pass-1"}).json()
    warehouse = _integration(server, provider, "Warehouse")
    other = _integration(server, provider, "Other")
    app = _content(server, publisher, "oauth-app", viewer["guid"])
    plain = _content(server, publisher, "plain-app", viewer["guid"])
    _associate(server, publisher, app["guid"], [warehouse["guid"]])
    _associate(server, publisher, plain["guid"], [other["guid"]])

    browser = Browser(_sign_in(server, "oauth_viewer", "oauth-viewer-pass-1"), server.content_url)
    app_url = f"{server.content_url}/content/{app['guid']}/"
    # Before signing in with the provider: a Connect error naming where to sign in.
    error = browser.json(app_url)["error"]
    sign_in = f"{server.url}/__oauth__/connect/{warehouse['guid']}?content={app['guid']}"
    assert "has not signed in" in error and sign_in in error, error
    # The content's OAuth page offers the sign-in.
    pane, _ = browser.get(f"{server.url}/__oauth__/content/{app['guid']}")
    assert pane.status_code == 200 and "Sign in to Warehouse" in pane.text and "not connected" in pane.text

    # Sign in: dashboard -> provider /authorize -> dashboard callback -> the content.
    signed, hops = browser.get(sign_in)
    assert signed.status_code == 200, signed.text
    assert [urllib.parse.urlsplit(h).path for h in hops][:4] == [
        f"/__oauth__/connect/{warehouse['guid']}", "/authorize", "/__oauth__/integrations/callback", f"/content/{app['guid']}/"]
    given = signed.json()["credentials"]
    assert given == {"access_token": provider.issued[-2], "issued_token_type":
                     "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer"}
    assert provider.grants == ["authorization_code"]
    assert browser.json(app_url)["credentials"]["access_token"] == provider.issued[-2]
    assert provider.grants == ["authorization_code"]  # unexpired: not refreshed

    # An access token about to expire is refreshed with the refresh token.
    provider.expires_in = 5
    browser.get(sign_in)
    short = provider.issued[-2]
    provider.expires_in = 3600
    refreshed = browser.json(app_url)["credentials"]["access_token"]
    assert refreshed != short and refreshed == provider.issued[-2]
    assert provider.grants[-1] == "refresh_token"
    assert browser.json(app_url)["credentials"]["access_token"] == refreshed

    # A session token names its content: it buys nothing from another content's integration.
    token = browser.json(f"{app_url}token")["session_token"]
    assert token
    exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token,
                "subject_token_type": "urn:posit:connect:user-session-token"}
    credentials_url = _api(server, "v1/oauth/integrations/credentials")
    ok = requests.post(credentials_url, data=exchange)
    assert ok.status_code == 200 and ok.json()["access_token"] == refreshed
    refused = requests.post(credentials_url, data={**exchange, "audience": other["guid"]})
    assert refused.status_code == 400 and refused.json()["error"].startswith("The content has no associated")
    plain_url = f"{server.content_url}/content/{plain['guid']}/"
    plain_token = browser.json(f"{plain_url}token")["session_token"]
    assert plain_token and plain_token != token
    # The viewer never signed in with "Other": the plain content is told where to.
    assert "has not signed in with the OAuth integration 'Other'" in browser.json(plain_url)["error"]
    refused = requests.post(credentials_url, data={**exchange, "subject_token": plain_token,
                                                   "audience": warehouse["guid"]})
    assert refused.status_code == 400
    refused = requests.post(credentials_url, data={**exchange, "requested_token_type": "urn:posit:connect:api-key"})
    assert refused.status_code == 400 and "visitor API keys" in refused.json()["error"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    refused = requests.post(credentials_url, data={**exchange, "subject_token": forged})
    assert refused.status_code == 400 and "invalid" in refused.json()["error"]

    # A viewer whose access is taken away cannot use a token minted before.
    permissions = server.api(publisher).get(_api(server, f"v1/content/{app['guid']}/permissions")).json()
    mine = next(p for p in permissions if p["principal_guid"] == viewer["guid"])
    server.api(publisher).delete(_api(server, f"v1/content/{app['guid']}/permissions/{mine['id']}"))
    assert requests.post(credentials_url, data=exchange).status_code == 403
    server.api(publisher).post(_api(server, f"v1/content/{app['guid']}/permissions"), json={
        "principal_guid": viewer["guid"], "principal_type": "user", "role": "viewer"})
    assert requests.post(credentials_url, data=exchange).status_code == 200

    # Content without a Viewer integration gets no session token, and one sent in is stripped.
    _associate(server, publisher, plain["guid"], [])
    assert browser.json(f"{plain_url}token", {"Posit-Connect-User-Session-Token": token}) == {
        "session_token": None}
    # ... nor does the content once its association is removed; its old token is refused.
    _associate(server, publisher, app["guid"], [])
    assert browser.json(f"{app_url}token") == {"session_token": None}
    refused = requests.post(credentials_url, data=exchange)
    assert refused.status_code == 400
    _associate(server, publisher, app["guid"], [warehouse["guid"]])

    # Disconnect forgets the viewer's tokens.
    pane, _ = browser.get(f"{server.url}/__oauth__/content/{app['guid']}")
    assert "(connected)" in pane.text
    csrf = re.search(r"name='csrf_token' value='([^']+)'", pane.text)
    assert csrf is not None
    gone = browser.session.post(f"{server.url}/__oauth__/disconnect/{warehouse['guid']}",
                                data={"csrf_token": csrf.group(1), "content": app["guid"]})
    assert gone.status_code == 200 and "not connected" in gone.text
    assert "has not signed in" in browser.json(app_url)["error"]

    # No token, nor the client secret, in the database or the log.
    with sqlite3.connect(server.data_dir / "db" / "podium.sqlite") as db:
        dump = "\n".join(db.iterdump())
    log = server.log()
    for text in [*provider.issued, CLIENT_SECRET, token]:
        assert text not in dump and text not in log


def test_a_callback_from_another_session_is_refused(server: RunningServer, provider: Provider) -> None:
    integration = _integration(server, provider, "Stolen")
    publisher = server.user_key("oauth_publisher2", "publisher")
    item = server.api(publisher).post(_api(server, "v1/content"), json={"name": "stolen"}).json()
    _associate(server, publisher, item["guid"], [integration["guid"]])
    owner = server.api().post(_api(server, "v1/users"), json={
        "username": "oauth_victim", "user_role": "publisher", "password": "oauth-victim-pass-1"}).json()
    assert owner["guid"]
    attacker = _sign_in(server, "oauth_publisher2", "oauth_publisher2-pass-1")
    started = attacker.get(f"{server.url}/__oauth__/connect/{integration['guid']}?content={item['guid']}",
                           allow_redirects=False)
    assert started.status_code == 303
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(started.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["redirect_uri"] == [f"{server.url}/__oauth__/integrations/callback"]  # Connect's
    approved = requests.get(started.headers["location"], allow_redirects=False)
    callback = approved.headers["location"]
    # The victim, lured to the attacker's callback URL, is not signed in to the attacker's account.
    victim = _sign_in(server, "oauth_victim", "oauth-victim-pass-1")
    answer = victim.get(callback, allow_redirects=False)
    assert answer.status_code == 400 and "another session" in answer.text
    # Someone who may not view the content cannot start a sign-in for it.
    assert victim.get(f"{server.url}/__oauth__/connect/{integration['guid']}?content={item['guid']}",
                      allow_redirects=False).status_code == 404


def test_a_sign_in_sent_back_to_the_earlier_redirect_uri_finishes(server: RunningServer, provider: Provider) -> None:
    # Podium sent /__oauth__/callback as its redirect URI before it took Connect's; a
    # sign-in begun then (or at a provider told to use it) is sent back there.
    integration = _integration(server, provider, "Earlier")
    publisher = server.user_key("oauth_earlier", "publisher")
    item = server.api(publisher).post(_api(server, "v1/content"), json={"name": "earlier"}).json()
    _associate(server, publisher, item["guid"], [integration["guid"]])
    viewer = _sign_in(server, "oauth_earlier", "oauth_earlier-pass-1")
    started = viewer.get(f"{server.url}/__oauth__/connect/{integration['guid']}?content={item['guid']}",
                         allow_redirects=False)
    assert started.status_code == 303
    parts = urllib.parse.urlsplit(started.headers["location"])
    query = dict(urllib.parse.parse_qsl(parts.query), redirect_uri=f"{server.url}/__oauth__/callback")
    approved = requests.get(parts._replace(query=urllib.parse.urlencode(query)).geturl(), allow_redirects=False)
    callback = approved.headers["location"]
    assert urllib.parse.urlsplit(callback).path == "/__oauth__/callback"
    # The token request names the URI the viewer came back to (the provider checks it).
    finished = viewer.get(callback, allow_redirects=False)
    assert finished.status_code == 303, finished.text
    assert finished.headers["location"].endswith(f"/content/{item['guid']}/")


def test_service_account_credentials_with_the_content_session_token(
    server: RunningServer, provider: Provider
) -> None:
    made = server.api().post(_api(server, "v1/oauth/integrations"), json={
        "name": "Robot", "template": "custom",
        "config": {"auth_type": "Service Account", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                   "token_uri": f"{provider.url}/token", "scopes": "read"}})
    assert made.status_code == 200, made.text
    publisher = server.user_key("oauth_sa_publisher", "publisher")
    viewer = server.api().post(_api(server, "v1/users"), json={
        "username": "oauth_sa_viewer", "user_role": "viewer", "password": "oauth-sa-viewer-pass-1"}).json()
    item = _content(server, publisher, "robot-app", viewer["guid"])
    url = f"{server.url}/content/{item['guid']}/content-credentials"
    # Not associated: the exchange is refused.
    assert "no associated Service Account" in server.api(publisher).get(url).json()["error"]
    _associate(server, publisher, item["guid"], [made.json()["guid"]])
    given = server.api(publisher).get(url).json()["credentials"]
    assert given == {"access_token": provider.issued[-1], "token_type": "Bearer",
                     "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}
    assert given["access_token"].startswith("sa-") and provider.grants[-1] == "client_credentials"
    # A forged content session token buys nothing.
    refused = requests.post(_api(server, "v1/oauth/integrations/credentials"), data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": "x.y",
        "subject_token_type": "urn:posit:connect:content-session-token"})
    assert refused.status_code == 400 and "invalid" in refused.json()["error"]
    log = server.log()
    assert given["access_token"] not in log and CLIENT_SECRET not in log


def test_session_tokens_expire_and_do_not_pass_for_each_other() -> None:
    from podium import oauth

    now = [1_000_000.0]
    signer = oauth.Signer(b"k" * 32, clock=lambda: now[0])
    users, contents = oauth.UserSessionTokens(signer), oauth.ContentSessionTokens(signer)
    token = users.issue("user-guid", "content-guid")
    assert users.open(token) == ("user-guid", "content-guid")
    assert contents.open(token) is None  # a user-session token is not a content session token
    assert users.open(contents.issue("content-guid")) is None
    assert oauth.UserSessionTokens(oauth.Signer(b"j" * 32, clock=lambda: now[0])).open(token) is None
    now[0] += oauth.USER_SESSION_SECONDS + 1
    assert users.open(token) is None


# Each template's default scopes, as the provider must see them at /authorize.
VIEWER_SCOPES = {"github": "", "azure": "openid offline_access", "databricks": "all-apis offline_access",
                 "snowflake": "refresh_token", "salesforce": "api refresh_token"}


def test_every_template_signs_in_at_its_endpoints_and_content_gets_the_token(
    server: RunningServer, provider: Provider
) -> None:
    """GitHub (Enterprise base_url), Azure (authority_host), Databricks, Snowflake and
    Salesforce: the viewer signs in at the template's authorize path, Podium trades the
    code at its token path with the client authentication the provider takes, and content
    gets the token through posit-sdk's ``client.oauth.get_credentials``."""
    publisher = server.user_key("oauth_tpl_publisher", "publisher")
    viewer = server.api().post(_api(server, "v1/users"), json={
        "username": "oauth_tpl_viewer", "user_role": "viewer", "password": "oauth-tpl-viewer-pass-1"}).json()
    app = _content(server, publisher, "templates-app", viewer["guid"])
    browser = Browser(_sign_in(server, "oauth_tpl_viewer", "oauth-tpl-viewer-pass-1"), server.content_url)
    app_url = f"{server.content_url}/content/{app['guid']}/"
    for template, scopes in VIEWER_SCOPES.items():
        integration = _integration(server, provider, f"Viewer {template}", template)
        _associate(server, publisher, app["guid"], [integration["guid"]])
        assert "has not signed in" in browser.json(app_url)["error"], template
        sign_in = f"{server.url}/__oauth__/connect/{integration['guid']}?content={app['guid']}"
        signed, hops = browser.get(sign_in)
        assert signed.status_code == 200, (template, signed.text)
        authorize_path, _, _ = ENDPOINTS[template]
        assert [urllib.parse.urlsplit(h).path for h in hops][:3] == [
            f"/__oauth__/connect/{integration['guid']}", authorize_path, "/__oauth__/integrations/callback"], template
        assert provider.calls[-1] == (template, "authorization_code") and provider.scopes[-1] == (template, scopes)
        given = signed.json()["credentials"]
        assert given["access_token"] == provider.issued[-2], (template, signed.text)
        assert given["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        asked = len(provider.calls)
        assert browser.json(app_url)["credentials"]["access_token"] == provider.issued[-2]
        assert len(provider.calls) == asked, template  # unexpired (or, Salesforce, without expiry): kept
    # Refreshing goes to the template's token path too, with its client authentication.
    databricks = _integration(server, provider, "Refreshing databricks", "databricks")
    _associate(server, publisher, app["guid"], [databricks["guid"]])
    provider.expires_in = 5
    try:
        browser.get(f"{server.url}/__oauth__/connect/{databricks['guid']}?content={app['guid']}")
    finally:
        provider.expires_in = 3600
    short = provider.issued[-2]
    refreshed = browser.json(app_url)["credentials"]["access_token"]
    assert refreshed != short and provider.calls[-1] == ("databricks", "refresh_token")
    log = server.log()
    assert CLIENT_SECRET not in log and refreshed not in log


def _content_credentials(server: RunningServer, key: str, guid: str) -> dict[str, Any]:
    answer = server.api(key).get(f"{server.url}/content/{guid}/content-credentials").json()
    assert "credentials" in answer, answer
    return dict(answer["credentials"])


@pytest.mark.parametrize("template,scope", [("azure", "https://graph.microsoft.com/.default"),
                                            ("databricks", "all-apis")])
def test_service_account_token_is_cached_until_it_nears_expiry(
    server: RunningServer, provider: Provider, template: str, scope: str
) -> None:
    made = _integration(server, provider, f"Robot {template}", template, "Service Account")
    publisher = server.user_key(f"oauth_cache_{template}", "publisher")
    item = server.api(publisher).post(_api(server, "v1/content"), json={"name": f"cache-{template}"}).json()
    _, task = deploy(server, publisher, item["guid"], _bundle())
    assert task["code"] == 0, task["all_output"][-20:]
    _associate(server, publisher, item["guid"], [made["guid"]])

    def asked() -> int:
        return sum(1 for t, grant in provider.calls if t == template and grant == "client_credentials")

    before = asked()
    first = _content_credentials(server, publisher, item["guid"])
    assert first["access_token"].startswith("sa-") and asked() == before + 1
    assert provider.token_scopes[-1] == (template, scope)  # the template's default
    assert _content_credentials(server, publisher, item["guid"]) == first and asked() == before + 1
    # Changing the integration (its scopes here) asks the provider again.
    integration_url = _api(server, f"v1/oauth/integrations/{made['guid']}")
    changed = server.api().patch(integration_url, json={"config": {**config(template, provider.url, "Service Account"),
                                                                 "scopes": f"{scope} extra"}})
    assert changed.status_code == 200, changed.text
    second = _content_credentials(server, publisher, item["guid"])
    assert second != first and asked() == before + 2
    assert _content_credentials(server, publisher, item["guid"]) == second and asked() == before + 2
    # ... so does a new client secret alone.
    renewed = server.api().patch(integration_url, json={"config": {**changed.json()["config"],
                                                                 "client_secret": CLIENT_SECRET}})
    assert renewed.status_code == 200, renewed.text
    assert _content_credentials(server, publisher, item["guid"]) != second and asked() == before + 3
    assert provider.token_scopes[-1] == (template, f"{scope} extra")
    # A token is kept until 60 s before its expiry: one good for 64 s is asked again after 4 s.
    provider.expires_in = 64
    try:
        server.api().patch(integration_url, json={"description": "short tokens"})
        short = _content_credentials(server, publisher, item["guid"])
        assert _content_credentials(server, publisher, item["guid"]) == short and asked() == before + 4
        time.sleep(4.5)
        assert _content_credentials(server, publisher, item["guid"]) != short and asked() == before + 5
        # A token without expires_in is never kept.
        provider.expires_in = None
        server.api().patch(integration_url, json={"description": "tokens without expiry"})
        _content_credentials(server, publisher, item["guid"])
        _content_credentials(server, publisher, item["guid"])
        assert asked() == before + 7
    finally:
        provider.expires_in = 3600
    # Deleting the integration takes the token away.
    assert server.api().delete(integration_url).status_code == 204
    answer = server.api(publisher).get(f"{server.url}/content/{item['guid']}/content-credentials").json()
    assert "no associated Service Account" in answer["error"]
    log = server.log()
    assert first["access_token"] not in log and CLIENT_SECRET not in log
