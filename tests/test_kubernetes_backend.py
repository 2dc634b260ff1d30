"""The Kubernetes backend against the simulated cluster: what only Kubernetes reports
(image pulls, scheduling, admission, deadlines), the pod spec it creates, the watch
cache's recovery, and the simulator's own wire behaviour. The backend-agnostic
behaviour is covered by ``test_runtime_contract.py``.

With ``PODIUM_TEST_KUBECONFIG`` set (``scripts/k8s-real-cluster-tests.sh`` does it) the
same tests run against that cluster instead, each in a namespace of its own (created
and deleted here); ``PODIUM_TEST_IMAGE`` names an image holding a Python at
``PODIUM_TEST_JOB_PYTHON``. Tests of the simulator itself are skipped then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from k8s_sim import SimCluster
from k8s_sim.store import field_match, label_match
from podium.runtime import JobHandle, JobSpec, JobState, JobStatus, Placement, Resources
from podium.runtime.kubernetes.backend import KubernetesBackend
from podium.runtime.kubernetes.client import AsyncioKubeClient, KubeApiError
from podium.runtime.kubernetes.manifests import KubernetesJobConfig, job_manifest

REAL_KUBECONFIG = os.environ.get("PODIUM_TEST_KUBECONFIG")
IMAGE = os.environ.get("PODIUM_TEST_IMAGE", "podium.test/runtime:host")
GUID = "0b6e8e6c-5f0d-4c4e-9a53-7a0b1c2d3e4f"
PY = os.environ.get("PODIUM_TEST_JOB_PYTHON", sys.executable)
sim_only = pytest.mark.skipif(REAL_KUBECONFIG is not None, reason="tests the simulated cluster itself")
MiB = 2**20
T = TypeVar("T")
_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster | None]:
    if REAL_KUBECONFIG:
        yield None
        return
    sim = SimCluster(tmp_path_factory.mktemp("k8s"), images={IMAGE})
    sim.start()
    yield sim
    assert sim.close() == []


class Env:
    def __init__(self, cluster: SimCluster | None, kubeconfig: str, namespace: str) -> None:
        self._cluster = cluster
        self.kubeconfig = kubeconfig
        self.namespace = namespace

    @property
    def cluster(self) -> SimCluster:
        assert self._cluster is not None, "a simulator-only test ran against a real cluster"
        return self._cluster

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One raw API request through the client library (simulator or real cluster)."""
        async def call() -> Any:
            client = await AsyncioKubeClient.connect(self.kubeconfig)
            try:
                response = await client._api.rest_client.request(
                    method, client._api.configuration.host + path, body=body,
                    headers={"Content-Type": "application/json", **client._api.default_headers,
                             **_auth(client._api.configuration)},
                )
                return json.loads(response.data) if response.data else None
            finally:
                await client.close()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callers may be inside a loop
            return pool.submit(asyncio.run, call()).result(30)

    def exists(self, path: str) -> bool:
        try:
            return self.api("GET", path) is not None
        except Exception:  # the client's ApiException for a 404
            return False

    def create_service_account(self, name: str) -> None:
        self.api("POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts",
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})

    def backend(self, **config: Any) -> KubernetesBackend:
        settings = KubernetesJobConfig(namespace=self.namespace, default_image=IMAGE, **config)
        return KubernetesBackend(lambda: AsyncioKubeClient.connect(self.kubeconfig), settings)

    def run(self, scenario: Callable[[KubernetesBackend], Coroutine[Any, Any, T]], **config: Any) -> T:
        async def main() -> T:
            backend = self.backend(**config)
            try:
                return await asyncio.wait_for(scenario(backend), 20)
            finally:
                for handle in await backend.list_jobs():
                    await backend.stop(handle, 0)
                await backend.close()

        return asyncio.run(main())

    def get(self, path: str) -> Any:
        if self._cluster is None:
            return self.api("GET", path)
        with urllib.request.urlopen(self.cluster.url + path, timeout=5) as response:
            body = response.read().decode()
        return json.loads(body) if body.startswith("{") else body


def _auth(configuration: Any) -> dict[str, str]:
    token = (configuration.api_key or {}).get("BearerToken") or (configuration.api_key or {}).get("authorization")
    return {"Authorization": token} if token else {}


