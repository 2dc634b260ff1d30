"""The Connect-compatible API against a real server: endpoints, roles, error shape."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer
from tests.helpers import deploy, fastapi_bundle, static_bundle, wait_task

pytestmark = pytest.mark.integration


def api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def assert_error(response: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "error", "payload"}
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    return body


@pytest.fixture(scope="module")
def keys(server: RunningServer) -> dict[str, str]:
    return {
        "admin": server.admin_key,
        "pub": server.user_key("pub", "publisher"),
        "pub2": server.user_key("pub2", "publisher"),
        "view": server.user_key("view", "viewer"),
    }


def as_(server: RunningServer, keys: dict[str, str], who: str) -> requests.Session:
    if who == "anon":
        return requests.Session()
    return server.api(keys[who])


def new_content(server: RunningServer, keys: dict[str, str], who: str = "pub", **fields: Any) -> dict[str, Any]:
    name = fields.pop("name", f"c_{uuid.uuid4().hex[:10]}")
    made = as_(server, keys, who).post(api(server, "v1/content"), json={"name": name, **fields})
    assert made.status_code == 200, made.text
    return made.json()


# --- server and users ------------------------------------------------------------------------


def test_server_settings_reports_draft_capable_version_without_auth(server: RunningServer) -> None:
    body = requests.get(api(server, "server_settings")).json()
    assert tuple(int(p) for p in body["version"].split(".")) >= (2025, 6, 0)
    python = requests.get(api(server, "v1/server_settings/python")).json()
    assert python["installations"][0]["version"].count(".") == 2


def test_user_me_and_bad_key(server: RunningServer, keys: dict[str, str]) -> None:
    me = server.api(keys["pub"]).get(api(server, "v1/user")).json()
    assert me["username"] == "pub" and me["user_role"] == "publisher"
    assert {"guid", "email", "first_name", "last_name", "created_time", "locked", "confirmed"} <= set(me)
    assert_error(server.api("not-a-key").get(api(server, "v1/user")), 401, 30)
    assert_error(requests.get(api(server, "v1/user")), 401, 24)
    # The scheme is case-insensitive (pins-python sends "key").
    lower = requests.get(api(server, "v1/user"), headers={"Authorization": f"key {keys['pub']}"})
    assert lower.json()["username"] == "pub"


def test_users_list_and_roles(server: RunningServer, keys: dict[str, str]) -> None:
    listing = server.api().get(api(server, "v1/users"), params={"page_size": 500}).json()
    assert {"results", "current_page", "total"} <= set(listing)
    assert {"admin", "pub", "view"} <= {u["username"] for u in listing["results"]}
    assert listing["total"] >= 4
    prefixed = server.api().get(api(server, "v1/users"), params={"prefix": "pub"}).json()
    assert {u["username"] for u in prefixed["results"]} == {"pub", "pub2"}
    assert_error(server.api(keys["view"]).get(api(server, "v1/users")), 403, 22)
    me = server.api(keys["view"]).get(api(server, "v1/user")).json()
    assert server.api(keys["view"]).get(api(server, f"v1/users/{me['guid']}")).status_code == 200
    assert_error(server.api().get(api(server, f"v1/users/{uuid.uuid4()}")), 404, 4)


def test_users_create_requires_admin_and_validates(server: RunningServer, keys: dict[str, str]) -> None:
    assert_error(
        server.api(keys["pub"]).post(api(server, "v1/users"), json={"username": "x1"}), 403, 22
    )
    assert_error(server.api().post(api(server, "v1/users"), json={"username": "1bad"}), 400, 7)
    assert_error(
        server.api().post(api(server, "v1/users"), json={"username": "pub", "user_role": "viewer"}),
        409, 8,
    )
    assert_error(
        server.api().post(api(server, "v1/users"), json={"username": "ok_name", "user_role": "king"}),
        400, 3,
    )


def test_users_update_and_lock(server: RunningServer, keys: dict[str, str]) -> None:
    server.user_key("lockme", "viewer")
    guid = next(
        u["guid"] for u in server.api().get(api(server, "v1/users"), params={"prefix": "lockme"}).json()["results"]
    )
    assert_error(
        server.api(keys["view"]).put(api(server, f"v1/users/{guid}"), json={"email": "x@y"}), 403, 22
    )
    updated = server.api().put(api(server, f"v1/users/{guid}"), json={"first_name": "Lock", "user_role": "publisher"})
    assert updated.json()["first_name"] == "Lock" and updated.json()["user_role"] == "publisher"
    assert server.api().post(api(server, f"v1/users/{guid}/lock"), json={"locked": True}).status_code == 200
    # A locked user's key stops working.
    assert_error(server.api(server.user_key("lockme")).get(api(server, "v1/user")), 401, 30)
    server.api().post(api(server, f"v1/users/{guid}/lock"), json={"locked": False})
    assert server.api(server.user_key("lockme")).get(api(server, "v1/user")).status_code == 200


# --- content ---------------------------------------------------------------------------------


def test_content_create_fields_and_urls(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, title="My report")
    assert item["content_url"] == f"{server.content_url}/content/{item['guid']}/"
    assert item["app_mode"] == "unknown" and item["bundle_id"] is None
    assert item["id"].isdigit() and item["title"] == "My report"
    for field in ("cpu_limit", "memory_limit", "min_processes", "service_account_name", "owner_guid"):
        assert field in item
    assert_error(as_(server, keys, "view").post(api(server, "v1/content"), json={"name": "vvv"}), 403, 22)
    assert_error(requests.post(api(server, "v1/content"), json={"name": "anon"}), 401, 24)


@pytest.mark.parametrize("name", ["ab", "x" * 65, "has space", "slash/name", "", 42])
def test_content_create_rejects_bad_names(server: RunningServer, keys: dict[str, str], name: Any) -> None:
    assert_error(server.api(keys["pub"]).post(api(server, "v1/content"), json={"name": name}), 400, 5)


def test_content_create_duplicate_name_and_bad_json(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    assert_error(server.api(keys["pub"]).post(api(server, "v1/content"), json={"name": item["name"]}), 409, 26)
    # Another owner may use the same name.
    assert new_content(server, keys, "pub2", name=item["name"])["name"] == item["name"]
    bad = server.api(keys["pub"]).post(
        api(server, "v1/content"), data="{nope", headers={"Content-Type": "application/json"}
    )
    assert_error(bad, 400, 121)


def test_content_list_name_filter_and_visibility(server: RunningServer, keys: dict[str, str]) -> None:
    mine = new_content(server, keys)
    listed = server.api(keys["pub"]).get(api(server, "v1/content"), params={"name": mine["name"]}).json()
    assert [c["guid"] for c in listed] == [mine["guid"]]
    assert server.api(keys["pub2"]).get(api(server, "v1/content"), params={"name": mine["name"]}).json() == [] or all(
        c["owner_guid"] != mine["owner_guid"]
        for c in server.api(keys["pub2"]).get(api(server, "v1/content"), params={"name": mine["name"]}).json()
    )
    owner = server.api(keys["pub"]).get(api(server, "v1/user")).json()["guid"]
    by_owner = server.api().get(api(server, "v1/content"), params={"owner_guid": owner}).json()
    assert mine["guid"] in {c["guid"] for c in by_owner}
    assert all(c["owner_guid"] == owner for c in by_owner)
    # acl content is hidden from others; "all" content is listed for anonymous callers.
    assert_error(server.api(keys["view"]).get(api(server, f"v1/content/{mine['guid']}")), 404, 4)
    public = new_content(server, keys, access_type="all")
    anon = requests.get(api(server, "v1/content")).json()
    assert public["guid"] in {c["guid"] for c in anon} and mine["guid"] not in {c["guid"] for c in anon}
    with_owner = server.api(keys["pub"]).get(api(server, f"v1/content/{mine['guid']}"), params={"include": "owner,tags"}).json()
    assert with_owner["owner"]["username"] == "pub" and with_owner["tags"] == []


def test_content_get_errors(server: RunningServer, keys: dict[str, str]) -> None:
    assert_error(server.api().get(api(server, f"v1/content/{uuid.uuid4()}")), 404, 4)
    assert_error(server.api().get(api(server, "v1/content/not-a-guid")), 400, 3)


def test_content_patch_permissions_and_validation(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    url = api(server, f"v1/content/{item['guid']}")
    owner = server.api(keys["pub"])
    assert owner.patch(url, json={}).json()["guid"] == item["guid"]
    patched = owner.patch(url, json={"title": "New title", "min_processes": 1, "cpu_limit": 1.5,
                                     "memory_limit": 1073741824, "access_type": "logged_in"}).json()
    assert (patched["title"], patched["min_processes"], patched["cpu_limit"], patched["memory_limit"]) == (
        "New title", 1, 1.5, 1073741824)
    assert_error(owner.patch(url, json={"title": "x"}), 400, 122)
    assert_error(owner.patch(url, json={"load_factor": 2}), 400, 150)
    assert_error(owner.patch(url, json={"idle_timeout": -1}), 400, 151)
    assert_error(owner.patch(url, json={"min_processes": 5, "max_processes": 2}), 400, 114)
    assert_error(owner.patch(url, json={"access_type": "everyone"}), 400, 3)
    # logged_in content: other users see it but cannot change it.
    assert_error(server.api(keys["pub2"]).patch(url, json={"title": "Hijack"}), 403, 22)
    assert_error(server.api(keys["view"]).patch(url, json={"title": "Hijack"}), 403, 22)
    # Only administrators set service accounts.
    assert_error(owner.patch(url, json={"service_account_name": "sa"}), 403, 22)
    assert server.api().patch(url, json={"service_account_name": "sa-1"}).json()["service_account_name"] == "sa-1"
    assert_error(server.api().patch(url, json={"service_account_name": "Bad_SA"}), 400, 176)
    assert_error(owner.patch(url, json={"default_image_name": "has space"}), 400, 193)


def test_content_delete_by_owner_and_admin_only(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, access_type="logged_in")
    url = api(server, f"v1/content/{item['guid']}")
    assert_error(server.api(keys["pub2"]).delete(url), 403, 22)
    assert server.api(keys["pub"]).delete(url).status_code == 204
    assert_error(server.api(keys["pub"]).get(url), 404, 4)
    other = new_content(server, keys)
    assert server.api().delete(api(server, f"v1/content/{other['guid']}")).status_code == 204


def test_applications_v0_lookup(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    v0 = server.api(keys["pub"]).get(api(server, f"applications/{item['id']}")).json()
    assert v0["guid"] == item["guid"] and v0["id"] == int(item["id"])
    assert_error(server.api(keys["pub2"]).get(api(server, f"applications/{item['id']}")), 404, 4)


# --- bundles, deploy, tasks ------------------------------------------------------------------


def test_bundle_upload_raw_chunked_and_multipart(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    url = api(server, f"v1/content/{item['guid']}/bundles")
    archive = static_bundle()
    chunked = server.api(keys["pub"]).post(url, data=iter([archive[:100], archive[100:]]))
    assert chunked.status_code == 200, chunked.text
    body = chunked.json()
    assert body["id"].isdigit() and body["content_guid"] == item["guid"] and body["active"] is False
    assert body["size"] == len(archive) and len(body["metadata"]["archive_md5"]) == 32
    multipart = server.api(keys["pub"]).post(
        url,
        files={"archive": ("bundle.tar.gz", archive, "application/x-tar")},
        data={"metadata": '{"source": "cli", "team": "x"}'},
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["metadata"]["team"] == "x"
    listed = server.api(keys["pub"]).get(url).json()
    assert [b["id"] for b in listed] == [multipart.json()["id"], body["id"]]
    got = server.api(keys["pub"]).get(f"{url}/{body['id']}").json()
    assert got["id"] == body["id"]
    download = server.api(keys["pub"]).get(f"{url}/{body['id']}/download")
    assert download.content == archive
    assert_error(server.api(keys["view"]).post(url, data=archive), 404, 4)
    assert_error(server.api(keys["pub"]).get(f"{url}/999999"), 404, 4)


def test_bundle_upload_checksum_header_and_refusals(server: RunningServer, keys: dict[str, str]) -> None:
    import base64
    import hashlib

    item = new_content(server, keys)
    url = api(server, f"v1/content/{item['guid']}/bundles")
    archive = static_bundle()
    good = base64.b64encode(hashlib.md5(archive).digest()).decode()
    assert server.api(keys["pub"]).post(url, data=archive, headers={"X-Content-Checksum": good}).ok
    assert_error(server.api(keys["pub"]).post(url, data=archive, headers={"X-Content-Checksum": "AAAA"}), 400, 104)
    refused = server.api(keys["pub"]).post(url, data=b"not a tarball at all")
    assert refused.status_code == 400 and refused.json()["code"] in (38, 39)


def test_deploy_static_activates_and_serves(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, access_type="all")
    bundle_id, task = deploy(server, keys["pub"], item["guid"], static_bundle())
    assert task["finished"] and task["code"] == 0 and task["error"] == ""
    assert any("Activated" in line for line in task["all_output"])
    content = server.api(keys["pub"]).get(api(server, f"v1/content/{item['guid']}")).json()
    assert content["bundle_id"] == bundle_id and content["app_mode"] == "static"
    page = requests.get(f"{server.url}/content/{item['guid']}/")
    assert page.status_code == 200 and "Hello from Podium" in page.text
    assert page.headers["content-type"].startswith("text/html")
    css = requests.get(f"{server.url}/content/{item['guid']}/style.css")
    assert css.headers["content-type"].startswith("text/css")
    assert requests.get(f"{server.url}/content/{item['guid']}/missing.html").status_code == 404
    assert requests.get(f"{server.url}/content/{item['guid']}/..%2F..%2Fsecret.key").status_code == 404
    # The bundle reports itself active; the active bundle cannot be deleted.
    bundles_url = api(server, f"v1/content/{item['guid']}/bundles/{bundle_id}")
    assert server.api(keys["pub"]).get(bundles_url).json()["active"] is True
    assert_error(server.api(keys["pub"]).delete(bundles_url), 400, 75)


def test_deploy_draft_then_activate_switches_atomically(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, access_type="all")
    first, _ = deploy(server, keys["pub"], item["guid"], static_bundle({"index.html": "version one"}))
    second, task = deploy(
        server, keys["pub"], item["guid"], static_bundle({"index.html": "version two"}), activate=False
    )
    assert task["code"] == 0
    page = f"{server.url}/content/{item['guid']}/"
    assert requests.get(page).text == "version one"
    draft = f"{server.url}/content/{item['guid']}/_bundle{second}/"
    assert server.api(keys["pub"]).get(draft).text == "version two"
    # Drafts are for those who manage the content.
    assert requests.get(draft).status_code in (401, 403)
    task_id = server.api(keys["pub"]).post(
        api(server, f"v1/content/{item['guid']}/deploy"), json={"bundle_id": second}
    ).json()["task_id"]
    assert wait_task(server, keys["pub"], task_id)["code"] == 0
    assert requests.get(page).text == "version two"
    assert first != second


def test_deploy_null_bundle_uses_latest_and_errors(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    url = api(server, f"v1/content/{item['guid']}/deploy")
    assert_error(server.api(keys["pub"]).post(url, json={"bundle_id": None}), 404, 4)
    upload = server.api(keys["pub"]).post(api(server, f"v1/content/{item['guid']}/bundles"), data=static_bundle())
    task = server.api(keys["pub"]).post(url, json={"bundle_id": None}).json()
    assert wait_task(server, keys["pub"], task["task_id"])["code"] == 0
    assert server.api(keys["pub"]).get(api(server, f"v1/content/{item['guid']}")).json()["bundle_id"] == upload.json()["id"]
    other = new_content(server, keys)
    other_bundle = server.api(keys["pub"]).post(api(server, f"v1/content/{other['guid']}/bundles"), data=static_bundle()).json()
    assert_error(server.api(keys["pub"]).post(url, json={"bundle_id": other_bundle["id"]}), 400, 82)
    assert_error(server.api(keys["view"]).post(url, json={}), 404, 4)


def test_deploy_refuses_app_mode_change(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    deploy(server, keys["pub"], item["guid"], static_bundle())
    client = server.api(keys["pub"])
    bundle = client.post(api(server, f"v1/content/{item['guid']}/bundles"), data=fastapi_bundle()).json()
    refused = client.post(api(server, f"v1/content/{item['guid']}/deploy"), json={"bundle_id": bundle["id"]})
    assert_error(refused, 403, 48)


def test_task_long_poll_and_visibility(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    client = server.api(keys["pub"])
    bundle = client.post(api(server, f"v1/content/{item['guid']}/bundles"), data=static_bundle()).json()
    task_id = client.post(api(server, f"v1/content/{item['guid']}/deploy"), json={"bundle_id": bundle["id"]}).json()["task_id"]
    task = wait_task(server, keys["pub"], task_id)
    # Without `first` the whole output comes back (posit-sdk polls this way).
    full = client.get(api(server, f"v1/tasks/{task_id}")).json()
    assert full["output"] == task["all_output"] and full["last"] == len(full["output"])
    assert set(full) >= {"id", "output", "finished", "code", "error", "last", "result"}
    # A finished task answers at once even with a long wait.
    started = time.monotonic()
    client.get(api(server, f"v1/tasks/{task_id}"), params={"first": full["last"], "wait": 10})
    assert time.monotonic() - started < 2
    assert_error(server.api(keys["pub2"]).get(api(server, f"v1/tasks/{task_id}")), 404, 4)
    assert_error(client.get(api(server, f"v1/tasks/{uuid.uuid4()}")), 404, 4)


def test_deploy_unsupported_mode_fails_task(server: RunningServer, keys: dict[str, str]) -> None:
    import json as _json

    from tests.helpers import tar_gz

    item = new_content(server, keys, access_type="all")
    manifest = {"version": 1, "metadata": {"appmode": "tensorflow-saved-model"}, "files": {}}
    _, task = deploy(server, keys["pub"], item["guid"], tar_gz({"manifest.json": _json.dumps(manifest)}))
    assert task["finished"] and task["code"] != 0
    assert "cannot run 'tensorflow-saved-model'" in task["error"]
    content = server.api(keys["pub"]).get(api(server, f"v1/content/{item['guid']}")).json()
    assert content["bundle_id"] is None and content["app_mode"] == "unknown"


# --- environment variables and permissions -----------------------------------------------------


def test_env_vars_write_only_and_encrypted(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys)
    url = api(server, f"v1/content/{item['guid']}/environment")
    client = server.api(keys["pub"])
    patched = client.patch(url, json=[{"name": "SECRET_TOKEN", "value": "hunter2-very-secret"}, {"name": "B", "value": "1"}])
    assert patched.status_code == 200 and patched.json() == ["B", "SECRET_TOKEN"]
    assert client.get(url).json() == ["B", "SECRET_TOKEN"]
    assert client.patch(url, json=[{"name": "B", "value": None}]).json() == ["SECRET_TOKEN"]
    assert client.put(url, json=[{"name": "C", "value": "3"}]).json() == ["C"]
    assert client.put(url, json=[]).json() == []
    client.patch(url, json=[{"name": "SECRET_TOKEN", "value": "hunter2-very-secret"}])
    # Never stored in clear, never logged.
    db_bytes = b"".join(p.read_bytes() for p in (server.data_dir / "db").glob("podium.sqlite*"))
    assert b"hunter2-very-secret" not in db_bytes
    assert "hunter2-very-secret" not in server.log()
    assert_error(client.patch(url, json=[{"name": "CONNECT_API_KEY", "value": "x"}]), 400, 108)
    assert_error(client.patch(url, json=[{"name": "1BAD", "value": "x"}]), 400, 3)
    assert_error(client.patch(url, json={"name": "A"}), 400, 121)
    assert_error(server.api(keys["pub2"]).get(url), 404, 4)


def test_permissions_grant_view_and_collaborate(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, access_type="acl")
    deploy(server, keys["pub"], item["guid"], static_bundle({"index.html": "members only"}))
    page = f"{server.url}/content/{item['guid']}/"
    viewer = server.api(keys["view"])
    assert viewer.get(page).status_code == 403
    assert requests.get(page).status_code == 401
    # A browser is sent to the content origin, and from there through the dashboard's sign-in.
    assert requests.get(page, headers={"Accept": "text/html"}, allow_redirects=False).status_code == 307
    on_content = requests.get(item["content_url"], headers={"Accept": "text/html"}, allow_redirects=False)
    assert on_content.status_code == 303 and "/__handoff__?" in on_content.headers["location"]
    view_guid = viewer.get(api(server, "v1/user")).json()["guid"]
    pub2_guid = server.api(keys["pub2"]).get(api(server, "v1/user")).json()["guid"]
    perms = api(server, f"v1/content/{item['guid']}/permissions")
    owner = server.api(keys["pub"])
    granted = owner.post(perms, json={"principal_guid": view_guid, "principal_type": "user", "role": "viewer"})
    assert granted.status_code == 200, granted.text
    assert set(granted.json()) == {"id", "content_guid", "principal_guid", "principal_type", "role"}
    assert viewer.get(page).text == "members only"
    assert_error(owner.post(perms, json={"principal_guid": view_guid, "principal_type": "user", "role": "viewer"}), 409, 154)
    assert_error(owner.post(perms, json={"principal_guid": view_guid, "principal_type": "user", "role": "owner"}), 400, 33)
    # Viewers cannot collaborate; the owner cannot be added; viewers cannot grant.
    assert_error(viewer.post(perms, json={"principal_guid": pub2_guid, "principal_type": "user", "role": "viewer"}), 403, 22)
    owner_guid = owner.get(api(server, "v1/user")).json()["guid"]
    assert_error(owner.post(perms, json={"principal_guid": owner_guid, "principal_type": "user", "role": "viewer"}), 400, 34)
    collab = owner.post(perms, json={"principal_guid": pub2_guid, "principal_type": "user", "role": "owner"}).json()
    pub2 = server.api(keys["pub2"])
    assert pub2.get(api(server, f"v1/content/{item['guid']}")).json()["app_role"] == "editor"
    assert pub2.patch(api(server, f"v1/content/{item['guid']}"), json={"title": "Edited by collaborator"}).status_code == 200
    assert [p["principal_guid"] for p in owner.get(perms).json()] == [view_guid, pub2_guid]
    changed = owner.put(f"{perms}/{collab['id']}", json={"role": "viewer"}).json()
    assert changed["role"] == "viewer"
    assert_error(pub2.patch(api(server, f"v1/content/{item['guid']}"), json={"title": "Not any more"}), 403, 22)
    perm_id = granted.json()["id"]
    assert owner.get(f"{perms}/{perm_id}").json()["role"] == "viewer"
    assert owner.delete(f"{perms}/{perm_id}").status_code == 204
    assert viewer.get(page).status_code == 403


def test_access_type_logged_in_and_all(server: RunningServer, keys: dict[str, str]) -> None:
    item = new_content(server, keys, access_type="logged_in")
    deploy(server, keys["pub"], item["guid"], static_bundle({"index.html": "for members"}))
    page = f"{server.url}/content/{item['guid']}/"
    assert requests.get(page).status_code == 401
    assert server.api(keys["view"]).get(page).text == "for members"
    server.api(keys["pub"]).patch(api(server, f"v1/content/{item['guid']}"), json={"access_type": "all"})
    assert requests.get(page).text == "for members"


# --- error envelope ---------------------------------------------------------------------------


def test_unknown_endpoint_uses_error_envelope(server: RunningServer) -> None:
    assert_error(server.api().get(api(server, "v1/no-such-thing")), 404, 2)
    assert_error(server.api().put(api(server, "server_settings")), 404, 2)


def test_openapi_document_served(server: RunningServer) -> None:
    spec = requests.get(api(server, "openapi.json")).json()
    assert "/__api__/v1/content" in spec["paths"]
    assert requests.get(f"{server.url}/__docs__").status_code == 200


def test_api_keys_created_listed_and_revoked(server: RunningServer, keys: dict[str, str]) -> None:
    me = server.api(keys["pub"]).get(api(server, "v1/user")).json()
    url = api(server, f"v1/users/{me['guid']}/keys")
    made = server.api(keys["pub"]).post(url, json={"name": "laptop"})
    assert made.status_code == 200, made.text
    new_key = made.json()["key"]
    assert server.api(new_key).get(api(server, "v1/user")).json()["username"] == "pub"
    listed = server.api(keys["pub"]).get(url).json()
    assert "laptop" in {k["name"] for k in listed} and all("key" not in k for k in listed)
    assert_error(server.api(keys["pub"]).post(url, json={}), 400, 62)
    assert_error(server.api(keys["pub2"]).post(url, json={"name": "steal"}), 403, 22)
    assert_error(server.api(keys["pub2"]).get(url), 403, 22)
    assert server.api(new_key).delete(f"{url}/{made.json()['id']}").status_code == 204
    assert_error(server.api(new_key).get(api(server, "v1/user")), 401, 30)
