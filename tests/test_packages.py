"""The package inventory, lockfiles and runtime caches through the real clients
(posit-sdk and rsconnect-python) against a real server that builds real environments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from posit import connect
from posit.connect.errors import ClientError
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, tar_gz

RSCONNECT = str(Path(sys.executable).parent / "rsconnect")
UV = str(Path(sys.executable).parent / "uv")
PYTHON_312 = Path.home() / ".pyenv/versions/3.12.1/bin/python3.12"
_APP = (
    "import sys\nfrom fastapi import FastAPI\napp = FastAPI()\n"
    "@app.get('/')\ndef root():\n    return {'python': sys.executable}\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data")
    yield running
    running.stop()


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def _client(server: RunningServer, key: str | None = None) -> connect.Client:
    return connect.Client(server.url, key or server.admin_key)


def fastapi_bundle(python: str = "3.11.7", requirements: str = "fastapi\n") -> bytes:
    manifest = {
        "version": 1,
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {"version": python,
                   "package_manager": {"name": "pip", "version": "23.2.1", "package_file": "requirements.txt"}},
        "files": {"requirements.txt": {}, "app.py": {}},
    }
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": requirements, "app.py": _APP})


def _fingerprint(task: dict[str, Any]) -> str:
    text = "\n".join(task["all_output"])
    found = re.search(r"(?:Building|Reusing) package environment ([0-9a-f]{32})", text)
    assert found, text
    return found.group(1)


def _rsconnect(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECT_")}  # the index, TLS, proxies
    env.update({"HOME": str(home), "PATH": f"{Path(UV).parent}:/usr/bin:/bin"})
    return subprocess.run([RSCONNECT, *args], env=env, capture_output=True, text=True, timeout=300)


def _uv_list(python: Path) -> dict[str, str]:
    listed = subprocess.run([UV, "pip", "list", "--format", "json", "--python", str(python)],
                            capture_output=True, text=True, check=True, timeout=60)
    return {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}


def test_packages_of_a_build_listed_through_posit_sdk_with_its_lockfile(server: RunningServer, tmp_path: Path) -> None:
    key = server.user_key("pkg_pub", "publisher")
    sdk = _client(server, key)
    item = sdk.content.create(name="inventory")
    bundle_id, task = deploy(server, key, item["guid"], fastapi_bundle())
    assert task["code"] == 0, task["all_output"]
    env = server.data_dir / "envs" / _fingerprint(task)
    installed = _uv_list(env / "bin" / "python")  # what uv itself says is there
    assert "fastapi" in installed and "uvicorn" in installed
    content = sdk.content.get(item["guid"])
    listed = {p["name"].lower(): p["version"] for p in content.packages.fetch()}
    assert listed == installed
    assert {p["language"] for p in content.packages.fetch()} == {"python"}
    assert content.packages.find_by(name="fastapi")["version"] == installed["fastapi"]
    # The server-wide inventory: which content uses fastapi at this version.
    rows = list(sdk.packages.fetch(name="fastapi", version=installed["fastapi"]))
    assert [(r["content_guid"], r["bundle_id"], r["language"]) for r in rows] == [
        (item["guid"], str(bundle_id), "python")
    ]
    assert rows[0]["language_version"] == content["py_version"]
    assert list(sdk.packages.fetch(name="fastapi", version="0.0.1")) == []
    assert len(list(sdk.packages.fetch(app_guid=item["guid"]))) == len(installed)
    assert len(list(sdk.packages.fetch(bundle_id=str(bundle_id)))) == len(installed)
    # Lockfile: the exact resolved requirements, with the Python version in the header.
    lockfile = content.get_lockfile()
    assert lockfile.python_version == content["py_version"]
    assert re.fullmatch(r"podium; python=\d+\.\d+\.\d+", lockfile.generated_by)
    pinned = dict(line.split("==") for line in lockfile.text.splitlines())
    assert {k.lower(): v for k, v in pinned.items()} == installed
    # rsconnect content venv recreates it (uv, from the lockfile).
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "replica"
    done = _rsconnect(home, "content", "venv", "-s", server.url, "-k", key, "-g", item["guid"], str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _uv_list(target / "bin" / "python") == installed


def test_packages_refused_or_hidden_beyond_the_callers_content(server: RunningServer) -> None:
    key = server.user_key("pkg_pub", "publisher")
    owner = _client(server, key)
    mine = [c for c in owner.content.find() if c["name"] == "inventory"]
    if not mine:
        pytest.skip("needs the content of the test above")
    other = _client(server, server.user_key("pkg_other", "publisher"))
    assert list(other.packages.fetch(name="fastapi")) == []
    hidden = server.api(server.user_key("pkg_other", "publisher")).get(
        _api(server, f"v1/content/{mine[0]['guid']}/packages"))
    assert hidden.status_code == 404 and hidden.json()["code"] == 4
    viewer = server.api(server.user_key("pkg_viewer", "viewer")).get(_api(server, "v1/packages"))
    assert viewer.status_code == 403 and set(viewer.json()) == {"code", "error", "payload"}
    admin = server.api()
    assert admin.get(_api(server, "v1/packages"), params={"name": "fastapi"}).json()["total"] >= 1
    for bad in ({"page_size": "0"}, {"page_number": "0"}, {"bundle_id": "abc"}, {"app_id": "x"}):
        answer = admin.get(_api(server, "v1/packages"), params=bad)
        assert answer.status_code == 400, (bad, answer.text)
        assert set(answer.json()) == {"code", "error", "payload"}
    huge = admin.get(_api(server, "v1/packages"), params={"page_size": "1000000"}).json()
    assert set(huge) == {"results", "current_page", "total"} and len(huge["results"]) == huge["total"]


@pytest.mark.skipif(not PYTHON_312.exists(), reason="needs pyenv's Python 3.12.1")
def test_runtime_caches_listed_and_deleted_through_posit_sdk_and_rsconnect(server: RunningServer, tmp_path: Path) -> None:
    key = server.user_key("cache_pub", "publisher")
    publisher = _client(server, key)
    item = publisher.content.create(name="cached")
    _, old = deploy(server, key, item["guid"], fastapi_bundle("3.12.1", "fastapi\nitsdangerous\n"))
    assert old["code"] == 0, old["all_output"]
    old_env = server.data_dir / "envs" / _fingerprint(old)
    _, new = deploy(server, key, item["guid"], fastapi_bundle("3.11.7"))
    assert new["code"] == 0, new["all_output"]
    admin = _client(server)
    caches = admin.system.caches.runtime.find()
    described = {(c["language"], c["version"], c["image_name"]) for c in caches}
    assert ("Python", "3.12.1", "Local") in described
    assert any(lang == "Python" and v.startswith("3.11.") for lang, v, _ in described)
    home = tmp_path / "home"
    home.mkdir()
    listed = _rsconnect(home, "system", "caches", "list", "-s", server.url, "-k", server.admin_key)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert {(c["language"], c["version"]) for c in json.loads(listed.stdout)["caches"]} == {
        (lang, v) for lang, v, _ in described
    }
    deadline = time.monotonic() + 120  # its compile job done: it would count as in use
    while not (old_env / ".podium-compiled").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    dry = _rsconnect(home, "system", "caches", "delete", "-s", server.url, "-k", server.admin_key,
                     "--language", "Python", "--version", "3.12.1", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert old_env.is_dir() and len(admin.system.caches.runtime.find()) == len(caches)
    # A publisher may not; an unknown cache is a 404.
    with pytest.raises(ClientError) as refused:
        publisher.system.caches.runtime.find()
    assert refused.value.http_status == 403
    unknown = server.api().delete(_api(server, "v1/system/caches/runtime"),
                                  json={"language": "Python", "version": "2.7.1", "image_name": "Local"})
    assert unknown.status_code == 404 and unknown.json()["code"] == 4
    # The real deletion runs as a task; the cache is gone when it ends.
    cache = next(c for c in admin.system.caches.runtime.find() if c["version"] == "3.12.1")
    task = cache.destroy()
    task.wait_for()
    assert task["finished"] and task["code"] == 0, task["output"]
    assert len(admin.system.caches.runtime.find()) == len(caches) - 1
    assert not old_env.exists()
    assert "3.12.1" not in {c["version"] for c in admin.system.caches.runtime.find()}


def test_runtime_cache_in_use_is_not_pulled_from_a_running_process(server: RunningServer) -> None:
    key = server.user_key("busy_pub", "publisher")
    publisher = _client(server, key)
    item = publisher.content.create(name="busy")
    bundle_id, task = deploy(server, key, item["guid"], fastapi_bundle("3.11.7", "fastapi\nmarkupsafe\n"))
    assert task["code"] == 0, task["all_output"]
    first_env = server.data_dir / "envs" / _fingerprint(task)
    url = f"{server.content_url}/content/{item['guid']}/"
    viewer = server.api(key)
    before = viewer.get(url, timeout=60)
    assert before.status_code == 200, before.text
    assert before.json()["python"].startswith(str(first_env))
    admin = _client(server)
    version = admin.content.get(item["guid"])["py_version"]
    cache = next(c for c in admin.system.caches.runtime.find() if c["version"] == version)
    task_out = cache.destroy()
    task_out.wait_for()
    assert task_out["code"] == 0, task_out["output"]
    output = "\n".join(task_out["output"])
    assert f"Retired environment {first_env.name}" in output
    # The running process keeps its environment and keeps serving ...
    assert first_env.is_dir() and viewer.get(url, timeout=60).json()["python"] == before.json()["python"]
    # ... and the content's next process starts with the rebuilt one.
    rebuilt = [p for p in (server.data_dir / "envs").glob(f"{first_env.name}-g*") if (p / ".podium-ready").exists()]
    assert len(rebuilt) == 1
    assert version in {c["version"] for c in admin.system.caches.runtime.find()}
    # Stop the running process (posit-sdk's job.destroy()); the next request starts another.
    running = [j for j in publisher.content.get(item["guid"]).jobs.fetch() if j["status"] == 0 and j["tag"] == "run_fastapi_app"]
    assert len(running) == 1, running
    running[0].destroy()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        j["status"] == 0 and j["tag"] == "run_fastapi_app" for j in publisher.content.get(item["guid"]).jobs.fetch()
    ):
        time.sleep(0.2)
    after = requests.get(url, headers={"Authorization": f"Key {key}"}, timeout=60)
    assert after.status_code == 200 and after.json()["python"].startswith(str(rebuilt[0])), after.text
    # Once nothing runs from the retired environment, the next deletion removes it (and
    # retires the rebuilt one, which the new process uses).
    inode = first_env.stat().st_ino
    again = next(c for c in admin.system.caches.runtime.find() if c["version"] == version)
    done = again.destroy()
    done.wait_for()
    assert f"Removed retired environment {first_env.name}" in done["output"][0]
    assert f"Retired environment {first_env.name}" in "\n".join(done["output"])
    assert first_env.stat().st_ino != inode  # built afresh where the retired one was
    assert requests.get(url, headers={"Authorization": f"Key {key}"}, timeout=60).json() == after.json()
