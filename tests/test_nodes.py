"""Several server nodes: two real ``podium serve`` processes on one PostgreSQL database
and one shared data dir, as Connect's HA setup shares a data volume.

Each node has its own listeners and its own runtime dir; what they share is the
database and the data dir. The tests stop one node cleanly, restart it and kill it,
and check what the other one still serves and what it takes over.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from tests.conftest import POSTGRES_URL, RunningServer, require_postgres, reset_postgres, start_server
from tests.helpers import alive, deploy, fastapi_bundle

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

# Quick failure detection for the tests; the defaults are slower (see the settings).
HEARTBEAT_SECONDS = 0.5
NODE_TIMEOUT_SECONDS = 3.0

APP = """
import os, uuid
from fastapi import FastAPI
app = FastAPI()
PROCESS = uuid.uuid4().hex

@app.get("/")
def root():
    return {"pid": os.getpid(), "process": PROCESS}
"""


def nodes_database() -> str:
    """A database of these tests' own next to the suite's (other tests reset theirs), made
    empty; the suite's own database when this one may not create another."""
    require_postgres()
    url = make_url(POSTGRES_URL)
    own = url.set(database=f"{url.database}_nodes")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": own.database}) is None:
                conn.execute(text(f'CREATE DATABASE "{own.database}"'))
    except Exception:
        own = url
    finally:
        admin.dispose()
    rendered = own.render_as_string(hide_password=False)
    reset_postgres(rendered)
    return rendered


def wait_until(predicate: Callable[[], Any], seconds: float = 30, every: float = 0.1) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {seconds} s: {predicate}")


class Cluster:
    """Nodes sharing a data dir and a database; ``env`` is every node's environment."""

    def __init__(self, data: Path, database_url: str) -> None:
        self.data = data
        self.database_url = database_url
        self.env = {
            "PODIUM_DATABASE_URL": database_url,
            "PODIUM_NODE_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "PODIUM_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT_SECONDS),
            # the sandbox is tested elsewhere; here it would only slow the starts down, as
            # would discovering every interpreter of the host at each start
            "PODIUM_SANDBOX": "off",
            "PODIUM_PYTHON_INSTALLATIONS": json.dumps([os.path.realpath(sys.executable)]),
        }
        self.nodes: list[RunningServer] = []
        self.engine = create_engine(database_url)

    def start(self, first: bool = False, again: RunningServer | None = None) -> RunningServer:
        """A node; ``again``: that (stopped) node started again on its ports."""
        node = start_server(self.data, self.env, bootstrap=first, ports=again.ports if again else None)
        if not first:
            node.admin_key = self.nodes[0].admin_key
            node._keys = self.nodes[0]._keys
        self.nodes.append(node)
        return node

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def close(self) -> None:
        import re
        import shutil

        for node in self.nodes:
            node.stop()
            # a killed node leaves its runtime dir (its socket) behind: remove it
            for found in re.findall(r"node \S+: runtime dir (\S+)", node.log()):
                shutil.rmtree(found, ignore_errors=True)
        self.engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "data", nodes_database())
    yield made
    made.close()


def new_app(node: RunningServer, **runtime: Any) -> str:
    client = node.api()
    made = client.post(f"{node.url}/__api__/v1/content", json={"name": f"ha-{uuid.uuid4().hex[:8]}", **runtime})
    assert made.status_code == 200, made.text
    guid = str(made.json()["guid"])
    _, task = deploy(node, node.admin_key, guid, fastapi_bundle(APP))
    assert task["code"] == 0, task["all_output"]
    return guid


