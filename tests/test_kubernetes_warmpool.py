"""The Kubernetes warm pool (``kubernetes_warm_pool_size``) against the simulated cluster,
through the real client library: a run job of the default shape claims a warm pod,
which fetches the job's files and starts its app; other shapes fall back to a normal
Job; the pool refills; two nodes racing for one pod never both get it; unclaimed pods
go when a node stops or the setting drops. The manifests validate strictly.
The simulated kubelet must enforce pod mounts (root and bubblewrap), else these skip.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes_validate
import pytest
from tests.test_kubernetes_isolation import require_enforcing
from tests.test_kubernetes_manifests import SCHEMA_VERSIONS
from tests.warm_support import GID, IMAGE, UID, answer, make_bundle, run_spec, serve_transfer, warm_ready

from k8s_sim import SimCluster
from podium.runtime import Placement, Resources
from podium.runtime.kubernetes.backend import KubernetesBackend
from podium.runtime.kubernetes.client import AsyncioKubeClient, KubeApiError
from podium.runtime.kubernetes.manifests import KubernetesJobConfig, job_name
from podium.runtime.kubernetes.pool import push_assignment
from podium.runtime.kubernetes.warmpool import (
    LABEL_POOL,
    TOKEN_ENV,
    control_port,
    pod_token,
    pool_label,
    unclaimable,
    warm_job_manifest,
    warm_job_name,
    warm_secret_manifest,
)
from podium.runtime.transfer import TransferTokens

T = TypeVar("T")
DEFAULT = Resources(cpu_request=0.1, memory_request=64 * 2**20, memory_limit=512 * 2**20)
KEY = b"k" * 32
_namespaces = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    sim = SimCluster(tmp_path_factory.mktemp("k8s-warm"), images={IMAGE})
    sim.start()
    require_enforcing(sim)
    yield sim
    assert sim.close() == []


class Env:
    def __init__(self, cluster: SimCluster, root: Path) -> None:
        self.cluster = cluster
        self.namespace = f"warm-{next(_namespaces)}"
        # Pod Security "restricted" admits warm pods as it does every job's
        cluster.create_namespace(self.namespace, {"pod-security.kubernetes.io/enforce": "restricted"})
        self.kubeconfig = str(cluster.write_kubeconfig(root / "kubeconfig", self.namespace))
        self.data = root / "data"
        self.data.mkdir()
        self.tokens = TransferTokens(self.data)
        self.url, self._server = serve_transfer(self.tokens)

    def config(self, **changes: Any) -> KubernetesJobConfig:
        values: dict[str, Any] = dict(
            namespace=self.namespace, default_image=IMAGE, data_mount_path=str(self.data), shared_volume=False,
            transfer_url=self.url, run_as_user=UID, run_as_group=GID, warm_pool_size=1,
            warm_pool_resources=DEFAULT, warm_pool_key=KEY, tmp_size_limit_bytes=None)
        values.update(changes)
        return KubernetesJobConfig(**values)

    def backend(self, **changes: Any) -> KubernetesBackend:
        return KubernetesBackend(lambda: AsyncioKubeClient.connect(self.kubeconfig), self.config(**changes),
                                 tokens=self.tokens)

    def jobs(self) -> list[dict[str, Any]]:
        return [job for job in self.cluster.objects("jobs", self.namespace)
                if not job["metadata"].get("deletionTimestamp")]

    def run(self, scenario: Callable[..., Coroutine[Any, Any, T]], *configs: dict[str, Any]) -> T:
        """``scenario(*backends)``, one backend per config; every job stopped after."""
        async def main() -> T:
            backends = [self.backend(**config) for config in configs or ({},)]
            try:
                return await asyncio.wait_for(scenario(*backends), 60)
            finally:
                for backend in backends:
                    for handle in await backend.list_jobs():
                        await backend.stop(handle, 0)
                    await backend.close()
        return asyncio.run(main())

    def close(self) -> None:
        self._server.should_exit = True


@pytest.fixture
def env(cluster: SimCluster, tmp_path: Path) -> Iterator[Env]:
    made = Env(cluster, tmp_path)
    yield made
    made.close()


def pool_jobs(env: Env) -> list[str]:
    return sorted(job["metadata"]["name"] for job in env.jobs() if LABEL_POOL in job["metadata"]["labels"])


# --- pure: manifests and the shape rule --------------------------------------------------


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_warm_job_and_secret_manifests_validate_strictly(version: str) -> None:
    config = KubernetesJobConfig(namespace="ns", warm_pool_size=2, warm_pool_resources=DEFAULT,
                                 default_service_account="runner", placement=Placement(node_selector={"a": "b"}),
                                 image_pull_secrets=("pull",), job_template_patch={"metadata": {
                                     "annotations": {"example.com/team": "data"}}})
    name = warm_job_name("registry.example/env:3.12", "abc123")
    manifest = warm_job_manifest("registry.example/env:3.12", name, config)
    kubernetes_validate.validate(manifest, version, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"a": "b"} and pod["imagePullSecrets"] == [{"name": "pull"}]
    container = pod["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": str(64 * 2**20)},
                                      "limits": {"memory": str(512 * 2**20)}}
    # the token comes from the pod's own Secret, never from the Job
    assert {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}} in container["env"]
    assert manifest["metadata"]["labels"][LABEL_POOL] == pool_label("registry.example/env:3.12")
    job = {**manifest, "metadata": {**manifest["metadata"], "uid": "0000-1111"}}
    kubernetes_validate.validate(warm_secret_manifest(job, "t0ken", config), version, strict=True)


def test_warm_pool_claims_only_the_default_shape(tmp_path: Path) -> None:
    config = KubernetesJobConfig(default_service_account="runner", warm_pool_size=1, warm_pool_resources=DEFAULT,
                                 run_as_user=UID, run_as_group=GID)
    bundle, home = tmp_path / "b", tmp_path / "h"
    fits = run_spec("j", "g", bundle, home, resources=DEFAULT)
    assert unclaimable(fits, config) is None
    assert unclaimable(run_spec("j", "g", bundle, home, resources=DEFAULT, service_account="runner"), config) is None
    assert unclaimable(run_spec("j", "g", bundle, home, resources=DEFAULT, port=41234), config) is None  # any port
    for changes, reason in [
        ({"kind": "build"}, "a build job"),
        ({"service_account": "reporting"}, "its own service account"),
        ({"resources": Resources(memory_limit=2**30)}, "resources other than the server defaults"),
        ({"placement": Placement(node_selector={"gpu": "yes"})}, "a placement of its own"),
    ]:
        assert unclaimable(run_spec("j", "g", bundle, home, **{"resources": DEFAULT, **changes}), config) == reason


# --- against the simulated cluster ---------------------------------------------------------


def test_warm_pool_run_job_claims_a_warm_pod_which_is_never_reused(env: Env) -> None:
    bundle, home = make_bundle(env.data, "content-a", "hello from a")

    async def scenario(backend: KubernetesBackend) -> None:
        first = (await warm_ready(backend, IMAGE, 1))[0]
        handle = await backend.launch(run_spec("run-a-1", "content-a", bundle, home, resources=DEFAULT, port=41234))
        assert handle.data["name"] == first  # the warm Job, relabelled as the content's
        address = await backend.address(handle)
        assert address is not None and address[1] == 41234  # the job's own port
        seen = await answer(backend, handle)
        assert seen["file"] == "hello from a" and seen["secret"] == "secret-of-content-a", seen
        assert seen["cwd"] == str(bundle) and "GREETING" in seen["env"]
        assert TOKEN_ENV not in seen["env"] and "PODIUM_WARM_PORT" not in seen["env"]  # content never sees it
        claimed = next(job for job in env.jobs() if job["metadata"]["name"] == first)
        labels = claimed["metadata"]["labels"]
        assert LABEL_POOL not in labels and labels["podium.dev/content-guid"] == "content-a"
        assert labels["podium.dev/job-key"] == "run-a-1"
        assert labels["podium.dev/warm"] == "claimed"
        while True:  # its pod is relabelled too (off the start's path)
            [pod] = [pod for pod in env.cluster.objects("pods", env.namespace)
                     if pod["metadata"]["labels"].get("job-name") == first]
            if pod["metadata"]["labels"].get("podium.dev/content-guid") == "content-a":
                break
            await asyncio.sleep(0.05)
        assert LABEL_POOL not in pod["metadata"]["labels"]
        assert [h.key for h in await backend.list_jobs()] == ["run-a-1"]
        # refilled in the background: a new warm pod, not the claimed one
        second = (await warm_ready(backend, IMAGE, 1))[0]
        assert second != first
        await backend.stop(handle, 0)
        assert first not in [job["metadata"]["name"] for job in env.jobs()]  # deleted, never returned
        # the next start of the same content gets the new pod and its own fresh copy
        again = await backend.launch(run_spec("run-a-2", "content-a", bundle, home, resources=DEFAULT))
        assert again.data["name"] == second
        assert (await answer(backend, again))["file"] == "hello from a"

    env.run(scenario)


def test_warm_pool_other_shapes_and_an_empty_pool_get_a_normal_job(env: Env) -> None:
    bundle, home = make_bundle(env.data, "content-b", "hello from b")

    async def scenario(backend: KubernetesBackend) -> None:
        await warm_ready(backend, IMAGE, 1)
        own = await backend.launch(run_spec("run-b-1", "content-b", bundle, home,
                                            resources=Resources(memory_limit=2**30)))
        assert own.data["name"] == job_name("run-b-1")
        assert (await answer(backend, own))["file"] == "hello from b"
        assert len(await warm_ready(backend, IMAGE, 1)) == 1  # untouched
        # a new image: no pool yet (a normal Job), then one fills for the next start
        other = "podium.test/runtime:other"
        env.cluster.images.add(other)
        first = await backend.launch(run_spec("run-b-2", "content-b", bundle, home, resources=DEFAULT, image=other))
        assert first.data["name"] == job_name("run-b-2")
        await warm_ready(backend, other, 1)
        second = await backend.launch(run_spec("run-b-3", "content-b", bundle, home, resources=DEFAULT, image=other))
        assert second.data["name"] != job_name("run-b-3")
        assert (await answer(backend, second))["file"] == "hello from b"

    env.run(scenario)


def test_warm_pool_two_nodes_racing_for_one_pod_never_both_get_it(env: Env) -> None:
    bundle, home = make_bundle(env.data, "content-c", "hello from c")

    async def scenario(one: KubernetesBackend, two: KubernetesBackend) -> None:
        only = await warm_ready(one, IMAGE, 1)
        await warm_ready(two, IMAGE, 1)
        assert len(only) == 1
        handles = await asyncio.gather(
            one.launch(run_spec("run-c-1", "content-c", bundle, home, resources=DEFAULT)),
            two.launch(run_spec("run-c-2", "content-c", bundle, home, resources=DEFAULT)))
        names = sorted(handle.data["name"] for handle in handles)
        assert only[0] in names and len(set(names)) == 2  # one claimed it, the other made a Job
        assert {job_name("run-c-1"), job_name("run-c-2")} & set(names)
        for backend, handle in zip((one, two), handles, strict=True):
            assert (await answer(backend, handle))["file"] == "hello from c"

    env.run(scenario, {"node": "node-a"}, {"node": "node-b"})


def test_warm_pool_claim_with_a_stale_resource_version_is_refused(env: Env) -> None:
    async def scenario(backend: KubernetesBackend) -> None:
        client = await AsyncioKubeClient.connect(env.kubeconfig)
        try:
            for _ in range(5):  # with the version just read (the Job controller may update it meanwhile)
                name = (await warm_ready(backend, IMAGE, 1))[0]
                try:
                    stale = (await client.get_job(env.namespace, name))["metadata"]["resourceVersion"]
                    await client.patch_job(env.namespace, name, {"metadata": {"resourceVersion": stale, "labels": {
                        "example.com/first": "yes"}}})
                    break
                except KubeApiError:
                    continue
            with pytest.raises(KubeApiError) as refused:
                await client.patch_job(env.namespace, name, {"metadata": {"resourceVersion": stale, "labels": {
                    "example.com/second": "yes"}}})
            assert refused.value.status == 409
        finally:
            await client.close()

    env.run(scenario)


def test_warm_pool_unclaimed_pods_go_on_stop_and_when_the_setting_drops(env: Env) -> None:
    async def fill(backend: KubernetesBackend) -> list[str]:
        return await warm_ready(backend, IMAGE, 2)

    filled = env.run(fill, {"warm_pool_size": 2, "node": "node-a"})
    assert pool_jobs(env) == []  # the node stopped: its unclaimed pods went with it
    assert filled

    async def leave() -> list[str]:
        backend = env.backend(warm_pool_size=2, node="node-a")
        names = await warm_ready(backend, IMAGE, 2)
        assert backend.pool is not None
        await backend.pool.stop(discard=False)  # a node killed before it could clean up: its pods stay
        backend.pool = None
        await backend.close()
        return names

    left = asyncio.run(leave())
    assert set(left) <= set(pool_jobs(env))

    async def shrink(backend: KubernetesBackend) -> None:
        await backend.list_jobs()  # starts the pool: one pod too many is trimmed
        while len(pool_jobs(env)) > 1:
            await asyncio.sleep(0.05)
        await warm_ready(backend, IMAGE, 1)
        assert len(pool_jobs(env)) == 1

    env.run(shrink, {"warm_pool_size": 1, "node": "node-b"})

    async def off(backend: KubernetesBackend) -> None:
        await backend.list_jobs()  # with the setting at 0 the node deletes what is left
        while pool_jobs(env):
            await asyncio.sleep(0.05)

    env.run(off, {"warm_pool_size": 0, "node": "node-b"})
    assert pool_jobs(env) == []
    # their token Secrets went with them (owned by their Jobs)
    assert [s for s in env.cluster.objects("secrets", env.namespace) if s["metadata"]["name"].startswith(
        "podium-warm-")] == []


def test_warm_pool_waiter_refuses_an_assignment_without_its_token(env: Env) -> None:
    """Whoever reaches a warm pod without its token (content, were a NetworkPolicy
    missing) cannot hand it a job: refused, and the pod stays claimable."""
    bundle, home = make_bundle(env.data, "content-d", "hello from d")

    async def scenario(backend: KubernetesBackend) -> None:
        name = (await warm_ready(backend, IMAGE, 1))[0]
        assert backend.pool is not None
        job = next(job for job in backend.pool.unclaimed(IMAGE) if job["metadata"]["name"] == name)
        pod = backend.pool.ready_pod(job)
        assert pod is not None
        ip, port = pod["status"]["podIP"], control_port(backend.config)
        job_body = json.dumps({"key": "x", "command": ["/bin/sh", "-c", "sleep 60"], "env": {}, "workdir": "/tmp",
                               "paths": []}).encode()
        for token in ("", "0" * 64, pod_token(b"another key" * 3, name, job["metadata"]["uid"])):
            while True:
                try:
                    line = await asyncio.to_thread(push_assignment, ip, port, token, job_body, ())
                    break
                except ConnectionRefusedError:  # its container runs; the waiter listens a moment later
                    await asyncio.sleep(0.05)
            assert line.split()[1] == b"403", line
        handle = await backend.launch(run_spec("run-d-1", "content-d", bundle, home, resources=DEFAULT))
        assert handle.data["name"] == name
        assert (await answer(backend, handle))["file"] == "hello from d"

    env.run(scenario)
