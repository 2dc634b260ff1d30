"""Many deploys at once through a real server, on SQLite and on PostgreSQL: every one
finishes, none meets a database lock or pool timeout, and bundles that need the same
package environment build it once (the others wait for it and reuse it)."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningServer, require_postgres, start_server
from tests.helpers import deploy, fastapi_bundle

pytestmark = pytest.mark.integration

DEPLOYS = 20
_APP = "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {{'item': {n}}}\n"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def busy_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    """A fresh server on each database; PostgreSQL gets a database of its own, dropped after."""
    extra: dict[str, str] = {}
    database = None
    if request.param == "postgres":
        require_postgres()
        import psycopg

        database = f"podium_deploys_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("host=127.0.0.1 user=root dbname=postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        extra["PODIUM_DATABASE_URL"] = f"postgresql+psycopg://root@127.0.0.1:5432/{database}"
    server = start_server(tmp_path / "data", extra)  # bootstrap and serve both get ``extra``
    try:
        yield server
    finally:
        server.stop()
        if database is not None:
            import psycopg

            with psycopg.connect("host=127.0.0.1 user=root dbname=postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_concurrent_deploys_all_finish_and_share_one_build(busy_server: RunningServer) -> None:
    server = busy_server
    key = server.user_key("busy_publisher", "publisher")
    client = server.api(key)
    items = [
        client.post(f"{server.url}/__api__/v1/content", json={"name": f"busy-{n}"}).json() for n in range(DEPLOYS)
    ]

    def one(n: int) -> dict[str, Any]:
        _, task = deploy(server, key, items[n]["guid"], fastapi_bundle(_APP.format(n=n)))
        return task

    with concurrent.futures.ThreadPoolExecutor(DEPLOYS) as pool:
        tasks = list(pool.map(one, range(DEPLOYS)))
    failed = [(n, task["error"], task["all_output"][-5:]) for n, task in enumerate(tasks) if task["code"] != 0]
    assert not failed, failed
    # One build job made the environment; every other deploy waited for it and reused it.
    builds = [job.name for job in (server.data_dir / "jobs").iterdir() if job.name.startswith("build")]
    assert len(builds) == 1, builds
    def said(task: dict[str, Any], words: str) -> bool:
        return any(words in line for line in task["all_output"])

    assert sum(said(task, "Building package environment") for task in tasks) == 1
    assert sum(said(task, "Reusing package environment") for task in tasks) == DEPLOYS - 1
    for item in items:
        content = client.get(f"{server.url}/__api__/v1/content/{item['guid']}").json()
        assert content["bundle_id"] is not None
    log = server.log()
    for problem in ("database is locked", "QueuePool limit", "Traceback", "deadlock"):
        assert problem not in log, log
