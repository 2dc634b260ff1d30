"""The probes a load balancer or Kubernetes uses: ``/__ping__`` (alive) and
``/__ready__`` (may take traffic), on a real server, through a real SIGTERM."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import requests
from tests.conftest import start_server

pytestmark = pytest.mark.integration


def test_health_ready_then_not_ready_but_serving_through_the_shutdown_delay(tmp_path: Path) -> None:
    node = start_server(tmp_path / "data", {
        "PODIUM_SHUTDOWN_DELAY_SECONDS": "3",
        "PODIUM_SANDBOX": "off",
        "PODIUM_PYTHON_INSTALLATIONS": f'["{os.path.realpath(sys.executable)}"]',
    })
    try:
        assert requests.get(f"{node.url}/__ping__", timeout=5).json() == {}
        ready = requests.get(f"{node.url}/__ready__", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert "__ready__" not in requests.get(f"{node.url}/__api__/openapi.json", timeout=5).text

        node.process.terminate()
        deadline = time.monotonic() + 2.5
        seen = None
        while time.monotonic() < deadline:
            seen = requests.get(f"{node.url}/__ready__", timeout=5)
            if seen.status_code == 503:
                break
            time.sleep(0.05)
        assert seen is not None and seen.status_code == 503, seen and seen.text
        assert seen.json() == {"ready": False, "problems": ["the server is stopping"]}
        # still serving while load balancers take it out: API and liveness answer
        assert requests.get(f"{node.url}/__api__/server_settings", timeout=5).ok
        assert requests.get(f"{node.url}/__ping__", timeout=5).ok
        assert node.process.wait(20) == 0
        assert "serving 3 s more" in node.log()
    finally:
        node.stop()


def test_health_not_ready_while_the_cluster_cannot_be_watched(tmp_path: Path) -> None:
    from tests.test_kubernetes_e2e import IMAGE, k8s_env

    from k8s_sim import SimCluster

    sim = SimCluster(tmp_path / "k8s", images={IMAGE})
    sim.start()
    running = True
    node = start_server(tmp_path / "data", k8s_env(sim, tmp_path))
    try:
        ready = requests.get(f"{node.url}/__ready__", timeout=10)
        assert ready.status_code == 200 and ready.json() == {"ready": True}, ready.text
        sim.stop()  # the API server goes away: the watches fail
        running = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen = requests.get(f"{node.url}/__ready__", timeout=10)
            if seen.status_code == 503:
                break
            time.sleep(0.2)
        assert seen.status_code == 503, seen.text
        [problem] = seen.json()["problems"]
        assert "Kubernetes" in problem, problem
        assert requests.get(f"{node.url}/__ping__", timeout=5).ok  # alive all the same: no restart
    finally:
        node.stop()
        if running:
            sim.stop()
