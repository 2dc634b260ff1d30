"""``v1/environments`` on a real server: roles, validation codes, managed records, explain,
and the real clients (``rsconnect environment``, posit-sdk) plus ``podium env``."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import PODIUM, RunningServer, start_server
from tests.test_clients import rsconnect

pytestmark = pytest.mark.integration

DECLARED = [
    {"name": "ghcr.io/acme/declared:1", "title": "Declared", "matching": "exact",
     "python": [{"version": "3.12.1", "path": "/opt/python/3.12.1/bin/python"}]},
]
PY311 = {"installations": [{"version": "3.11.9", "path": "/opt/python/3.11.9/bin/python"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("podium-env") / "data",
        {"PODIUM_DECLARED_ENVIRONMENTS": json.dumps(DECLARED)},
    )
    yield running
    running.stop()


def api(server: RunningServer, key: str | None = None) -> tuple[requests.Session, str]:
    return server.api(key), f"{server.url}/__api__/v1/environments"


def by_name(server: RunningServer, name: str) -> dict[str, Any]:
    session, url = api(server)
    return next(e for e in session.get(url).json() if e["name"] == name)


def test_environments_roles(server: RunningServer) -> None:
    admin, url = api(server)
    made = admin.post(url, json={"name": "img/roles", "cluster_name": "Kubernetes", "python": PY311})
    assert made.status_code == 200, made.text
    guid = made.json()["guid"]
    publisher = server.api(server.user_key("env_pub", "publisher"))
    viewer = server.api(server.user_key("env_viewer", "viewer"))
    assert publisher.get(url).status_code == 200
    assert publisher.get(f"{url}/{guid}").json()["name"] == "img/roles"
    for method, target, body in (("POST", url, {"name": "img/x"}), ("PUT", f"{url}/{guid}", {"title": "t"}),
                                 ("DELETE", f"{url}/{guid}", None)):
        denied = publisher.request(method, target, json=body)
        assert (denied.status_code, denied.json()["code"]) == (403, 22), (method, denied.text)
    for target in (url, f"{url}/{guid}"):
        assert viewer.get(target).status_code == 403
        assert requests.get(target).status_code == 401
    assert admin.delete(f"{url}/{guid}").status_code == 204


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "img/v", "title": "x" * 65}, 168),
        ({"name": "img/v", "description": "x" * 5000}, 169),
        ({"name": "img/v", "cluster_name": "Mars"}, 170),
        ({"name": "two words"}, 171),
        ({"name": "img/v", "matching": "often"}, 172),
        ({"name": "img/v", "python": {"installations": [{"version": "3.11.9", "path": "python"}]}}, 173),
        ({"name": "img/v", "python": {"installations": [{"version": "3.11", "path": "/p"}]}}, 174),
        ({"name": "img/v", "supervisor": "a\tb"}, 177),
    ],
)
def test_environments_validation_codes(server: RunningServer, body: dict[str, Any], code: int) -> None:
    admin, url = api(server)
    refused = admin.post(url, json=body)
    assert refused.status_code == 400
    assert refused.json()["code"] == code and refused.json()["payload"] is None


def test_environments_crud_and_errors(server: RunningServer) -> None:
    admin, url = api(server)
    made = admin.post(url, json={"name": "img/crud", "cluster_name": "Kubernetes", "title": "CRUD",
                                 "python": PY311, "supervisor": "/usr/local/bin/wrap"}).json()
    assert made["matching"] == "any" and made["environment_type"] == "Kubernetes"
    assert made["r"] == {"installations": []} and made["volume_mounts"] == [] and made["managed_by"] is None
    again = admin.post(url, json={"name": "img/crud"})
    assert (again.status_code, again.json()["code"]) == (409, 175)
    guid = made["guid"]
    changed = admin.put(f"{url}/{guid}", json={"matching": "exact", "name": "ignored"}).json()
    assert changed["matching"] == "exact" and changed["name"] == "img/crud"
    assert changed["title"] == "CRUD" and changed["python"] == PY311 and changed["supervisor"] == "/usr/local/bin/wrap"
    bad = admin.put(f"{url}/{guid}", json={"r": {"installations": [{"version": "4", "path": "/R"}]}})
    assert bad.json()["code"] == 174
    assert admin.get(f"{url}/not-a-guid").json()["code"] == 3
    assert admin.delete(f"{url}/{guid}").status_code == 204
    gone = admin.get(f"{url}/{guid}")
    assert (gone.status_code, gone.json()["code"]) == (404, 4)


def test_environments_managed_records_refuse_api_edits(server: RunningServer) -> None:
    admin, url = api(server)
    declared = by_name(server, "ghcr.io/acme/declared:1")
    assert declared["managed_by"] == "settings" and declared["matching"] == "exact"
    local = by_name(server, "Local")
    assert (local["managed_by"], local["cluster_name"]) == ("host", "Local")
    assert local["python"]["installations"], "the host has Python"
    for record, needle in ((declared, "settings file"), (local, "this host's interpreters")):
        for method in ("PUT", "DELETE"):
            refused = admin.request(method, f"{url}/{record['guid']}", json={"title": "new"})
            assert refused.status_code == 403 and needle in refused.json()["error"], refused.text


def _manifest(version: str = "3.11.7", image: str | None = None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "version": 1, "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {"version": version}, "files": {},
    }
    if image:
        manifest["environment"] = {"image": image}
    return manifest


def test_environments_explain_endpoint(server: RunningServer) -> None:
    admin, url = api(server)
    explained = admin.post(f"{url}/explain", json={"manifest": _manifest("3.12.0", "ghcr.io/acme/declared:1")})
    body = explained.json()
    assert body["chosen"]["name"] == "ghcr.io/acme/declared:1" and body["chosen"]["python"]["version"] == "3.12.1"
    assert body["source"] == "manifest" and body["error"] is None
    assert any(r["name"] == "Local" and "its image is not" in r["reason"] for r in body["rejected"])
    missing = admin.post(f"{url}/explain", json={"manifest": _manifest("2.7.18")}).json()
    assert missing["chosen"] is None and "Cannot find a compatible execution environment" in missing["error"]
    assert "none is 2.7.x like the bundle's 2.7.18" in missing["error"]
    invalid = admin.post(f"{url}/explain", json={"manifest": _manifest("not-a-version")})
    assert (invalid.status_code, invalid.json()["code"]) == (400, 38)
    assert admin.post(f"{url}/explain", json={}).status_code == 400
    viewer = server.api(server.user_key("env_viewer", "viewer"))
    assert viewer.post(f"{url}/explain", json={"manifest": _manifest()}).status_code == 403
    # With a content guid, the content's default_image_name takes part.
    publisher = server.api(server.user_key("env_pub", "publisher"))
    content = publisher.post(f"{server.url}/__api__/v1/content", json={"name": "explain-me"}).json()
    patched = publisher.patch(f"{server.url}/__api__/v1/content/{content['guid']}",
                              json={"default_image_name": "ghcr.io/acme/declared:1"})
    assert patched.status_code == 200
    body = publisher.post(f"{url}/explain", json={"manifest": _manifest("3.12.0"),
                                                  "content_guid": content["guid"]}).json()
    assert body["source"] == "content" and body["chosen"]["name"] == "ghcr.io/acme/declared:1"


def test_rsconnect_environment_commands(server: RunningServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    common = ["-s", server.url, "-k", server.admin_key]
    added = rsconnect(home, "environment", "add", *common, "ghcr.io/acme/rsc:2", "-T", "From rsconnect",
                      "-m", "exact", "--python", "3.11.9=/opt/python/3.11.9/bin/python",
                      "--r", "4.3.2=/opt/R/4.3.2/bin/R")
    assert added.returncode == 0, added.stdout + added.stderr
    guid = json.loads(added.stdout)["guid"]
    listed = rsconnect(home, "environment", "list", *common)
    assert f"{guid}  From rsconnect" in listed.stdout and "  Local" in listed.stdout
    edited = rsconnect(home, "environment", "edit", *common, guid, "-d", "edited",
                       "--quarto", "1.4.550=/opt/quarto/bin/quarto")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    shown = json.loads(rsconnect(home, "environment", "show", *common, guid).stdout)
    assert shown["description"] == "edited" and shown["matching"] == "exact"
    assert shown["r"]["installations"] == [{"version": "4.3.2", "path": "/opt/R/4.3.2/bin/R"}]
    assert shown["quarto"]["installations"][0]["version"] == "1.4.550"
    refused = rsconnect(home, "environment", "add", *common, "ghcr.io/acme/rsc:2")
    assert refused.returncode != 0 and "already exists" in refused.stdout + refused.stderr
    removed = rsconnect(home, "environment", "remove", *common, guid)
    assert removed.returncode == 0 and f"Deleted environment {guid}" in removed.stdout


def test_posit_sdk_environments(server: RunningServer) -> None:
    from posit import connect

    client = connect.Client(server.url, server.admin_key)
    made = client.environments.create(
        title="From the SDK", name="img/sdk", cluster_name="Kubernetes", matching="none",
        python={"installations": [{"version": "3.12.1", "path": "/opt/py/bin/python"}]},
    )
    assert client.environments.find(made["guid"])["matching"] == "none"
    assert client.environments.find_by(name="img/sdk")["guid"] == made["guid"]
    made.update(title="SDK 2", matching="any")
    assert client.environments.find(made["guid"])["title"] == "SDK 2"
    made.destroy()
    assert client.environments.find_by(name="img/sdk") is None


def podium_env(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**server.env, "PODIUM_SERVER": server.url, "PODIUM_API_KEY": server.admin_key}
    return subprocess.run([*PODIUM, "env", *args], env=env, capture_output=True, text=True, timeout=60)


def test_podium_env_cli(server: RunningServer, tmp_path: Path) -> None:
    added = podium_env(server, "add", "img/cli", "--title", "CLI", "--matching", "exact",
                       "--python", "3.11.9=/opt/python/3.11.9/bin/python")
    assert added.returncode == 0, added.stderr
    guid = json.loads(added.stdout)["guid"]
    listed = podium_env(server, "list").stdout
    assert f"{guid}  img/cli  (CLI, matching exact, Kubernetes)  python 3.11.9" in listed
    assert "[managed by settings]" in listed and "[managed by host]" in listed
    assert json.loads(podium_env(server, "edit", guid, "--matching", "any").stdout)["matching"] == "any"
    assert "nothing to change" in podium_env(server, "edit", guid).stderr
    bad = podium_env(server, "add", "img/cli")
    assert bad.returncode == 1 and "already exists. (code 175, HTTP 409)" in bad.stderr
    # explain: from a directory, a .tar.gz bundle, with --image and --json
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    (bundle_dir / "manifest.json").write_text(json.dumps(_manifest("3.11.4")))
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir / "manifest.json", arcname="manifest.json")
    for source in (bundle_dir, archive):
        explained = podium_env(server, "explain", str(source), "--image", "img/cli")
        assert explained.returncode == 0, explained.stderr
        assert "Chose environment 'CLI' (image img/cli)" in explained.stdout
        assert "Python 3.11.9 at /opt/python/3.11.9/bin/python is the newest 3.11.x" in explained.stdout
    failed = podium_env(server, "explain", str(archive), "--image", "ghcr.io/acme/declared:1")
    assert failed.returncode == 1
    assert "has Python 3.12.1; none is 3.11.x like the bundle's 3.11.4" in failed.stdout
    as_json = json.loads(podium_env(server, "explain", str(bundle_dir), "--json").stdout)
    assert as_json["source"] == "auto"
    assert "cannot read a manifest" in podium_env(server, "explain", str(tmp_path / "nowhere")).stderr
    removed = podium_env(server, "remove", guid)
    assert removed.returncode == 0
    no_key = subprocess.run([*PODIUM, "env", "list", "-s", server.url], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PODIUM_API_KEY"}, timeout=60)
    assert no_key.returncode == 1 and "API key" in no_key.stderr
