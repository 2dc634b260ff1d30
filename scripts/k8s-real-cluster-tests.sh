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
#
# What it does: builds the test runtime image (python:3.11-slim, tagged
# podium-test-runtime:dev) and side-loads it into a kind/k3d cluster it created
# (imagePullPolicy IfNotPresent: nothing is pulled), then runs
# tests/test_kubernetes_backend.py with PODIUM_TEST_KUBECONFIG, PODIUM_TEST_IMAGE and
# PODIUM_TEST_JOB_PYTHON set. Each test creates a namespace of its own
# (podium-test-N-xxxxxx) and deletes it at the end, so the kubeconfig's user needs to
# create namespaces, service accounts, jobs and pods, and read pods/log and events.
# Tests of the simulator itself are skipped. The contract suite
# (tests/test_runtime_contract.py) and the end-to-end test stay on the simulator: they
# reach pods from the host by IP and read host /proc, which a real cluster does not allow.
#
# Needs: docker, and kind or k3d for --create-*; the project's venv (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=existing
KUBECONFIG_FILE="${KUBECONFIG:-$HOME/.kube/config}"
IMAGE=podium-test-runtime:dev
CLUSTER=podium-test
while [ $# -gt 0 ]; do
  case "$1" in
    --kubeconfig) KUBECONFIG_FILE="$2"; shift 2 ;;
    --create-kind) MODE=kind; shift ;;
    --create-k3d) MODE=k3d; shift ;;
    --sim) MODE=sim; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

PY=.venv/bin/python
WORK="$(mktemp -d)"
cleanup() {
  if [ -n "${SIM_PID:-}" ]; then kill "$SIM_PID" 2>/dev/null || true; fi
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
