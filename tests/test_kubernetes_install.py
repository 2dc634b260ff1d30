"""The install manifests in deploy/kubernetes/ (a kustomize base and three overlays):
rendered with ``kubectl kustomize`` (offline), valid for the Kubernetes versions we
support, restricted where they run pods, with the RBAC the backend needs, no secret
in them, pinned images, and Podium settings that load."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from k8s_sim.podsecurity import restricted_violations
from podium.settings import Settings, load_settings

DEPLOY = Path(__file__).parent.parent / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir() if path.is_dir())


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (with kustomize v4 or newer) is needed in CI to render deploy/kubernetes")
        pytest.skip("kubectl is not installed")
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def test_install_has_the_overlays() -> None:
    assert OVERLAYS == ["no-shared-volume", "shared-volume", "single-node"]


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0", latest_version()])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_install_manifests_validate_strictly(overlay: str, version: str) -> None:
    kinds = []
    for doc in render(overlay):
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert {"Namespace", "Deployment", "Service", "PersistentVolumeClaim", "Role", "RoleBinding",
            "NetworkPolicy", "ConfigMap", "ServiceAccount"} <= set(kinds)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_install_server_is_restricted_probed_pinned_and_holds_no_secret(overlay: str) -> None:
    documents = render(overlay)
    text = yaml.safe_dump_all(documents)
    assert "CHANGE-ME" not in text and not of_kind(documents, "Secret")
    [deployment] = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    [container] = pod["containers"]
    assert {"readinessProbe", "livenessProbe", "resources"} <= set(container)
    images = [container["image"] for doc in documents if doc["kind"] == "Deployment"
              for container in doc["spec"]["template"]["spec"]["containers"]]
    assert all(":" in image and not image.endswith(":latest") for image in images), images
    database = next(e for e in container["env"] if e["name"] == "PODIUM_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"]["name"] == "podium-database"  # made by the installer
    namespaces = {doc["metadata"]["name"]: doc["metadata"].get("labels", {}) for doc in of_kind(documents, "Namespace")}
    assert namespaces["podium-content"]["pod-security.kubernetes.io/enforce"] == "restricted"
    claims = {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in of_kind(documents, "PersistentVolumeClaim")}
    if overlay == "no-shared-volume":  # the server's claim only, of any storage class
        assert claims == {("podium", "podium-data")}
        assert not of_kind(documents, "PersistentVolume")
    else:
        assert claims == {("podium", "podium-data"), ("podium-content", "podium-data")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_install_role_grants_what_the_backend_calls_in_the_content_namespace(overlay: str) -> None:
    documents = render(overlay)
    [role] = of_kind(documents, "Role")
    assert role["metadata"]["namespace"] == "podium-content"
    rules = {(group, resource): set(rule["verbs"])
             for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert rules[("batch", "jobs")] >= {"create", "get", "list", "watch", "patch", "delete"}  # patch: warm pool
    assert rules[("", "pods")] >= {"get", "list", "watch", "patch", "delete"}
    assert rules[("", "pods/log")] >= {"get"}
    assert rules[("", "events")] >= {"list"}
    assert rules[("", "secrets")] == {"create", "patch", "delete"}  # never get or list: no reading them
    [binding] = of_kind(documents, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "podium", "namespace": "podium"}]
    policies = {doc["metadata"]["name"]: doc for doc in of_kind(documents, "NetworkPolicy")}
    ingress = policies["podium-content-ingress"]["spec"]
    assert ingress["podSelector"]["matchLabels"] == {"app.kubernetes.io/managed-by": "podium"}
    [source] = ingress["ingress"][0]["from"]
    assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "podium"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_install_config_loads(overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("PODIUM_")]:
        monkeypatch.delenv(name)
    documents = render(overlay)
    [config] = of_kind(documents, "ConfigMap")
    [deployment] = of_kind(documents, "Deployment")
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:  # what the server sees: its environment over the file
            monkeypatch.setenv(item["name"], item["value"])
    path = tmp_path / "podium.toml"
    path.write_text(config["data"]["podium.toml"])
    settings = load_settings(path, data_dir=tmp_path / "data")
    assert settings.kubernetes_enabled
    assert settings.kubernetes_namespace == "podium-content"
    assert settings.default_service_account == "podium-content"
    assert "podium" in settings.kubernetes_denied_service_accounts
    assert settings.effective_keep_processes_on_shutdown
    if overlay == "no-shared-volume":
        assert not settings.kubernetes_shared_volume and settings.kubernetes_data_pvc == ""
        assert settings.kubernetes_transfer_url == "http://podium.podium.svc"
    else:
        assert settings.kubernetes_shared_volume and settings.kubernetes_data_pvc == "podium-data"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_install_replicas_roll_with_probes_a_budget_and_time_to_hand_over(overlay: str) -> None:
    documents = render(overlay)
    [deployment] = of_kind(documents, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/__ready__"  # database and cluster watch
    assert container["livenessProbe"]["httpGet"]["path"] == "/__ping__"
    env = {item["name"]: item.get("value") for item in container["env"]}
    delay = float(env["PODIUM_SHUTDOWN_DELAY_SECONDS"])
    assert delay >= container["readinessProbe"]["periodSeconds"]  # taken out of the Service first
    defaults = Settings.model_fields
    stop = delay + defaults["shutdown_grace_seconds"].default + defaults["stop_grace_seconds"].default
    assert pod["terminationGracePeriodSeconds"] >= stop + 10  # and the hand-over, with room
    budgets = of_kind(documents, "PodDisruptionBudget")
    claims = {(doc["metadata"]["namespace"], doc["metadata"]["name"]): doc["spec"]["accessModes"]
              for doc in of_kind(documents, "PersistentVolumeClaim")}
    if overlay == "shared-volume":  # two server nodes on one ReadWriteMany volume
        assert spec["replicas"] == 2
        assert claims[("podium", "podium-data")] == ["ReadWriteMany"]
        [budget] = budgets
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
        assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    else:  # one server: a budget of 1 would forbid every drain
        assert spec["replicas"] == 1 and budgets == []
    if overlay == "no-shared-volume":  # tokens in one server's memory, a ReadWriteOnce claim
        assert spec["strategy"] == {"type": "Recreate"}
    else:  # the new server is ready before the old one stops and hands its Jobs over
        assert spec["strategy"] == {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
