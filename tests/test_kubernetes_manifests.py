"""Job manifests: golden dicts, and strict validation against real Kubernetes schemas."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from k8s_sim.podsecurity import restricted_violations
from podium.runtime import JobKind, JobSpec, Placement, Resources, VolumeMount
from podium.runtime.base import Sandbox
from podium.runtime.kubernetes.manifests import (
    KubernetesJobConfig,
    content_secret_manifest,
    cpu_quantity,
    job_manifest,
    job_name,
    job_secret_values,
)
from podium.runtime.kubernetes.patch import merge_patch

GUID = "0b6e8e6c-5f0d-4c4e-9a53-7a0b1c2d3e4f"
# 1.29 and 1.33 as the issue asks, and the newest schema the installed package ships.
SCHEMA_VERSIONS = ["1.29.0", "1.33.0", latest_version()]
PATCH = {
    "metadata": {"annotations": {"example.com/team": "data"}},
    "spec": {
        "activeDeadlineSeconds": 86400,
        "template": {
            "spec": {
                "nodeSelector": {"pool": "content"},
                "tolerations": [{"key": "content", "operator": "Exists", "effect": "NoSchedule"}],
                "volumes": [{"name": "shared", "configMap": {"name": "shared"}}],
            }
        },
    },
}
FULL = KubernetesJobConfig(
    namespace="podium",
    data_pvc="podium-data",
    data_sub_path="data",
    image_pull_secrets=("registry",),
    default_service_account="podium-content",
    job_template_patch=PATCH,
)


# What a run job may see (podium.isolation): its bundle, its environment, the runner,
# an interpreter in the image (not mounted), its own home (writable).
SANDBOX = Sandbox(
    10001, 10001,
    read_only=("/var/lib/podium/apps/1/2", "/var/lib/podium/envs/abc", "/var/lib/podium/runtime", "/opt/python"),
    writable=("/var/lib/podium/home/" + GUID,),
)


NO_SHARED = KubernetesJobConfig(namespace="podium", data_pvc="podium-data", shared_volume=False,
                                transfer_url="http://podium.podium.svc/")
RENDER_SANDBOX = Sandbox(
    10001, 10001, read_only=("/var/lib/podium/apps/1/2", "/var/lib/podium/envs/abc"),
    writable=("/var/lib/podium/output/1/7", "/var/lib/podium/home/" + GUID),
)


def spec(kind: JobKind = "run", **changes: Any) -> JobSpec:
    values: dict[str, Any] = {
        "key": "run-42-1",
        "kind": kind,
        "content_guid": GUID,
        "image": "ghcr.io/example/python:3.12",
        "command": ["/var/lib/podium/envs/abc/bin/python", "-m", "podium.runner"],
        "env": {"B": "2", "A": "1"},
        "workdir": "/var/lib/podium/apps/1/2",
        "port": None if kind != "run" else 8000,
        "sandbox": SANDBOX,
    }
    values.update(changes)
    return JobSpec(**values)


def test_job_manifest_run_golden() -> None:
    manifest = job_manifest(
        spec(resources=Resources(0.25, 2, 256 * 2**20, 512 * 2**20), service_account="reports"),
        KubernetesJobConfig(namespace="podium", data_pvc="podium-data"),
    )
    labels = {
        "app.kubernetes.io/managed-by": "podium",
        "app.kubernetes.io/instance": "podium",
        "podium.dev/content-guid": GUID,
        "podium.dev/job-key": "run-42-1",
        "podium.dev/job-kind": "run",
    }
    assert manifest == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "run-42-1", "namespace": "podium", "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "serviceAccountName": "reports",
                    "automountServiceAccountToken": True,
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": str(2**30)}},
                        {"name": "podium-data", "persistentVolumeClaim": {"claimName": "podium-data"}},
                    ],
                    "containers": [{
                        "name": "job",
                        "image": "ghcr.io/example/python:3.12",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/var/lib/podium/envs/abc/bin/python", "-m", "podium.runner"],
                        "workingDir": "/var/lib/podium/apps/1/2",
                        "env": [
                            {"name": "A", "value": "1"},
                            {"name": "B", "value": "2"},
                            {"name": "PORT", "value": "8000"},
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        ],
                        "securityContext": {
                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                        },
                        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                        "readinessProbe": {
                            "tcpSocket": {"port": 8000}, "periodSeconds": 1, "failureThreshold": 3,
                        },
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "268435456"},
                            "limits": {"cpu": "2", "memory": "536870912"},
                        },
                        # one mount per path the job may see, never the data dir whole
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "podium-data", "mountPath": "/var/lib/podium/apps/1/2",
                             "subPath": "apps/1/2", "readOnly": True},
                            {"name": "podium-data", "mountPath": "/var/lib/podium/envs/abc",
                             "subPath": "envs/abc", "readOnly": True},
                            {"name": "podium-data", "mountPath": f"/var/lib/podium/home/{GUID}",
                             "subPath": f"home/{GUID}", "readOnly": False},
                            {"name": "podium-data", "mountPath": "/var/lib/podium/runtime",
                             "subPath": "runtime", "readOnly": True},
                        ],
                    }],
                },
            },
        },
    }


def test_job_manifest_build_without_service_account_mounts_no_token() -> None:
    manifest = job_manifest(spec("build", key="build-7", image=None), KubernetesJobConfig())
    pod = manifest["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]  # no data PVC configured
    container = pod["containers"][0]
    assert container["image"] == KubernetesJobConfig().default_image
    assert "ports" not in container and "readinessProbe" not in container
    assert "resources" not in container
    assert [item["name"] for item in container["env"]] == ["A", "B", "POD_IP"]
    assert manifest["metadata"]["labels"]["podium.dev/job-kind"] == "build"


def test_job_manifest_local_environment_runs_in_the_default_image() -> None:
    from podium.environments.host import LOCAL_NAME

    config = KubernetesJobConfig(default_image="registry.example/podium:1")
    image = job_manifest(spec("build", key="build-8", image=LOCAL_NAME), config)["spec"]["template"]["spec"][
        "containers"][0]["image"]
    assert image == "registry.example/podium:1"
    other = job_manifest(spec("build", key="build-9", image="python:3.12"), config)
    assert other["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.12"


def test_job_manifest_default_service_account_applies_without_a_token() -> None:
    pod = job_manifest(spec("render"), FULL)["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("podium-content", False)
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    mount = pod["containers"][0]["volumeMounts"][1]
    assert mount == {"name": "podium-data", "mountPath": "/var/lib/podium/apps/1/2",
                     "subPath": "data/apps/1/2", "readOnly": True}


def test_job_manifest_without_a_sandbox_sees_nothing_of_the_data_volume() -> None:
    pod = job_manifest(spec(sandbox=None), FULL)["spec"]["template"]["spec"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/tmp"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the configured uid
    assert "podium-data" not in [v["name"] for v in pod["volumes"]]


def test_job_manifest_secret_values_only_in_the_contents_secret() -> None:
    job_spec = spec(secret_env={"API_TOKEN": "hunter2-value", "DB_PASSWORD": "pa55"})
    manifest = job_manifest(job_spec, FULL)
    assert "hunter2-value" not in repr(manifest) and "pa55" not in repr(manifest)
    env = {item["name"]: item for item in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["API_TOKEN"] == {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": f"podium-content-{GUID}", "key": "API_TOKEN"}}}
    secret = content_secret_manifest(GUID, job_secret_values(job_spec), FULL)
    assert secret["metadata"]["name"] == f"podium-content-{GUID}" and secret["type"] == "Opaque"
    assert secret["data"] == {"API_TOKEN": "aHVudGVyMi12YWx1ZQ==", "DB_PASSWORD": "cGE1NQ=="}
    assert secret["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "podium", "app.kubernetes.io/instance": "podium",
        "podium.dev/content-guid": GUID, "podium.dev/secret-of": "content"}
    assert "ownerReferences" not in secret["metadata"]  # it outlives jobs: deleted with the content
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)


def test_job_manifest_build_secrets_do_not_collide_with_the_contents_own() -> None:
    """A build's UV_INDEX_URL (the server's index, maybe with a password) and the
    content's own UV_INDEX_URL share one Secret under different keys."""
    build = spec("build", port=None, secret_env={"UV_INDEX_URL": "https://user:pw@index.example/simple"})
    build_env = job_manifest(build, FULL)["spec"]["template"]["spec"]["containers"][0]["env"]
    [ref] = [item["valueFrom"]["secretKeyRef"] for item in build_env if item["name"] == "UV_INDEX_URL"]
    assert ref == {"name": f"podium-content-{GUID}", "key": "build.UV_INDEX_URL"}
    assert job_secret_values(build) == {"build.UV_INDEX_URL": "https://user:pw@index.example/simple"}
    run = spec(secret_env={"UV_INDEX_URL": "https://mine.example/simple"})
    env = job_manifest(run, FULL)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [item["valueFrom"]["secretKeyRef"]["key"] for item in env if item["name"] == "UV_INDEX_URL"] \
        == ["UV_INDEX_URL"]
    assert "pw@" not in repr(job_manifest(build, FULL))


