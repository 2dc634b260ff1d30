"""Kubernetes without a shared volume (``kubernetes_shared_volume = false``), end to end
on the simulated cluster with the real client library and the real rsconnect CLI: no pod
mounts the data volume (the cluster has none); each pod's init container fetches its
files from Podium with a single-use token into an ``emptyDir``; the build uploads the
package environment it made. A content item deployed this way serves; a used, an
expired, or a foreign token is refused, and a token reaches only its own job's files.
The simulated kubelet must enforce pod mounts (root and bubblewrap), else these skip.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.test_clients import rsconnect
from tests.test_kubernetes_e2e import HOSTILE_APP, TOKEN
from tests.test_kubernetes_isolation import require_enforcing
from tests.test_python_content import FASTAPI_APP, content_url, deploy_dir, guid_of, wait_until, write_app

from k8s_sim import SimCluster

pytestmark = pytest.mark.integration
IMAGE = "podium.test/runtime:host"
NAMESPACE = "podium-nsv"
TTL = 8  # seconds a fetch token stays valid here (the sim starts pods well within it)
TRANSFER = "/__api__/internal/transfer"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    sim = SimCluster(tmp_path_factory.mktemp("k8s-nsv"), images={IMAGE})
    sim.start()
    yield sim
    assert sim.close() == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: SimCluster) -> Iterator[RunningServer]:
    require_enforcing(cluster)
    # Pod Security "restricted" admits every pod of this mode, its init container included.
    cluster.create_namespace(NAMESPACE, {"pod-security.kubernetes.io/enforce": "restricted"})
    root = tmp_path_factory.mktemp("podium-nsv")
    running = start_server(root / "data", {
        "PODIUM_KUBERNETES_ENABLED": "true",
        "PODIUM_KUBERNETES_KUBECONFIG": str(cluster.write_kubeconfig(root / "kubeconfig")),
        "PODIUM_KUBERNETES_NAMESPACE": NAMESPACE,
        "PODIUM_KUBERNETES_DEFAULT_IMAGE": IMAGE,
        "PODIUM_KUBERNETES_SHARED_VOLUME": "false",  # and no kubernetes_data_pvc at all
        "PODIUM_KUBERNETES_TRANSFER_TOKEN_TTL_SECONDS": str(TTL),
        "PODIUM_INIT_TIMEOUT_SECONDS": "30",
    })
    yield running
    running.stop()


@pytest.fixture(scope="module")
def home(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", server.user_key("nsv_pub", "publisher"))
    assert added.returncode == 0, added.stdout + added.stderr
    return home


@pytest.fixture(scope="module")
def hostile(server: RunningServer, home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = write_app(tmp_path_factory.mktemp("apps"), "hostile_app", HOSTILE_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory, "-E", f"API_TOKEN={TOKEN}")
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    return guid_of(directory)


@pytest.fixture(scope="module")
def plain(server: RunningServer, home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = write_app(tmp_path_factory.mktemp("apps"), "plain_app", FASTAPI_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory)
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    return guid_of(directory)


def jobs_of(cluster: SimCluster, guid: str) -> list[dict[str, Any]]:
    return [job for job in cluster.objects("jobs", NAMESPACE)
            if job["metadata"]["labels"].get("podium.dev/content-guid") == guid]


def test_no_shared_volume_deploy_with_rsconnect_serves_from_fetched_files(
    server: RunningServer, cluster: SimCluster, hostile: str
) -> None:
    key = server.user_key("nsv_pub", "publisher")
    answer = server.api(key).get(content_url(server, hostile))
    assert answer.status_code == 200, answer.text + server.log()[-3000:]
    report = answer.json()
    assert report["token"] == hashlib.sha256(TOKEN.encode()).hexdigest()  # its variable, from its Secret
    # The pod sees its fetched copies only: no key, no database, the runner not writable.
    assert (report["key"], report["db"]) == ("FileNotFoundError", "FileNotFoundError"), report
    assert report["runner_write"] != "ok" and report["bundle_write"] != "ok", report
    assert report["other_bundle_names"] == [] and report["uid"] == 10001, report
    # The build ran in a pod and its environment came back by upload; the app runs from it.
    kinds = {job["metadata"]["labels"]["podium.dev/job-kind"] for job in jobs_of(cluster, hostile)}
    assert {"build", "run"} <= kinds
    for obj in cluster.history():
        if obj.get("kind") == "Pod":  # no pod ever had a claim: any storage class will do
            assert not [v for v in obj["spec"].get("volumes") or [] if "persistentVolumeClaim" in v]
            assert [c["name"] for c in obj["spec"].get("initContainers") or []] in (["fetch"], [])
        if obj.get("kind") != "Secret":
            assert TOKEN not in json.dumps(obj)


def pending_fetch_token(server: RunningServer, cluster: SimCluster, guid: str) -> tuple[str, Any]:
    """A fetch token nobody used yet: a run job that no node can take keeps it waiting.
    Returns the token and the request that started the job (answered after init_timeout)."""
    admin = server.api()
    url = f"{server.url}/__api__/v1/content/{guid}"
    assert admin.patch(url, json={"kubernetes_placement": {"node_selector": {"pool": "none"}}}).status_code == 200
    for job in admin.get(f"{url}/jobs").json():  # no running process to route to
        if job["status"] == 0 and job["tag"].startswith("run"):
            admin.delete(f"{url}/jobs/{job['key']}")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    waiting = pool.submit(admin.get, content_url(server, guid), headers={"Accept": "application/json"}, timeout=90)
    pool.shutdown(wait=False)
    name = f"podium-content-{guid}"

    def token() -> str | None:
        waiting_jobs = [pod["metadata"]["labels"]["job-name"] for pod in cluster.objects("pods", NAMESPACE)
                        if pod["metadata"]["labels"].get("podium.dev/content-guid") == guid
                        and any(c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions") or [])]
        for secret in cluster.objects("secrets", NAMESPACE):
            data = secret.get("data") or {}
            for job in waiting_jobs if secret["metadata"]["name"] == name else []:
                if f"transfer.{job}.fetch" in data:
                    return base64.b64decode(data[f"transfer.{job}.fetch"]).decode()
        return None

    return wait_until(token, 30), waiting


def fetch(server: RunningServer, token: str, **params: str) -> requests.Response:
    return requests.get(server.url + TRANSFER, headers={"Authorization": f"Bearer {token}"}, params=params,
                        timeout=60)


def test_no_shared_volume_token_fetches_only_its_jobs_files_once_and_expires(
    server: RunningServer, cluster: SimCluster, hostile: str, plain: str
) -> None:
    data = server.data_dir
    try:
        token, waiting = pending_fetch_token(server, cluster, hostile)
        # Another item's bundle cannot be asked for: the token alone says what is sent.
        theirs = next(p for p in (data / "apps").glob("*/*/app.py") if "PROCESS = " in p.read_text())
        answer = fetch(server, token, path=str(theirs.parent))
        assert answer.status_code == 200, answer.text
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
            members = tar.getnames()
            texts = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
        assert any(b"def probe" in text for text in texts)  # its own bundle ...
        assert not any(b"PROCESS = " in text for text in texts)
        assert not any(name.endswith(("secret.key", "podium.sqlite")) for name in members)  # ... and no more
        # Used once: refused now, as any made-up token is.
        used = fetch(server, token)
        assert used.status_code == 403 and "not valid" in used.json()["error"]
        assert fetch(server, "made-up-token").status_code == 403
        assert requests.get(server.url + TRANSFER, timeout=10).status_code == 403  # no token at all
        # A user's API key is no transfer token either.
        key = server.user_key("nsv_pub", "publisher")
        assert requests.get(server.url + TRANSFER, headers={"Authorization": f"Key {key}"}, timeout=10) \
            .status_code == 403
        waiting.result()
        # A token unused past its lifetime is refused.
        token, waiting = pending_fetch_token(server, cluster, hostile)
        time.sleep(TTL + 1)
        expired = fetch(server, token)
        assert expired.status_code == 403, expired.text
        waiting.result()
    finally:
        server.api().patch(f"{server.url}/__api__/v1/content/{hostile}", json={"kubernetes_placement": None})
    # Content still serves once it may be placed again (a new job, new tokens).
    assert server.api().get(content_url(server, plain)).status_code == 200


def test_no_shared_volume_notebook_render_uploads_its_output(
    server: RunningServer, cluster: SimCluster, home: Path, tmp_path: Path
) -> None:
    import re

    from tests.test_rendered_content import write_notebook

    directory = write_notebook(tmp_path, "nsv_report", [("print('computed', 6 * 7, 'without a shared volume')", [])])
    done = rsconnect(home, "deploy", "notebook", "-n", "podium", str(directory / "report.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr + server.log()[-3000:]
    found = re.search(r"/content/([0-9a-f-]{36})/", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    guid = found.group(1)
    # The render job wrote into its emptyDir; what Podium serves came back by upload.
    page = server.api(server.user_key("nsv_pub", "publisher")).get(content_url(server, guid))
    assert page.status_code == 200 and "computed 42 without a shared volume" in page.text, page.text[:500]
    renders = [job for job in jobs_of(cluster, guid) if job["metadata"]["labels"]["podium.dev/job-kind"] == "render"]
    assert renders
    container = renders[0]["spec"]["template"]["spec"]["containers"][0]
    assert any(item["name"] == "PODIUM_UPLOAD_0_TOKEN" for item in container["env"])
