"""The warm pool (``kubernetes_warm_pool_size``): pure builders and rules.

A cold start on Kubernetes costs scheduling, an image pull and the container runtime's
setup before the app's own start (Connect adds seconds to minutes copying its runtime
files into each job). With a warm pool, every image that run jobs use keeps N pods
started and waiting; the next run job in that image *claims* one, hands it its
assignment, and the pod starts the app at once: a cold start costs the app's own start
plus one hand-off. The manager is :mod:`.pool`; this module holds what is pure.

Design (issue 19, item 4):

- **What a warm pod runs while waiting**: :data:`WAITER_SCRIPT`, a small standard-
  library Python program (the images run ``python3`` already for the transfer script).
  It listens on the *control port* (:func:`control_port`) at its
  pod IP, where the server reaches pods anyway (the proxy talks to pod IPs). The one
  request it accepts is ``POST /assign`` carrying the pod's own token; the body is the
  job (command, environment with its secret variables, working directory) followed by
  a tar of the job's files, which the claiming server packs from its data directory
  (:func:`podium.runtime.transfer.pack`, the paths of the job's sandbox: what a normal
  pod would mount or fetch). The waiter unpacks them into its ``emptyDir`` at the data
  directory's path (each at its own absolute path, as a normal pod sees them), answers
  202, closes its socket and ``exec``s the command with the job's environment: the
  container's process *is* the app from then on (its log, its exit code, the
  scheduler's HTTP readiness check). One request, pushed by the node that claimed the
  pod: no token to redeem at another replica, no transfer URL needed.
- **Tokens**: each warm pod's token is an HMAC of its Job's name and uid under a key
  every server node derives from the shared secret key, so any node can claim any
  pod without reading Secrets. The pod reads it from a Secret of its own, owned by
  its Job (deleted with it); the waiter drops it from the environment the app gets,
  so content never learns a token that could hand another warm pod a job.
- **Which claims are allowed**: a pod's spec is fixed when it is created, so a pool
  holds pods of one shape: per image, with the server's *default* shape (the server
  default service account, token not mounted; the server's default resources; the
  server's placement only; no volumes of an execution environment; the configured
  uid/gid). A run job of another shape (its own service account,
  resources or GPUs, its own placement) starts as a normal Job (:func:`unclaimable`
  says why). Pools keyed by (image, service account, resources) would keep N idle
  pods per shape, most of them for one content item each, and each pool would be cold
  the first time anyway; the default shape is what most content runs with.
- **No state leaks between content items** (the hostile-publisher rule): a claim
  relabels the Job and its pod as the content's (content guid, job key, node,
  ``podium.dev/warm=claimed``) and takes the pool label away; a claimed pod is
  never returned to the pool: stopping the job deletes its Job, as for any job. Nothing of one job reaches another pod.
- **Two server nodes never claim the same pod**: a claim is a merge patch of the
  Job's labels carrying the ``metadata.resourceVersion`` the claimer saw: the API
  server applies it only to that version and answers 409 Conflict to the second
  claimer, who tries another pod (optimistic concurrency).
- **Refill and cleanup**: each node keeps, in the background, N unclaimed pods per
  pooled image (counting every node's: pools are per cluster namespace and
  instance), trimming any excess in the order of their names, so nodes agree which to
  delete; a trim or a cleanup claims the pod first, so it never deletes a pod another
  node just claimed. A node deletes its own unclaimed pods when it stops; a node
  started with the setting at 0 deletes every unclaimed pod of its instance.
- **Which images**: the default image, and every image a run job of the pool's shape
  was launched in since the server started (or that has warm pods in the cluster
  already): the first start in a new execution environment is a normal Job and fills
  the pool for the next.
- **Address**: the scheduler gives each run job its port, unknown when a warm pod is
  made: the claim records it on the Job (annotation ``podium.dev/port``), and a
  claimed pod's address is its pod IP and that port as soon as its container runs.
  Warm pods carry no readiness probe (a probe's port is fixed at creation too); the
  scheduler judges readiness by HTTP itself, so the app is used the moment it
  answers, without waiting for a kubelet's probe period (a second at least).
- **Files**: a warm pod mounts no PVC (it cannot know which content's paths to
  mount): its files always come in the hand-off, with or without a shared volume.
  They are the pod's own copy; the bundle is writable there (a normal pod mounts it
  read-only), which only the content itself can use, on a copy nobody else sees.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any

from podium.runtime.base import JobSpec, Placement
from podium.runtime.kubernetes.manifests import (
    CONTAINER,
    FILES_VOLUME,
    LABEL_KIND,
    LABEL_NODE,
    TMP_VOLUME,
    KubernetesJobConfig,
    job_image,
    placement_fields,
    resource_limits,
    security_contexts,
    selector_labels,
    server_placement,
)
from podium.runtime.kubernetes.patch import merge_patch

LABEL_POOL = "podium.dev/warm-pool"  # on unclaimed warm Jobs and pods: the pool (image hash)
LABEL_WARM = "podium.dev/warm"  # "claimed" on a claimed warm Job and its pod
ANNOTATION_PORT = "podium.dev/port"  # on a claimed warm Job: the port its app listens on
TOKEN_ENV = "PODIUM_WARM_TOKEN"
TOKEN_KEY = "token"


def pool_label(image: str) -> str:
    """The label value naming the pool of ``image`` (image names are no label values)."""
    return hashlib.sha256(image.encode()).hexdigest()[:16]


def control_port(config: KubernetesJobConfig) -> int:
    """Where a warm pod's waiter listens for its assignment (free again once the app
    runs: the app may be given the same port)."""
    return config.run_port + 1


def pod_token(key: bytes, name: str, uid: str) -> str:
    """The token of warm Job ``name``/``uid``: any node holding ``key`` computes it."""
    return hmac.new(key, f"{name}/{uid}".encode(), hashlib.sha256).hexdigest()


def unclaimable(spec: JobSpec, config: KubernetesJobConfig) -> str | None:
    """Why ``spec`` cannot run in a warm pod (``None``: it can): pods are made in the
    pool's shape before any job is known, so only a run job of that shape fits."""
    if spec.kind != "run":
        return f"a {spec.kind} job"
    if spec.service_account and spec.service_account != config.default_service_account:
        return "its own service account"
    if spec.resources != config.warm_pool_resources:
        return "resources other than the server defaults"
    if spec.placement is not None and spec.placement != Placement():
        return "a placement of its own"
    if spec.volume_mounts:
        return "volumes of its execution environment"
    if spec.sandbox is not None and (spec.sandbox.uid, spec.sandbox.gid) != (config.run_as_user, config.run_as_group):
        return "another uid"
    return None


