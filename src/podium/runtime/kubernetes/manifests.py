"""Pure builders of the Kubernetes objects Podium creates: one ``batch/v1`` Job per job.

Nothing here talks to a cluster; :func:`job_manifest` turns a :class:`JobSpec` and a
:class:`KubernetesJobConfig` into a plain dict, tested as expected dicts and validated
against the real OpenAPI schemas (``tests/test_kubernetes_manifests.py``).

Rules (DESIGN.md, "Kubernetes backend"):

- ``backoffLimit: 0`` and ``restartPolicy: Never``: Podium's scheduler decides about
  restarts, not the Job controller.
- ``serviceAccountName`` is the job's service account (already resolved by
  :mod:`podium.resources`), else the configured default; the API token is mounted only
  when one is named, so content without one cannot talk to the API server.
- The data directory is a PVC mounted at the same path in every job, so paths in the
  command (bundle, package environment) are the server's paths.
- Run jobs listen on ``$PORT`` at ``$POD_IP`` (downward API) and carry a TCP readiness
  probe on that port; the scheduler still judges HTTP readiness itself.
- The administrator's template patch is merged last: dicts merge, lists are appended.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podium.runtime.base import JobSpec, Resources

# The host environment's name (podium.environments.host.LOCAL_NAME), which is no image.
LOCAL_ENVIRONMENT = "Local"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_CONTENT = "podium.dev/content-guid"
LABEL_KEY = "podium.dev/job-key"
LABEL_KIND = "podium.dev/job-kind"
CONTAINER = "job"
DATA_VOLUME = "podium-data"
DEFAULT_RUN_PORT = 8080

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class KubernetesJobConfig:
    """The settings that shape every generated Job (see ``podium.settings``, [kubernetes])."""

    namespace: str = "default"
    instance: str = "podium"  # several Podium servers may share a namespace
    default_image: str = "ghcr.io/podium/runtime:latest"  # for jobs whose spec has none
    data_pvc: str | None = None  # claim holding the data dir; None mounts nothing
    data_sub_path: str = ""
    data_mount_path: str = "/var/lib/podium"
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    ttl_seconds_after_finished: int | None = 3600
    default_service_account: str | None = None
    run_port: int = DEFAULT_RUN_PORT
    job_template_patch: Mapping[str, Any] = field(default_factory=dict, hash=False)


def job_name(key: str) -> str:
    """The Job's name for a job key: the key itself when it is a DNS-1123 label (as the
    scheduler's and builder's keys are), else a lower-cased form with a hash suffix so that
    keys differing only in case or punctuation never share a name."""
    if _DNS_LABEL.fullmatch(key):
        return key
    base = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")[:54].rstrip("-") or "job"
    return f"{base}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def selector_labels(config: KubernetesJobConfig) -> dict[str, str]:
    """Labels every Podium object of this server carries; the watch selects on them."""
    return {LABEL_MANAGED_BY: "podium", LABEL_INSTANCE: config.instance}


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{name}={value}" for name, value in labels.items())


def job_labels(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, str]:
    return {
        **selector_labels(config),
        LABEL_CONTENT: spec.content_guid,
        LABEL_KEY: spec.key,
        LABEL_KIND: spec.kind,
    }


def cpu_quantity(cores: float) -> str:
    """Cores as a Kubernetes quantity: whole cores plain (``"2"``), else millicores."""
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """``requests``/``limits`` with memory in bytes and CPU in cores; unset values omitted."""
    out: dict[str, dict[str, str]] = {}
    for group, cpu, memory in (
        ("requests", resources.cpu_request, resources.memory_request),
        ("limits", resources.cpu_limit, resources.memory_limit),
    ):
        values: dict[str, str] = {}
        if cpu:
            values["cpu"] = cpu_quantity(cpu)
        if memory:
            values["memory"] = str(int(memory))
        if values:
            out[group] = values
    return out


def run_port(spec: JobSpec, config: KubernetesJobConfig) -> int:
    return spec.port or config.run_port


def merge_patch(base: Any, patch: Any) -> Any:
    """Strategic-ish merge: dicts merge key by key, lists are appended, scalars replace.

    ``None`` in the patch removes a key, as in a JSON merge patch."""
    if isinstance(base, dict) and isinstance(patch, Mapping):
        merged = dict(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge_patch(merged[name], value)
            else:
                merged[name] = _copy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        return [*base, *(_copy(item) for item in patch)]
    return _copy(patch)


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _copy(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _env(spec: JobSpec, config: KubernetesJobConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in sorted(spec.env.items())
        if name not in ("PORT", "POD_IP")
    ]
    if spec.kind == "run":
        env.append({"name": "PORT", "value": str(run_port(spec, config))})
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return env


def job_image(image: str | None, config: KubernetesJobConfig) -> str:
    """The container image of a job in execution environment image ``image``.

    The host's ``Local`` environment names no real image: its jobs run in
    ``default_image`` (Podium's own image in the shipped manifests, so the
    interpreters ``Local`` lists are the ones the pod has).
    """
    return image if image and image != LOCAL_ENVIRONMENT else config.default_image


def job_manifest(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    """The ``batch/v1`` Job running ``spec`` under ``config``."""
    labels = job_labels(spec, config)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": job_image(spec.image, config),
        "imagePullPolicy": config.image_pull_policy,
        "command": list(spec.command),
        "workingDir": spec.workdir,
        "env": _env(spec, config),
    }
    if spec.kind == "run":
        port = run_port(spec, config)
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        container["readinessProbe"] = {
            "tcpSocket": {"port": port},
            "periodSeconds": 1,
            "failureThreshold": 3,
        }
    requirements = resource_requirements(spec.resources)
    if requirements:
        container["resources"] = requirements
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "enableServiceLinks": False}
    account = spec.service_account or config.default_service_account
    if account:
        pod_spec["serviceAccountName"] = account
    pod_spec["automountServiceAccountToken"] = bool(account)
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if config.data_pvc:
        mount: dict[str, Any] = {"name": DATA_VOLUME, "mountPath": config.data_mount_path}
        if config.data_sub_path:
            mount["subPath"] = config.data_sub_path
        mounts.append(mount)
        volumes.append({"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": config.data_pvc}})
    for index, wanted in enumerate(spec.volume_mounts):
        name = f"environment-{index}"
        mounts.append({"name": name, "mountPath": wanted.path, "readOnly": wanted.read_only})
        if wanted.pvc_name is not None:
            volumes.append({"name": name, "persistentVolumeClaim": {
                "claimName": wanted.pvc_name, "readOnly": wanted.read_only}})
        else:
            volumes.append({"name": name, "nfs": {
                "server": wanted.nfs_host, "path": wanted.nfs_export_path, "readOnly": wanted.read_only}})
    if mounts:
        container["volumeMounts"] = mounts
        pod_spec["volumes"] = volumes
    pod_spec["containers"] = [container]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if config.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(spec.key), "namespace": config.namespace, "labels": labels},
        "spec": job_spec,
    }
    if config.job_template_patch:
        manifest = merge_patch(manifest, config.job_template_patch)
    return manifest