@pytest.fixture
def env(cluster: SimCluster | None, tmp_path: Path) -> Iterator[Env]:
    if cluster is None:
        assert REAL_KUBECONFIG is not None
        namespace = f"podium-test-{next(_namespaces)}-{secrets.token_hex(3)}"
        real = Env(None, REAL_KUBECONFIG, namespace)
        real.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": namespace}})
        # A real cluster's controller creates the namespace's "default" service account a
        # moment later; pods are refused until it exists.
        deadline = time.monotonic() + 30
        while not real.exists(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"):
            assert time.monotonic() < deadline, "the namespace's default service account never appeared"
            time.sleep(0.2)
        yield real
        real.api("DELETE", f"/api/v1/namespaces/{namespace}")
        return
    namespace = f"backend-{next(_namespaces)}"
    yield Env(cluster, str(cluster.write_kubeconfig(tmp_path / "kubeconfig")), namespace)


def spec(command: list[str], key: str = "job-1", **changes: Any) -> JobSpec:
    values: dict[str, Any] = dict(key=key, kind="build", content_guid=GUID, image=None, command=command,
                                  env={}, workdir="/tmp", port=None)
    values.update(changes)
    return JobSpec(**values)


async def ended(backend: KubernetesBackend, handle: JobHandle, timeout: float = 10) -> JobStatus:
    deadline = time.monotonic() + timeout
    while (status := await backend.status(handle)).state.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return status


SLEEP = [PY, "-c", "import time; time.sleep(60)"]


async def pending_with(backend: KubernetesBackend, handle: JobHandle, reasons: set[str],
                       timeout: float = 10) -> JobStatus:
    """The job's status once it is PENDING with one of ``reasons`` (a state that may pass)."""
    deadline = time.monotonic() + timeout
    while (status := await backend.status(handle)).reason not in reasons:
        assert status.state is JobState.PENDING and time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    return status


def test_kubernetes_unknown_image_waits_with_the_image_pull_reason(env: Env) -> None:
    # A registry answering 429 gives the same ErrImagePull: the job stays PENDING with the
    # reason, the caller decides how long to wait (init_timeout), stop() ends it.
    async def scenario(backend: KubernetesBackend) -> tuple[JobStatus, JobStatus, Any]:
        handle = await backend.launch(spec(SLEEP, image="registry.invalid/nope:1"))
        waiting = await pending_with(backend, handle, {"ErrImagePull", "ImagePullBackOff"})
        await asyncio.sleep(1)
        still = await backend.status(handle)
        await backend.stop(handle, 0)
        return waiting, still, env.get(f"/apis/batch/v1/namespaces/{env.namespace}/jobs")["items"]

    waiting, still, jobs = env.run(scenario)
    assert waiting.state is JobState.PENDING and waiting.message and "registry.invalid/nope:1" in waiting.message
    assert waiting.message.startswith(waiting.reason or "")
    assert still.state is JobState.PENDING and still.reason in {"ErrImagePull", "ImagePullBackOff"}
    assert jobs == []


def test_kubernetes_command_references_to_pod_ip_are_expanded(env: Env) -> None:
    # Streamlit, Panel and Voila take their bind address on the command line: the
    # scheduler passes $(POD_IP), which the kubelet expands from the downward API.
    command = [PY, "-c", "import os, sys; print(sys.argv[1] == os.environ['POD_IP'], sys.argv[2])",
               "$(POD_IP)", "$$(POD_IP)"]

    async def scenario(backend: KubernetesBackend) -> list[str]:
        handle = await backend.launch(spec(command))
        status = await ended(backend, handle)
        assert status.state is JobState.SUCCEEDED, status
        return [line async for line in backend.logs(handle)]

    lines = env.run(scenario)
    assert any("True $(POD_IP)" in str(line) for line in lines), lines


def test_kubernetes_missing_service_account_waits_with_failed_create_then_runs(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> tuple[JobStatus, JobStatus]:
        handle = await backend.launch(spec(SLEEP, service_account="late"))
        waiting = await pending_with(backend, handle, {"FailedCreate"})
        await asyncio.to_thread(env.create_service_account, "late")  # the Job controller retries
        deadline = time.monotonic() + 15
        while (status := await backend.status(handle)).state is not JobState.RUNNING:
            assert status.state.active and time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        return waiting, status

    waiting, running = env.run(scenario)
    assert waiting.message and 'serviceaccount "late" not found' in waiting.message
    assert running.state is JobState.RUNNING


def test_kubernetes_pod_gets_service_account_resources_and_labels(env: Env) -> None:
    env.create_service_account("reports")
    resources = Resources(cpu_request=0.25, cpu_limit=1, memory_request=64 * MiB, memory_limit=256 * MiB)

    async def scenario(backend: KubernetesBackend) -> dict[str, Any]:
        handle = await backend.launch(spec(SLEEP, service_account="reports", resources=resources))
        deadline = time.monotonic() + 10
        while (await backend.status(handle)).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        return env.get(f"/api/v1/namespaces/{env.namespace}/pods?labelSelector=podium.dev/job-key%3Djob-1")

    pods = env.run(scenario)["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == "reports"
    assert pod["spec"]["automountServiceAccountToken"] is True
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m", "memory": str(64 * MiB)}, "limits": {"cpu": "1", "memory": str(256 * MiB)},
    }
    labels = pod["metadata"]["labels"]
    assert (labels["podium.dev/content-guid"], labels["podium.dev/job-kind"], labels["job-name"]) == (
        GUID, "build", "job-1"
    )
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert REAL_KUBECONFIG or pod["status"]["podIP"].startswith("127.10.")


def test_kubernetes_request_beyond_every_node_waits_as_unschedulable(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> JobStatus:
        handle = await backend.launch(spec(SLEEP, resources=Resources(cpu_request=64)))
        status = await pending_with(backend, handle, {"Unschedulable"})
        await backend.stop(handle, 0)
        return status

    status = env.run(scenario)
    assert status.message and "Insufficient cpu" in status.message


@sim_only
def test_sim_unschedulable_pod_runs_once_a_node_is_added(env: Env) -> None:
    # What a cluster autoscaler does: the pod waits (Unschedulable), a node joins, it runs.
    async def scenario(backend: KubernetesBackend) -> tuple[JobStatus, str]:
        selector = {"pool": f"big-{env.namespace}"}
        handle = await backend.launch(spec(SLEEP, resources=Resources(cpu_request=3),
                                           placement=Placement(node_selector=selector)))
        waiting = await pending_with(backend, handle, {"Unschedulable"})
        await asyncio.to_thread(env.cluster.add_node, f"node-{env.namespace}", selector, None, 4.0)
        deadline = time.monotonic() + 10
        while (await backend.status(handle)).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        pods = env.get(f"/api/v1/namespaces/{env.namespace}/pods")["items"]
        return waiting, pods[0]["spec"]["nodeName"]

    try:
        waiting, node_name = env.run(scenario)
    finally:
        env.cluster.remove_node(f"node-{env.namespace}")
    assert waiting.message and "didn't match Pod's node affinity/selector" in waiting.message
    assert node_name == f"node-{env.namespace}"


def test_kubernetes_over_memory_limit_is_oom_killed(env: Env) -> None:
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        pytest.skip("no memory cgroup on this host")
    allocate = [PY, "-c", "x = bytearray(512 * 2**20); x[::4096] = b'x' * len(x[::4096]); print('survived')"]

    async def scenario(backend: KubernetesBackend) -> JobStatus:
        return await ended(backend, await backend.launch(
            spec(allocate, resources=Resources(memory_limit=64 * MiB))
        ))

    status = env.run(scenario)
    if status.reason != "OOMKilled" and status.state is JobState.SUCCEEDED:
        pytest.skip("memory limits are not enforceable here (no writable memory cgroup)")
    assert (status.state, status.reason, status.exit_code) == (JobState.FAILED, "OOMKilled", 137)


def test_kubernetes_active_deadline_from_the_template_patch_fails_the_job(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> JobStatus:
        return await ended(backend, await backend.launch(spec(SLEEP)))

    status = env.run(scenario, job_template_patch={"spec": {"activeDeadlineSeconds": 1}})
    assert (status.state, status.reason) == (JobState.FAILED, "DeadlineExceeded")


def test_kubernetes_stop_deletes_job_and_pods_in_the_background(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> tuple[JobStatus, Any, Any]:
        handle = await backend.launch(spec(SLEEP))
        while (await backend.status(handle)).state is not JobState.RUNNING:
            await asyncio.sleep(0.05)
        await backend.stop(handle, 1)
        jobs = env.get(f"/apis/batch/v1/namespaces/{env.namespace}/jobs")
        pods = env.get(f"/api/v1/namespaces/{env.namespace}/pods")
        return await backend.status(handle), jobs, pods

    status, jobs, pods = env.run(scenario)
    assert status.state is JobState.STOPPED
    assert (jobs["items"], pods["items"]) == ([], [])


@sim_only
def test_kubernetes_watch_recovers_after_410_expired(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> JobStatus:
        first = await backend.launch(spec([PY, "-c", "pass"], key="before"))
        await ended(backend, first)
        env.cluster.call(_compact_and_drop_watches(env.cluster))  # the next resume gets 410
        second = await backend.launch(spec([PY, "-c", "raise SystemExit(5)"], key="after"))
        return await ended(backend, second)

    status = env.run(scenario)
    assert (status.state, status.exit_code) == (JobState.FAILED, 5)


async def _compact_and_drop_watches(cluster: SimCluster) -> None:
    cluster.store.compact()
    cluster.store.drop_watches()


def test_kubernetes_launch_refused_by_admission_is_a_backend_error(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> None:
        from podium.runtime import BackendError

        with pytest.raises(BackendError) as caught:
            await backend.launch(spec(SLEEP))
        assert caught.value.reason == "Invalid"
        assert "restartPolicy" in caught.value.message

    env.run(scenario, job_template_patch={"spec": {"template": {"spec": {"restartPolicy": "Always"}}}})


def test_sim_delete_without_propagation_orphans_pods(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> None:
        handle = await backend.launch(spec(SLEEP))
        while (await backend.status(handle)).state is not JobState.RUNNING:
            await asyncio.sleep(0.05)
        client = await AsyncioKubeClient.connect(env.kubeconfig)
        try:
            await client._json(client._batch.delete_namespaced_job, "job-1", env.namespace)
            deadline = time.monotonic() + 30
            while True:  # a real cluster's garbage collector orphans the pod asynchronously
                pods, _ = await client.list_objects("pods", env.namespace, "podium.dev/job-key=job-1")
                if len(pods) == 1 and not pods[0]["metadata"].get("ownerReferences"):
                    break
                assert time.monotonic() < deadline, pods
                await asyncio.sleep(0.2)
            await client.delete_pod(env.namespace, pods[0]["metadata"]["name"], 1)
            with pytest.raises(KubeApiError) as caught:
                await client.get_job(env.namespace, "job-1")
            assert caught.value.status == 404
        finally:
            await client.close()

    env.run(scenario)


@sim_only
def test_sim_log_of_a_pod_not_started_is_400(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> None:
        # Made without the backend, so the backend has no say about it.
        client = await AsyncioKubeClient.connect(env.kubeconfig)
        try:
            manifest = job_manifest(spec(SLEEP, image="registry.invalid/nope:1"), backend.config)
            await client.create_job(env.namespace, manifest)
        finally:
            await client.close()
        while not (pods := env.get(f"/api/v1/namespaces/{env.namespace}/pods")["items"]) \
                or "containerStatuses" not in pods[0]["status"]:
            await asyncio.sleep(0.05)
        url = f"/api/v1/namespaces/{env.namespace}/pods/{pods[0]['metadata']['name']}/log?follow=True"
        with pytest.raises(urllib.error.HTTPError) as caught:
            await asyncio.to_thread(env.get, url)
        assert caught.value.code == 400
        assert "is waiting to start" in json.loads(caught.value.read())["message"]
        handle = JobHandle(backend.name, "job-1", {"name": "job-1"})
        assert [line async for line in backend.logs(handle)] == []  # following would wait for a start

    env.run(scenario)


@sim_only
def test_sim_discovery_answers_with_and_without_trailing_slash(env: Env) -> None:
    assert env.get("/version")["major"] == "1"
    assert env.get("/version/")["minor"] == "33"
    assert env.get("/apis")["groups"][0]["name"] == "batch"


def test_sim_selectors() -> None:
    labels = {"a": "1", "b": "x"}
    assert label_match("a=1,b in (x, y),!c", labels)
    assert not label_match("a!=1", labels)
    assert not label_match("b notin (x)", labels)
    assert label_match("a", labels) and not label_match("c", labels)
    obj = {"metadata": {"name": "n"}, "involvedObject": {"kind": "Job"}}
    assert field_match("metadata.name=n,involvedObject.kind=Job", obj)
    assert not field_match("involvedObject.kind!=Job", obj)


def test_kubernetes_job_log_is_kept_after_the_job_is_gone(env: Env, tmp_path: Path) -> None:
    from podium.runtime.kubernetes.keptlogs import KeptLogs

    kept = KeptLogs(tmp_path / "kept", 3600)
    config = KubernetesJobConfig(namespace=env.namespace, default_image=IMAGE, ttl_seconds_after_finished=1)

    def make() -> KubernetesBackend:
        return KubernetesBackend(lambda: AsyncioKubeClient.connect(env.kubeconfig), config, kept)

    async def main() -> tuple[list[str], list[str]]:
        backend = make()
        try:
            done = await backend.launch(spec([PY, "-c", "print('first'); print('second')"], key="ends"))
            assert (await ended(backend, done)).state is JobState.SUCCEEDED
            stopped = await backend.launch(spec([PY, "-u", "-c", "print('before stop'); import time; time.sleep(60)"],
                                                key="stopped"))
            deadline = time.monotonic() + 15
            while "before stop" not in [line.data async for line in backend.logs(stopped)]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            await backend.stop(stopped, 1)
            while (await asyncio.to_thread(env.get, f"/api/v1/namespaces/{env.namespace}/pods"))["items"]:
                assert time.monotonic() < deadline, "ttlSecondsAfterFinished did not delete the Job"
                await asyncio.sleep(0.2)
        finally:
            await backend.close()
        fresh = make()  # a restarted server: the cluster has no pod of either job left
        try:
            return ([line.data async for line in fresh.logs(done)],
                    [line.data async for line in fresh.logs(stopped)])
        finally:
            await fresh.close()

    ended_lines, stopped_lines = asyncio.run(asyncio.wait_for(main(), 40))
    assert ended_lines == ["first", "second"]
    assert stopped_lines == ["before stop"]
    assert kept.has("ends") and kept.has("stopped")
    KeptLogs(tmp_path / "kept", 0).prune()  # retention 0: everything older than now goes
    assert not kept.has("ends")


def test_kubernetes_each_node_lists_only_its_own_jobs(env: Env) -> None:
    """Two replicas of one installation (same instance label): each labels its Jobs with
    its node id and lists (so adopts or deletes after a restart) only those; a node that
    claimed a dead one still stops the dead one's Jobs by handle."""
    async def main() -> tuple[list[str], list[str], dict[str, str], JobStatus]:
        a, b = env.backend(node="node-a"), env.backend(node="node-b")
        try:
            mine = await a.launch(spec(SLEEP, key="of-a"))
            theirs = await b.launch(spec(SLEEP, key="of-b"))
            for backend, handle in ((a, mine), (b, theirs)):
                while (await backend.status(handle)).state is not JobState.RUNNING:
                    await asyncio.sleep(0.05)
            listed_a = [h.key for h in await a.list_jobs()]
            listed_b = [h.key for h in await b.list_jobs()]
            job = env.get(f"/apis/batch/v1/namespaces/{env.namespace}/jobs/of-a")
            await b.stop(mine, 0)  # node-a died; node-b claimed it
            return listed_a, listed_b, job["metadata"]["labels"], await b.status(mine)
        finally:
            for backend in (a, b):
                for handle in await backend.list_jobs():
                    await backend.stop(handle, 0)
                await backend.close()

    listed_a, listed_b, labels, stopped = asyncio.run(asyncio.wait_for(main(), 30))
    assert (listed_a, listed_b) == (["of-a"], ["of-b"])
    assert labels["podium.dev/node"] == "node-a"
    assert stopped.state is JobState.STOPPED
