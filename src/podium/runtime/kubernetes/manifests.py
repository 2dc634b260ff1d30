"""Pure builders of the Kubernetes objects Podium creates: one ``batch/v1`` Job per job,
and one ``v1`` Secret per job that has secret variables.

Nothing here talks to a cluster; :func:`job_manifest` turns a :class:`JobSpec` and a
:class:`KubernetesJobConfig` into a plain dict, tested as expected dicts and validated
against the real OpenAPI schemas (``tests/test_kubernetes_manifests.py``).

Rules (DESIGN.md, "Kubernetes backend"; issue 17):

- ``backoffLimit: 0`` and ``restartPolicy: Never``: Podium's scheduler decides about
  restarts, not the Job controller.
- **A pod sees only its own files.** The job's :class:`~podium.runtime.base.Sandbox`
  lists what it may see: each listed path inside the data directory is mounted on its
  own from the data PVC (``subPath``), read-only or writable as listed; paths outside
  it come from the image. A job without a sandbox gets nothing of the data volume.
  ``/tmp`` is an ``emptyDir``; the root file system is read-only.
- **Pod Security "restricted"**: non-root uid/gid (the sandbox's, else the configured
  ones), no privilege escalation, every capability dropped, ``RuntimeDefault`` seccomp.
  https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
- ``serviceAccountName`` is the job's service account (already resolved by
  :mod:`podium.resources`), else the configured default; the API token is mounted only
  when the job names one, so content without one cannot talk to the API server.
- **Secret values never appear in the Job**: ``secret_env`` goes into the content's
  own Secret (:func:`content_secret_manifest`, one per content item, kept up to date
  by the backend) and the container refers to its keys (``secretKeyRef``).
- Placement (node selector, tolerations, affinity, pull secrets, priority and runtime
  class) is the server's, overridden and extended by the job's own; GPU limits are
  ``nvidia.com/gpu`` and ``amd.com/gpu``.
- Run jobs listen on ``$PORT`` at ``$POD_IP`` (downward API) and carry a TCP readiness
  probe on that port; the scheduler still judges HTTP readiness itself.
- The administrator's template patch is merged last (:mod:`.patch`: containers and
  other named lists merge by name).
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podium.runtime.base import JobSpec, Placement, Resources
from podium.runtime.kubernetes.patch import merge_patch
from podium.runtime.transfer import POD_SCRIPT

# The host environment's name (podium.environments.host.LOCAL_NAME), which is no image.
LOCAL_ENVIRONMENT = "Local"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_CONTENT = "podium.dev/content-guid"
LABEL_KEY = "podium.dev/job-key"
LABEL_KIND = "podium.dev/job-kind"
LABEL_NODE = "podium.dev/node"  # the server node that launched the job (settings.node_id)
LABEL_SECRET_OF = "podium.dev/secret-of"
CONTAINER = "job"
FETCH_CONTAINER = "fetch"
DATA_VOLUME = "podium-data"
FILES_VOLUME = "podium-files"
FILES_DIR = "/podium-files"  # where the init container unpacks the job's files
TMP_VOLUME = "tmp"
DEFAULT_RUN_PORT = 8080
GPU_RESOURCES = (("nvidia_gpu_limit", "nvidia.com/gpu"), ("amd_gpu_limit", "amd.com/gpu"))

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
    # who a job without a sandbox runs as (a sandbox names its own uid/gid); never root
    run_as_user: int = 10001
    run_as_group: int = 10001
    read_only_root_filesystem: bool = True
    tmp_size_limit_bytes: int | None = 1024**3
    placement: Placement = Placement()  # the server's; a job's own adds to it
    # False: no pod mounts the data volume; an init container fetches the job's files
    # from Podium at transfer_url (podium.runtime.transfer) into an emptyDir
    shared_volume: bool = True
    transfer_url: str = ""
    transfer_token_ttl_seconds: float = 900.0  # fetch: covers scheduling and image pulls
    transfer_upload_ttl_seconds: float = 86400.0  # upload: covers the job's whole run
    # this server node: labels its Jobs, so each replica lists only its own (None: no label)
    node: str | None = None
    # data paths a pod gets as empty folders, never fetched nor uploaded (uv's cache)
    transfer_scratch: tuple[str, ...] = ()
    # warm pool (.warmpool): ready pods per image (0: off), the shape they are made in
    # (the server's default resources), and the key their tokens are derived from
    warm_pool_size: int = 0
    warm_pool_resources: Resources = Resources()
    warm_pool_key: bytes = field(default=b"", repr=False)


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
    labels = {
        **selector_labels(config),
        LABEL_CONTENT: spec.content_guid,
        LABEL_KEY: spec.key,
        LABEL_KIND: spec.kind,
    }
    if config.node:
        labels[LABEL_NODE] = config.node
    return labels


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




def content_secret_name(content_guid: str) -> str:
    """The Secret holding a content item's secret variables (one per content item)."""
    guid = content_guid.lower()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?", guid):  # not a plain guid: a stable hash
        guid = hashlib.sha256(content_guid.encode()).hexdigest()[:32]
    return f"podium-content-{guid}"


