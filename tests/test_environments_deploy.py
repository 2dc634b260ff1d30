"""Deploying against the environment catalogue with the real rsconnect CLI.

``rsconnect deploy fastapi --image X`` records the content against environment X (an
administrator's environment pointing at this host's interpreter); when no environment
fits, the deploy fails with the explaining message and the previous bundle keeps serving.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningServer
from tests.test_clients import rsconnect
from tests.test_python_content import FASTAPI_APP, guid_of, write_app

pytestmark = pytest.mark.integration

IMAGE = "podium/e2e-python"
OLD_IMAGE = "podium/e2e-python39"
VERSION = platform.python_version()
LINE = ".".join(VERSION.split(".")[:2])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Path:
    home = tmp_path_factory.mktemp("home")
    key = server.user_key("env_publisher", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    return home


@pytest.fixture(scope="module")
def environments(server: RunningServer, home: Path) -> dict[str, str]:
    """Two administrator environments, made with ``rsconnect environment add``: this host's
    interpreter under IMAGE, and an old Python under OLD_IMAGE; both only when named."""
    guids = {}
    for image, python in ((IMAGE, f"{VERSION}={os.path.realpath(sys.executable)}"),
                          (OLD_IMAGE, "3.9.18=/opt/python/3.9.18/bin/python3.9")):
        made = rsconnect(home, "environment", "add", "-s", server.url, "-k", server.admin_key, image,
                         "-m", "exact", "--python", python)
        assert made.returncode == 0, made.stdout + made.stderr
        guids[image] = json.loads(made.stdout)["guid"]
    return guids


def content(server: RunningServer, guid: str) -> dict[str, Any]:
    return server.api().get(f"{server.url}/__api__/v1/content/{guid}").json()  # type: ignore[no-any-return]


def test_deploy_with_image_records_the_environment(
    server: RunningServer, home: Path, environments: dict[str, str], tmp_path: Path
) -> None:
    app = write_app(tmp_path, "image_app", FASTAPI_APP, "fastapi\n")
    done = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", IMAGE, str(app))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"The manifest requests image '{IMAGE}'" in output
    assert f"Chose environment image '{IMAGE}', {environments[IMAGE]}" in output
    assert f"Not chosen: image '{OLD_IMAGE}': its image is not '{IMAGE}'" in output
    guid = guid_of(app)
    record = content(server, guid)
    assert record["image_name"] == IMAGE
    assert record["environment_guid"] == environments[IMAGE]
    assert record["cluster_name"] == "Kubernetes"  # what rsconnect environment add sends
    assert record["py_version"] == VERSION
    bundle = server.api().get(f"{server.url}/__api__/v1/content/{guid}/bundles/{record['bundle_id']}").json()
    assert (bundle["image_name"], bundle["environment_guid"]) == (IMAGE, environments[IMAGE])
    served = server.api().get(f"{server.url}/content/{guid}/")
    assert served.status_code == 200 and served.json()["hello"] == "podium"
    jobs = server.api().get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    assert jobs and all(job["image"] == IMAGE for job in jobs)  # build and run jobs alike
    explained = server.api().get(
        f"{server.url}/__api__/v1/content/{guid}/bundles/{record['bundle_id']}/environment"
    ).json()
    assert explained["recorded"]["environment_guid"] == environments[IMAGE]
    assert explained["chosen"]["guid"] == environments[IMAGE]


def test_deploy_without_a_fitting_environment_fails_and_keeps_serving(
    server: RunningServer, home: Path, environments: dict[str, str], tmp_path: Path
) -> None:
    app = write_app(tmp_path, "keeps_serving", FASTAPI_APP, "fastapi\n")
    first = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", IMAGE, str(app))
    assert first.returncode == 0, first.stdout + first.stderr
    guid = guid_of(app)
    before = content(server, guid)
    for image, needles in (
        (OLD_IMAGE, (
            f"Cannot find a compatible execution environment for image '{OLD_IMAGE}' and Python {VERSION}",
            f"image '{OLD_IMAGE}': has Python 3.9.18; none is {LINE}.x like the bundle's {VERSION}",
            f"image 'Local': its image is not '{OLD_IMAGE}'",
        )),
        ("podium/nowhere", (
            "for image 'podium/nowhere'",
            f"image '{IMAGE}': its image is not 'podium/nowhere', which the manifest requests",
        )),
    ):
        failed = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", image, str(app))
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output
        for needle in needles:
            assert needle in output, output
        after = content(server, guid)
        assert (after["bundle_id"], after["image_name"]) == (before["bundle_id"], IMAGE)
        served = server.api().get(f"{server.url}/content/{guid}/")
        assert served.status_code == 200 and served.json()["hello"] == "podium"


def test_deploy_uses_the_content_default_image(
    server: RunningServer, home: Path, environments: dict[str, str], tmp_path: Path
) -> None:
    app = write_app(tmp_path, "default_image", FASTAPI_APP, "fastapi\n")
    first = rsconnect(home, "deploy", "fastapi", "-n", "podium", str(app))
    assert first.returncode == 0, first.stdout + first.stderr
    guid = guid_of(app)
    assert content(server, guid)["image_name"] == "Local"  # automatic: exact-only environments skipped
    publisher = server.api(server.user_key("env_publisher", "publisher"))
    patched = publisher.patch(f"{server.url}/__api__/v1/content/{guid}", json={"default_image_name": IMAGE})
    assert patched.status_code == 200, patched.text
    again = rsconnect(home, "deploy", "fastapi", "-n", "podium", str(app))
    output = again.stdout + again.stderr
    assert again.returncode == 0, output
    assert f"The content's default image is '{IMAGE}' (default_image_name)." in output
    assert content(server, guid)["environment_guid"] == environments[IMAGE]


SUPERVISED_APP = """
import os
from fastapi import FastAPI
app = FastAPI()

