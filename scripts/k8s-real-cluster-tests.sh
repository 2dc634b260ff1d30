#!/usr/bin/env bash
# Run Podium's Kubernetes backend tests against a real cluster (kind or k3d) through a
# kubeconfig, instead of the simulated cluster the test suite uses by default.
#
#   scripts/k8s-real-cluster-tests.sh                     # the cluster of $KUBECONFIG (or ~/.kube/config)
#   scripts/k8s-real-cluster-tests.sh --kubeconfig FILE   # that cluster
#   scripts/k8s-real-cluster-tests.sh --create-kind       # create a kind cluster "podium-test" first
#   scripts/k8s-real-cluster-tests.sh --create-k3d        # create a k3d cluster "podium-test" first
#   scripts/k8s-real-cluster-tests.sh --sim               # the simulator as a separate server: checks
#                                                         # this script's path without a cluster
#   scripts/k8s-real-cluster-tests.sh --create-kind --e2e # also install Podium in the cluster and
#                                                         # deploy an app with rsconnect through it
#   scripts/k8s-real-cluster-tests.sh --create-kind --e2e --no-shared-volume
#                                                         # the same with overlays/no-shared-volume:
#                                                         # pods fetch their files over HTTP
#
# What it does: builds the test runtime image (python:3.11-slim, tagged
# podium-test-runtime:dev) and side-loads it into a kind/k3d cluster it created
# (imagePullPolicy IfNotPresent: nothing is pulled), then runs
# tests/test_kubernetes_backend.py with PODIUM_TEST_KUBECONFIG, PODIUM_TEST_IMAGE and
# PODIUM_TEST_JOB_PYTHON set. Each test creates a namespace of its own
# (podium-test-N-xxxxxx) and deletes it at the end, so the kubeconfig's user needs to
# create namespaces, service accounts, jobs and pods, and read pods/log and events.
# Tests of the simulator itself are skipped. The contract suite
# (tests/test_runtime_contract.py) and tests/test_kubernetes_e2e.py stay on the simulator:
# they reach pods from the host by IP and read host /proc, which a real cluster does not
# allow. --e2e instead installs Podium in the cluster (deploy/Dockerfile,
# overlays/single-node with a SQLite database), waits for it, bootstraps an
# administrator, and deploys a FastAPI app with rsconnect through a port-forward; the
# app must answer through Podium's proxy from its pod in namespace podium-content, and
# its secret variable must appear in no Job or Pod. With --no-shared-volume it installs
# overlays/no-shared-volume instead (the cluster's default storage class; no content
# pod mounts a claim).
#
# Real clusters differ from the simulator where the tests now allow for it: a new
# namespace's "default" service account appears a moment after the namespace, and the
# garbage collector orphans pods asynchronously.
#
# Needs: docker, and kind or k3d for --create-*; kubectl for --e2e; the project's venv (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=existing
E2E=no
OVERLAY=single-node
KUBECONFIG_FILE="${KUBECONFIG:-$HOME/.kube/config}"
IMAGE=podium-test-runtime:dev
CLUSTER=podium-test
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) KUBECONFIG_FILE="$2"; shift 2 ;;
    --create-kind) MODE=kind; shift ;;
    --create-k3d) MODE=k3d; shift ;;
    --sim) MODE=sim; shift ;;
    --e2e) E2E=yes; shift ;;
    --no-shared-volume) OVERLAY=no-shared-volume; shift ;;
    -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

PY=.venv/bin/python
WORK="$(mktemp -d)"
cleanup() {
  if [ -n "${SIM_PID:-}" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
  if [ -n "${FORWARD_PID:-}" ]; then kill "$FORWARD_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

build_image() {
  printf 'FROM python:3.11-slim\n' > "$WORK/Dockerfile"
  docker build -q -t "$IMAGE" "$WORK" >/dev/null
}

case "$MODE" in
  sim)
    KUBECONFIG_FILE="$WORK/kubeconfig"
    (cd tests && exec ../$PY -m k8s_sim "$KUBECONFIG_FILE" "$IMAGE") &
    SIM_PID=$!
    for _ in $(seq 50); do [ -s "$KUBECONFIG_FILE" ] && break; sleep 0.1; done
    JOB_PYTHON="$(readlink -f "$PY")"  # the simulated kubelet runs jobs on this host
    ;;
  kind)
    build_image
    kind create cluster --name "$CLUSTER" --kubeconfig "$WORK/kubeconfig" --wait 120s
    kind load docker-image "$IMAGE" --name "$CLUSTER"
    KUBECONFIG_FILE="$WORK/kubeconfig"
    JOB_PYTHON=/usr/local/bin/python
    trap 'kind delete cluster --name "$CLUSTER"; cleanup' EXIT
    ;;
  k3d)
    build_image
    k3d cluster create "$CLUSTER" --wait
    k3d image import "$IMAGE" -c "$CLUSTER"
    k3d kubeconfig get "$CLUSTER" > "$WORK/kubeconfig"
    KUBECONFIG_FILE="$WORK/kubeconfig"
    JOB_PYTHON=/usr/local/bin/python
    trap 'k3d cluster delete "$CLUSTER"; cleanup' EXIT
    ;;
  existing)
    [ -r "$KUBECONFIG_FILE" ] || { echo "no kubeconfig at $KUBECONFIG_FILE" >&2; exit 2; }
    JOB_PYTHON="${PODIUM_TEST_JOB_PYTHON:-/usr/local/bin/python}"
    IMAGE="${PODIUM_TEST_IMAGE:-$IMAGE}"
    echo "using $KUBECONFIG_FILE; image $IMAGE must be available to the cluster's nodes" >&2
    ;;