def content(node: RunningServer, guid: str) -> dict[str, Any]:
    response = node.api().get(f"{node.url}/content/{guid}/", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def run_jobs(cluster: Cluster, guid: str) -> list[Any]:
    return cluster.rows(
        "SELECT j.key, j.pid, j.node_id FROM jobs j JOIN content c ON c.id = j.content_id "
        "WHERE c.guid = :guid AND j.kind = 'run' AND j.status = 0 ORDER BY j.id", guid=guid,
    )


def test_nodes_clean_stop_leaves_the_other_serving_and_a_restart_touches_nothing(cluster: Cluster) -> None:
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)  # deployed on A ...
    served = content(b, guid)  # ... served on B, by a process B launched
    jobs = run_jobs(cluster, guid)
    assert len(jobs) == 1 and jobs[0].pid == served["pid"]
    b_node = jobs[0].node_id
    assert b_node and b_node in b.log()  # the node says who it is

    a.stop()  # a clean stop of A
    api = b.api().get(f"{b.url}/__api__/v1/content/{guid}", timeout=10)
    assert api.status_code == 200, api.text
    assert content(b, guid)["process"] == served["process"]  # B's process was left alone
    assert alive(served["pid"])

    a = cluster.start(again=a)  # A again, with its own node id
    assert content(b, guid)["process"] == served["process"]
    assert content(a, guid)["pid"] != served["pid"]  # A serves from a process of its own
    after = run_jobs(cluster, guid)
    assert [(j.key, j.node_id) for j in after if j.node_id == b_node] == [(jobs[0].key, b_node)]
    assert len(after) == 2 and len({j.node_id for j in after}) == 2  # one each, nothing duplicated
    nodes = cluster.rows("SELECT node_id FROM nodes")
    assert len(nodes) == 2  # A's restart took its own row again


def test_nodes_kill_moves_duties_and_jobs_to_the_live_node(cluster: Cluster) -> None:
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a, min_processes=1)  # A holds the duties: it keeps this one warm
    first = wait_until(lambda: [j for j in run_jobs(cluster, guid) if j.pid is not None])[0]
    a_node = first.node_id
    held = {row.name: row.holder for row in cluster.rows("SELECT name, holder FROM leases")}
    assert held.get("scheduler-minimums") == a_node, held
    assert held.get("render-schedules") == a_node, held

    a.process.send_signal(signal.SIGKILL)  # A dies; its content process lives on
    a.process.wait()
    assert alive(first.pid)
    killed = time.monotonic()

    def moved() -> bool:
        holders = {row.name: row.holder for row in cluster.rows("SELECT name, holder FROM leases")}
        return holders.get("scheduler-minimums") not in (None, a_node)

    wait_until(moved, seconds=NODE_TIMEOUT_SECONDS * 3)
    took = time.monotonic() - killed
    # B claimed A once and adopted A's process: it keeps the minimum warm with it, and
    # serves from it; nothing was started twice.
    # (the claim and the lease's expiry come within a heartbeat of each other, either first)
    claimed = wait_until(lambda: [row for row in cluster.rows(
        "SELECT claimed_by FROM nodes WHERE node_id = :n", n=a_node) if row.claimed_by], seconds=NODE_TIMEOUT_SECONDS)
    assert claimed[0].claimed_by != a_node
    wait_until(lambda: [j.node_id for j in run_jobs(cluster, guid)] == [claimed[0].claimed_by], seconds=10)
    assert content(b, guid)["pid"] == first.pid
    time.sleep(1)  # a few housekeeping rounds of B's
    assert [(j.key, j.node_id) for j in run_jobs(cluster, guid)] == [(first.key, claimed[0].claimed_by)]
    assert alive(first.pid)
    assert took < NODE_TIMEOUT_SECONDS * 2 + 1, took
    response = requests.get(f"{b.url}/__api__/server_settings", timeout=5)
    assert response.ok


def test_nodes_recover_when_the_database_drops_their_connections(cluster: Cluster) -> None:
    """Every connection of the nodes is cut (as when PostgreSQL restarts): they reconnect
    and serve again, without a restart, and keep beating and holding their duties."""
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)
    served = content(b, guid)
    database = make_url(cluster.database_url).database

    def cut() -> int:
        rows = cluster.rows(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
            "WHERE datname = :db AND pid <> pg_backend_pid()", db=database,
        )
        return int(rows[0].n)

    cluster.engine.dispose()  # the test's own connections go too
    assert cut() > 0
    before = {row.node_id: row.heartbeat_time for row in cluster.rows("SELECT node_id, heartbeat_time FROM nodes")}
    for node in (a, b):
        api = node.api().get(f"{node.url}/__api__/v1/content/{guid}", timeout=10)
        assert api.status_code == 200, api.text
    assert content(b, guid)["process"] == served["process"]
    assert content(a, guid)["pid"] > 0

    def beating() -> bool:
        now = {row.node_id: row.heartbeat_time for row in cluster.rows("SELECT node_id, heartbeat_time FROM nodes")}
        return all(now[node] > before[node] for node in before)

    wait_until(beating, seconds=NODE_TIMEOUT_SECONDS)
    holders = {row.holder for row in cluster.rows("SELECT holder FROM leases WHERE expires_time > now()")}
    assert holders and holders <= set(before)


