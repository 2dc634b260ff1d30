"""The posit-sdk surface, driven through the real posit-sdk against a real server: content
creation as Connect does it, groups and group permissions, tags, vanity URLs, users."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from posit import connect
from posit.connect.errors import ClientError
from tests.conftest import RunningServer
from tests.helpers import deploy, static_bundle, tar_gz

pytestmark = pytest.mark.integration


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


_CLIENTS: dict[tuple[str, str], connect.Client] = {}


def _client(server: RunningServer, key: str | None = None) -> connect.Client:
    """A posit-sdk client, kept alive: the SDK's resources hold it only weakly."""
    ident = (server.url, key or server.admin_key)
    if ident not in _CLIENTS:
        _CLIENTS[ident] = connect.Client(*ident)
    return _CLIENTS[ident]


def _error(call: Any) -> ClientError:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value


def _guid(server: RunningServer, key: str) -> str:
    return str(server.api(key).get(_api(server, "v1/user")).json()["guid"])


def test_sdk_content_create_names_pages_and_serialises_as_connect(server: RunningServer, tmp_path: Any) -> None:
    key = server.user_key("sdk_pub", "publisher")
    client = _client(server, key)
    first = client.content.create()
    second = client.content.create(title="Quarterly Report!")
    third = client.content.create()
    assert re.fullmatch(r"[A-Za-z0-9_-]{3,64}", first["name"])
    assert len({first["name"], second["name"], third["name"]}) == 3
    assert second["name"] == "quarterly_report"
    # One object, one shape: create, get (which asks include=owner,tags,vanity_url) and list.
    got = client.content.get(second["guid"])
    assert {k: v for k, v in got.items() if k not in ("owner", "tags")} == dict(second)
    assert got["tags"] == [] and got["owner"]["guid"] == second["owner_guid"]
    listed = {item["guid"]: dict(item) for item in client.content.find()}
    assert listed[second["guid"]] == dict(second)
    # Creation order.
    assert [g for g in listed if g in {first["guid"], second["guid"], third["guid"]}] == [
        first["guid"], second["guid"], third["guid"],
    ]
    # Paginated lists have exactly Connect's keys.
    page = server.api().get(_api(server, "v1/users"), params={"page_size": 1}).json()
    assert set(page) == {"results", "current_page", "total"} and page["total"] >= 2
    assert client.users.count() == page["total"]

    # A manifest entry the archive leaves out is a warning in the deploy log, not a refusal.
    manifest = (
        '{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}, '
        '"files": {"index.html": {"checksum": "%s"}, ".gitignore": {"checksum": "00000000000000000000000000000000"}}}'
    )
    import hashlib

    page_html = "<h1>kept</h1>"
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(tar_gz({
        "index.html": page_html,
        "manifest.json": manifest % hashlib.md5(page_html.encode()).hexdigest(),
    }))
    task = first.bundles.create(str(archive)).deploy()
    task.wait_for()
    assert task["code"] == 0, task["error"]
    assert any("Warning: manifest.json lists '.gitignore'" in line for line in task["output"])
    # A present file with a wrong checksum is still refused.
    bad = tar_gz({"index.html": "changed", "manifest.json": manifest % hashlib.md5(b"x").hexdigest()})
    archive.write_bytes(bad)
    assert _error(lambda: first.bundles.create(str(archive))).error_code == 104


