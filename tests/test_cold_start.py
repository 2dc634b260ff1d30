"""Cold starts through a real server: requests that arrive while a stopped app starts.

The app sleeps ``START_SECONDS`` (a content environment variable) before it serves, so
a start lasts as long as a test needs; the server shows browsers the "starting" page
after 2 s (``starting_page_after_seconds``).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, fastapi_bundle

pytestmark = pytest.mark.integration

SLOW_APP = """
import os, time, uuid
from fastapi import FastAPI

time.sleep(float(os.environ.get("START_SECONDS", "0")))
app = FastAPI()
PROCESS = uuid.uuid4().hex

@app.get("/")
def root():
    return {"process": PROCESS}
"""
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
API_CLIENT = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("podium") / "data", {"PODIUM_STARTING_PAGE_AFTER_SECONDS": "2"}
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def slow_app(server: RunningServer) -> str:
    """Public content that no process keeps warm; one process takes up to 20 connections
    before another would start."""
    client = server.api()
    guid: str = client.post(f"{server.url}/__api__/v1/content", json={
        "name": "slow-start", "access_type": "all", "min_processes": 0, "max_processes": 3,
        "max_conns_per_process": 20, "load_factor": 1.0,
    }).json()["guid"]
    _, task = deploy(server, server.admin_key, guid, fastapi_bundle(SLOW_APP))
    assert task["code"] == 0, task
    return guid


def start_after(server: RunningServer, guid: str, seconds: float) -> None:
    """Stop every process of ``guid``; the next one takes ``seconds`` to start."""
    client = server.api()
    answer = client.patch(f"{server.url}/__api__/v1/content/{guid}/environment",
                          json=[{"name": "START_SECONDS", "value": str(seconds)}])
    assert answer.status_code == 200, answer.text
    for job in run_jobs(server, guid):
        if job["status"] == 0:
            client.delete(f"{server.url}/__api__/v1/content/{guid}/jobs/{job['key']}")
    assert not [job for job in run_jobs(server, guid) if job["status"] == 0]


def run_jobs(server: RunningServer, guid: str) -> list[dict[str, Any]]:
    jobs = server.api().get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    return [job for job in jobs if job["kind"] == "run"]


def url_of(server: RunningServer, guid: str) -> str:
    return f"{server.content_url}/content/{guid}/"


def test_cold_start_requests_during_a_start_queue_and_all_succeed(server: RunningServer, slow_app: str) -> None:
    start_after(server, slow_app, 3)
    before = {job["key"] for job in run_jobs(server, slow_app)}
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(
            lambda _: requests.get(url_of(server, slow_app), headers=API_CLIENT, timeout=60), range(20)
        ))
    assert [answer.status_code for answer in answers] == [200] * 20, [a.text[:200] for a in answers]
    assert len({answer.json()["process"] for answer in answers}) == 1
    started = [job for job in run_jobs(server, slow_app) if job["key"] not in before]
    assert len(started) == 1, started


def test_cold_start_browser_gets_the_app_when_it_starts_in_time(server: RunningServer, slow_app: str) -> None:
    start_after(server, slow_app, 0)
    answer = requests.get(url_of(server, slow_app), headers=BROWSER, timeout=60)
    assert answer.status_code == 200, answer.text[:300]
    assert "process" in answer.json()


def test_cold_start_browser_gets_the_starting_page_after_the_wait(server: RunningServer, slow_app: str) -> None:
    start_after(server, slow_app, 6)
    started = time.monotonic()
    page = requests.get(url_of(server, slow_app), headers=BROWSER, timeout=60)
    waited = time.monotonic() - started
    assert page.status_code == 503 and "Starting" in page.text, page.text[:300]
    assert page.headers["retry-after"] == "1"
    assert waited >= 2  # the browser waited starting_page_after_seconds first
    # The start went on: a client that waits gets the process the browser's request started.
    answer = requests.get(url_of(server, slow_app), headers=API_CLIENT, timeout=60)
    assert answer.status_code == 200
    assert len([job for job in run_jobs(server, slow_app) if job["status"] == 0]) == 1


def test_cold_start_page_at_once_with_no_wait(tmp_path: Path) -> None:
    """``starting_page_after_seconds = 0``: browsers get the page at once, as before."""
    running = start_server(tmp_path / "data", {"PODIUM_STARTING_PAGE_AFTER_SECONDS": "0"})
    try:
        client = running.api()
        guid = client.post(f"{running.url}/__api__/v1/content",
                           json={"name": "quick", "access_type": "all"}).json()["guid"]
        _, task = deploy(running, running.admin_key, guid, fastapi_bundle(SLOW_APP))
        assert task["code"] == 0, task
        page = requests.get(url_of(running, guid), headers=BROWSER, timeout=60)
        assert page.status_code == 503 and "Starting" in page.text
    finally:
        running.stop()
