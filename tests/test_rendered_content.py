"""Rendered content end to end: notebooks deployed with the real rsconnect CLI, executed
in a render job and served as HTML; re-render on demand and rendering history."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from tests.conftest import RunningServer
from tests.helpers import wait_task
from tests.test_clients import rsconnect

pytestmark = pytest.mark.integration


def notebook(cells: list[tuple[str, list[str]]]) -> str:
    return json.dumps({
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": tags},
             "outputs": [], "source": [source]}
            for i, (source, tags) in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    })


def write_notebook(root: Path, name: str, cells: list[tuple[str, list[str]]]) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.ipynb").write_text(notebook(cells))
    (directory / "requirements.txt").write_text("\n")
    return directory


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Path:
    home = tmp_path_factory.mktemp("home")
    key = server.user_key("nb_publisher", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    return home


def publisher(server: RunningServer) -> requests.Session:
    return server.api(server.user_key("nb_publisher", "publisher"))


def deploy_notebook(home: Path, directory: Path, *extra: str) -> str:
    done = rsconnect(home, "deploy", "notebook", "-n", "podium", *extra, str(directory / "report.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr
    # rsconnect keeps the deployment record of a notebook in its config dir: read the URL.
    found = re.search(r"Direct content URL: \S+/content/([0-9a-f-]{36})/", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


def test_notebook_deploy_renders_and_serves_computed_output(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    directory = write_notebook(tmp_path, "answer", [
        ("hidden_helper = 6\nprint('answer is', hidden_helper * 7)", ["hide_input"]),
        ("shown_code = 1", []),
    ])
    guid = deploy_notebook(home, directory, "--hide-tagged-input")
    client = publisher(server)
    page = client.get(f"{server.url}/content/{guid}/")
    assert page.status_code == 200, page.text
    assert "answer is 42" in page.text
    assert "hidden_helper" not in page.text and "shown_code" in page.text
    content = client.get(f"{server.url}/__api__/v1/content/{guid}").json()
    assert content["app_mode"] == "jupyter-static"
    jobs = client.get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    render_jobs = [job for job in jobs if job["tag"] == "build_jupyter"]
    assert len(render_jobs) == 1 and render_jobs[0]["exit_code"] == 0
    # Not public: anonymous viewers are refused.
    assert requests.get(f"{server.url}/content/{guid}/").status_code == 401


TOKEN_CELLS = [
    ("import os, uuid\n"
     "assert not os.environ.get('FAIL_RENDER'), 'render asked to fail'\n"
     "print('token-' + uuid.uuid4().hex)", []),
]


def served_token(server: RunningServer, url: str) -> str:
    page = publisher(server).get(url)
    assert page.status_code == 200, page.text
    found = re.search(r"token-([0-9a-f]{32})", page.text)
    assert found, page.text[:500]
    return found.group(1)


def renderings(server: RunningServer, guid: str) -> list[dict]:
    listed = publisher(server).get(f"{server.url}/__api__/v1/content/{guid}/renderings")
    assert listed.status_code == 200, listed.text
    return listed.json()


@pytest.fixture(scope="module")
def token_notebook(server: RunningServer, home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return deploy_notebook(home, write_notebook(tmp_path_factory.mktemp("nb"), "token", TOKEN_CELLS))


def test_render_on_demand_makes_new_rendering_and_keeps_history(
    server: RunningServer, token_notebook: str
) -> None:
    from posit import connect

    guid = token_notebook
    url = f"{server.url}/content/{guid}/"
    first = served_token(server, url)
    client = connect.Client(server.url, server.user_key("nb_publisher", "publisher"))
    task = client.content.get(guid).render()
    task.wait_for()
    assert task["code"] == 0, task["output"]
    second = served_token(server, url)
    assert second != first
    done = publisher(server).post(f"{server.url}/__api__/v1/content/{guid}/render")
    assert done.status_code == 200, done.text
    result = wait_task(server, server.user_key("nb_publisher", "publisher"), done.json()["task_id"])
    assert result["code"] == 0, result["all_output"]
    third = served_token(server, url)
    assert third not in (first, second)
    history = renderings(server, guid)
    assert [r["status"] for r in history] == ["succeeded"] * 3
    assert [r["active"] for r in history] == [True, False, False]
    assert history[0]["id"] == result["result"]["rendering_id"]
    # Older renderings stay viewable at their own address.
    assert served_token(server, history[2]["url"]) == first
    assert served_token(server, history[1]["url"]) == second


def test_failed_render_keeps_previous_output(server: RunningServer, token_notebook: str, home: Path, tmp_path: Path) -> None:
    guid = token_notebook
    url = f"{server.url}/content/{guid}/"
    before = served_token(server, url)
    api = publisher(server)
    env = api.patch(f"{server.url}/__api__/v1/content/{guid}/environment",
                    json=[{"name": "FAIL_RENDER", "value": "1"}])
    assert env.status_code == 200, env.text
    started = api.post(f"{server.url}/__api__/v1/content/{guid}/render").json()
    result = wait_task(server, server.user_key("nb_publisher", "publisher"), started["task_id"])
    assert result["code"] != 0 and "Rendering failed" in result["error"]
    assert any("render asked to fail" in line for line in result["all_output"])
    assert served_token(server, url) == before
    newest = renderings(server, guid)[0]
    assert newest["status"] == "failed" and not newest["active"] and newest["url"] is None
    log = api.get(f"{server.url}/__api__/v1/content/{guid}/jobs/{newest['job_key']}/log").json()
    assert any("render asked to fail" in entry["data"] for entry in log["entries"])
    job = api.get(f"{server.url}/__api__/v1/content/{guid}/jobs/{newest['job_key']}").json()
    assert job["tag"] == "build_jupyter" and job["exit_code"] not in (0, None)

    # A deploy whose render fails is not activated: the previous bundle and output stay.
    bundle_before = api.get(f"{server.url}/__api__/v1/content/{guid}").json()["bundle_id"]
    broken = write_notebook(tmp_path, "broken", [("raise RuntimeError('broken notebook')", [])])
    done = rsconnect(home, "deploy", "notebook", "-n", "podium", "--app-id", guid,
                     str(broken / "report.ipynb"))
    assert done.returncode != 0
    assert "broken notebook" in done.stdout + done.stderr
    assert api.get(f"{server.url}/__api__/v1/content/{guid}").json()["bundle_id"] == bundle_before
    assert served_token(server, url) == before


def test_render_refused_for_content_that_is_not_rendered(server: RunningServer) -> None:
    api = publisher(server)
    made = api.post(f"{server.url}/__api__/v1/content", json={"name": "not-rendered"}).json()
    refused = api.post(f"{server.url}/__api__/v1/content/{made['guid']}/render")
    assert refused.status_code == 400 and "rendered content" in refused.json()["error"]
    variants = api.get(f"{server.url}/__api__/applications/{made['guid']}/variants").json()
    assert variants[0]["is_default"] and variants[0]["id"] == int(made["id"])


def test_schedule_api_validates_and_replaces(server: RunningServer, token_notebook: str) -> None:
    api = publisher(server)
    base = f"{server.url}/__api__"
    content = api.get(f"{base}/v1/content/{token_notebook}").json()
    variant = api.get(f"{base}/applications/{token_notebook}/variants").json()[0]
    body = {"app_id": variant["app_id"], "variant_id": variant["id"], "type": "day",
            "schedule": '{"N": 1}', "start_time": "2099-01-01T06:00:00Z", "timezone": "Asia/Tokyo"}
    bad = api.post(f"{base}/schedules", json={**body, "type": "dayweekofmonth", "schedule": "{}"})
    assert bad.status_code == 400 and "not supported" in bad.json()["error"]
    assert api.post(f"{base}/schedules", json={**body, "timezone": "Nowhere/Else"}).status_code == 400
    made = api.post(f"{base}/schedules", json=body)
    assert made.status_code == 200, made.text
    assert made.json()["next_run"] == "2099-01-01T06:00:00Z" and made.json()["app_id"] == int(content["id"])
    assert api.post(f"{base}/schedules", json=body).status_code == 409
    changed = api.post(f"{base}/schedules/{made.json()['id']}", json={**made.json(), "type": "week"})
    assert changed.status_code == 200 and changed.json()["type"] == "week"
    assert api.get(f"{base}/variants/{variant['id']}/schedules").json()[0]["type"] == "week"
    assert api.delete(f"{base}/schedules/{made.json()['id']}").status_code == 204
    assert api.get(f"{base}/variants/{variant['id']}/schedules").json() == []
    other = api.post(f"{base}/v1/content", json={"name": "static-thing"}).json()
    refused = api.post(f"{base}/schedules", json={**body, "app_id": int(other["id"]), "variant_id": int(other["id"])})
    assert refused.status_code == 400


def test_schedule_with_activate_false_keeps_serving_the_current_rendering(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    guid = deploy_notebook(home, write_notebook(tmp_path, "quiet_token", TOKEN_CELLS))
    url = f"{server.url}/content/{guid}/"
    served = served_token(server, url)
    api = publisher(server)
    base = f"{server.url}/__api__"
    variant = api.get(f"{base}/applications/{guid}/variants").json()[0]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    made = api.post(f"{base}/schedules", json={
        "app_id": variant["app_id"], "variant_id": variant["id"], "type": "day", "schedule": '{"N": 1}',
        "start_time": soon, "timezone": "UTC", "activate": False,
    })
    assert made.status_code == 200, made.text
    assert made.json()["activate"] is False
    try:
        deadline = time.monotonic() + 60
        while not any(r["reason"] == "schedule" and r["status"] != "running" for r in renderings(server, guid)):
            assert time.monotonic() < deadline, renderings(server, guid)
            time.sleep(0.5)
    finally:
        api.delete(f"{base}/schedules/{made.json()['id']}")
    history = renderings(server, guid)
    scheduled = next(r for r in history if r["reason"] == "schedule")
    assert scheduled["status"] == "succeeded" and scheduled["activated"] is False and not scheduled["active"]
    # Viewers still get the earlier output; the scheduled one is viewable at its own address.
    assert served_token(server, url) == served
    assert served_token(server, scheduled["url"]) != served
