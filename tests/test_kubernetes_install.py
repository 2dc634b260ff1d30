"""The install manifests in deploy/kubernetes/: valid for the Kubernetes versions we
support, and the Podium settings they carry load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from podium.settings import load_settings

MANIFESTS = Path(__file__).parent.parent / "deploy" / "kubernetes" / "podium.yaml"


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc]


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0", latest_version()])
def test_install_manifests_validate_strictly(version: str) -> None:
    kinds = []
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.append(doc["kind"])
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Role", "RoleBinding"} <= set(kinds)


def test_install_role_grants_what_the_backend_calls() -> None:
    [role] = [doc for doc in documents() if doc["kind"] == "Role"]
    rules = {(group, resource): set(rule["verbs"])
             for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]}
    assert rules[("batch", "jobs")] >= {"create", "get", "list", "watch", "delete"}
    assert rules[("", "pods")] >= {"get", "list", "watch", "delete"}
    assert rules[("", "pods/log")] >= {"get"}
    assert rules[("", "events")] >= {"list"}


def test_install_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in __import__("os").environ if name.startswith("PODIUM_")]:
        monkeypatch.delenv(name)
    [config] = [doc for doc in documents() if doc["kind"] == "ConfigMap"]
    path = tmp_path / "podium.toml"
    path.write_text(config["data"]["podium.toml"])
    settings = load_settings(path, data_dir=tmp_path / "data")
    assert settings.kubernetes_enabled and settings.kubernetes_data_pvc == "podium-data"
    assert settings.default_service_account == "podium-content"
