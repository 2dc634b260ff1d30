"""The warm pool end to end: Podium with ``kubernetes_warm_pool_size = 1`` on the
simulated cluster; the real rsconnect CLI deploys a FastAPI app, whose content process
starts in a claimed warm pod (the scheduler's run job is of the pool's default shape),
and again in a new one after it was stopped; content given resources of its own gets
a normal Job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.conftest import RunningServer, start_server
from tests.test_clients import rsconnect
from tests.test_kubernetes_e2e import IMAGE, admin_patch, k8s_env, stop_run_jobs
from tests.test_kubernetes_isolation import require_enforcing
from tests.test_python_content import FASTAPI_APP, content_url, deploy_dir, guid_of, wait_until, write_app

from k8s_sim import SimCluster

pytestmark = pytest.mark.integration
NAMESPACE = "podium-warm-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    sim = SimCluster(tmp_path_factory.mktemp("k8s-warm-e2e"), images={IMAGE})
    sim.start()
    yield sim
    assert sim.close() == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: SimCluster) -> Iterator[RunningServer]:
    require_enforcing(cluster)
    root = tmp_path_factory.mktemp("podium-warm")
    running = start_server(root / "data", k8s_env(cluster, root, PODIUM_KUBERNETES_NAMESPACE=NAMESPACE,
                                                  PODIUM_KUBERNETES_WARM_POOL_SIZE="1"))
    yield running
    running.stop()
    leftover = [job["metadata"]["name"] for job in cluster.objects("jobs", NAMESPACE)
                if "podium.dev/warm-pool" in job["metadata"]["labels"]]
    assert leftover == []  # the stopped server deleted its unclaimed warm pods


def live_run_jobs(cluster: SimCluster, guid: str) -> list[dict[str, Any]]:
    return [job for job in cluster.objects("jobs", NAMESPACE)
            if job["metadata"]["labels"].get("podium.dev/content-guid") == guid
            and job["metadata"]["labels"].get("podium.dev/job-kind") == "run"
            and not job["metadata"].get("deletionTimestamp") and not job.get("status", {}).get("conditions")]


def warm_ready(cluster: SimCluster) -> bool:
    return any("podium.dev/warm-pool" in pod["metadata"]["labels"]
               and (pod["status"].get("containerStatuses") or [{}])[0].get("state", {}).get("running")
               for pod in cluster.objects("pods", NAMESPACE))


def test_warm_pool_content_process_starts_in_a_claimed_warm_pod(
    server: RunningServer, cluster: SimCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("home")
    key = server.user_key("warm_pub", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    directory = write_app(tmp_path_factory.mktemp("apps"), "warm_app", FASTAPI_APP, "fastapi\n")
    wait_until(lambda: warm_ready(cluster), 60)
    done = deploy_dir(home, "fastapi", directory)
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    guid = guid_of(directory)
    assert server.api(key).get(content_url(server, guid)).status_code == 200, server.log()[-3000:]
    assert f"(content {guid}): claimed warm pod" in server.log()  # the deploy's first start
    # (the pool holds one pod: a second start right after may get a normal Job)

    # stopped, a claimed pod is never reused: the next start claims the refilled pod
    used = {job["metadata"]["name"] for job in live_run_jobs(cluster, guid)}
    stop_run_jobs(server, guid)
    wait_until(lambda: not live_run_jobs(cluster, guid) and warm_ready(cluster), 60)
    assert server.api(key).get(content_url(server, guid)).status_code == 200, server.log()[-3000:]
    [again] = live_run_jobs(cluster, guid)
    assert again["metadata"]["labels"].get("podium.dev/warm") == "claimed", server.log()[-3000:]
    assert again["metadata"]["name"].startswith("podium-warm-") and again["metadata"]["name"] not in used

    # resources of its own: not the pool's shape, a normal Job
    admin_patch(server, guid, memory_limit=700 * 2**20)
    stop_run_jobs(server, guid)
    wait_until(lambda: not live_run_jobs(cluster, guid) and warm_ready(cluster), 60)
    assert server.api(key).get(content_url(server, guid)).status_code == 200, server.log()[-3000:]
    [own] = live_run_jobs(cluster, guid)
    assert "podium.dev/warm" not in own["metadata"]["labels"]
    assert not own["metadata"]["name"].startswith("podium-warm-")
    assert "not a warm pod: resources other than the server defaults" in server.log()
