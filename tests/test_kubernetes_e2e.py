"""Podium with ``kubernetes_enabled`` against the simulated cluster, end to end: the real
rsconnect CLI deploys a FastAPI app; the build and the app run as Jobs; HTTP and
WebSocket traffic reaches the app's pod IP through ``/content/{guid}/``; the jobs API
shows the pod's log."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_sim import SimCluster
from tests.conftest import RunningServer, start_server
from tests.test_python_content import (
    FASTAPI_APP,
    content_url,
    deploy_dir,
    guid_of,
    wait_until,
    write_app,
)
from tests.test_clients import rsconnect

pytestmark = pytest.mark.integration
IMAGE = "podium.test/runtime:host"
NAMESPACE = "podium-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    # "Local" is the host execution environment's image name; the simulated kubelet runs
    # it on the host like any other known image.
    sim = SimCluster(tmp_path_factory.mktemp("k8s"), images={IMAGE, "Local"})
    sim.start()
    yield sim
    problems = list(sim.problems)
    sim.stop()
    assert problems == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: SimCluster) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("podium-k8s")
    kubeconfig = cluster.write_kubeconfig(root / "kubeconfig")
    running = start_server(root / "data", {
        "PODIUM_KUBERNETES_ENABLED": "true",
        "PODIUM_KUBERNETES_KUBECONFIG": str(kubeconfig),
        "PODIUM_KUBERNETES_NAMESPACE": NAMESPACE,
        "PODIUM_KUBERNETES_DEFAULT_IMAGE": IMAGE,
    })
    yield running
    running.stop()


def cluster_get(cluster: SimCluster, path: str) -> Any:
    with urllib.request.urlopen(cluster.url + path, timeout=5) as response:
        return json.loads(response.read())


def test_kubernetes_fastapi_deploy_and_serve_through_jobs(
    server: RunningServer, cluster: SimCluster, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", server.user_key("k8s_pub", "publisher"))
    assert added.returncode == 0, added.stdout + added.stderr
    directory = write_app(tmp_path / "apps", "fastapi_app", FASTAPI_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory)
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    guid = guid_of(directory)

    client = server.api(server.user_key("k8s_pub", "publisher"))
    body = client.get(content_url(server, guid)).json()
    assert body["hello"] == "podium"

    listed = cluster_get(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")["items"]
    kinds = {job["metadata"]["labels"]["podium.dev/job-kind"] for job in listed}
    assert {"build", "run"} <= kinds
    assert all(job["metadata"]["labels"]["podium.dev/content-guid"] == guid for job in listed)
    assert all(job["spec"]["template"]["spec"]["containers"][0]["image"] == "Local" for job in listed)
    pods = cluster_get(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=podium.dev/job-kind%3Drun")
    assert pods["items"] and pods["items"][0]["status"]["podIP"].startswith("127.10.")

    import websockets

    url = content_url(server, guid).replace("http://", "ws://") + "ws"
    key = server.user_key("k8s_pub", "publisher")

    async def talk() -> str:
        async with websockets.connect(url, additional_headers={"Authorization": f"Key {key}"}) as ws:
            await ws.send("hello")
            return str(await ws.recv())

    assert asyncio.run(talk()) == "HELLO"

    def run_log() -> list[str]:
        listed = client.get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
        run = next((j for j in listed if j["tag"] == "run_fastapi_app" and j["status"] == 0), None)
        if run is None:
            return []
        base = f"{server.url}/__api__/v1/content/{guid}/jobs/{run['key']}/log"
        return [entry["data"] for entry in publisher_log(client, base)]

    assert wait_until(lambda: any("Uvicorn running" in line or "startup" in line for line in run_log()), 20)


def publisher_log(client: Any, url: str) -> list[dict[str, Any]]:
    return list(client.get(url).json().get("entries") or [])
