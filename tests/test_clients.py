"""End to end with the real clients: rsconnect-python's CLI and posit-sdk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration
RSCONNECT = str(Path(sys.executable).parent / "rsconnect")


def rsconnect(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")})
    return subprocess.run(
        [RSCONNECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    directory = tmp_path / "mysite"
    directory.mkdir()
    (directory / "index.html").write_text("<html><body><h1>Quarterly numbers</h1></body></html>")
    (directory / "style.css").write_text("h1 { color: navy }")
    return directory


def test_rsconnect_add_deploy_html_and_redeploy(server: RunningServer, site: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    key = server.user_key("rsc_publisher", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    details = rsconnect(home, "details", "-n", "podium")
    assert details.returncode == 0, details.stdout + details.stderr

    first = rsconnect(home, "deploy", "html", "-n", "podium", str(site))
    assert first.returncode == 0, first.stdout + first.stderr
    record = json.loads(next((site / "rsconnect-python").glob("*.json")).read_text())
    guid = record[next(iter(record))]["app_guid"] if "app_guid" not in record else record["app_guid"]
    content_url = f"{server.url}/content/{guid}/"
    admin = server.api()
    content = admin.get(f"{server.url}/__api__/v1/content/{guid}").json()
    assert content["app_mode"] == "static" and content["bundle_id"]
    served = server.api(key).get(content_url)
    assert served.status_code == 200 and "Quarterly numbers" in served.text
    # Not public: anonymous viewers are refused.
    assert requests.get(content_url).status_code == 401

    (site / "index.html").write_text("<html><body><h1>Updated numbers</h1></body></html>")
    second = rsconnect(home, "deploy", "html", "-n", "podium", str(site))
    assert second.returncode == 0, second.stdout + second.stderr
    after = admin.get(f"{server.url}/__api__/v1/content/{guid}").json()
    assert int(after["bundle_id"]) > int(content["bundle_id"])
    assert "Updated numbers" in server.api(key).get(content_url).text
    bundles = admin.get(f"{server.url}/__api__/v1/content/{guid}/bundles").json()
    assert len(bundles) == 2 and sum(b["active"] for b in bundles) == 1

    described = rsconnect(home, "content", "search", "-n", "podium")
    assert described.returncode == 0 and guid in described.stdout
    download = tmp_path / "download.tar.gz"
    fetched = rsconnect(home, "content", "download-bundle", "-n", "podium", "-g", guid, "-o", str(download))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert download.stat().st_size > 0


def test_rsconnect_rejects_bad_key(server: RunningServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", "wrong-key")
    assert added.returncode != 0
    assert "not valid" in (added.stdout + added.stderr)


def test_rsconnect_deploy_with_env_vars_and_title(server: RunningServer, site: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    key = server.user_key("rsc_env", "publisher")
    deployed = rsconnect(
        home, "deploy", "html", "-s", server.url, "-k", key, "-E", "MY_VAR=hello",
        "--title", "My Site", str(site),
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    items = server.api(key).get(f"{server.url}/__api__/v1/content").json()
    item = next(i for i in items if i["title"] == "My Site")
    assert item["name"] == "my_site"
    names = server.api(key).get(f"{server.url}/__api__/v1/content/{item['guid']}/environment").json()
    assert names == ["MY_VAR"]


def test_posit_sdk_content_lifecycle(server: RunningServer, tmp_path: Path) -> None:
    from posit import connect
    from tests.helpers import static_bundle

    key = server.user_key("sdk_user", "publisher")
    client = connect.Client(server.url, key)
    assert client.me["username"] == "sdk_user"
    assert client.version and client.version >= "2025"
    item = client.content.create(name="sdk-app", title="SDK App")
    assert item["guid"] in {c["guid"] for c in client.content.find()}
    assert [c["guid"] for c in client.content.find(name="sdk-app")] == [item["guid"]]
    item.update(title="New", min_processes=1, cpu_limit=1.5, memory_limit=1073741824)
    fetched = client.content.get(item["guid"])
    assert (fetched["title"], fetched["min_processes"], fetched["cpu_limit"], fetched["memory_limit"]) == (
        "New", 1, 1.5, 1073741824
    )
    fetched.environment_variables.create("FOO", "bar")
    assert fetched.environment_variables.find() == ["FOO"]
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(static_bundle({"index.html": "from the sdk"}))
    bundle = fetched.bundles.create(str(archive))
    task = bundle.deploy()
    task.wait_for()
    assert task["code"] == 0, task["error"]
    assert client.content.get(item["guid"])["bundle_id"] == bundle["id"]
    assert server.api(key).get(f"{server.url}/content/{item['guid']}/").text == "from the sdk"
    assert len(client.users.find()) >= 2
    fetched.delete()
    assert item["guid"] not in {c["guid"] for c in client.content.find()}