def test_job_manifest_placement_merges_server_and_job() -> None:
    server = Placement(node_selector={"pool": "content", "zone": "a"},
                       tolerations=({"key": "content", "operator": "Exists", "effect": "NoSchedule"},),
                       priority_class_name="content")
    job = Placement(node_selector={"zone": "b", "gpu": "a100"},
                    tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
                    affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]}]}}},
                    image_pull_secrets=("gpu-registry",), runtime_class_name="gvisor")
    config = KubernetesJobConfig(placement=server, image_pull_secrets=("registry",))
    pod = job_manifest(spec(placement=job, resources=Resources(nvidia_gpu_limit=2, amd_gpu_limit=1)),
                       config)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "content", "zone": "b", "gpu": "a100"}
    assert [t["key"] for t in pod["tolerations"]] == ["content", "nvidia.com/gpu"]
    assert pod["affinity"] == dict(job.affinity)
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "gpu-registry"}]
    assert (pod["priorityClassName"], pod["runtimeClassName"]) == ("content", "gvisor")
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "2", "amd.com/gpu": "1"}}


def test_job_manifest_template_patch_merges_dicts_and_named_lists() -> None:
    manifest = job_manifest(spec(), FULL)
    assert manifest["metadata"]["annotations"] == {"example.com/team": "data"}
    assert manifest["metadata"]["name"] == "run-42-1"  # untouched by the patch
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400
    pod = manifest["spec"]["template"]["spec"]
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp", "podium-data", "shared"]
    assert pod["nodeSelector"] == {"pool": "content"}
    assert pod["restartPolicy"] == "Never"
    assert FULL.job_template_patch == PATCH  # the builder never mutates its inputs