def test_nodes_a_change_on_one_node_reaches_the_others_cache_at_once(cluster: Cluster) -> None:
    """Access opened through A applies on B before B's cached access facts (kept for 2 s)
    expire: the change feed told B's router to forget them."""
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)
    url = f"{b.content_url}/content/{guid}/"
    assert content(b, guid)  # B runs a process of it
    time.sleep(2.1)  # nothing of it cached on B any more ...
    filled = time.monotonic()
    assert requests.get(url, allow_redirects=False, timeout=10).status_code != 200  # ... till now
    opened = a.api().patch(f"{a.url}/__api__/v1/content/{guid}", json={"access_type": "all"}, timeout=10)
    assert opened.status_code == 200, opened.text
    wait_until(lambda: requests.get(url, allow_redirects=False, timeout=10).status_code == 200, seconds=5, every=0.02)
    assert time.monotonic() - filled < 1.5  # the cached entry would have lasted until filled + 2 s


class StalledIndex:
    """A package index that accepts requests and never answers them (until closed): a
    build asking it for packages hangs, as a deploy in progress."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/simple"
        self.asked = threading.Event()
        self.held: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(conn)
            self.asked.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self.held:
            conn.close()


def test_nodes_kill_mid_deploy_fails_the_task_and_the_previous_bundle_serves(cluster: Cluster) -> None:
    from tests.helpers import tar_gz

    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)
    before = content(b, guid)
    active = a.api().get(f"{a.url}/__api__/v1/content/{guid}").json()["bundle_id"]
    index = StalledIndex()
    try:
        manifest = {"version": 1, "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
                    "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
                    "files": {}}
        archive = tar_gz({"manifest.json": json.dumps(manifest), "app.py": APP,
                          "requirements.txt": f"--extra-index-url {index.url}\nfastapi\nhttpx\n"})
        client = a.api()
        bundle = client.post(f"{a.url}/__api__/v1/content/{guid}/bundles", data=archive).json()
        task = client.post(f"{a.url}/__api__/v1/content/{guid}/deploy", json={"bundle_id": bundle["id"]}).json()
        assert index.asked.wait(60), "the build never asked the index"
        build = wait_until(lambda: cluster.rows(
            "SELECT key, pid, node_id FROM jobs WHERE kind = 'build' AND status = 0 AND pid IS NOT NULL"))[0]
        a.process.send_signal(signal.SIGKILL)  # A dies mid-deploy
        a.process.wait()

        def finished() -> dict[str, Any] | None:
            body = b.api().get(f"{b.url}/__api__/v1/tasks/{task['task_id']}", timeout=10).json()
            return body if body["finished"] else None

        done = wait_until(finished, seconds=NODE_TIMEOUT_SECONDS * 4)
        assert done["code"] != 0 and "stopped responding" in done["error"], done
        wait_until(lambda: not alive(build.pid), seconds=NODE_TIMEOUT_SECONDS * 2)  # B stopped A's build
        ended = cluster.rows("SELECT status, error FROM jobs WHERE key = :k", k=build.key)
        assert ended[0].status == 1 and "stopped responding" in ended[0].error
    finally:
        index.close()
    # The previous bundle is still the active one and keeps serving, through B.
    assert b.api().get(f"{b.url}/__api__/v1/content/{guid}").json()["bundle_id"] == active
    assert content(b, guid)["process"] == before["process"]


def test_nodes_a_deploy_through_one_node_retires_the_old_bundle_on_the_others(cluster: Cluster) -> None:
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)
    old = content(b, guid)  # B serves the first bundle from a process of its own
    _, task = deploy(a, a.admin_key, guid, fastapi_bundle(APP + "\nVERSION = 2\n"))
    assert task["code"] == 0, task["all_output"]
    assert content(b, guid)["process"] != old["process"]  # B serves the new bundle ...
    wait_until(lambda: not alive(old["pid"]), seconds=10)  # ... and stops the old one's process


def live_run_jobs(sim: Any) -> dict[str, tuple[str, str]]:
    """The simulated cluster's live run Jobs: name -> (uid, node label)."""
    from tests.test_kubernetes_e2e import NAMESPACE, cluster_get

    items = cluster_get(sim, f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs?labelSelector="
                             "podium.dev/job-kind%3Drun")["items"]
    return {j["metadata"]["name"]: (j["metadata"]["uid"], j["metadata"]["labels"].get("podium.dev/node", ""))
            for j in items if not j["status"].get("conditions") and not j["metadata"].get("deletionTimestamp")}