def warm_labels(image: str, config: KubernetesJobConfig) -> dict[str, str]:
    labels = {**selector_labels(config), LABEL_KIND: "run", LABEL_POOL: pool_label(image)}
    if config.node:
        labels[LABEL_NODE] = config.node
    return labels


def warm_job_manifest(image: str, name: str, config: KubernetesJobConfig) -> dict[str, Any]:
    """The ``batch/v1`` Job of one warm pod of ``image``'s pool: the waiter, in the
    pool's shape (the server's default service account without a token, the default
    resources, the server's placement), an ``emptyDir`` at the data directory for the
    job's files, and no readiness probe: the app's port is the job's, known only at the
    claim (the scheduler judges the app's readiness by HTTP)."""
    labels = warm_labels(image, config)
    pod_security, container_security = security_contexts(None, config)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": job_image(image, config),
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python3", "-c", WAITER_SCRIPT],
        "env": [
            {"name": "PODIUM_WARM_PORT", "value": str(control_port(config))},
            {"name": "PODIUM_DATA_DIR", "value": config.data_mount_path},
            {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": name, "key": TOKEN_KEY}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        # the app's port is the job's, known at the claim (the Job's podium.dev/port)
        "ports": [{"name": "warm", "containerPort": control_port(config), "protocol": "TCP"}],
        "securityContext": container_security,
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"},
                         {"name": FILES_VOLUME, "mountPath": config.data_mount_path}],
    }
    requirements = resource_limits(config.warm_pool_resources)
    if requirements:
        container["resources"] = requirements
    tmp: dict[str, Any] = {"name": TMP_VOLUME, "emptyDir": {}}
    if config.tmp_size_limit_bytes:
        tmp["emptyDir"]["sizeLimit"] = str(config.tmp_size_limit_bytes)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never", "enableServiceLinks": False, "securityContext": pod_security,
        "automountServiceAccountToken": False,
        "containers": [container], "volumes": [tmp, {"name": FILES_VOLUME, "emptyDir": {}}],
    }
    if config.default_service_account:
        pod_spec["serviceAccountName"] = config.default_service_account
    pod_spec.update(placement_fields(server_placement(config)))
    job_spec: dict[str, Any] = {"backoffLimit": 0, "template": {"metadata": {"labels": dict(labels)},
                                                                "spec": pod_spec}}
    if config.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    manifest = {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": name, "namespace": config.namespace, "labels": labels}, "spec": job_spec}
    if config.job_template_patch:
        manifest = merge_patch(manifest, config.job_template_patch)
    return manifest


def warm_secret_manifest(job: dict[str, Any], token: str, config: KubernetesJobConfig) -> dict[str, Any]:
    """The ``v1`` Secret holding a warm pod's token, owned by its Job (the garbage
    collector deletes it with the Job)."""
    meta = job["metadata"]
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": meta["name"], "namespace": config.namespace,
            "labels": {**selector_labels(config), LABEL_POOL: meta["labels"][LABEL_POOL]},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                                 "uid": meta["uid"], "blockOwnerDeletion": True}],
        },
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


