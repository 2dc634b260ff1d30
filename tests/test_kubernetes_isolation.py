"""Pods on Kubernetes keep content apart (issue 17): through the simulated cluster with
the real client, a pod sees only its own mounts, secret values stay out of every stored
Job and Pod, the "restricted" Pod Security admission accepts generated pods, and
placement lands on the pod. The simulated kubelet enforces mounts with the local
bubblewrap sandbox; without one (no bwrap, not root) these tests skip, and fail in CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests import test_kubernetes_backend as base
from tests.test_kubernetes_backend import GUID, PY, SLEEP, Env, ended, pending_with, sim_only, spec

from k8s_sim import SimCluster
from podium.runtime import BackendError, JobState, JobStatus, Placement, Resources
from podium.runtime.base import Sandbox
from podium.runtime.kubernetes.backend import KubernetesBackend
from podium.runtime.transfer import TransferTokens

pytestmark = sim_only
cluster = base.cluster  # the fixtures of the backend tests, one simulated cluster per module
env = base.env
SECRET = "s3cr3t-value-that-must-not-leak"

HOSTILE = r'''
import json, os, sys
data, other, runner = sys.argv[1], sys.argv[2], sys.argv[3]
def attempt(what, action):
    try:
        action()
        return "ok"
    except OSError as error:
        return type(error).__name__
report = {
    "key": attempt("key", lambda: open(os.path.join(data, "secret.key")).read()),
    "db": attempt("db", lambda: open(os.path.join(data, "db", "podium.sqlite")).read()),
    "other": attempt("other", lambda: os.listdir(other)),
    "runner_write": attempt("runner", lambda: open(runner, "a").write("pwned")),
    "runner_read": attempt("runner", lambda: open(runner).read()),
    "bundle_write": attempt("bundle", lambda: open("app.py", "a").write("x")),
    "bundle_read": attempt("bundle", lambda: open("app.py").read()),
    "home_write": attempt("home", lambda: open(os.path.join(os.environ["HOME"], "f"), "w").write("x")),
    "tmp_write": attempt("tmp", lambda: open("/tmp/x", "w").write("x")),
    "data_listing": sorted(os.listdir(data)),
    "uid": os.getuid(),
}
print("REPORT " + json.dumps(report), flush=True)
'''


def require_enforcing(cluster: SimCluster | None) -> SimCluster:
    assert cluster is not None
    if not cluster.enforcing:
        if os.environ.get("CI"):
            pytest.fail("the simulated kubelet must enforce pod mounts in CI (root and bubblewrap)")
        pytest.skip("the simulated kubelet cannot sandbox pods here (needs root and bubblewrap)")
    return cluster


def data_dir(tmp_path: Path) -> Path:
    """A data dir as Podium lays it out, with what no pod may touch."""
    data = (tmp_path / "data").resolve()
    for folder in ("apps/1/2", "apps/2/3", "db", "runtime", "envs/abc", f"home/{GUID}"):
        (data / folder).mkdir(parents=True)
    (data / "secret.key").write_text("KEY")
    (data / "db" / "podium.sqlite").write_text("DB")
    (data / "apps/1/2/app.py").write_text("print('mine')\n")
    (data / "apps/2/3/app.py").write_text("print('theirs')\n")
    (data / "runtime/runner.py").write_text("# the runner every run job executes\n")
    os.chown(data / f"home/{GUID}", 10001, 10001)
    return data


def test_kubernetes_hostile_pod_sees_only_its_own_files(env: Env, cluster: SimCluster | None, tmp_path: Path) -> None:
    sim = require_enforcing(cluster)
    data = data_dir(tmp_path)
    claim = f"data-{env.namespace}"
    sim.add_volume(claim, data)
    bundle, runner = str(data / "apps/1/2"), str(data / "runtime/runner.py")
    sandbox = Sandbox(10001, 10001, read_only=(bundle, str(data / "envs/abc"), str(data / "runtime")),
                      writable=(str(data / f"home/{GUID}"),))
    job = spec([PY, "-c", HOSTILE, str(data), str(data / "apps/2/3"), runner], workdir=bundle,
               env={"HOME": str(data / f"home/{GUID}")}, sandbox=sandbox)

    async def scenario(backend: KubernetesBackend) -> list[str]:
        handle = await backend.launch(job)
        status = await ended(backend, handle, 20)
        assert status.state is JobState.SUCCEEDED, status
        return [line.data async for line in backend.logs(handle)]

    lines = env.run(scenario, data_pvc=claim, data_mount_path=str(data))
    [report] = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("REPORT ")]
    assert report["uid"] == 10001
    assert (report["bundle_read"], report["runner_read"], report["home_write"], report["tmp_write"]) == ("ok",) * 4
    for denied in ("key", "db", "other", "runner_write", "bundle_write"):
        assert report[denied] != "ok", (denied, report)
    assert report["data_listing"] == ["apps", "envs", "home", "runtime"]  # mount points' folders only
    assert (data / "runtime/runner.py").read_text() == "# the runner every run job executes\n"


def test_kubernetes_secret_values_live_in_one_secret_per_content_and_in_no_job_or_pod(
    env: Env, cluster: SimCluster | None
) -> None:
    sim = require_enforcing(cluster)
    show = "import hashlib, os; print('got', hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest())"
    changed = SECRET + "-changed"

    async def scenario(backend: KubernetesBackend) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in (("job-1", SECRET), ("job-2", changed)):  # the second after a change
            handle = await backend.launch(spec([PY, "-c", show], key, kind="run", secret_env={"API_TOKEN": value},
                                               env={"PLAIN": "visible"}))
            status = await ended(backend, handle)
            assert status.state is JobState.SUCCEEDED, status
            seen[key] = [line.data async for line in backend.logs(handle)]
        build = spec([PY, "-c", "import os; print('index', len(os.environ['UV_INDEX_URL']))"], "job-3",
                     secret_env={"UV_INDEX_URL": "https://u:" + SECRET + "@index.example/simple"})
        handle = await backend.launch(build)
        assert (await ended(backend, handle)).state is JobState.SUCCEEDED
        seen["secrets"] = await asyncio.to_thread(sim.objects, "secrets", env.namespace)
        await backend.update_content_secrets(GUID, {"API_TOKEN": None, "OTHER": "o"})  # removed in Podium
        seen["updated"] = await asyncio.to_thread(sim.objects, "secrets", env.namespace)
        await backend.forget_content(GUID)
        seen["forgotten"] = await asyncio.to_thread(sim.objects, "secrets", env.namespace)
        await backend.forget_content(GUID)  # idempotent
        return seen

    seen = env.run(scenario)
    for key, value in (("job-1", SECRET), ("job-2", changed)):
        assert any(f"got {hashlib.sha256(value.encode()).hexdigest()}" in line for line in seen[key]), seen[key]
    [secret] = seen["secrets"]  # one for the content, whatever number of jobs
    assert secret["metadata"]["name"] == f"podium-content-{GUID}"
    assert secret["metadata"]["labels"]["podium.dev/content-guid"] == GUID
    assert not secret["metadata"].get("ownerReferences")  # outlives its jobs
    assert sorted(secret["data"]) == ["API_TOKEN", "build.UV_INDEX_URL"]
    [updated] = seen["updated"]
    assert sorted(updated["data"]) == ["OTHER", "build.UV_INDEX_URL"]  # the removed value is gone
    assert seen["forgotten"] == []
    stored = [obj for obj in sim.history() if obj.get("kind") in ("Job", "Pod")]
    assert stored and all(SECRET not in json.dumps(obj) for obj in stored)
    assert any("visible" in json.dumps(obj) for obj in stored)  # plain values are there


def test_kubernetes_restricted_namespace_runs_generated_pods_and_refuses_a_privileged_patch(
    env: Env, cluster: SimCluster | None
) -> None:
    assert cluster is not None
    cluster.create_namespace(env.namespace, {"pod-security.kubernetes.io/enforce": "restricted"})

    async def fine(backend: KubernetesBackend) -> JobStatus:
        return await ended(backend, await backend.launch(spec([PY, "-c", "print(1)"])))

    assert env.run(fine).state is JobState.SUCCEEDED
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "job", "securityContext": {
        "allowPrivilegeEscalation": True}}]}}}}

    async def refused(backend: KubernetesBackend) -> JobStatus:
        handle = await backend.launch(spec(SLEEP, key="job-2"))
        status = await pending_with(backend, handle, {"FailedCreate"})
        await backend.stop(handle, 0)
        return status

    status = env.run(refused, job_template_patch=patch)
    assert status.message and 'violates PodSecurity "restricted:latest"' in status.message
    assert "allowPrivilegeEscalation" in status.message


def test_kubernetes_placement_and_gpus_land_on_the_pod(env: Env, cluster: SimCluster | None) -> None:
    assert cluster is not None
    name = f"gpu-{env.namespace}"
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    cluster.add_node(name, {"accelerator": "a100"}, [taint], extra={"nvidia.com/gpu": 1})
    placement = Placement(node_selector={"accelerator": "a100"},
                          tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                          priority_class_name="content", runtime_class_name="gvisor")

    async def scenario(backend: KubernetesBackend) -> tuple[dict[str, Any], JobStatus]:
        first = await backend.launch(spec(SLEEP, placement=placement, resources=Resources(nvidia_gpu_limit=1)))
        deadline = time.monotonic() + 10
        while (await backend.status(first)).state is not JobState.RUNNING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        [pod] = env.get(f"/api/v1/namespaces/{env.namespace}/pods")["items"]
        # the node has one GPU: a second job waits for it (scheduling is cumulative)
        second = await backend.launch(spec(SLEEP, key="job-2", placement=placement,
                                           resources=Resources(nvidia_gpu_limit=1)))
        waiting = await pending_with(backend, second, {"Unschedulable"})
        return pod, waiting

    try:
        pod, waiting = env.run(scenario)
    finally:
        cluster.remove_node(name)
    assert pod["spec"]["nodeName"] == name
    assert pod["spec"]["nodeSelector"] == {"accelerator": "a100"}
    assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert (pod["spec"]["priorityClassName"], pod["spec"]["runtimeClassName"]) == ("content", "gvisor")
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert waiting.message and "Insufficient nvidia.com/gpu" in waiting.message


def test_isolation_for_pods_gives_every_job_the_pod_uid_and_never_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podium.isolation import Isolation

    data = data_dir(tmp_path)
    (data / "outputs/1").mkdir(parents=True)  # the renderer makes the parents
    isolation = Isolation.for_pods(10001, 10002, data)
    assert isolation.active and isolation.problem() is None
    assert isolation.content_uid(7) == isolation.builder_uid == 10001
    box = isolation.sandbox(10001, read_only=[data, data / "apps/1/2", None], writable=[data / "outputs/1/9"])
    assert box is not None and (box.uid, box.gid) == (10001, 10002)
    assert box.read_only == (str(data / "apps/1/2"),)  # the data dir whole is never shown
    assert box.writable == (str(data / "outputs/1/9"),)
    if os.geteuid() == 0:
        assert (data / "outputs/1/9").stat().st_uid == 10001  # a root server gives it to the pods
    # A server that is not root makes the folder its own: its pods run as its uid.
    monkeypatch.setattr(isolation, "privileged", False)
    other = isolation.sandbox(10001, read_only=[], writable=[data / "outputs/1/10"])
    assert other is not None and (data / "outputs/1/10").is_dir()
    assert (data / "outputs/1/10").stat().st_uid == os.geteuid()


def test_kubernetes_no_shared_volume_needs_tokens_and_a_failed_fetch_fails_the_job(
    env: Env, cluster: SimCluster | None, tmp_path: Path
) -> None:
    sim = require_enforcing(cluster)
    data = data_dir(tmp_path)
    bundle = str(data / "apps/1/2")
    job = spec([PY, "-c", "print('never')"], workdir=bundle, sandbox=Sandbox(10001, 10001, read_only=(bundle,)))

    async def scenario(backend: KubernetesBackend) -> tuple[JobStatus, int]:
        with pytest.raises(BackendError) as caught:  # no tokens issued by this backend
            await backend.launch(job)
        assert caught.value.reason == "TransferUnavailable" and "kubernetes_transfer_url" in caught.value.message
        backend.tokens = TransferTokens(data)
        handle = await backend.launch(job)
        status = await ended(backend, handle, 15)
        return status, len(backend.tokens)

    # the transfer URL answers 404 (the simulated API server): the init container fails
    status, left = env.run(scenario, shared_volume=False, transfer_url=sim.url, data_mount_path=str(data))
    assert (status.state, status.reason) == (JobState.FAILED, "InitFailed"), status
    assert "init container fetch exited with code 1" in (status.message or "")
    assert left == 0  # the job's tokens were revoked when it ended
