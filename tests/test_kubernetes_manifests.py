"""Job manifests: golden dicts, and strict validation against real Kubernetes schemas."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from podium.runtime import JobKind, JobSpec, Resources, VolumeMount
from podium.runtime.kubernetes.manifests import (
    KubernetesJobConfig,
    cpu_quantity,
    job_manifest,
    job_name,
    merge_patch,
)

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
                    "serviceAccountName": "reports",
                    "automountServiceAccountToken": True,
                    "volumes": [
                        {"name": "podium-data", "persistentVolumeClaim": {"claimName": "podium-data"}}
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
                        "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
                        "readinessProbe": {
                            "tcpSocket": {"port": 8000}, "periodSeconds": 1, "failureThreshold": 3,
                        },
                        "resources": {
                            "requests": {"cpu": "250m", "memory": "268435456"},
                            "limits": {"cpu": "2", "memory": "536870912"},
                        },
                        "volumeMounts": [{"name": "podium-data", "mountPath": "/var/lib/podium"}],
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
    assert "volumes" not in pod
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


def test_job_manifest_default_service_account_applies_when_spec_has_none() -> None:
    pod = job_manifest(spec("render"), FULL)["spec"]["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == ("podium-content", True)
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "podium-data", "mountPath": "/var/lib/podium", "subPath": "data"}


def test_job_manifest_template_patch_merges_dicts_and_appends_lists() -> None:
    manifest = job_manifest(spec(), FULL)
    assert manifest["metadata"]["annotations"] == {"example.com/team": "data"}
    assert manifest["metadata"]["name"] == "run-42-1"  # untouched by the patch
    assert manifest["spec"]["activeDeadlineSeconds"] == 86400
    pod = manifest["spec"]["template"]["spec"]
    assert [volume["name"] for volume in pod["volumes"]] == ["podium-data", "shared"]
    assert pod["nodeSelector"] == {"pool": "content"}
    assert pod["restartPolicy"] == "Never"
    assert FULL.job_template_patch == PATCH  # the builder never mutates its inputs


def test_merge_patch_rules() -> None:
    assert merge_patch({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2], "e": 3}, "d": None}) == {
        "a": {"b": 1, "c": [1, 2], "e": 3}
    }


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
}


def test_job_manifest_mounts_the_environments_volumes_beside_the_data_dir() -> None:
    job_spec, config = VARIANTS["run-environment-volumes"]
    pod = job_manifest(job_spec, config)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["podium-data", "environment-0", "environment-1"]
    assert pod["volumes"][1]["nfs"] == {"server": "nfs.example", "path": "/exports/data", "readOnly": True}
    assert pod["volumes"][2]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": False}
    mounts = pod["containers"][0]["volumeMounts"]
    assert [(m["name"], m["mountPath"], m.get("readOnly")) for m in mounts[1:]] == [
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
