"""Git-backed content with ``kubernetes_enabled`` on the simulated cluster: the server fetches
the private repository; the build and run Jobs see only the bundle, never the repository's
credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import RunningServer, start_server
from tests.gitserver import GitHttpServer, Repo, fastapi_app
from tests.helpers import wait_task
from tests.test_kubernetes_e2e import NAMESPACE, cluster, k8s_env  # noqa: F401 - fixture

from k8s_sim import SimCluster

pytestmark = pytest.mark.integration
SECRET = "k8s-git-token-never-in-a-pod"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: SimCluster) -> Iterator[RunningServer]:  # noqa: F811
    root = tmp_path_factory.mktemp("podium-k8s-git")
    running = start_server(root / "data", k8s_env(cluster, root))
    yield running
    running.stop()


def test_kubernetes_git_deploy_fetches_in_the_server_and_jobs_get_only_the_bundle(
    server: RunningServer, cluster: SimCluster, tmp_path: Path  # noqa: F811
) -> None:
    repos = tmp_path / "repos"
    repos.mkdir()
    served = GitHttpServer(repos, auth=("bot", SECRET))
    try:
        repo = Repo(repos, "api")
        commit = repo.commit(fastapi_app("from git on kubernetes"))
        admin = server.api()
        assert admin.put(f"{server.url}/__api__/v1/git/credentials/127.0.0.1:{served.port}",
                         json={"username": "bot", "password": SECRET}).status_code == 200
        key = server.user_key("k8s_git_pub")
        client = server.api(key)
        guid = client.post(f"{server.url}/__api__/v1/content", json={"name": "k8s-git"}).json()["guid"]
        client.put(f"{server.url}/__api__/v1/content/{guid}/repository",
                   json={"repository": served.url("api"), "polling": False})
        started = client.post(f"{server.url}/__api__/v1/content/{guid}/deploy", json={"bundle_id": None})
        task = wait_task(server, key, started.json()["task_id"])
        assert task["code"] == 0, task["all_output"]
        assert any(commit in line for line in task["all_output"])
        assert client.get(f"{server.url}/content/{guid}/").json() == {"v": "from git on kubernetes"}
        history = cluster.history()
        jobs = [o for o in history if o.get("kind") == "Job"
                and o["metadata"]["labels"].get("podium.dev/content-guid") == guid]
        assert {j["metadata"]["labels"]["podium.dev/job-kind"] for j in jobs} >= {"build", "run"}
        everything = json.dumps(history)
        assert SECRET not in everything
        assert served.url("api") not in everything  # no pod is told where the code came from
        # Only the server talked to the git host (every request carried the credentials).
        assert served.requests and all(h.startswith("Basic ") for h in served.auth_headers if h)
    finally:
        served.close()