def test_nodes_on_kubernetes_a_clean_stop_hands_its_jobs_to_the_other_replica_at_once(tmp_path: Path) -> None:
    """Two replicas of one installation (one instance label) on the simulated cluster, as
    in a rolling update: a clean stop of A keeps its Job running (keep_processes_on_shutdown
    on Kubernetes) and hands it to B at once, long before the node timeout; B serves from
    that very Job (no cold start) and leaves its own alone; A started again deletes nothing."""
    from tests.test_kubernetes_e2e import IMAGE, k8s_env

    from k8s_sim import SimCluster

    sim = SimCluster(tmp_path / "k8s", images={IMAGE})
    sim.start()
    made = Cluster(tmp_path / "data", nodes_database())
    made.env.update(k8s_env(sim, tmp_path, claim="ha-data", PODIUM_KUBERNETES_INSTANCE="ha"))
    # Long: only the hand-over of a clean stop can move A's Job to B within the test, and
    # only the change feed's notice can wake B for it before its next heartbeat.
    made.env["PODIUM_NODE_TIMEOUT_SECONDS"] = "60"
    made.env["PODIUM_NODE_HEARTBEAT_SECONDS"] = "20"

    try:
        a = made.start(first=True)
        b = made.start()
        assert requests.get(f"{a.url}/__ready__", timeout=10).json() == {"ready": True}
        on_a_only, on_b_only = new_app(a), new_app(a)
        served_by_a = content(a, on_a_only)  # a Job of A's ...
        served_by_b = content(b, on_b_only)  # ... and one of B's
        before = live_run_jobs(sim)
        (a_job,) = run_jobs(made, on_a_only)
        (b_job,) = run_jobs(made, on_b_only)
        a_node, b_node = a_job.node_id, b_job.node_id
        assert len(before) == 2 and {node for _, node in before.values()} == {a_node, b_node}, before

        a.stop()  # a clean stop, as in a rolling update
        stopped = time.monotonic()
        claim = wait_until(lambda: made.rows("SELECT claimed_by FROM nodes WHERE node_id = :n AND "
                                             "claimed_by IS NOT NULL", n=a_node), seconds=20)
        took = time.monotonic() - stopped
        assert claim[0].claimed_by == b_node  # claimed once, by the live replica
        assert took < 5, took  # at once: not after the 60 s timeout, nor at B's next beat (20 s)
        assert [(j.key, j.node_id) for j in run_jobs(made, on_a_only)] == [(a_job.key, b_node)]
        assert content(b, on_a_only)["process"] == served_by_a["process"]  # the same pod: no cold start
        assert content(b, on_b_only)["process"] == served_by_b["process"]
        assert live_run_jobs(sim) == before  # nothing deleted, nothing started
        assert "claimed node" in b.log() and "left its 1 active jobs" in b.log()

        a = made.start(again=a)  # A's replacement (here with A's id: its Job's label is its own)
        assert requests.get(f"{a.url}/__ready__", timeout=10).json() == {"ready": True}
        time.sleep(1)  # a few housekeeping rounds of both
        assert live_run_jobs(sim) == before  # A deleted nothing of B's, not even the Job labelled A
        assert content(b, on_a_only)["process"] == served_by_a["process"]
        assert content(a, on_b_only)["process"] not in (served_by_a["process"], served_by_b["process"])
        after = live_run_jobs(sim)
        assert len(after) == 3 and all(after[name] == before[name] for name in before), after
        assert not made.rows("SELECT node_id FROM nodes WHERE claimed_by IS NOT NULL")  # A took its row back
    finally:
        made.close()
        problems = sim.close()
    assert problems == []