esac

PODIUM_TEST_KUBECONFIG="$KUBECONFIG_FILE" PODIUM_TEST_IMAGE="$IMAGE" PODIUM_TEST_JOB_PYTHON="$JOB_PYTHON" \
  "$PY" -m pytest tests/test_kubernetes_backend.py -v -p no:cacheprovider "$@"

# --- Podium in the cluster, deployed to with rsconnect --------------------------------------
[ "$E2E" = yes ] || exit 0
case "$MODE" in kind|k3d) ;; *) echo "--e2e needs --create-kind or --create-k3d" >&2; exit 2 ;; esac
export KUBECONFIG="$KUBECONFIG_FILE"
PODIUM_IMAGE=podium:e2e
docker build -q -t "$PODIUM_IMAGE" -f deploy/Dockerfile . >/dev/null
if [ "$MODE" = kind ]; then
  kind load docker-image "$PODIUM_IMAGE" --name "$CLUSTER"
  NODE_CONTAINER="$CLUSTER-control-plane"
else
  k3d image import "$PODIUM_IMAGE" -c "$CLUSTER"
  NODE_CONTAINER="k3d-$CLUSTER-server-0"
fi
NODE="$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')"
mkdir -p "$WORK/overlay"
# kustomize takes no absolute path for a resource ("new root cannot be absolute")
BASE="$("$PY" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' \
  "$PWD/deploy/kubernetes/overlays/$OVERLAY" "$WORK/overlay")"
cat > "$WORK/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $BASE
images:
  - name: ghcr.io/podium/podium
    newName: podium
    newTag: e2e
patches:
  - target: {kind: Deployment, name: podium}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/env/-
        value: {name: PODIUM_KUBERNETES_DEFAULT_IMAGE, value: "$PODIUM_IMAGE"}
YAML
if [ "$OVERLAY" = single-node ]; then
  # the single-node overlay's local volume: a folder of that node, owned by uid 10001
  docker exec "$NODE_CONTAINER" sh -c 'mkdir -p /var/lib/podium-data && chown 10001:10001 /var/lib/podium-data'
  cat >> "$WORK/overlay/kustomization.yaml" <<YAML
  - target: {kind: PersistentVolume}
    patch: |-
      - op: replace
        path: /spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values
        value: ["$NODE"]
YAML
fi
kubectl create namespace podium --dry-run=client -o yaml | kubectl apply -f -
kubectl -n podium create secret generic podium-database \
  --from-literal=url='sqlite:////var/lib/podium/db/podium.sqlite' --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -k "$WORK/overlay"
# A new namespace's "default" service account comes from a controller a moment later; a
# pod naming none is refused until then.
for ns in podium podium-content; do
  for _ in $(seq 150); do kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2; done
  kubectl -n "$ns" get serviceaccount default >/dev/null
done
kubectl -n podium rollout status deployment/podium --timeout=300s
# The server made the administrator "admin" at its first start (bootstrap_admin_on_first_start;
# `podium admin bootstrap` would now refuse): a key of its own for this run.
KEY="$(kubectl -n podium exec deployment/podium -- podium admin create-api-key admin --name e2e \
  --config /etc/podium/podium.toml)"
kubectl -n podium port-forward service/podium 39390:80 >"$WORK/port-forward.log" 2>&1 &
FORWARD_PID=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:39390/__api__/server_settings >/dev/null 2>&1 && break; sleep 0.2; done
APP="$WORK/app"
mkdir -p "$APP"
printf 'from fastapi import FastAPI\napp = FastAPI()\n@app.get("/")\ndef root():\n    return {"hello": "kubernetes"}\n' > "$APP/app.py"
printf 'fastapi\n' > "$APP/requirements.txt"
RSCONNECT=.venv/bin/rsconnect
HOME="$WORK" "$RSCONNECT" add -n e2e -s http://127.0.0.1:39390 -k "$KEY"
SECRET_VALUE="e2e-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
HOME="$WORK" "$RSCONNECT" deploy fastapi -n e2e -E "API_TOKEN=$SECRET_VALUE" "$APP"
GUID="$(python3 -c 'import json,glob,sys; r=json.load(open(glob.glob(sys.argv[1]+"/rsconnect-python/*.json")[0])); r=r if "app_guid" in r else next(iter(r.values())); print(r["app_guid"])' "$APP")"
ANSWER="$(curl -fsS -H "Authorization: Key $KEY" "http://127.0.0.1:39390/content/$GUID/")"
kill "$FORWARD_PID" 2>/dev/null || true
echo "$ANSWER" | grep -q '"hello":"kubernetes"' || { echo "the app did not answer through Podium: $ANSWER" >&2; exit 1; }
kubectl -n podium-content get jobs -l app.kubernetes.io/managed-by=podium
# The variable's value is in the content's Secret only, never in a Job or Pod.
if kubectl -n podium-content get jobs,pods -o json | grep -qF "$SECRET_VALUE"; then
  echo "a secret value appears in a Job or Pod spec" >&2; exit 1
fi
kubectl -n podium-content get secret "podium-content-$GUID" -o name
if [ "$OVERLAY" = no-shared-volume ]; then
  # no content pod had a claim: each got its files from its init container
  if kubectl -n podium-content get pods -o json | grep -q '"persistentVolumeClaim"'; then
    echo "a content pod mounts a claim in the no-shared-volume mode" >&2; exit 1
  fi
fi
echo "e2e ($OVERLAY): deployed with rsconnect, served from a pod in podium-content"
