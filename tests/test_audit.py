"""The audit log against a real server: what is recorded, who may read it, Connect's keyset paging."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from tests.conftest import RunningServer
from tests.helpers import deploy, static_bundle

pytestmark = pytest.mark.integration

SECRET_VALUE = "s3cr3t-Value-4711-do-not-log"


def api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def entries(server: RunningServer, **params: str) -> list[dict[str, Any]]:
    got = server.api().get(api(server, "v1/audit_logs"), params={"limit": "500", "ascOrder": "false", **params})
    assert got.status_code == 200, got.text
    return got.json()["results"]  # type: ignore[no-any-return]


def find(server: RunningServer, action: str, needle: str) -> dict[str, Any]:
    matching = [e for e in entries(server, action=action) if needle in e["event_description"]]
    assert matching, f"no {action} entry mentioning {needle!r}"
    return matching[0]


def test_audit_logs_record_who_did_what(server: RunningServer) -> None:
    admin = server.api()
    made = admin.post(api(server, "v1/users"), json={"username": "rita", "user_role": "viewer",
                                                     "password": "rita-pass-1", "first_name": "Rita"})
    rita = made.json()
    assert admin.put(api(server, f"v1/users/{rita['guid']}"), json={"user_role": "publisher"}).status_code == 200
    assert admin.post(api(server, f"v1/users/{rita['guid']}/lock"), json={"locked": True}).status_code == 200
    assert admin.post(api(server, f"v1/users/{rita['guid']}/lock"), json={"locked": False}).status_code == 200
    key = server.cli("admin", "create-api-key", "rita").stdout.strip()
    publisher = server.api(key)
    created = publisher.post(api(server, f"v1/users/{rita['guid']}/keys"), json={"name": "laptop"}).json()
    assert publisher.delete(api(server, f"v1/users/{rita['guid']}/keys/{created['id']}")).status_code == 204
    item = publisher.post(api(server, "v1/content"), json={"name": "audited", "title": "Audited"}).json()
    guid = item["guid"]
    assert publisher.patch(api(server, f"v1/content/{guid}"),
                           json={"title": "Audited report", "access_type": "logged_in"}).status_code == 200
    bundle_id, task = deploy(server, key, guid, static_bundle())
    assert task["code"] == 0
    viewer = admin.get(api(server, "v1/users"), params={"prefix": "rita"}).json()["results"][0]
    other = admin.post(api(server, "v1/users"), json={"username": "otto", "user_role": "viewer"}).json()
    permission = publisher.post(api(server, f"v1/content/{guid}/permissions"),
                                json={"principal_guid": other["guid"], "principal_type": "user", "role": "viewer"}).json()
    assert publisher.delete(api(server, f"v1/content/{guid}/permissions/{permission['id']}")).status_code == 204
    environment = admin.post(api(server, "v1/environments"), json={
        "title": "Audited image", "name": "ghcr.io/acme/audited:1", "cluster_name": "Kubernetes",
        "python": {"installations": [{"version": "3.12.4", "path": "/usr/bin/python3"}]},
    })
    assert environment.status_code == 200, environment.text
    env_guid = environment.json()["guid"]
    assert admin.put(api(server, f"v1/environments/{env_guid}"), json={"matching": "exact"}).status_code == 200
    assert admin.delete(api(server, f"v1/environments/{env_guid}")).status_code == 204
    assert publisher.delete(api(server, f"v1/content/{guid}")).status_code == 204

    add_user = find(server, "add_user", "Rita (rita)")
    assert add_user["user_guid"] is not None and add_user["user_description"] == "admin"
    assert set(add_user) == {"id", "time", "user_id", "user_guid", "user_description", "action", "event_description"}
    assert add_user["time"].endswith("Z")
    assert "from viewer to publisher" in find(server, "change_user_role", "rita")["event_description"]
    find(server, "lock_user", "Locked Rita (rita)")
    find(server, "unlock_user", "Unlocked Rita (rita)")
    assert find(server, "add_api_key", "laptop")["user_guid"] == viewer["guid"]
    find(server, "remove_api_key", "laptop")
    assert find(server, "add_content", guid)["user_description"] == "Rita (rita)"
    assert find(server, "update_content", guid)["event_description"].startswith("Changed access_type, title of")
    assert "Audited report" not in find(server, "update_content", guid)["event_description"]  # fields, not values
    find(server, "upload_bundle", f"bundle {bundle_id} (static")
    find(server, "deploy_content", f"bundle {bundle_id}")
    find(server, "deploy_content_succeeded", f"bundle {bundle_id}")
    find(server, "add_permission", "otto")
    find(server, "remove_permission", "otto")
    find(server, "add_environment", "ghcr.io/acme/audited:1")
    assert "matching" in find(server, "update_environment", "ghcr.io/acme/audited:1")["event_description"]
    find(server, "remove_environment", "ghcr.io/acme/audited:1")
    find(server, "remove_content", guid)


def test_audit_logs_name_environment_variables_never_their_values(server: RunningServer) -> None:
    key = server.user_key("sam")
    client = server.api(key)
    guid = client.post(api(server, "v1/content"), json={"name": "with-secrets"}).json()["guid"]
    assert client.patch(api(server, f"v1/content/{guid}/environment"),
                        json=[{"name": "DB_PASSWORD", "value": SECRET_VALUE}]).status_code == 200
    assert client.put(api(server, f"v1/content/{guid}/environment"),
                      json=[{"name": "TOKEN", "value": SECRET_VALUE + "-2"}]).status_code == 200
    changes = [e for e in entries(server, action="update_environment_variables") if guid in e["event_description"]]
    assert [e["event_description"].rsplit(": ", 1)[1] for e in changes] == [
        "set TOKEN; removed DB_PASSWORD.", "set DB_PASSWORD."
    ]
    assert all(SECRET_VALUE not in str(e) for e in entries(server))
    assert SECRET_VALUE not in server.log()


def test_audit_logs_are_for_administrators_only(server: RunningServer) -> None:
    publisher = server.api(server.user_key("pete"))
    refused = publisher.get(api(server, "v1/audit_logs"))
    assert (refused.status_code, refused.json()["code"]) == (403, 22)
    assert requests.get(api(server, "v1/audit_logs"), timeout=10).status_code == 401
    assert publisher.get(api(server, "v1/audit/actions")).status_code == 403
    actions = {a["action"]: a["description"] for a in server.api().get(api(server, "v1/audit/actions")).json()}
    assert {"user_login", "user_login_failed", "update_environment_variables"} <= set(actions)
    assert all(actions.values())


def test_audit_logs_keyset_paging_as_connect(server: RunningServer) -> None:
    key = server.user_key("pager")
    client = server.api(key)
    for n in range(7):
        client.post(api(server, "v1/content"), json={"name": f"paged-{n}"})
    me = client.get(api(server, "v1/user")).json()["guid"]
    mine = [e["id"] for e in entries(server, user_guid=me)][::-1]  # oldest first
    assert len(mine) == 7

    def walk(url: str | None, direction: str, **params: str) -> list[list[str]]:
        pages = []
        response = server.api().get(api(server, "v1/audit_logs"), params=params) if url is None else server.api().get(url)
        while True:
            body = response.json()
            pages.append([e["id"] for e in body["results"]])
            if body["paging"][direction] is None:
                return pages
            response = server.api().get(body["paging"][direction])

    forward = walk(None, "next", limit="3", user_guid=me)
    assert forward == [mine[0:3], mine[3:6], mine[6:7]]
    first = server.api().get(api(server, "v1/audit_logs"), params={"limit": "3", "user_guid": me}).json()
    paging = first["paging"]
    assert paging["first"] is None and paging["previous"] is None and paging["cursors"]["previous"] is None
    assert paging["cursors"]["next"] == mine[2] and paging["next"].startswith(f"{server.url}/__api__/v1/audit_logs?")
    last = server.api().get(paging["last"]).json()
    assert [e["id"] for e in last["results"]] == mine[4:7]
    assert last["paging"]["next"] is None and last["paging"]["last"] is None
    assert walk(paging["last"], "previous") == [mine[4:7], mine[1:4], mine[0:1]]

    newest_first = walk(None, "next", limit="4", ascOrder="false", user_guid=me)
    assert newest_first == [mine[::-1][0:4], mine[::-1][4:7]]
    middle = server.api().get(api(server, "v1/audit_logs"),
                              params={"limit": "2", "ascOrder": "false", "user_guid": me, "next": mine[4]}).json()
    assert [e["id"] for e in middle["results"]] == [mine[3], mine[2]]
    assert middle["paging"]["cursors"] == {"previous": mine[3], "next": mine[2]}
    assert server.api().get(api(server, "v1/audit_logs"), params={"next": "x"}).json()["code"] == 3