@app.get("/")
def root():
    return {"supervised": os.environ.get("PODIUM_TEST_SUPERVISED")}
"""


def test_environment_supervisor_wraps_every_job(server: RunningServer, home: Path, tmp_path: Path) -> None:
    script = tmp_path / "supervise.sh"
    script.write_text('#!/bin/sh\necho "supervised: $1" >&2\nexport PODIUM_TEST_SUPERVISED="by $(basename "$0")"\n'
                      'exec "$@"\n')
    script.chmod(0o755)
    api = server.api()
    base = f"{server.url}/__api__/v1/environments"
    body: dict[str, Any] = {
        "cluster_name": "Kubernetes", "name": "podium/e2e-supervised", "matching": "exact",
        "python": {"installations": [{"version": VERSION, "path": os.path.realpath(sys.executable)}]},
    }
    refused = api.post(base, json={**body, "supervisor": "'unbalanced quote"})
    assert refused.status_code == 400 and "supervisor" in refused.json()["error"], refused.text
    refused = api.post(base, json={**body, "volume_mounts": [
        {"source": {"volume_type": "hostPath"}, "target": {"path": "/mnt/x"}}]})
    assert refused.status_code == 400 and "volume_mounts[0]" in refused.json()["error"], refused.text
    made = api.post(base, json={**body, "supervisor": str(script), "volume_mounts": [
        {"source": {"volume_type": "pvc", "pvc_name": "shared"}, "target": {"path": "/mnt/shared"}}]})
    assert made.status_code == 200, made.text

    app = write_app(tmp_path, "supervised_app", SUPERVISED_APP, "fastapi\n")
    done = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", "podium/e2e-supervised", str(app))
    assert done.returncode == 0, done.stdout + done.stderr
    guid = guid_of(app)
    assert server.api().get(f"{server.url}/content/{guid}/").json() == {"supervised": "by supervise.sh"}
    # The build ran under the supervisor too; the volume mount is Kubernetes-only and ignored here.
    jobs = server.api().get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    build = next(job for job in jobs if job["tag"] == "python_restore")
    log = server.api().get(f"{server.url}/__api__/v1/content/{guid}/jobs/{build['key']}/log").json()
    assert any(entry["data"].startswith("supervised: ") for entry in log["entries"]), log


def test_environment_permissions_limit_who_deploys_with_it(
    server: RunningServer, home: Path, tmp_path: Path
) -> None:
    key = server.user_key("env_publisher", "publisher")
    me = server.api(key).get(f"{server.url}/__api__/v1/user").json()
    server.user_key("env_outsider", "publisher")
    outsider = server.api().get(f"{server.url}/__api__/v1/users", params={"prefix": "env_outsider"}).json()
    outsider_guid = next(u["guid"] for u in outsider["results"] if u["username"] == "env_outsider")
    image = "podium/e2e-restricted"
    python = f"{VERSION}={os.path.realpath(sys.executable)}"
    made = rsconnect(home, "environment", "add", "-s", server.url, "-k", server.admin_key, image,
                     "-m", "exact", "--python", python, "--allow-user", outsider_guid)
    assert made.returncode == 0, made.stdout + made.stderr
    guid = json.loads(made.stdout)["guid"]
    listed = server.api(key).get(f"{server.url}/__api__/v1/environments/{guid}/permissions").json()
    assert [(p["user_guid"], p["environment_guid"]) for p in listed] == [(outsider_guid, guid)]
    # Publishers cannot change permissions.
    refused = server.api(key).post(f"{server.url}/__api__/v1/environments/{guid}/permissions",
                                   json={"user_guid": me["guid"]})
    assert refused.status_code == 403, refused.text

    app = write_app(tmp_path, "restricted_app", FASTAPI_APP, "fastapi\n")
    denied = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", image, str(app))
    assert denied.returncode != 0
    assert "its use is restricted to the users in its permissions" in denied.stdout + denied.stderr

    # rsconnect environment edit --allow-user replaces the list (adds me, removes the outsider).
    edited = rsconnect(home, "environment", "edit", "-s", server.url, "-k", server.admin_key, guid,
                       "--allow-user", me["guid"])
    assert edited.returncode == 0, edited.stdout + edited.stderr
    listed = server.api().get(f"{server.url}/__api__/v1/environments/{guid}/permissions").json()
    assert [p["user_guid"] for p in listed] == [me["guid"]]
    again = server.api().post(f"{server.url}/__api__/v1/environments/{guid}/permissions",
                              json={"user_guid": me["guid"]})
    assert again.status_code == 409 and "already has a permission" in again.json()["error"], again.text
    allowed = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", image, str(app))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