def secret_key(kind: str, name: str) -> str:
    """The key of variable ``name`` of a ``kind`` job in its content's Secret. A build's
    variables are the server's (proxies, uv's index) and may share a name with one of
    the content's own (``UV_INDEX_URL``): they live under ``build.``, which no content
    variable name can start with (letters, digits and ``_`` only)."""
    return f"build.{name}" if kind == "build" else name


def content_secret_labels(content_guid: str, config: KubernetesJobConfig) -> dict[str, str]:
    return {**selector_labels(config), LABEL_CONTENT: content_guid, LABEL_SECRET_OF: "content"}


def secret_data(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """Secret ``data`` (base64) for a merge patch; ``None`` removes a key."""
    return {key: None if value is None else base64.b64encode(value.encode()).decode()
            for key, value in sorted(values.items())}


def content_secret_manifest(
    content_guid: str, values: Mapping[str, str], config: KubernetesJobConfig
) -> dict[str, Any]:
    """The ``v1`` Secret of a content item with ``values`` (keys from :func:`secret_key`).

    It has no owner: it outlives every job of the content, is updated by the backend
    when the content's variables change or a job needs one, and deleted with the
    content (:meth:`~.backend.KubernetesBackend.forget_content`). Its labels name the
    server and the content, so ``kubectl get secrets -l podium.dev/content-guid=...``
    finds it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": content_secret_name(content_guid), "namespace": config.namespace,
            "labels": content_secret_labels(content_guid, config),
        },
        "type": "Opaque",
        "data": {key: value for key, value in secret_data(values).items() if value is not None},
    }


def job_secret_values(spec: JobSpec) -> dict[str, str]:
    """What ``spec`` needs in its content's Secret, under the keys it refers to."""
    return {secret_key(spec.kind, name): value for name, value in spec.secret_env.items()}


def _env(spec: JobSpec, config: KubernetesJobConfig) -> list[dict[str, Any]]:
    reserved = ("PORT", "POD_IP")
    env: list[dict[str, Any]] = [
        {"name": name, "value": value} for name, value in sorted(spec.env.items()) if name not in reserved
    ]
    env += [
        {"name": name, "valueFrom": {"secretKeyRef": {
            "name": content_secret_name(spec.content_guid), "key": secret_key(spec.kind, name)}}}
        for name in sorted(spec.secret_env) if name not in reserved
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


def _below(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def data_paths(spec: JobSpec, config: KubernetesJobConfig) -> list[tuple[str, bool]]:
    """The sandbox's paths inside the data directory, as (path, read-only), sorted; the
    rest (interpreters) come from the image, and the data dir whole never."""
    if spec.sandbox is None:
        return []
    root = posixpath.normpath(config.data_mount_path)
    wanted = [(path, True) for path in spec.sandbox.read_only] + [(path, False) for path in spec.sandbox.writable]
    return [(path, read_only) for path, read_only in sorted(wanted) if _below(path, root) and path != root]


def data_mounts(spec: JobSpec, config: KubernetesJobConfig) -> list[dict[str, Any]]:
    """One mount of the data PVC per sandbox path inside the data directory, at the
    same path, read-only unless the sandbox lists it as writable."""
    if not config.data_pvc or not config.shared_volume:
        return []
    root = posixpath.normpath(config.data_mount_path)
    mounts = []
    for path, read_only in data_paths(spec, config):
        sub = posixpath.join(config.data_sub_path, posixpath.relpath(path, root)) if config.data_sub_path \
            else posixpath.relpath(path, root)
        mounts.append({"name": DATA_VOLUME, "mountPath": path, "subPath": sub, "readOnly": read_only})
    return mounts


def transfers(spec: JobSpec, config: KubernetesJobConfig) -> tuple[list[tuple[str, bool]], list[str]]:
    """Without a shared volume: the paths the job's pod gets in its ``emptyDir`` (all its
    data paths), and those its container uploads once its command succeeded (the
    writable ones of builds and renders; a run job's home stays in its pod). Scratch
    paths (``transfer_scratch``: uv's cache) are neither fetched nor uploaded."""
    if config.shared_volume or spec.sandbox is None:
        return [], []
    paths = data_paths(spec, config)
    uploads = [path for path, read_only in paths if not read_only and not scratch(path, config)] \
        if spec.kind != "run" else []
    return paths, uploads


def scratch(path: str, config: KubernetesJobConfig) -> bool:
    return any(_below(path, posixpath.normpath(folder)) for folder in config.transfer_scratch)


def fetch_token_key(spec: JobSpec) -> str:
    """The key of a job's fetch token in its content's Secret."""
    return f"transfer.{job_name(spec.key)}.fetch"


def upload_token_key(spec: JobSpec, index: int) -> str:
    return f"transfer.{job_name(spec.key)}.upload-{index}"


def _token_ref(spec: JobSpec, name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": content_secret_name(spec.content_guid), "key": key}}}


def _fetching(spec: JobSpec, config: KubernetesJobConfig, container: dict[str, Any], pod_spec: dict[str, Any],
              security: dict[str, Any]) -> None:
    """Give the pod its files through an init container and an ``emptyDir`` (no shared
    volume), and make the container upload its writable folders once its command
    succeeded (:mod:`podium.runtime.transfer`)."""
    paths, uploads = transfers(spec, config)
    if not paths:
        return
    url = {"name": "PODIUM_TRANSFER_URL", "value": config.transfer_url}
    pod_spec["initContainers"] = [{
        "name": FETCH_CONTAINER,
        "image": config.default_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python3", "-c", POD_SCRIPT, "fetch"],
        "env": [url, {"name": "PODIUM_TRANSFER_DIR", "value": FILES_DIR},
                _token_ref(spec, "PODIUM_TRANSFER_TOKEN", fetch_token_key(spec))],
        "volumeMounts": [{"name": FILES_VOLUME, "mountPath": FILES_DIR}, {"name": TMP_VOLUME, "mountPath": "/tmp"}],
        "securityContext": dict(security),
    }]
    container["volumeMounts"] += [
        {"name": FILES_VOLUME, "mountPath": path, "subPath": str(index), "readOnly": read_only}
        for index, (path, read_only) in enumerate(paths)
    ]
    pod_spec["volumes"].append({"name": FILES_VOLUME, "emptyDir": {}})
    if uploads:
        container["command"] = ["/bin/sh", "-c", '"$@" && exec python3 -c "$PODIUM_TRANSFER_SCRIPT" upload',
                                "podium-job", *container["command"]]
        container["env"] += [url, {"name": "PODIUM_TRANSFER_SCRIPT", "value": POD_SCRIPT}]
        for index, path in enumerate(uploads):
            container["env"] += [{"name": f"PODIUM_UPLOAD_{index}_PATH", "value": path},
                                 _token_ref(spec, f"PODIUM_UPLOAD_{index}_TOKEN", upload_token_key(spec, index))]


def resource_limits(resources: Resources) -> dict[str, dict[str, str]]:
    """CPU and memory requests/limits, and the GPU limits (whole devices)."""
    out = resource_requirements(resources)
    for field_name, resource in GPU_RESOURCES:
        count = getattr(resources, field_name)
        if count:
            out.setdefault("limits", {})[resource] = str(int(count))
    return out


def merged_placement(server: Placement, job: Placement | None) -> Placement:
    """The server's placement with the job's own over it (:meth:`Placement.over`)."""
    return job.over(server) if job is not None else server


def server_placement(config: KubernetesJobConfig) -> Placement:
    """The server's placement, its pull secrets included."""
    return Placement(**{**_fields(config.placement), "image_pull_secrets": (
        *config.image_pull_secrets, *config.placement.image_pull_secrets)})


def placement_fields(placement: Placement) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if placement.node_selector:
        fields["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        fields["tolerations"] = [dict(t) for t in placement.tolerations]
    if placement.affinity:
        fields["affinity"] = merge_patch({}, dict(placement.affinity))
    if placement.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": name} for name in placement.image_pull_secrets]
    if placement.priority_class_name:
        fields["priorityClassName"] = placement.priority_class_name
    if placement.runtime_class_name:
        fields["runtimeClassName"] = placement.runtime_class_name
    return fields


def security_contexts(spec: JobSpec | None, config: KubernetesJobConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod's and the container's securityContext (Pod Security "restricted"); a
    warm pod (no spec yet) runs as the configured uid/gid."""
    uid, gid = (spec.sandbox.uid, spec.sandbox.gid) if spec is not None and spec.sandbox \
        else (config.run_as_user, config.run_as_group)
    pod = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
           "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                 "readOnlyRootFilesystem": config.read_only_root_filesystem, "runAsNonRoot": True}
    return pod, container


def job_manifest(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    """The ``batch/v1`` Job running ``spec`` under ``config``."""
    labels = job_labels(spec, config)
    pod_security, container_security = security_contexts(spec, config)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": job_image(spec.image, config),
        "imagePullPolicy": config.image_pull_policy,
        "command": list(spec.command),
        "workingDir": spec.workdir,
        "env": _env(spec, config),
        "securityContext": container_security,
    }
    if spec.kind == "run":
        port = run_port(spec, config)
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        container["readinessProbe"] = {
            "tcpSocket": {"port": port},
            "periodSeconds": 1,
            "failureThreshold": 3,
        }
    requirements = resource_limits(spec.resources)
    if requirements:
        container["resources"] = requirements
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "enableServiceLinks": False,
                                "securityContext": pod_security}
    account = spec.service_account or config.default_service_account
    if account:
        pod_spec["serviceAccountName"] = account
    # The token only for a service account an administrator named for this content;
    # the server's default account is for pull secrets and policies, never API access.
    pod_spec["automountServiceAccountToken"] = bool(
        spec.service_account and spec.service_account != config.default_service_account
    )
    pod_spec.update(placement_fields(merged_placement(server_placement(config), spec.placement)))
    tmp: dict[str, Any] = {"name": TMP_VOLUME, "emptyDir": {}}
    if config.tmp_size_limit_bytes:
        tmp["emptyDir"]["sizeLimit"] = str(config.tmp_size_limit_bytes)
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [tmp]
    if config.data_pvc:
        shown = data_mounts(spec, config)
        if shown:
            mounts += shown
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
    container["volumeMounts"] = mounts
    pod_spec["volumes"] = volumes
    _fetching(spec, config, container, pod_spec, container_security)
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


def _fields(placement: Placement) -> dict[str, Any]:
    return {name: getattr(placement, name) for name in (
        "node_selector", "tolerations", "affinity", "priority_class_name", "runtime_class_name")}
