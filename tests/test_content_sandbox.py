"""Content processes run sandboxed: a hostile app cannot reach the server or other content.

A publisher's FastAPI app probes what the issue found open: other processes'
``/proc/<pid>/environ`` (another content item's secret), the data dir, the secret key,
the database, other content's bundles, and writing its own bundle. Against a real
server (root, bubblewrap from ``make system-deps``), every probe must fail while the
app still serves, writes its home, and a notebook still renders.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, fastapi_bundle, tar_gz

pytestmark = pytest.mark.integration

SECRET = "s3cret-of-the-other-app"

PROBE = '''
import glob, os
from fastapi import FastAPI
app = FastAPI()
DATA = DATA_DIR

def attempt(action):
    try:
        return action()
    except Exception as exc:
        return type(exc).__name__

@app.get("/")
def probe():
    leaked = []
    for path in glob.glob("/proc/[0-9]*/environ"):
        try:
            if SECRET.encode() in open(path, "rb").read():
                leaked.append(path)
        except OSError:
            pass
    home = os.environ["HOME"]
    return {
        "uid": os.getuid(),
        "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "leaked": leaked,
        "data_dir": attempt(lambda: sorted(os.listdir(DATA))),
        "key": attempt(lambda: open(DATA + "/secret.key", "rb").read().decode()),
        "db": attempt(lambda: len(open(DATA + "/db/podium.sqlite", "rb").read())),
        "other_bundles": attempt(lambda: sorted(os.listdir(DATA + "/apps"))),
        "runner": attempt(lambda: open(DATA + "/runtime/podium_runner.py", "a").write("# owned")),
        "own_bundle": attempt(lambda: open("app.py", "a").write("# changed")),
        "home": attempt(lambda: open(os.path.join(home, "note.txt"), "w").write("mine")),
        "tmp": attempt(lambda: open("/tmp/scratch", "w").write("mine")),
    }
'''.replace("SECRET", json.dumps(SECRET))


def _needs_bwrap() -> None:
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the sandbox tests need root and bubblewrap in CI (make system-deps)")
        pytest.skip("needs root and bubblewrap (Debian's bubblewrap package)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    _needs_bwrap()
    running = start_server(tmp_path_factory.mktemp("podium") / "data", extra_env={"PODIUM_SANDBOX": "required"})
    yield running
    running.stop()


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def _content(server: RunningServer, key: str, name: str) -> dict[str, Any]:
    made = server.api(key).post(_api(server, "v1/content"), json={"name": name})
    assert made.status_code == 200, made.text
    return made.json()  # type: ignore[no-any-return]


def test_content_sandbox_hostile_app_reaches_nothing_but_its_own(server: RunningServer) -> None:
    victim_key = server.user_key("sb_victim", "publisher")
    victim = _content(server, victim_key, "victim-app")
    server.api(victim_key).patch(
        _api(server, f"v1/content/{victim['guid']}/environment"), json=[{"name": "TOKEN", "value": SECRET}]
    )
    _, task = deploy(server, victim_key, victim["guid"], fastapi_bundle())
    assert task["code"] == 0, task["all_output"]
    assert server.api(victim_key).get(victim["content_url"]).json() == {"ok": True}  # running now

    mallory = server.user_key("sb_mallory", "publisher")
    hostile = _content(server, mallory, "hostile-app")
    data_dir = str(server.data_dir.resolve())
    _, task = deploy(server, mallory, hostile["guid"], fastapi_bundle(PROBE.replace("DATA_DIR", repr(data_dir))))
    assert task["code"] == 0, task["all_output"]
    answer = server.api(mallory).get(hostile["content_url"])
    assert answer.status_code == 200, answer.text
    seen = answer.json()

    assert seen["uid"] not in (0, os.geteuid())  # a uid of its own
    assert seen["leaked"] == [] and seen["pids"] < 10, seen  # its own processes only
    # The data dir holds only the folders leading to its own mounts: no key, no database,
    # no archives, no job logs; of the unpacked bundles, only its own.
    assert not {"secret.key", "db", "bundles", "jobs", "cache"} & set(seen["data_dir"]), seen
    assert seen["other_bundles"] == [hostile["id"]], seen
    for probe in ("key", "db", "runner"):
        assert seen[probe] in ("FileNotFoundError", "PermissionError", "OSError"), (probe, seen[probe])
    assert seen["own_bundle"] in ("OSError", "PermissionError"), seen  # read-only
    assert seen["home"] == 4 and seen["tmp"] == 4, seen  # its own writable places
    # The victim app still has its secret (the sandbox hides it, it does not drop it).
    assert SECRET not in json.dumps(seen)
    stat = os.stat(server.data_dir)
    assert stat.st_mode & 0o777 == 0o700
    assert os.stat(server.data_dir / "db" / "podium.sqlite").st_mode & 0o777 == 0o600
    assert os.stat(server.data_dir / "secret.key").st_mode & 0o777 == 0o600


def test_content_sandbox_notebook_renders_as_its_own_uid(server: RunningServer) -> None:
    key = server.user_key("sb_notebook", "publisher")
    item = _content(server, key, "sandboxed-notebook")
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": ["import os\n", "print('uid', os.getuid(), 'sees', os.path.exists(DATA + '/secret.key'))"]}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    source = json.dumps(notebook).replace("DATA", json.dumps(str(server.data_dir.resolve())).replace('"', '\\"'))
    manifest = {
        "version": 1,
        "metadata": {"appmode": "jupyter-static", "entrypoint": "report.ipynb"},
        "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
        "files": {"report.ipynb": {}, "requirements.txt": {}},
    }
    bundle = tar_gz({"manifest.json": json.dumps(manifest), "report.ipynb": source, "requirements.txt": ""})
    _, task = deploy(server, key, item["guid"], bundle)
    assert task["code"] == 0, task["all_output"]
    page = server.api(key).get(item["content_url"])
    assert page.status_code == 200
    assert "sees False" in page.text and "uid 0 " not in page.text, page.text[-2000:]


def test_content_sandbox_off_is_said_at_start_and_to_administrators(tmp_path: Any) -> None:
    server = start_server(tmp_path / "data", extra_env={"PODIUM_SANDBOX": "off"})
    try:
        assert 'Content runs unsandboxed (setting sandbox = "off")' in server.log()
        page = server.api().get(f"{server.url}/connect/admin/users")
        assert page.status_code == 200 and "Content isolation:" in page.text
        publisher = server.user_key("sb_off_publisher", "publisher")
        assert "Content isolation:" not in server.api(publisher).get(f"{server.url}/connect/").text
    finally:
        server.stop()



def test_content_sandbox_required_where_none_can_be_made_runs_nothing(tmp_path: Any) -> None:
    """No bubblewrap on the server's PATH: ``required`` says so at start and each deploy
    fails with the reason and the fix, running nothing unsandboxed."""
    server = start_server(
        tmp_path / "data", extra_env={"PODIUM_SANDBOX": "required", "PATH": "/nonexistent"}
    )
    try:
        assert "Content cannot run: sandboxes are required" in server.log()
        key = server.admin_key
        item = _content(server, key, "unsandboxable")
        _, task = deploy(server, key, item["guid"], fastapi_bundle())
        assert task["code"] != 0
        output = "\n".join(task["all_output"])
        assert "could not start" in output and "bubblewrap" in output, output
        jobs = server.api(key).get(_api(server, f"v1/content/{item['guid']}/jobs")).json()
        assert all(job["status"] != 0 for job in jobs)
    finally:
        server.stop()