def test_job_manifest_template_patch_merges_containers_by_name() -> None:
    # Issue 17: this patch used to add a second container with no image.
    patch = {"spec": {"template": {"spec": {"containers": [{
        "name": "job", "securityContext": {"runAsUser": 2000},
        "env": [{"name": "A", "value": "patched"}, {"name": "EXTRA", "value": "x"}],
    }]}}}}
    manifest = job_manifest(spec(), KubernetesJobConfig(job_template_patch=patch))
    [container] = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "ghcr.io/example/python:3.12"
    assert container["securityContext"]["runAsUser"] == 2000
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # kept
    env = [(item["name"], item.get("value")) for item in container["env"]]
    assert env[:2] == [("A", "patched"), ("B", "2")] and env[-1] == ("EXTRA", "x")
    sidecar = {"spec": {"template": {"spec": {"initContainers": [{"name": "warm", "image": "busybox"}],
                                              "volumes": [{"name": "tmp", "$patch": "delete"}]}}}}
    pod = job_manifest(spec(), KubernetesJobConfig(job_template_patch=sidecar))["spec"]["template"]["spec"]
    assert pod["initContainers"] == [{"name": "warm", "image": "busybox"}]
    assert "tmp" not in [volume["name"] for volume in pod["volumes"]]


def test_merge_patch_rules() -> None:
    assert merge_patch({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2], "e": 3}, "d": None}) == {
        "a": {"b": 1, "c": [2], "e": 3}  # lists of scalars replace
    }
    tolerations = merge_patch({"t": [{"key": "a"}]}, {"t": [{"key": "b"}]})
    assert tolerations == {"t": [{"key": "a"}, {"key": "b"}]}  # unnamed objects are appended
    named = merge_patch([{"name": "x", "v": 1}], [{"name": "x", "w": 2}, {"name": "y"}])
    assert named == [{"name": "x", "v": 1, "w": 2}, {"name": "y"}]
    assert merge_patch([{"name": "x"}], [{"name": "x", "$patch": "delete"}]) == []


def test_job_name_keeps_dns_labels_and_hashes_others() -> None:
    assert job_name("run-1") == "run-1"
    odd = job_name("Build_1.x")
    assert odd.startswith("build-1-x-") and len(odd) == len("build-1-x-") + 8
    assert job_name("Build_1.x") != job_name("build_1.x")
    assert len(job_name("A" * 63)) <= 63


@pytest.mark.parametrize(("cores", "quantity"), [(1, "1"), (0.5, "500m"), (2.0, "2"), (0.001, "1m")])
def test_cpu_quantity(cores: float, quantity: str) -> None:
    assert cpu_quantity(cores) == quantity


