"""Podium with ``kubernetes_enabled`` against the simulated cluster, end to end: the real
rsconnect CLI deploys a FastAPI app; the build and the app run as Jobs; HTTP and
WebSocket traffic reaches the app's pod IP through ``/content/{guid}/``; the jobs API
shows the pod's log."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningServer, start_server
from tests.test_clients import rsconnect
from tests.test_python_content import (
    FASTAPI_APP,
    content_url,
    deploy_dir,
    deploy_restart_app,
    guid_of,
    wait_until,
    write_app,
)

from k8s_sim import SimCluster

pytestmark = pytest.mark.integration
IMAGE = "podium.test/runtime:host"
NAMESPACE = "podium-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    # Jobs of the host "Local" environment run in the default image, IMAGE: the
    # simulated kubelet runs it on the host, whose interpreters "Local" lists.
    sim = SimCluster(tmp_path_factory.mktemp("k8s"), images={IMAGE})
    sim.start()
    yield sim
    assert sim.close() == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: SimCluster) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("podium-k8s")
    running = start_server(root / "data", k8s_env(cluster, root))
    yield running
    running.stop()


def k8s_env(cluster: SimCluster, root: Path, claim: str = "podium-data", **extra: str) -> dict[str, str]:
    """A server on the simulated cluster whose data dir, root/data, is the PVC ``claim``:
    every pod mounts what it may see of it, one subPath at a time."""
    (root / "data").mkdir(exist_ok=True)
    cluster.add_volume(claim, root / "data")
    return {
        "PODIUM_KUBERNETES_ENABLED": "true",
        "PODIUM_KUBERNETES_KUBECONFIG": str(cluster.write_kubeconfig(root / "kubeconfig")),
        "PODIUM_KUBERNETES_NAMESPACE": NAMESPACE,
        "PODIUM_KUBERNETES_DEFAULT_IMAGE": IMAGE,
        "PODIUM_KUBERNETES_DATA_PVC": claim,
        # transient states (an unknown image) wait this long before a deploy fails
        "PODIUM_INIT_TIMEOUT_SECONDS": "20",
        "PODIUM_MAX_NVIDIA_GPU_LIMIT": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def fastapi_app(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    home = tmp_path_factory.mktemp("home")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", server.user_key("k8s_pub", "publisher"))
    assert added.returncode == 0, added.stdout + added.stderr
    directory = write_app(tmp_path_factory.mktemp("apps"), "fastapi_app", FASTAPI_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory)
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    return guid_of(directory)


def run_jobs(cluster: SimCluster, guid: str) -> list[dict[str, Any]]:
    """The content's run Jobs in the cluster that have not ended."""
    selector = f"podium.dev/job-kind%3Drun,podium.dev/content-guid%3D{guid}"
    items = cluster_get(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector={selector}")["items"]
    return [job for job in items if not job["status"].get("conditions")]


def admin_patch(server: RunningServer, guid: str, **fields: Any) -> None:
    response = server.api().patch(f"{server.url}/__api__/v1/content/{guid}", json=fields)
    assert response.status_code == 200, response.text


def stop_run_jobs(server: RunningServer, guid: str) -> None:
    client = server.api()
    for job in client.get(f"{server.url}/__api__/v1/content/{guid}/jobs").json():
        if job["status"] == 0 and job["tag"].startswith("run"):
            client.delete(f"{server.url}/__api__/v1/content/{guid}/jobs/{job['key']}")


def test_kubernetes_run_pod_has_service_account_and_resources(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    cluster.create_service_account(NAMESPACE, "reports")
    admin_patch(server, fastapi_app, service_account_name="reports", memory_limit=256 * 2**20, cpu_limit=0.5)
    try:
        stop_run_jobs(server, fastapi_app)
        assert server.api().get(content_url(server, fastapi_app)).status_code == 200
        [job] = run_jobs(cluster, fastapi_app)
        pod = job["spec"]["template"]["spec"]
        assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("reports", True)
        assert pod["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": str(256 * 2**20)}
    finally:
        admin_patch(server, fastapi_app, service_account_name=None, memory_limit=None, cpu_limit=None)
        stop_run_jobs(server, fastapi_app)


def test_kubernetes_missing_service_account_surfaces_failed_create(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    admin_patch(server, fastapi_app, service_account_name="ghost")
    try:
        stop_run_jobs(server, fastapi_app)
        started = time.monotonic()
        answer = server.api().get(content_url(server, fastapi_app), headers={"Accept": "application/json"})
        assert answer.status_code >= 500

        def failed() -> list[str]:
            listed = server.api().get(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs").json()
            return [job["error"] for job in listed if 'serviceaccount "ghost" not found' in (job["error"] or "")]

        # The Job controller may yet succeed (an account created late): the process waits
        # until init_timeout, then fails with the last reason and the setting to change.
        assert wait_until(failed, 40), server.log()[-3000:]
        [error] = failed()
        assert "FailedCreate" in error and "init_timeout (20 s)" in error
        assert time.monotonic() - started >= 19
    finally:
        admin_patch(server, fastapi_app, service_account_name=None)
        stop_run_jobs(server, fastapi_app)


def test_kubernetes_scale_up_creates_jobs_and_idle_stop_deletes_them(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    admin_patch(server, fastapi_app, max_processes=2, max_conns_per_process=1, load_factor=1.0,
                idle_timeout=2, min_processes=0)
    client = server.api()
    try:
        assert client.get(content_url(server, fastapi_app)).status_code == 200  # one process
        url = content_url(server, fastapi_app) + "sleep?s=6"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.get, url, headers={"Accept": "application/json"})
            time.sleep(0.5)
            second = pool.submit(client.get, url, headers={"Accept": "application/json"})
            wait_until(lambda: len(run_jobs(cluster, fastapi_app)) == 2, 30)
            results = [first.result(), second.result()]
        assert sorted(r.status_code for r in results) == [200, 200]
        # Idle processes stop after idle_timeout: their Jobs are deleted from the cluster.
        wait_until(lambda: run_jobs(cluster, fastapi_app) == [], 30)
    finally:
        admin_patch(server, fastapi_app, max_processes=None, max_conns_per_process=None, load_factor=None,
                    idle_timeout=None, min_processes=None)


def cluster_get(cluster: SimCluster, path: str) -> Any:
    with urllib.request.urlopen(cluster.url + path, timeout=5) as response:
        return json.loads(response.read())


def test_kubernetes_fastapi_deploy_and_serve_through_jobs(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    guid = fastapi_app
    client = server.api(server.user_key("k8s_pub", "publisher"))
    body = client.get(content_url(server, guid)).json()
    assert body["hello"] == "podium"

    selector = f"podium.dev/content-guid%3D{guid}"
    listed = cluster_get(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector={selector}")["items"]
    kinds = {job["metadata"]["labels"]["podium.dev/job-kind"] for job in listed}
    assert {"build", "run"} <= kinds
    assert all(job["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE for job in listed)
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


def test_kubernetes_memory_limit_kill_is_reported_as_oom_killed(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    admin_patch(server, fastapi_app, memory_limit=96 * 2**20)
    client = server.api()
    try:
        stop_run_jobs(server, fastapi_app)
        assert client.get(content_url(server, fastapi_app)).status_code == 200
        pod_limits = run_jobs(cluster, fastapi_app)[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert pod_limits["limits"]["memory"] == str(96 * 2**20)
        assert client.get(content_url(server, fastapi_app) + "eat?mb=400").status_code == 502

        def killed() -> list[dict[str, Any]]:
            listed = client.get(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs").json()
            return [job for job in listed if "memory" in (job["error"] or "")]

        assert wait_until(killed, 20)
    finally:
        admin_patch(server, fastapi_app, memory_limit=None)
        stop_run_jobs(server, fastapi_app)


def test_kubernetes_restarted_server_adopts_running_jobs(cluster: SimCluster, tmp_path: Path) -> None:
    # apart from the module's server: its own instance label and data PVC
    env = k8s_env(cluster, tmp_path, claim="restart-data", PODIUM_KUBERNETES_INSTANCE="restart-test")
    data = tmp_path / "data"
    first = start_server(data, env)
    try:
        key, guid, process, _pid = deploy_restart_app(first, tmp_path)
        [job] = run_jobs(cluster, guid)
    finally:
        first.process.send_signal(signal.SIGKILL)  # a crash: nothing is cleaned up
        first.process.wait()
    assert [j["metadata"]["uid"] for j in run_jobs(cluster, guid)] == [job["metadata"]["uid"]]
    # The same node again: its node id names its port (settings.node_id), and a node adopts its own.
    second = start_server(data, env, bootstrap=False, ports=first.ports)
    try:
        second._keys = dict(first._keys)
        body = second.api(key).get(f"{second.url}/content/{guid}/").json()
        assert body["process"] == process  # adopted, not restarted
        assert [j["metadata"]["uid"] for j in run_jobs(cluster, guid)] == [job["metadata"]["uid"]]
    finally:
        second.stop()  # a clean stop (SIGTERM), as in a rolling update
    # On Kubernetes a clean stop leaves content Jobs for the next server to adopt: content
    # keeps serving through a rolling update (keep_processes_on_shutdown unset).
    assert [j["metadata"]["uid"] for j in run_jobs(cluster, guid)] == [job["metadata"]["uid"]]
    third = start_server(data, {**env, "PODIUM_KEEP_PROCESSES_ON_SHUTDOWN": "false"}, bootstrap=False,
                         ports=first.ports)
    try:
        third._keys = dict(first._keys)
        body = third.api(key).get(f"{third.url}/content/{guid}/").json()
        assert body["process"] == process
    finally:
        third.stop()
    # Told not to keep them, a clean stop deletes the Jobs: nothing is orphaned.
    wait_until(lambda: run_jobs(cluster, guid) == [], 20)


def test_kubernetes_unknown_image_surfaces_err_image_pull_in_the_deploy(
    server: RunningServer, cluster: SimCluster, tmp_path: Path
) -> None:
    import os
    import platform
    import sys

    unknown = "registry.invalid/podium/python:3"
    home = tmp_path / "home"
    home.mkdir()
    python = f"{platform.python_version()}={os.path.realpath(sys.executable)}"
    made = rsconnect(home, "environment", "add", "-s", server.url, "-k", server.admin_key, unknown,
                     "-m", "exact", "--python", python)
    assert made.returncode == 0, made.stdout + made.stderr
    key = server.user_key("k8s_pub", "publisher")
    assert rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key).returncode == 0
    directory = write_app(tmp_path, "unknown_image_app", FASTAPI_APP, "fastapi\n")
    done = rsconnect(home, "deploy", "fastapi", "-n", "podium", "--image", unknown, str(directory))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "ErrImagePull" in output or "ImagePullBackOff" in output, output
    assert unknown in output


def test_kubernetes_notebook_renders_in_a_render_job(
    server: RunningServer, cluster: SimCluster, tmp_path: Path
) -> None:
    from tests.test_rendered_content import write_notebook

    home = tmp_path / "home"
    home.mkdir()
    key = server.user_key("k8s_pub", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    directory = write_notebook(tmp_path, "k8s_report", [("print('computed', 6 * 7, 'in a pod')", [])])
    done = rsconnect(home, "deploy", "notebook", "-n", "podium", str(directory / "report.ipynb"))
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    found = re.search(r"/content/([0-9a-f-]{36})/", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    guid = found.group(1)
    page = server.api(key).get(content_url(server, guid))
    assert page.status_code == 200 and "computed 42 in a pod" in page.text, page.text[:500]
    selector = f"podium.dev/content-guid%3D{guid}"
    listed = cluster_get(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector={selector}")["items"]
    kinds = [job["metadata"]["labels"]["podium.dev/job-kind"] for job in listed]
    assert "render" in kinds, kinds


def test_kubernetes_plumber_api_restores_and_runs_in_jobs(server: RunningServer, cluster: SimCluster) -> None:
    # R content goes through the same backend: the restore is a build Job, the API a run Job.
    from tests.helpers import deploy
    from tests.test_r_content import r_bundle, require_r

    require_r()
    api_source = 'function(x = 1) list(doubled = as.numeric(x) * 2, pod = Sys.getenv("POD_IP"))\n'
    plumber = "#* @get /double\n" + api_source
    key = server.user_key("k8s_pub", "publisher")
    guid = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": "k8s-plumber"}).json()["guid"]
    _, task = deploy(server, key, guid, r_bundle("api", {"plumber.R": plumber}, {"plumber": "1.2.1"}))
    assert task["code"] == 0, "\n".join(task["all_output"]) + server.log()
    answer = server.api(key).get(f"{content_url(server, guid)}double", params={"x": 21})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["doubled"] == [42] and body["pod"][0].startswith("127.10."), body
    selector = f"podium.dev/content-guid%3D{guid}"
    listed = cluster_get(cluster, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector={selector}")["items"]
    assert {"build", "run"} <= {job["metadata"]["labels"]["podium.dev/job-kind"] for job in listed}


HOSTILE_APP = '''
import hashlib, os
from pathlib import Path
from fastapi import FastAPI

app = FastAPI()

def attempt(action):
    try:
        action()
        return "ok"
    except OSError as error:
        return type(error).__name__

@app.get("/")
def probe():
    data = Path.cwd().parents[2]  # the bundle is <data>/apps/<content>/<bundle>
    runner = next((data / "runtime").glob("*.py"), data / "runtime" / "runner.py")
    others = [p for p in (data / "apps").iterdir() if p.name != Path.cwd().parent.name]
    return {
        "key": attempt(lambda: (data / "secret.key").read_bytes()),
        "db": attempt(lambda: (data / "db" / "podium.sqlite").read_bytes()),
        "other_bundles": [attempt(lambda: list(p.iterdir())) for p in others],
        "other_bundle_names": sorted(p.name for p in others),
        "runner_write": attempt(lambda: open(runner, "a").write("# pwned")),
        "runner": runner.name,
        "bundle_write": attempt(lambda: open("app.py", "a").write("# pwned")),
        "home_write": attempt(lambda: open(os.path.join(os.environ["HOME"], "f"), "w").write("x")),
        "data": sorted(os.listdir(data)),
        "uid": os.getuid(),
        "token": hashlib.sha256(os.environ.get("API_TOKEN", "").encode()).hexdigest(),
    }
'''
TOKEN = "tok-3f9a1c0e-never-in-a-pod-spec"


def test_kubernetes_hostile_content_sees_only_its_own_files_and_secret_stays_in_a_secret(
    server: RunningServer, cluster: SimCluster, fastapi_app: str, tmp_path: Path
) -> None:
    import hashlib

    from tests.test_kubernetes_isolation import require_enforcing

    require_enforcing(cluster)
    home = tmp_path / "home"
    home.mkdir()
    key = server.user_key("k8s_hostile", "publisher")
    assert rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key).returncode == 0
    directory = write_app(tmp_path, "hostile_app", HOSTILE_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory, "-E", f"API_TOKEN={TOKEN}")
    assert done.returncode == 0, done.stdout + done.stderr + server.log()
    guid = guid_of(directory)
    answer = server.api(key).get(content_url(server, guid))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["token"] == hashlib.sha256(TOKEN.encode()).hexdigest()  # the pod got its variable
    assert (report["key"], report["db"], report["runner_write"], report["bundle_write"]) == (
        "FileNotFoundError", "FileNotFoundError", "PermissionError", "PermissionError"), report
    # Another item's folder may show as an empty mount-point parent at most, never its files.
    assert report["other_bundle_names"] == [] and report["home_write"] == "ok", report
    assert set(report["data"]) <= {"apps", "envs", "home", "runtime"}, report
    assert report["uid"] == 10001
    runner = server.data_dir / "runtime" / report["runner"]
    assert "pwned" not in runner.read_text()
    # No stored object but the content's Secret ever held the value: not a Job, a Pod, an Event.
    stored = cluster.history()
    mine = [obj for obj in stored if obj.get("kind") in ("Job", "Pod")
            and obj["metadata"].get("labels", {}).get("podium.dev/content-guid") == guid]
    assert mine and all(TOKEN not in json.dumps(obj) for obj in stored if obj.get("kind") != "Secret")
    name = f"podium-content-{guid}"
    secrets = [s for s in cluster.objects("secrets", NAMESPACE)
               if s["metadata"]["labels"].get("podium.dev/content-guid") == guid]
    assert [s["metadata"]["name"] for s in secrets] == [name]  # one per content, whatever its jobs
    # The content's variables, and the content session token each process starts with (OAuth).
    assert not secrets[0]["metadata"].get("ownerReferences")
    assert sorted(secrets[0]["data"]) == ["API_TOKEN", "CONNECT_CONTENT_SESSION_TOKEN"]
    env = [item for obj in mine if obj["kind"] == "Pod" for item in obj["spec"]["containers"][0]["env"]
           if item["name"] == "API_TOKEN"]
    assert env and all(item["valueFrom"]["secretKeyRef"] == {"name": name, "key": "API_TOKEN"} for item in env)

    # Changing the variables in Podium changes the Secret at once; removing one removes it there.
    variables = f"{server.url}/__api__/v1/content/{guid}/environment"
    changed = server.api(key).patch(variables, json=[{"name": "API_TOKEN", "value": TOKEN + "-2"},
                                                     {"name": "EXTRA", "value": "x"}])
    assert changed.status_code == 200, changed.text

    def secret_data() -> dict[str, str]:
        [secret] = [s for s in cluster.objects("secrets", NAMESPACE) if s["metadata"]["name"] == name]
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()
                if k != "CONNECT_CONTENT_SESSION_TOKEN"}

    assert secret_data() == {"API_TOKEN": TOKEN + "-2", "EXTRA": "x"}
    removed = server.api(key).put(variables, json=[{"name": "EXTRA", "value": "y"}])
    assert removed.status_code == 200 and removed.json() == ["EXTRA"], removed.text
    assert secret_data() == {"EXTRA": "y"}
    # Deleting the content deletes its Secret.
    assert server.api(key).delete(f"{server.url}/__api__/v1/content/{guid}").status_code == 204
    assert not [s for s in cluster.objects("secrets", NAMESPACE) if s["metadata"]["name"] == name]


def test_kubernetes_placement_and_gpu_limit_set_by_an_administrator_land_on_the_pod(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    publisher = server.api(server.user_key("k8s_pub", "publisher"))
    url = f"{server.url}/__api__/v1/content/{fastapi_app}"
    placement = {
        "node_selector": {"accelerator": "t4"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "runtime_class_name": "gvisor", "priority_class_name": "content",
    }
    refused = publisher.patch(url, json={"kubernetes_placement": placement})
    assert refused.status_code == 403, refused.text
    too_many = publisher.patch(url, json={"nvidia_gpu_limit": 2})
    assert too_many.status_code == 400 and "max_nvidia_gpu_limit" in too_many.json()["error"]
    cluster.add_node("gpu-e2e", {"accelerator": "t4"}, [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}],
                     extra={"nvidia.com/gpu": 1})
    try:
        admin_patch(server, fastapi_app, kubernetes_placement=placement)
        assert publisher.patch(url, json={"nvidia_gpu_limit": 1}).status_code == 200  # within the maximum
        shown = publisher.get(url).json()
        assert (shown["kubernetes_placement"], shown["nvidia_gpu_limit"]) == (placement, 1)
        stop_run_jobs(server, fastapi_app)
        assert publisher.get(content_url(server, fastapi_app)).status_code == 200
        [job] = run_jobs(cluster, fastapi_app)
        pods = cluster_get(cluster, f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=job-name%3D"
                                    f"{job['metadata']['name']}")["items"]
        pod = pods[0]["spec"]
        assert pod["nodeName"] == "gpu-e2e" and pod["nodeSelector"] == {"accelerator": "t4"}
        assert pod["tolerations"] == placement["tolerations"]
        assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("gvisor", "content")
        assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    finally:
        admin_patch(server, fastapi_app, kubernetes_placement=None, nvidia_gpu_limit=None)
        stop_run_jobs(server, fastapi_app)
        cluster.remove_node("gpu-e2e")


def test_kubernetes_unschedulable_content_starts_once_a_node_joins_within_init_timeout(
    server: RunningServer, cluster: SimCluster, fastapi_app: str
) -> None:
    # What a cluster autoscaler does: the process waits (Unschedulable), a node joins,
    # the request that started it is answered; nothing failed on the way.
    admin_patch(server, fastapi_app, kubernetes_placement={"node_selector": {"pool": "autoscaled"}})
    client = server.api()
    try:
        stop_run_jobs(server, fastapi_app)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.get, content_url(server, fastapi_app), headers={"Accept": "application/json"},
                                 timeout=60)
            pods = f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=podium.dev/content-guid%3D{fastapi_app}"

            def waiting() -> bool:
                return any(c.get("reason") == "Unschedulable" for pod in cluster_get(cluster, pods)["items"]
                           for c in pod["status"].get("conditions") or [])

            assert wait_until(waiting, 20)
            time.sleep(2)  # pending a while, well within init_timeout (20 s)
            cluster.add_node("autoscaled-1", {"pool": "autoscaled"})
            assert answer.result().status_code == 200
        [job] = run_jobs(cluster, fastapi_app)
        listed = client.get(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs").json()
        assert not any(j["error"] for j in listed if j["key"] == job["metadata"]["labels"]["podium.dev/job-key"])
    finally:
        admin_patch(server, fastapi_app, kubernetes_placement=None)
        stop_run_jobs(server, fastapi_app)
        cluster.remove_node("autoscaled-1")


def test_kubernetes_server_service_account_is_refused_for_content(server: RunningServer, fastapi_app: str) -> None:
    answer = server.api().patch(f"{server.url}/__api__/v1/content/{fastapi_app}",
                                json={"service_account_name": "podium"})
    assert answer.status_code == 400 and answer.json()["code"] == 178, answer.text
    assert "kubernetes_denied_service_accounts" in answer.json()["error"]
