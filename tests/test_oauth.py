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