VARIANTS = {
    "build": (spec("build", port=None), KubernetesJobConfig()),
    "render": (spec("render", port=None, service_account="reports"), KubernetesJobConfig()),
    "run": (spec(), KubernetesJobConfig(data_pvc="podium-data")),
    "run-limits-patch-sa": (
        spec(resources=Resources(0.5, 1.5, 2**28, 2**29), service_account="reports"), FULL
    ),
    "build-limits-patch": (
        spec("build", port=None, resources=Resources(None, 1, None, 2**30)), FULL
    ),
    "run-environment-volumes": (
        spec(volume_mounts=(
            VolumeMount("/mnt/shared", read_only=True, nfs_host="nfs.example", nfs_export_path="/exports/data"),
            VolumeMount("/mnt/models", pvc_name="models"),
        )),
        KubernetesJobConfig(data_pvc="podium-data"),
    ),
    "run-no-shared-volume": (spec(), NO_SHARED),
    "render-no-shared-volume": (spec("render", port=None, sandbox=RENDER_SANDBOX), NO_SHARED),
    "run-secrets-placement-gpu": (
        spec(secret_env={"TOKEN": "t"}, resources=Resources(nvidia_gpu_limit=1),
             placement=Placement(node_selector={"gpu": "yes"}, runtime_class_name="gvisor",
                                 tolerations=({"key": "gpu", "operator": "Exists"},))),
        FULL,
    ),
}


def test_job_manifest_mounts_the_environments_volumes_beside_the_data_dir() -> None:
    job_spec, config = VARIANTS["run-environment-volumes"]
    pod = job_manifest(job_spec, config)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "podium-data", "environment-0", "environment-1"]
    assert pod["volumes"][2]["nfs"] == {"server": "nfs.example", "path": "/exports/data", "readOnly": True}
    assert pod["volumes"][3]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": False}
    mounts = pod["containers"][0]["volumeMounts"]
    assert [(m["name"], m["mountPath"], m.get("readOnly")) for m in mounts[-2:]] == [
        ("environment-0", "/mnt/shared", True), ("environment-1", "/mnt/models", False)]


@pytest.mark.parametrize(("record", "error"), [
    ({"source": {"volume_type": "nfs", "nfs_host": "h"}, "target": {"path": "/x"}}, "nfs_export_path"),
    ({"source": {"volume_type": "pvc"}, "target": {"path": "/x"}}, "pvc_name"),
    ({"source": {"volume_type": "hostPath"}, "target": {"path": "/x"}}, "'nfs' or 'pvc'"),
    ({"source": {"volume_type": "pvc", "pvc_name": "c"}, "target": {"path": "relative"}}, "absolute"),
    ({"source": {"volume_type": "pvc", "pvc_name": "c"}, "target": {"path": "/x", "read_only": "yes"}}, "read_only"),
    ({"target": {"path": "/x"}}, "{source, target}"),
])
def test_volume_mount_records_are_checked(record: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        VolumeMount.from_record(record)
    assert VolumeMount.from_record(
        {"source": {"volume_type": "PVC", "pvc_name": "c"}, "target": {"path": "/x", "read_only": True}}
    ) == VolumeMount("/x", True, pvc_name="c")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_job_manifest_validates_strictly(variant: str, version: str) -> None:
    job_spec, config = VARIANTS[variant]
    kubernetes_validate.validate(job_manifest(job_spec, config), version, strict=True)


def test_schema_validation_catches_an_unknown_field() -> None:
    manifest = job_manifest(spec(), KubernetesJobConfig())
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, SCHEMA_VERSIONS[-1], strict=True)


# --- Pod Security "restricted": every generated pod passes, and each rule is checked --


@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if v != "run-environment-volumes"))
def test_job_manifest_passes_pod_security_restricted(variant: str) -> None:
    job_spec, config = VARIANTS[variant]
    assert restricted_violations(job_manifest(job_spec, config)["spec"]["template"]["spec"]) == []


def test_job_manifest_nfs_environment_volume_is_not_restricted() -> None:
    # "restricted" allows no nfs volumes: such an environment needs a baseline namespace.
    job_spec, config = VARIANTS["run-environment-volumes"]
    found = restricted_violations(job_manifest(job_spec, config)["spec"]["template"]["spec"])
    assert found == ["restricted volume types (volumes: environment-0)"]