def test_nodes_a_job_is_stopped_through_any_node_of_its_host(cluster: Cluster) -> None:
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)
    first = content(a, guid)
    (job,) = run_jobs(cluster, guid)
    stopped = b.api().delete(f"{b.url}/__api__/v1/content/{guid}/jobs/{job.key}", timeout=30)
    assert stopped.status_code == 200, stopped.text  # through B, a job of A on this host
    wait_until(lambda: not alive(first["pid"]), seconds=15)

    def served_by_a() -> int | None:
        response = a.api().get(f"{a.url}/content/{guid}/", timeout=30)
        return int(response.json()["pid"]) if response.status_code == 200 else None

    # A notices at its next housekeeping round (every 0.5 s; a request just before that
    # may meet the ended process: 502), then serves from a new one.
    assert wait_until(served_by_a, seconds=10, every=0.2) != first["pid"]
    # A process on another host cannot be signalled from here: refused, nothing touched.
    (job,) = wait_until(lambda: [j for j in run_jobs(cluster, guid) if j.pid is not None])
    with cluster.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET hostname = 'elsewhere.example' WHERE key = :k"), {"k": job.key})
    refused = b.api().delete(f"{b.url}/__api__/v1/content/{guid}/jobs/{job.key}", timeout=30)
    assert refused.status_code == 409 and "elsewhere.example" in refused.json()["error"], refused.text
    assert alive(job.pid)


def notebook_bundle(flag: Path) -> bytes:
    """A notebook printing a fresh token; its render waits while ``flag`` exists (a render
    in progress that lasts as long as the test wants)."""
    from tests.helpers import tar_gz

    source = (f"import os, time, uuid\nwhile os.path.exists({str(flag)!r}):\n    time.sleep(0.2)\n"
              "print('token-' + uuid.uuid4().hex)")
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [],
                   "source": [source]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    manifest = {"version": 1, "metadata": {"appmode": "jupyter-static", "entrypoint": "report.ipynb"},
                "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
                "files": {"report.ipynb": {}, "requirements.txt": {}}}
    return tar_gz({"manifest.json": json.dumps(manifest), "report.ipynb": json.dumps(notebook), "requirements.txt": "\n"})


def new_notebook(node: RunningServer, flag: Path) -> str:
    made = node.api().post(f"{node.url}/__api__/v1/content", json={"name": f"nb-{uuid.uuid4().hex[:8]}"})
    assert made.status_code == 200, made.text
    guid = str(made.json()["guid"])
    _, task = deploy(node, node.admin_key, guid, notebook_bundle(flag))
    assert task["code"] == 0, task["all_output"]
    return guid


def token(node: RunningServer, guid: str) -> str:
    import re

    page = node.api().get(f"{node.url}/content/{guid}/", timeout=30)
    assert page.status_code == 200, page.text[:500]
    found = re.search(r"token-([0-9a-f]{32})", page.text)
    assert found, page.text[:500]
    return found.group(1)


def renderings(node: RunningServer, guid: str) -> list[dict[str, Any]]:
    listed = node.api().get(f"{node.url}/__api__/v1/content/{guid}/renderings", timeout=10)
    assert listed.status_code == 200, listed.text
    return list(listed.json())


def test_nodes_kill_mid_render_fails_the_render_and_the_previous_rendering_serves(
    cluster: Cluster, tmp_path: Path
) -> None:
    flag = tmp_path / "hold-the-render"
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_notebook(a, flag)
    served = token(b, guid)  # the first rendering, served through B
    flag.touch()  # the next render waits ...
    try:
        started = a.api().post(f"{a.url}/__api__/v1/content/{guid}/render", timeout=30)
        assert started.status_code == 200, started.text
        task_id = started.json()["task_id"]
        render = wait_until(lambda: cluster.rows(
            "SELECT key, pid, node_id FROM jobs WHERE kind = 'render' AND status = 0 AND pid IS NOT NULL"),
            seconds=60)[0]
        assert [r["status"] for r in renderings(a, guid)][0] == "running"
        a.process.send_signal(signal.SIGKILL)  # ... and A dies in the middle of it
        a.process.wait()

        def finished() -> dict[str, Any] | None:
            body = b.api().get(f"{b.url}/__api__/v1/tasks/{task_id}", timeout=10).json()
            return body if body["finished"] else None

        done = wait_until(finished, seconds=NODE_TIMEOUT_SECONDS * 4)
        assert done["code"] != 0 and "stopped responding" in done["error"], done
        wait_until(lambda: not alive(render.pid), seconds=NODE_TIMEOUT_SECONDS * 2)  # B stopped A's render
        ended = cluster.rows("SELECT status, error FROM jobs WHERE key = :k", k=render.key)
        assert ended[0].status == 1 and "stopped responding" in ended[0].error, ended
    finally:
        flag.unlink()
    history = renderings(b, guid)
    assert [r["status"] for r in history] == ["failed", "succeeded"], history
    assert "stopped responding" in history[0]["error"] and history[1]["active"], history
    # failed once, by B's claim: one claim of A, and the rendering's row was not touched again
    claims = cluster.rows("SELECT claimed_by FROM nodes WHERE claimed_by IS NOT NULL")
    assert len(claims) == 1, claims
    assert token(b, guid) == served  # the previous rendering keeps serving, through B