_NAME = re.compile(r"[^a-z0-9-]+")


def warm_job_name(image: str, suffix: str) -> str:
    return f"podium-warm-{pool_label(image)[:8]}-{_NAME.sub('', suffix.lower())}"


# Run by a warm pod (any Python 3.8+, standard library only). It waits on
# PODIUM_WARM_PORT at POD_IP for one authenticated ``POST /assign`` whose body is the
# job (8 bytes of length, then JSON) followed by a tar of its files (path i as member
# folder i) up to the end of the stream; it unpacks them at their own paths in the data
# dir's emptyDir, answers 202, and execs the job's command with the job's environment
# ($(VAR) references expanded as the kubelet does). Anything else is answered 403.
WAITER_SCRIPT = r"""
import hmac, json, os, re, shutil, socket, sys, tarfile
token = os.environ.pop("PODIUM_WARM_TOKEN", "")
data_dir = os.environ.pop("PODIUM_DATA_DIR")
port = int(os.environ.pop("PODIUM_WARM_PORT"))
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((os.environ.get("POD_IP") or "0.0.0.0", port))
listener.listen(8)
print("podium warm pod: waiting for a job on port %d" % port, flush=True)
def answer(conn, status):
    try:
        conn.sendall(("HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status).encode())
    finally:
        conn.close()
def assignment(conn):
    stream = conn.makefile("rb")
    request = stream.readline(4096).split()
    headers = {}
    while True:
        line = stream.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    given = headers.get("authorization", "")
    if request[:2] != [b"POST", b"/assign"] or not token or not hmac.compare_digest(given, "Bearer " + token):
        return None, stream
    return json.loads(stream.read(int.from_bytes(stream.read(8), "big"))), stream
while True:
    conn, _ = listener.accept()
    conn.settimeout(60)
    try:
        job, stream = assignment(conn)
    except (OSError, ValueError):
        conn.close()
        continue
    if job is None:
        answer(conn, "403 Forbidden")
        continue
    break
listener.close()
try:
    staging = os.path.join(data_dir, ".warm-files")
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(staging, filter="tar")
        else:
            tar.extractall(staging)
    for index, path in enumerate(job["paths"]):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        os.rename(os.path.join(staging, str(index)), path)
    shutil.rmtree(staging, ignore_errors=True)
except Exception as error:
    answer(conn, "500 Internal Server Error")
    sys.exit("podium warm pod: the files of job %s did not arrive: %s" % (job.get("key"), error))
answer(conn, "202 Accepted")
print("podium warm pod: running job %s" % job["key"], flush=True)
env = dict(os.environ)
env.update(job["env"])
def expand(text):
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)
command = [expand(arg) for arg in job["command"]]
os.makedirs(job["workdir"], exist_ok=True)
os.chdir(job["workdir"])
os.execvpe(command[0], command, env)
"""