BREAKS = {  # one change per rule of the profile, each of which must be caught
    "privileged": lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
    "host namespaces": lambda pod: pod.update(hostNetwork=True),
    "hostPort": lambda pod: pod["containers"][0]["ports"][0].update(hostPort=8000),
    "hostPath volumes": lambda pod: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
    "capabilities": lambda pod: pod["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    "appArmor": lambda pod: pod["securityContext"].update(appArmorProfile={"type": "Unconfined"}),
    "seLinuxOptions": lambda pod: pod["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
    "procMount": lambda pod: pod["containers"][0]["securityContext"].update(procMount="Unmasked"),
    "seccompProfile": lambda pod: pod["securityContext"].pop("seccompProfile"),
    "sysctls": lambda pod: pod["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "restricted volume types": lambda pod: pod["volumes"].append({"name": "n", "nfs": {"server": "s", "path": "/"}}),
    "allowPrivilegeEscalation": lambda pod: pod["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
    "runAsNonRoot": lambda pod: (pod["securityContext"].pop("runAsNonRoot"),
                                 pod["containers"][0]["securityContext"].pop("runAsNonRoot")),
    "runAsUser=0": lambda pod: pod["securityContext"].update(runAsUser=0),
    "hostProcess": lambda pod: pod["securityContext"].update(windowsOptions={"hostProcess": True}),
}


def test_pod_security_rules_are_all_covered() -> None:
    from k8s_sim.podsecurity import RULES

    assert set(BREAKS) == set(RULES)


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_pod_security_restricted_rule_is_checked(rule: str) -> None:
    import copy

    pod = copy.deepcopy(job_manifest(spec(), FULL)["spec"]["template"]["spec"])
    assert restricted_violations(pod) == []
    BREAKS[rule](pod)
    assert restricted_violations(pod), f"breaking {rule!r} went unnoticed"


def test_job_manifest_without_a_shared_volume_fetches_its_files_in_an_init_container() -> None:
    pod = job_manifest(spec(secret_env={"API_TOKEN": "t"}), NO_SHARED)["spec"]["template"]["spec"]
    assert "podium-data" not in repr(pod)  # no claim, no mount of the data volume
    assert {"name": "podium-files", "emptyDir": {}} in pod["volumes"]
    [init] = pod["initContainers"]
    assert init["name"] == "fetch" and init["command"][:2] == ["python3", "-c"] and init["command"][-1] == "fetch"
    assert init["securityContext"] == pod["containers"][0]["securityContext"]  # restricted too
    init_env = {item["name"]: item for item in init["env"]}
    assert init_env["PODIUM_TRANSFER_URL"]["value"] == "http://podium.podium.svc/"
    assert init_env["PODIUM_TRANSFER_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"podium-content-{GUID}", "key": "transfer.run-42-1.fetch"}  # the token: a Secret's
    data_paths = sorted(p for p in (*SANDBOX.read_only, *SANDBOX.writable) if p.startswith("/var/lib/podium/"))
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "podium-files"]
    assert [m["mountPath"] for m in mounts] == data_paths
    assert [m["subPath"] for m in mounts] == [str(i) for i in range(len(data_paths))]
    assert [m["readOnly"] for m in mounts] == [not p.startswith("/var/lib/podium/home/") for p in data_paths]
    assert pod["containers"][0]["command"] == spec().command  # a run job uploads nothing


def test_job_manifest_without_a_shared_volume_uploads_a_renders_output() -> None:
    container = job_manifest(spec("render", port=None, sandbox=RENDER_SANDBOX), NO_SHARED)[
        "spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "-c"] and container["command"][4:] == spec().command
    env = {item["name"]: item for item in container["env"]}
    uploads = sorted(p for p in RENDER_SANDBOX.writable)
    assert [env[f"PODIUM_UPLOAD_{i}_PATH"]["value"] for i in range(2)] == uploads
    assert env["PODIUM_UPLOAD_1_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "transfer.run-42-1.upload-1"


def test_job_manifest_without_a_shared_volume_never_uploads_scratch_folders() -> None:
    cache = "/var/lib/podium/cache"
    build = spec("build", port=None, sandbox=Sandbox(10001, 10001, read_only=("/var/lib/podium/apps/1/2",),
                                                     writable=("/var/lib/podium/envs/.abc.build-1", cache)))
    config = KubernetesJobConfig(shared_volume=False, transfer_url="http://podium/", transfer_scratch=(cache,))
    container = job_manifest(build, config)["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["PODIUM_UPLOAD_0_PATH"] == "/var/lib/podium/envs/.abc.build-1" and "PODIUM_UPLOAD_1_PATH" not in env
    assert cache in [m["mountPath"] for m in container["volumeMounts"]]  # there, empty, writable