def test_sdk_groups_members_and_owner(server: RunningServer) -> None:
    admin = _client(server)
    pub_key = server.user_key("grp_owner", "publisher")
    viewer_key = server.user_key("grp_viewer", "viewer")
    publisher = _client(server, pub_key)
    group = publisher.groups.create(name="Data Science")
    assert set(group) == {"guid", "name", "owner_guid"} and group["owner_guid"] == _guid(server, pub_key)
    assert admin.groups.get(group["guid"]) == group
    publisher.groups.create(name="Data Engineering")
    admin.groups.create(name="Finance")
    assert [g["name"] for g in admin.groups.find(prefix="data")] == ["Data Engineering", "Data Science"]
    assert admin.groups.count() >= 3
    # Bad input: duplicate (any case), bad name, viewers may not create.
    assert _error(lambda: admin.groups.create(name="data science")).error_code == 15
    assert _error(lambda: admin.groups.create(name=" padded ")).error_code == 14
    denied = _error(lambda: _client(server, viewer_key).groups.create(name="Viewers"))
    assert (denied.http_status, denied.error_code) == (403, 22)

    users = {u["username"]: u for u in admin.users.find()}
    alice = admin.users.create(username="alice_g", password="alice-pass-1", first_name="Zoe", user_role="viewer")
    bob = admin.users.create(username="bob_g", password="bob-pass-12", first_name="Adam", user_role="viewer")
    group.members.add(alice)
    group.members.add(user_guid=bob["guid"])
    group.members.add(users["grp_viewer"])
    assert group.members.count() == 3
    # Sorted by first name (Adam, then the viewer with none: "" sorts first), ties in order added.
    assert [m["username"] for m in group.members.find()] == ["grp_viewer", "bob_g", "alice_g"]
    assert _error(lambda: group.members.add(alice)).error_code == 16
    assert _error(lambda: group.members.add(user_guid="00000000-0000-4000-8000-000000000000")).http_status == 400
    # Only the owner and administrators change it.
    other = _client(server, server.user_key("grp_other", "publisher"))
    assert _error(lambda: other.groups.get(group["guid"]).members.add(bob)).http_status == 403
    group.members.delete(bob)
    assert [m["username"] for m in group.members.find()] == ["grp_viewer", "alice_g"]
    # User.groups (client-side over every group's members).
    assert [g["name"] for g in admin.users.get(alice["guid"]).groups.find()] == ["Data Science"]
    # Rename and give to another owner.
    renamed = server.api(pub_key).patch(
        _api(server, f"v1/groups/{group['guid']}"), json={"name": "DS", "owner_guid": users["admin"]["guid"]}
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {"guid": group["guid"], "name": "DS", "owner_guid": users["admin"]["guid"]}
    assert server.api(pub_key).patch(_api(server, f"v1/groups/{group['guid']}"), json={"name": "X"}).status_code == 403


def test_sdk_group_permissions_reach_api_proxy_and_listings(server: RunningServer) -> None:
    pub_key = server.user_key("gp_owner", "publisher")
    viewer_key = server.user_key("gp_viewer", "viewer")
    collab_key = server.user_key("gp_collab", "publisher")
    owner = _client(server, pub_key)
    item = owner.content.create(name="group-report", access_type="acl")
    deploy(server, pub_key, item["guid"], static_bundle({"index.html": "for the team"}))
    group = owner.groups.create(name="Team")
    perm = item.permissions.create(principal_guid=group["guid"], principal_type="group", role="viewer")
    assert {k: perm[k] for k in ("principal_guid", "principal_type", "role")} == {
        "principal_guid": group["guid"], "principal_type": "group", "role": "viewer"
    }
    page = f"{server.content_url}/content/{item['guid']}/"
    viewer = server.api(viewer_key)
    assert viewer.get(page).status_code == 403
    viewer_client = _client(server, viewer_key)
    assert item["guid"] not in [c["guid"] for c in viewer_client.content.find()]
    # Adding a member takes effect at once on the proxy and in the API.
    group.members.add(user_guid=_guid(server, viewer_key))
    assert viewer.get(page).text == "for the team"
    assert item["guid"] in [c["guid"] for c in viewer_client.content.find()]
    assert viewer_client.content.get(item["guid"])["app_role"] == "viewer"
    group.members.delete(user_guid=_guid(server, viewer_key))
    assert viewer.get(page).status_code == 403
    assert _error(lambda: viewer_client.content.get(item["guid"])).http_status == 404
    # Bad input, and nothing half-written.
    assert _error(lambda: item.permissions.create(
        principal_guid=group["guid"], principal_type="group", role="viewer")).error_code == 155
    assert _error(lambda: item.permissions.create(
        principal_guid=group["guid"], principal_type="team", role="viewer")).error_code == 152
    assert _error(lambda: item.permissions.create(
        principal_guid="00000000-0000-4000-8000-000000000000", principal_type="group", role="viewer"
    )).error_code == 153
    assert len(item.permissions.find()) == 1
    # A collaborator group: its publisher members manage the content (drafts too).
    editors = owner.groups.create(name="Editors")
    editors.members.add(user_guid=_guid(server, collab_key))
    item.permissions.create(principal_guid=editors["guid"], principal_type="group", role="owner")
    collab = _client(server, collab_key)
    assert collab.content.get(item["guid"])["app_role"] == "editor"
    collab.content.get(item["guid"]).update(title="Edited through a group")
    # Deleting a group removes its permissions (and the access they gave).
    editors.delete()
    assert [p["principal_guid"] for p in item.permissions.find()] == [group["guid"]]
    assert _error(lambda: collab.content.get(item["guid"]).update(title="Not any more")).http_status == 404


def test_sdk_tags_hierarchy_and_content_tags(server: RunningServer) -> None:
    admin = _client(server)
    root = admin.tags.create(name="Root")
    a = admin.tags.create(name="A", parent=root)
    b = admin.tags.create(name="B", parent=a)
    c = admin.tags.create(name="C", parent=a)
    d = admin.tags.create(name="D", parent_id=c["id"])
    assert set(d) == {"id", "name", "parent_id", "created_time", "updated_time"}
    assert d.parent_tag == c and admin.tags.get("Root,A,C") == c
    assert [t["name"] for t in a.child_tags.find()] == ["B", "C"]
    assert [t["name"] for t in root.descendant_tags.find()] == ["A", "B", "C", "D"]
    assert [t["id"] for t in admin.tags.find()][-5:] == [root["id"], a["id"], b["id"], c["id"], d["id"]]
    # Bad input.
    assert _error(lambda: admin.tags.create(name="")).error_code == 78
    assert _error(lambda: admin.tags.create(name="x" * 256)).error_code == 77
    assert _error(lambda: admin.tags.create(name="B", parent=a)).error_code == 81
    assert _error(lambda: admin.tags.create(name="Z", parent_id="999999")).error_code == 157
    assert _error(lambda: _client(server, server.user_key("tag_pub", "publisher")).tags.create(name="Mine")).http_status == 403

    pub_key = server.user_key("tag_pub", "publisher")
    item = _client(server, pub_key).content.create(name="tagged-report")
    assert _error(lambda: item.tags.add(root)).error_code == 79
    item.tags.add(d)
    item.tags.add(b)
    assert {t["name"] for t in item.tags.find()} == {"A", "B", "C", "D"}
    item.tags.delete(b)
    item.tags.delete(c)
    assert [t["name"] for t in item.tags.find()] == ["A"]
    item.tags.delete(root)  # not linked itself: clears its descendants all the same
    assert item.tags.find() == []
    item.tags.add(d)
    assert _client(server, pub_key).content.get(item["guid"])["tags"][-1]["name"] == "D"
    # Tag contents: only what the caller may see.
    assert [i["guid"] for i in d.content_items.find()] == [item["guid"]]
    viewer = _client(server, server.user_key("tag_viewer", "viewer"))
    assert viewer.tags.get(d["id"]).content_items.find() == []
    # Rename, move (to top level and back), and delete of a subtree.
    c.update(name="C2")
    assert admin.tags.get(c["id"])["name"] == "C2"
    assert _error(lambda: a.update(parent=d)).error_code == 157
    c.update(parent_id=None)
    assert admin.tags.get(c["id"])["parent_id"] is None
    c.update(parent=a)
    a.destroy()
    remaining = {t["id"] for t in admin.tags.find()}
    assert root["id"] in remaining and not remaining & {a["id"], b["id"], c["id"], d["id"]}
    assert item.tags.find() == []


def test_sdk_vanity_urls_rules_and_routing(server: RunningServer) -> None:
    pub_key = server.user_key("van_pub", "publisher")
    client = _client(server, pub_key)
    item = client.content.create(name="vanity-site", access_type="all")
    deploy(server, pub_key, item["guid"], static_bundle({"index.html": "<h1>Vanity</h1>", "a/b.html": "deep"}))
    assert item.vanity is None
    item.vanity = "sales//q3"
    assert item.vanity == "/sales/q3/"
    assert client.content.get(item["guid"])["vanity_url"] == f"{server.content_url}/sales/q3/"
    assert [v["path"] for v in _client(server).vanities.all()] == ["/sales/q3/"]
    # Served on the content origin like /content/{guid}/, relative paths included.
    assert requests.get(f"{server.content_url}/sales/q3/").text == "<h1>Vanity</h1>"
    assert requests.get(f"{server.content_url}/sales/q3/a/b.html").text == "deep"
    no_slash = requests.get(f"{server.content_url}/sales/q3", allow_redirects=False)
    assert no_slash.status_code == 301 and no_slash.headers["location"] == "/sales/q3/"
    # On the dashboard origin, browsers go to the content origin.
    redirected = requests.get(f"{server.url}/sales/q3/a/b.html", allow_redirects=False)
    assert redirected.status_code == 307
    assert redirected.headers["location"] == f"{server.content_url}/sales/q3/a/b.html"
    # Bad paths and clashes.
    other = client.content.create(name="vanity-other")
    for path, code in (("/connect/x", 52), ("/__api__/", 52), ("/", 52), ("/sales q3/", 52), ("/Content/x", 52)):
        assert _error(lambda p=path: setattr(other, "vanity", p)).error_code == code, path
    for path in ("/sales/q3/", "/sales/", "/sales/q3/more/"):
        failure = _error(lambda p=path: setattr(other, "vanity", p))
        assert (failure.http_status, failure.error_code) == (409, 51), path
    assert other.vanity is None
    # force moves the same path to this content.
    moved = server.api(pub_key).put(
        _api(server, f"v1/content/{other['guid']}/vanity"), json={"path": "/sales/q3/", "force": True}
    )
    assert moved.status_code == 200, moved.text
    assert _client(server, pub_key).content.get(item["guid"]).vanity is None
    assert requests.get(f"{server.content_url}/sales/q3/", allow_redirects=False).status_code != 200
    # Viewers may read it, not change it; deleting the content removes its vanity.
    viewer_key = server.user_key("van_viewer", "viewer")
    refused = server.api(viewer_key).put(_api(server, f"v1/content/{item['guid']}/vanity"), json={"path": "/v/"})
    assert refused.status_code in (403, 404)
    other_item = _client(server, pub_key).content.get(other["guid"])
    other_item.delete()
    assert _client(server).vanities.all() == []
    assert requests.get(f"{server.content_url}/sales/q3/").status_code == 404


def test_vanity_private_content_handoff_cookie_scoped_to_the_vanity(server: RunningServer) -> None:
    pub_key = server.user_key("vh_pub", "publisher")
    server.user_key("vh_viewer", "viewer")
    client = _client(server, pub_key)
    item = client.content.create(name="vanity-private", access_type="logged_in")
    deploy(server, pub_key, item["guid"], static_bundle({"index.html": "private vanity"}))
    item.vanity = "team/private"
    first = requests.get(f"{server.content_url}/team/private/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert first.status_code == 303
    assert "next=%2Fteam%2Fprivate%2F" in first.headers["location"]
    browser = requests.Session()
    form = browser.get(f"{server.url}/__login__")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    signed = browser.post(
        f"{server.url}/__login__",
        data={"username": "vh_viewer", "password": "vh_viewer-pass-1", "next": "/connect/", "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert signed.status_code == 303
    handoff = browser.get(first.headers["location"], allow_redirects=False)
    assert handoff.status_code == 303
    redeemed = requests.get(handoff.headers["location"], allow_redirects=False)
    assert redeemed.status_code == 303 and redeemed.headers["location"] == "/team/private/"
    cookie = redeemed.headers["set-cookie"]
    assert "Path=/team/private/" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    page = requests.get(f"{server.content_url}/team/private/", cookies={"podium_content": value})
    assert page.status_code == 200 and page.text == "private vanity"


def test_sdk_users_password_lock_filters_and_me(server: RunningServer) -> None:
    admin = _client(server)
    assert admin.me["username"] == "admin"
    carol = admin.users.create(
        username="carol", password="carol-pass-1", email="carol@example.org", first_name="Carol",
        last_name="Lake", user_role="publisher",
    )
    assert "password" not in carol and carol["locked"] is False
    dup = _error(lambda: admin.users.create(username="carol", password="carol-pass-1"))
    assert (dup.http_status, dup.error_code) == (409, 8)
    assert _error(lambda: admin.users.create(username="weak", password="short")).error_code == 6
    assert _error(lambda: admin.users.create(username="9bad", password="long-enough-1")).error_code == 7
    assert [u["username"] for u in admin.users.find(prefix="CAR")] == ["carol"]
    assert [u["username"] for u in admin.users.find(prefix="lake")] == ["carol"]
    roles = {u["user_role"] for u in admin.users.find(user_role="publisher|viewer")}
    assert roles <= {"publisher", "viewer"} and "publisher" in roles
    # The password works for signing in.
    key = server.cli("admin", "create-api-key", "carol").stdout.strip()
    item = _client(server, key).content.create(name="carols-site", access_type="all")
    deploy(server, key, item["guid"], static_bundle({"index.html": "still served"}))
    assert _client(server, key).me["guid"] == carol["guid"]
    private = _client(server, key).content.create(name="carols-private")
    deploy(server, key, private["guid"], static_bundle({"index.html": "mine"}))
    own_page = f"{server.content_url}/content/{private['guid']}/"
    assert server.api(key).get(own_page).status_code == 200
    # Locking takes effect at once: API and content origin refuse the key, the content she
    # owns keeps serving.
    user = admin.users.get(carol["guid"])
    user.lock()
    assert server.api(key).get(_api(server, "v1/user")).status_code == 401
    assert server.api(key).get(own_page).status_code == 401
    assert requests.get(f"{server.content_url}/content/{item['guid']}/").text == "still served"
    assert [u["username"] for u in admin.users.find(account_status="locked")] == ["carol"]
    assert "carol" not in [u["username"] for u in admin.users.find(account_status="licensed")]
    assert _error(lambda: admin.users.get(admin.me["guid"]).lock(force=True)).http_status == 403
    viewer = _client(server, server.user_key("lock_viewer", "viewer"))
    assert _error(lambda: viewer.users.get(carol["guid"]).unlock()).http_status == 403
    user.unlock()
    assert server.api(key).get(own_page).status_code == 200


def test_server_settings_version_switches_on_what_podium_serves(server: RunningServer, tmp_path: Any) -> None:
    """README "Version": 2025.12.0 turns on every client gate up to posit-sdk's lockfile
    (2025.12.0), rsconnect's git metadata (> 2025.11.0, multipart uploads) included."""
    client = _client(server)
    assert client.version == "2025.12.0"
    key = server.user_key("ver_pub", "publisher")
    item = _client(server, key).content.create(name="versioned")
    bundle_id, _ = deploy(server, key, item["guid"], static_bundle())
    # posit-sdk's bundles.active() (2025.02.0) is served ...
    assert _client(server, key).content.get(item["guid"]).bundles.active()["id"] == bundle_id
    # ... and so is its lockfile (2025.12.0): the SDK asks, and static content has none (404).
    with pytest.raises(ClientError) as refused:
        _client(server, key).content.get(item["guid"]).get_lockfile()
    assert refused.value.http_status == 404
    # rsconnect sends git metadata (multipart) from a git checkout, and it lands on the bundle.
    import subprocess
    import sys
    from pathlib import Path

    site = tmp_path / "gitsite"
    site.mkdir()
    (site / "index.html").write_text("<h1>from git</h1>")
    git = ["git", "-C", str(site), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "first"],
                 ["remote", "add", "origin", "https://example.org/team/site.git"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    rsconnect = str(Path(sys.executable).parent / "rsconnect")
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [rsconnect, "deploy", "html", "-s", server.url, "-k", key, "--title", "From git", str(site)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = [c for c in server.api(key).get(_api(server, "v1/content")).json() if c["title"] == "From git"]
    bundles = server.api(key).get(_api(server, f"v1/content/{found[0]['guid']}/bundles")).json()
    metadata = bundles[-1]["metadata"]
    assert metadata["source"] == "git" and metadata["source_repo"] == "https://example.org/team/site.git"
    assert metadata["source_branch"] == "main" and len(metadata["source_commit"]) == 40


_WHOAMI_APP = (
    "import json\nfrom fastapi import FastAPI, Request\napp = FastAPI()\n"
    "@app.get('/whoami')\ndef whoami(request: Request):\n"
    "    return {'path': request.url.path, 'root': request.scope.get('root_path'),\n"
    "            'credentials': json.loads(request.headers.get('rstudio-connect-credentials', 'null'))}\n"
)


def test_fastapi_app_behind_a_vanity_path_sees_group_members(server: RunningServer) -> None:
    from tests.helpers import fastapi_bundle

    pub_key = server.user_key("api_pub", "publisher")
    viewer_key = server.user_key("api_viewer", "viewer")
    owner = _client(server, pub_key)
    item = owner.content.create(name="whoami-api", access_type="acl")
    _, task = deploy(server, pub_key, item["guid"], fastapi_bundle(_WHOAMI_APP))
    assert task["code"] == 0, task["all_output"]
    item.vanity = "/apis/whoami/"
    team = owner.groups.create(name="API users")
    item.permissions.create(principal_guid=team["guid"], principal_type="group", role="viewer")
    viewer = server.api(viewer_key)
    url = f"{server.content_url}/apis/whoami/whoami"
    assert viewer.get(url).status_code == 403
    team.members.add(user_guid=_guid(server, viewer_key))
    answer = viewer.get(url, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # The app was started with /content/{guid}/ as its prefix and sees requests as such.
    assert body["credentials"] == {"user": "api_viewer", "groups": ["API users"]}
    assert body["path"].endswith("/whoami")
    # The same process answers its /content/{guid}/ address.
    assert viewer.get(f"{server.content_url}/content/{item['guid']}/whoami").json()["credentials"]["user"] == "api_viewer"
    # Renaming the group reaches the identity header at once.
    server.api(pub_key).patch(_api(server, f"v1/groups/{team['guid']}"), json={"name": "API team"})
    assert viewer.get(url).json()["credentials"]["groups"] == ["API team"]