def test_nodes_a_schedule_due_while_its_node_is_dead_runs_once_on_the_other(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A dies holding the ``render-schedules`` duty; a schedule falls due while it is dead.
    B takes the duty and renders it once; A started again does not render it again."""
    from datetime import UTC, datetime, timedelta

    cluster.env["PODIUM_SCHEDULE_POLL_SECONDS"] = "0.2"
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_notebook(a, tmp_path / "never")
    a_node = wait_until(lambda: cluster.rows(
        "SELECT holder FROM leases WHERE name = 'render-schedules' AND expires_time > now()"))[0].holder
    b_node = cluster.rows("SELECT node_id FROM nodes WHERE node_id <> :a", a=a_node)[0].node_id
    assert a_node in a.log()  # the first node holds the duty
    a.process.send_signal(signal.SIGKILL)
    a.process.wait()
    api = b.api()
    variant = api.get(f"{b.url}/__api__/applications/{guid}/variants", timeout=10).json()[0]
    due = datetime.now(UTC) + timedelta(seconds=1)  # before B may take A's duty
    made = api.post(f"{b.url}/__api__/schedules", json={
        "app_id": variant["app_id"], "variant_id": variant["id"], "type": "day", "schedule": '{"N": 1}',
        "start_time": due.strftime("%Y-%m-%dT%H:%M:%SZ"), "timezone": "UTC",
    }, timeout=10)
    assert made.status_code == 200, made.text

    def scheduled() -> list[Any]:
        return cluster.rows(
            "SELECT r.status, r.node_id FROM renderings r JOIN content c ON c.id = r.content_id "
            "WHERE c.guid = :g AND r.reason = 'schedule'", g=guid)

    runs = wait_until(lambda: [r for r in scheduled() if r.status != "running"], seconds=60)
    assert [(r.status, r.node_id) for r in runs] == [("succeeded", b_node)], runs
    holder = cluster.rows("SELECT holder FROM leases WHERE name = 'render-schedules'")[0].holder
    assert holder == b_node
    a = cluster.start(again=a)  # A again: the run it missed is not run a second time
    time.sleep(2)  # many passes (every 0.2 s) of both nodes
    assert [(r.status, r.node_id) for r in scheduled()] == [("succeeded", b_node)], scheduled()
    following = cluster.rows("SELECT next_run FROM schedules WHERE id = :i", i=int(made.json()["id"]))[0].next_run
    assert following.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(hours=23)


def test_nodes_on_kubernetes_a_killed_replica_s_jobs_are_adopted_after_the_timeout(tmp_path: Path) -> None:
    """Two replicas on the simulated cluster; kill -9 of A (no hand-over): B claims A once
    the node timeout has passed, adopts A's Job and serves from that very pod; no Job is
    deleted or started."""
    from tests.test_kubernetes_e2e import IMAGE, k8s_env

    from k8s_sim import SimCluster

    sim = SimCluster(tmp_path / "k8s", images={IMAGE})
    sim.start()
    made = Cluster(tmp_path / "data", nodes_database())
    made.env.update(k8s_env(sim, tmp_path, claim="ha-data", PODIUM_KUBERNETES_INSTANCE="ha"))

    try:
        a = made.start(first=True)
        b = made.start()
        assert requests.get(f"{a.url}/__ready__", timeout=10).json() == {"ready": True}
        on_a_only, on_b_only = new_app(a), new_app(a)
        served_by_a = content(a, on_a_only)
        served_by_b = content(b, on_b_only)
        before = live_run_jobs(sim)
        (a_job,) = run_jobs(made, on_a_only)
        (b_job,) = run_jobs(made, on_b_only)
        a_node, b_node = a_job.node_id, b_job.node_id
        assert len(before) == 2 and {node for _, node in before.values()} == {a_node, b_node}, before

        a.process.send_signal(signal.SIGKILL)  # A dies: no hand-over, only the timeout tells
        a.process.wait()
        killed = time.monotonic()
        assert not made.rows("SELECT node_id FROM nodes WHERE claimed_by IS NOT NULL")
        claim = wait_until(lambda: made.rows("SELECT claimed_by FROM nodes WHERE node_id = :n AND "
                                             "claimed_by IS NOT NULL", n=a_node), seconds=NODE_TIMEOUT_SECONDS * 4)
        took = time.monotonic() - killed
        assert claim[0].claimed_by == b_node
        assert NODE_TIMEOUT_SECONDS - 1 < took < NODE_TIMEOUT_SECONDS * 2 + 1, took  # after the timeout
        assert [(j.key, j.node_id) for j in run_jobs(made, on_a_only)] == [(a_job.key, b_node)]
        assert content(b, on_a_only)["process"] == served_by_a["process"]  # the same pod: no cold start
        assert content(b, on_b_only)["process"] == served_by_b["process"]
        time.sleep(1)  # a few housekeeping rounds of B's
        assert live_run_jobs(sim) == before  # nothing deleted, nothing started
        assert [(j.key, j.node_id) for j in run_jobs(made, on_a_only)] == [(a_job.key, b_node)]
        assert "claimed dead node" in b.log()
    finally:
        made.close()
        problems = sim.close()
    assert problems == []


def test_nodes_usage_recorded_on_both_nodes_is_imported_once(cluster: Cluster) -> None:
    """Each node spools its own usage into the shared data dir and its own importer
    imports it; a clean stop leaves nothing spooled and nothing twice."""
    cluster.env["PODIUM_USAGE_FLUSH_SECONDS"] = "0.2"
    a = cluster.start(first=True)
    b = cluster.start()
    guid = new_app(a)

    def hits() -> int:
        return int(cluster.rows("SELECT count(*) FROM content_hits WHERE content_guid = :g", g=guid)[0][0])

    for node in (a, b, a, b, a, b):
        content(node, guid)
    wait_until(lambda: hits() == 6)
    content(a, guid)
    a.stop()  # what A had buffered is imported before it exits
    assert hits() == 7
    content(b, guid)
    b.stop()
    assert hits() == 8
    assert [p.name for p in (cluster.data / "usage").iterdir()] == []
    assert len(cluster.rows("SELECT DISTINCT path FROM content_hits WHERE content_guid = :g", g=guid)) == 1


def test_a_stop_without_its_database_still_stops_content_and_says_so(tmp_path: Path) -> None:
    # The database goes away while a node serves an app (dropped, its connections ended);
    # then the node is stopped. What the stop could not write is logged (leases left to
    # expire, usage left in the spool for the next start), and the rest of the stop goes
    # on: the app's process is stopped, not left running without its server.
    require_postgres()
    url = make_url(POSTGRES_URL)
    gone = url.set(database=f"{url.database}_gone")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{gone.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{gone.database}"'))
    server = start_server(tmp_path / "data", Cluster(tmp_path, gone.render_as_string(hide_password=False)).env)
    pid = 0
    try:
        item = server.api().post(f"{server.url}/__api__/v1/content", json={"name": "orphan"}).json()
        deploy(server, server.admin_key, item["guid"], fastapi_bundle(APP))
        pid = requests.get(f"{server.content_url}/content/{item['guid']}/",
                           headers={"Authorization": f"Key {server.admin_key}"}).json()["pid"]
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{gone.database}" WITH (FORCE)'))
        server.stop()
        assert server.process.returncode == 0, server.log()[-3000:]
    finally:
        server.stop()
        admin.dispose()
        if pid and alive(pid):  # left running by a stop that gave up: this test's to end
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the app's process {pid} outlived its server's stop")
    log = server.log()
    assert "could not release its leases (they expire on their own)" in log, log[-3000:]
    assert "the usage spool could not be imported at the stop; the next start imports it" in log
