"""OAuth integrations and content associations through posit-sdk against a real server:
client secrets are encrypted at rest and never returned."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from posit import connect
from posit.connect.errors import ClientError
from tests.conftest import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data")
    yield running
    running.stop()


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


SECRET = "s3cr3t-never-shown-7f1c"


def test_oauth_integrations_crud_and_associations_through_posit_sdk(server: RunningServer) -> None:
    admin = connect.Client(server.url, server.admin_key)
    made = admin.oauth.integrations.create(
        name="Warehouse", description="the data warehouse", template="custom",
        config={"auth_mode": "Confidential", "auth_type": "Viewer", "client_id": "podium-app",
                "client_secret": SECRET, "authorization_uri": "https://idp.example.org/authorize",
                "token_uri": "https://idp.example.org/token", "scopes": "openid"},
    )
    assert made["template"] == "custom" and made["auth_type"] == "Viewer"
    assert "client_secret" not in made["config"] and made["config"]["client_id"] == "podium-app"
    github = admin.oauth.integrations.create(name="GitHub", description=None, template="github",
                                             config={"client_id": "gh", "client_secret": "gh-secret"})
    # Create, get and list serialise alike, in creation order; the secret is nowhere.
    listed = admin.oauth.integrations.find()
    assert [dict(i) for i in listed] == [dict(made), dict(github)]
    assert dict(admin.oauth.integrations.get(made["guid"])) == dict(made)
    assert admin.oauth.integrations.find_by(name="^Ware")["guid"] == made["guid"]
    for answer in (server.api().get(_api(server, "v1/oauth/integrations")).text,
                   server.api().get(_api(server, f"v1/oauth/integrations/{made['guid']}")).text):
        assert SECRET not in answer
    # ... nor stored in clear.
    with sqlite3.connect(server.data_dir / "db" / "podium.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert SECRET not in dump and "podium-app" in dump
    # PATCH keeps the secret unless given a new one.
    integration = admin.oauth.integrations.get(made["guid"])
    integration.update(name="Warehouse EU", description="EU region")
    assert admin.oauth.integrations.get(made["guid"])["name"] == "Warehouse EU"
    # Associations: replace-all PUT, listed by content and by integration.
    publisher_key = server.user_key("oauth_pub", "publisher")
    publisher = connect.Client(server.url, publisher_key)
    item = publisher.content.create(name="uses-oauth")
    associations = publisher.content.get(item["guid"]).oauth.associations
    associations.update([made["guid"], github["guid"]])
    found = associations.find()
    assert [a["oauth_integration_guid"] for a in found] == [made["guid"], github["guid"]]
    assert found[0]["app_guid"] == item["guid"] and found[0]["oauth_integration_name"] == "Warehouse EU"
    assert found[0]["oauth_integration_template"] == "custom" and found[0]["oauth_integration_auth_type"] == "Viewer"
    assert associations.find_by(name="^GitHub$")["oauth_integration_guid"] == github["guid"]
    by_integration = admin.oauth.integrations.get(github["guid"]).associations.find()
    assert [a["app_guid"] for a in by_integration] == [item["guid"]]
    associations.update(github["guid"])
    assert [a["oauth_integration_guid"] for a in associations.find()] == [github["guid"]]
    associations.delete()
    assert associations.find() == []
    # Deleting an integration removes its associations.
    associations.update(made["guid"])
    admin.oauth.integrations.get(made["guid"]).delete()
    assert associations.find() == []
    assert [i["guid"] for i in admin.oauth.integrations.find()] == [github["guid"]]


def test_oauth_refusals(server: RunningServer) -> None:
    admin = server.api()
    publisher_key = server.user_key("oauth_pub2", "publisher")
    publisher = server.api(publisher_key)
    made = admin.post(_api(server, "v1/oauth/integrations"), json={
        "name": "Svc", "template": "custom",
        "config": {"auth_type": "Service Account", "client_id": "c", "client_secret": "x", "token_uri": "https://t"},
    })
    assert made.status_code == 200, made.text
    # Only administrators change integrations.
    refused = publisher.post(_api(server, "v1/oauth/integrations"), json={"name": "n", "template": "github",
                                                                        "config": {"client_id": "c"}})
    assert refused.status_code == 403
    assert publisher.delete(_api(server, f"v1/oauth/integrations/{made.json()['guid']}")).status_code == 403
    # Bad templates and configs are 400 in Connect's error shape.
    for body in ({"name": "n", "template": "nope", "config": {}},
                 {"name": "n", "template": "custom", "config": {"client_id": "c"}},
                 {"name": "n", "template": "github", "config": {"client_id": "c", "auth_type": "Service Account"}},
                 {"name": "", "template": "github", "config": {"client_id": "c"}},
                 {"name": "n", "template": "custom", "config": {"auth_type": "Service Account", "client_id": "c",
                                                                 "token_uri": "https://t"}}):
        answer = admin.post(_api(server, "v1/oauth/integrations"), json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert set(answer.json()) == {"code", "error", "payload"}
    item = publisher.post(_api(server, "v1/content"), json={"name": "oauth-refusals"}).json()
    path = _api(server, f"v1/content/{item['guid']}/oauth/integrations/associations")
    # An association to an unknown integration is a 400 and changes nothing.
    unknown = publisher.put(path, json=[{"oauth_integration_guid": made.json()["guid"]},
                                        {"oauth_integration_guid": "00000000-0000-4000-8000-000000000000"}])
    assert unknown.status_code == 400 and unknown.json()["code"] == 25
    assert publisher.get(path).json() == []
    assert publisher.put(path, json={"oauth_integration_guid": "x"}).status_code == 400
    # Another publisher cannot set them; a viewer cannot list templates or integrations.
    other = server.api(server.user_key("oauth_other", "publisher"))
    assert other.put(path, json=[]).status_code in (403, 404)
    viewer = server.api(server.user_key("oauth_viewer", "viewer"))
    assert viewer.get(_api(server, "v1/oauth/integrations")).status_code == 403
    assert publisher.get(_api(server, "v1/oauth/templates")).status_code == 200
    assert publisher.get(_api(server, "v1/oauth/templates/custom")).json()["key"] == "custom"
    assert publisher.get(_api(server, "v1/oauth/templates/nope")).status_code == 404
    sdk = connect.Client(server.url, publisher_key)
    with pytest.raises(ClientError) as gone:
        sdk.oauth.integrations.get("00000000-0000-4000-8000-000000000000")
    assert gone.value.http_status == 404


@pytest.mark.parametrize("template,config,field", [
    ("azure", {"client_id": "c", "tenant_id": "t", "authority_host": "http://login.example.org"}, "authority_host"),
    ("azure", {"client_id": "c", "tenant_id": "a/b"}, "tenant_id"),
    ("azure", {"client_id": "c"}, "tenant_id"),
    ("github", {"client_id": "c", "base_url": "ftp://github.example.org"}, "base_url"),
    ("github", {"client_id": "c", "base_url": "https://user:pw@github.example.org"}, "base_url"),
    ("databricks", {"client_id": "c"}, "account_url"),
    ("databricks", {"client_id": "c", "account_url": "https://x.cloud.databricks.com?y=1"}, "account_url"),
    ("snowflake", {"client_id": "c", "account_url": "acme.snowflakecomputing.com"}, "account_url"),
    ("salesforce", {"client_id": "c", "account_url": 7}, "account_url"),
    ("custom", {"client_id": "c", "token_uri": "http://idp.example.org/token"}, "token_uri"),
    ("azure", {"client_id": "c", "tenant_id": "t", "auth_type": "Service Account"}, "client_secret"),
])
def test_oauth_template_config_refusals_name_the_field(
    server: RunningServer, template: str, config: dict[str, object], field: str
) -> None:
    answer = server.api().post(_api(server, "v1/oauth/integrations"),
                               json={"name": "bad", "template": template, "config": config})
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == 25 and field in answer.json()["error"], answer.text


def test_oauth_provider_endpoints_come_from_the_template_table() -> None:
    from podium import oauth

    def endpoints(template: str, **config: str) -> tuple[str, str]:
        provider = oauth.Provider(oauth.TEMPLATES[template], {"client_id": "c", **config})
        return provider.endpoint("authorize"), provider.endpoint("token")

    assert endpoints("github") == ("https://github.com/login/oauth/authorize",
                                   "https://github.com/login/oauth/access_token")
    assert endpoints("github", base_url="https://ghe.example.org/") == (
        "https://ghe.example.org/login/oauth/authorize", "https://ghe.example.org/login/oauth/access_token")
    assert endpoints("azure", tenant_id="contoso.onmicrosoft.com") == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token")
    assert endpoints("azure", tenant_id="t", authority_host="https://login.microsoftonline.us")[1] == (
        "https://login.microsoftonline.us/t/oauth2/v2.0/token")
    assert endpoints("databricks", account_url="https://adb-1.azuredatabricks.net") == (
        "https://adb-1.azuredatabricks.net/oidc/v1/authorize", "https://adb-1.azuredatabricks.net/oidc/v1/token")
    assert endpoints("snowflake", account_url="https://acme.snowflakecomputing.com") == (
        "https://acme.snowflakecomputing.com/oauth/authorize",
        "https://acme.snowflakecomputing.com/oauth/token-request")
    assert endpoints("salesforce", account_url="https://acme.my.salesforce.com") == (
        "https://acme.my.salesforce.com/services/oauth2/authorize",
        "https://acme.my.salesforce.com/services/oauth2/token")
    assert endpoints("custom", authorization_uri="https://idp/a?x=1", token_uri="https://idp/t") == (
        "https://idp/a?x=1", "https://idp/t")
    with pytest.raises(oauth.FlowError, match="authorization_uri"):
        endpoints("custom", token_uri="https://idp/t")
    with pytest.raises(oauth.FlowError, match="does not perform"):
        endpoints("connect")
    assert set(oauth.FLOW_TEMPLATES) == {"custom", "github", "azure", "databricks", "snowflake", "salesforce"}
    url = oauth.Provider(oauth.TEMPLATES["databricks"], {"client_id": "c", "account_url": "https://d"}).authorize_url(
        "https://podium/__oauth__/callback", "state", "verifier")
    assert "scope=all-apis+offline_access" in url and "code_challenge_method=S256" in url


def test_oauth_service_token_cache_keeps_tokens_until_shortly_before_expiry() -> None:
    from podium import oauth

    now = [100.0]
    cache = oauth.ServiceTokenCache(clock=lambda: now[0], margin_seconds=60)
    token = oauth.Tokens("at", None, "Bearer", 3600)
    cache.put("g", "v1", token)
    assert cache.get("g", "v1") == token
    assert cache.get("g", "v2") is None  # another config or secret version
    now[0] += 3600 - 60
    assert cache.get("g", "v1") is None  # within the margin of its expiry
    cache.put("g", "v1", oauth.Tokens("never", None, "Bearer", None))
    assert cache.get("g", "v1") is None  # no expires_in: not kept
    cache.put("g", "v1", oauth.Tokens("short", None, "Bearer", 30))
    assert cache.get("g", "v1") is None  # expires within the margin: not kept
    cache.put("g", "v1", token)
    cache.put("h", "v1", token)
    cache.forget("g")
    assert cache.get("g", "v1") is None and cache.get("h", "v1") == token
    cache.put("h", "v2", token)  # a new version replaces the old
    assert cache.get("h", "v1") is None and cache.get("h", "v2") == token
