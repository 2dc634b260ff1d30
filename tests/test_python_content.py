"""Python content end to end: deployed with the real rsconnect CLI, served through Podium.

One server for the module; apps share requirement sets so their package
environments are built once and reused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import alive, wait_task
from tests.test_clients import rsconnect

pytestmark = pytest.mark.integration

FASTAPI_APP = """
import asyncio, os, uuid
from fastapi import FastAPI, Request, WebSocket

app = FastAPI()
# Which process answered: sandboxed processes each have a PID namespace, where pids repeat.
PROCESS = uuid.uuid4().hex

@app.get("/")
def root(request: Request):
    return {"hello": "podium", "pid": os.getpid(), "process": PROCESS,
            "identity": request.headers.get("rstudio-connect-credentials"),
            "authorization": request.headers.get("authorization"),
            "cookie": request.headers.get("cookie"),
            "secret": os.environ.get("MY_SECRET"),
            "server": request.scope.get("server"), "client": request.scope.get("client")}

@app.get("/sleep")
async def sleep(s: float = 1.0):
    await asyncio.sleep(s)
    return {"pid": os.getpid(), "process": PROCESS}

@app.get("/crash")
def crash():
    os._exit(3)

@app.get("/eat")
def eat(mb: int = 256):
    block = bytearray(mb * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"ate": mb}

@app.websocket("/ws")
async def ws(socket: WebSocket):
    await socket.accept()
    while True:
        text = await socket.receive_text()
        if text == "bye":
            await socket.close(code=4001)
            return
        if text == "where":
            await socket.send_json({"server": socket.scope.get("server"),
                                    "identity": socket.headers.get("rstudio-connect-credentials"),
                                    "authorization": socket.headers.get("authorization")})
            continue
        await socket.send_text(text.upper())
"""

FLASK_APP = """
from flask import Flask, url_for
app = Flask(__name__)

@app.route("/")
def index():
    return {"flask": True, "link": url_for("other")}

@app.route("/other")
def other():
    return "other page"
"""

DASH_APP = """
from dash import Dash, html
app = Dash(__name__)
app.layout = html.Div([html.H1("Dash through Podium", id="title")])
"""

STREAMLIT_APP = """
import streamlit as st
st.title("Streamlit through Podium")
st.write(6 * 7)
"""


def write_app(root: Path, name: str, source: str, requirements: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.py").write_text(source)
    (directory / "requirements.txt").write_text(requirements)
    return directory


def guid_of(directory: Path) -> str:
    record_file = next((directory / "rsconnect-python").glob("*.json"))
    record = json.loads(record_file.read_text())
    entry = record if "app_guid" in record else next(iter(record.values()))
    return str(entry["app_guid"])


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Path:
    home = tmp_path_factory.mktemp("home")
    key = server.user_key("py_publisher", "publisher")
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key)
    assert added.returncode == 0, added.stdout + added.stderr
    return home


def deploy_dir(home: Path, kind: str, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return rsconnect(home, "deploy", kind, "-n", "podium", *extra, str(directory))


@pytest.fixture(scope="module")
def fastapi_app(server: RunningServer, home: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = write_app(tmp_path_factory.mktemp("apps"), "fastapi_app", FASTAPI_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory, "-E", "MY_SECRET=swordfish")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Building package environment" in done.stdout + done.stderr or "Reusing" in done.stdout + done.stderr
    return guid_of(directory)


def content_url(server: RunningServer, guid: str) -> str:
    return f"{server.url}/content/{guid}/"


def publisher(server: RunningServer) -> requests.Session:
    return server.api(server.user_key("py_publisher", "publisher"))


def patch(server: RunningServer, guid: str, **fields: Any) -> dict[str, Any]:
    response = publisher(server).patch(f"{server.url}/__api__/v1/content/{guid}", json=fields)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def jobs(server: RunningServer, guid: str) -> list[dict[str, Any]]:
    return publisher(server).get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()  # type: ignore[no-any-return]


def active_run_jobs(server: RunningServer, guid: str) -> list[dict[str, Any]]:
    return [j for j in jobs(server, guid) if j["status"] == 0 and j["tag"].startswith("run")]


def wait_until(predicate: Any, seconds: float = 30, every: float = 0.2) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


# --- FastAPI ----------------------------------------------------------------------------


def test_fastapi_served_with_identity_and_stripped_credentials(server: RunningServer, fastapi_app: str) -> None:
    client = publisher(server)
    client.cookies.set("app_cookie", "kept")
    body = client.get(content_url(server, fastapi_app)).json()
    assert body["hello"] == "podium" and body["secret"] == "swordfish"
    assert json.loads(body["identity"])["user"] == "py_publisher"
    assert body["authorization"] is None
    assert body["cookie"] == "app_cookie=kept"
    # The proxy reached the local process on its unix socket, and the viewer's address
    # came through X-Forwarded-For.
    assert body["server"][0].endswith(".sock")
    assert body["client"][0] == "127.0.0.1"
    docs = client.get(content_url(server, fastapi_app) + "docs")
    assert docs.status_code == 200 and f"/content/{fastapi_app}/openapi.json" in docs.text
    assert client.get(content_url(server, fastapi_app) + "openapi.json").status_code == 200
    # Anonymous viewers and forged identity headers get nowhere.
    assert requests.get(content_url(server, fastapi_app)).status_code == 401
    forged = requests.get(content_url(server, fastapi_app), headers={"RStudio-Connect-Credentials": '{"user":"admin"}'})
    assert forged.status_code == 401


def test_fastapi_websocket_both_ways_with_close_code(server: RunningServer, fastapi_app: str) -> None:
    import websockets

    key = server.user_key("py_publisher", "publisher")
    url = content_url(server, fastapi_app).replace("http://", "ws://") + "ws"

    async def talk() -> tuple[list[str], int | None]:
        async with websockets.connect(url, additional_headers={"Authorization": f"Key {key}"}) as ws:
            # Handed over to the (sandboxed) content process: its socket is the viewer's,
            # whose server address is Podium's listener; the head is the one the proxy
            # forwards (identity added, the viewer's key removed).
            await ws.send("where")
            where = json.loads(await ws.recv())
            assert where["server"] == ["127.0.0.1", int(server.url.rsplit(":", 1)[1])]
            assert json.loads(where["identity"])["user"] == "py_publisher"
            assert where["authorization"] is None
            replies = []
            for word in ("hello", "podium"):
                await ws.send(word)
                replies.append(str(await ws.recv()))
            await ws.send("bye")
            try:
                await ws.recv()
            except websockets.ConnectionClosed as closed:
                return replies, closed.rcvd.code if closed.rcvd else None
        return replies, None

    replies, code = asyncio.run(talk())
    assert replies == ["HELLO", "PODIUM"]
    assert code == 4001


def test_a_handed_over_websocket_holds_its_process_past_the_idle_timeout(
    server: RunningServer, fastapi_app: str
) -> None:
    """A handed-over session lives in the content process, not in the proxy: its lease is
    held until the session ends, so idle shutdown does not stop the process under it; once
    it ends, the lease is released and the idle process stops."""
    import websockets

    key = server.user_key("py_publisher", "publisher")
    url = content_url(server, fastapi_app).replace("http://", "ws://") + "ws"
    patch(server, fastapi_app, idle_timeout=1)
    try:
        async def talk() -> str:
            async with websockets.connect(url, additional_headers={"Authorization": f"Key {key}"}) as ws:
                await ws.send("where")
                where = json.loads(await ws.recv())
                assert where["server"] == ["127.0.0.1", int(server.url.rsplit(":", 1)[1])]  # handed over
                await asyncio.sleep(4)  # several housekeeping rounds past idle_timeout
                await ws.send("still here")
                return str(await ws.recv())

        assert asyncio.run(talk()) == "STILL HERE"
        wait_until(lambda: not active_run_jobs(server, fastapi_app), seconds=30)
    finally:
        patch(server, fastapi_app, idle_timeout=None)


def test_jobs_api_lists_build_and_run_with_logs(server: RunningServer, fastapi_app: str) -> None:
    publisher(server).get(content_url(server, fastapi_app))
    listed = jobs(server, fastapi_app)
    tags = {j["tag"] for j in listed}
    assert "run_fastapi_app" in tags
    run = next(j for j in listed if j["tag"] == "run_fastapi_app" and j["status"] == 0)
    assert run["pid"] and run["hostname"] and run["start_time"]
    base = f"{server.url}/__api__/v1/content/{fastapi_app}/jobs/{run['key']}"
    assert publisher(server).get(base).json()["key"] == run["key"]
    log = publisher(server).get(f"{base}/log").json()
    assert any("Uvicorn running" in e["data"] or "Application startup" in e["data"] for e in log["entries"])
    assert publisher(server).get(f"{base}/log", params={"maxLogLines": 1}).json()["entries"].__len__() == 1
    other = server.api(server.user_key("py_other", "publisher"))
    assert other.get(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs").status_code == 404


def test_redeploy_unchanged_requirements_builds_nothing(server: RunningServer, home: Path, tmp_path: Path) -> None:
    directory = write_app(tmp_path, "second_fastapi", FASTAPI_APP, "fastapi\n")
    started = time.monotonic()
    done = deploy_dir(home, "fastapi", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Reusing package environment" in done.stdout + done.stderr
    assert "Building package environment" not in done.stdout + done.stderr
    assert time.monotonic() - started < 30
    guid = guid_of(directory)
    assert publisher(server).get(content_url(server, guid)).json()["hello"] == "podium"


# --- scheduler policy -------------------------------------------------------------------


def test_scale_up_to_max_processes_then_503(server: RunningServer, fastapi_app: str) -> None:
    patch(server, fastapi_app, max_processes=2, max_conns_per_process=1, load_factor=1.0,
          idle_timeout=2, min_processes=0)
    client = publisher(server)
    client.get(content_url(server, fastapi_app))  # warm one process
    url = content_url(server, fastapi_app) + "sleep?s=8"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.get, url, headers={"Accept": "application/json"})
        time.sleep(0.5)
        # The only process is at its threshold: this connection starts a second one.
        second = pool.submit(client.get, url, headers={"Accept": "application/json"})
        wait_until(lambda: len(active_run_jobs(server, fastapi_app)) == 2, seconds=30)
        time.sleep(2)  # the second process is ready and serving its connection
        # Both processes are busy with one connection each: the next is refused.
        refused = client.get(content_url(server, fastapi_app), headers={"Accept": "application/json"})
        results = [first.result(), second.result()]
    assert refused.status_code == 503, refused.text
    assert "maximum" in refused.json()["error"]
    assert sorted(r.status_code for r in results) == [200, 200]
    assert len({r.json()["process"] for r in results}) == 2
    # Idle processes beyond min_processes stop after idle_timeout.
    wait_until(lambda: len(active_run_jobs(server, fastapi_app)) == 0, seconds=20)
    stopped = [j for j in jobs(server, fastapi_app) if j["tag"] == "run_fastapi_app"]
    assert len(stopped) >= 2
    patch(server, fastapi_app, max_processes=None, max_conns_per_process=None, load_factor=None,
          idle_timeout=None)


def test_min_processes_kept_warm(server: RunningServer, fastapi_app: str) -> None:
    patch(server, fastapi_app, min_processes=1, idle_timeout=1)
    try:
        wait_until(lambda: len(active_run_jobs(server, fastapi_app)) == 1, seconds=30)
        time.sleep(3)
        assert len(active_run_jobs(server, fastapi_app)) == 1
    finally:
        patch(server, fastapi_app, min_processes=None, idle_timeout=None)


def test_crashed_process_restarts_on_next_request(server: RunningServer, fastapi_app: str) -> None:
    client = publisher(server)
    first = client.get(content_url(server, fastapi_app)).json()["process"]
    crashed = client.get(content_url(server, fastapi_app) + "crash")
    assert crashed.status_code == 502
    def served_process() -> str | None:
        answer = client.get(content_url(server, fastapi_app))
        return answer.json()["process"] if answer.status_code == 200 else None

    # The crash is noticed within a housekeeping round; then a request starts a new process.
    second = wait_until(served_process, seconds=10, every=0.1)
    assert second != first
    ended = [j for j in jobs(server, fastapi_app) if j["exit_code"] == 3]
    assert ended and ended[0]["status"] == 1 and "3" in (ended[0]["error"] or "")


def test_memory_limit_kill_is_reported(server: RunningServer, fastapi_app: str) -> None:
    patch(server, fastapi_app, memory_limit=96 * 1024 * 1024)
    client = publisher(server)
    try:
        for job in active_run_jobs(server, fastapi_app):  # restart under the new limit
            client.delete(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs/{job['key']}")
        assert client.get(content_url(server, fastapi_app)).status_code == 200
        eaten = client.get(content_url(server, fastapi_app) + "eat?mb=400")
        assert eaten.status_code == 502
        killed = wait_until(
            lambda: [j for j in jobs(server, fastapi_app) if "exceeded memory limit" in (j["error"] or "")]
        )
        log = client.get(f"{server.url}/__api__/v1/content/{fastapi_app}/jobs/{killed[0]['key']}/log").json()
        assert any("exceeded memory limit of 96.0 MiB" in e["data"] for e in log["entries"])
    finally:
        patch(server, fastapi_app, memory_limit=None)


def test_kill_job_through_api(server: RunningServer, fastapi_app: str) -> None:
    client = publisher(server)
    client.get(content_url(server, fastapi_app))
    job = active_run_jobs(server, fastapi_app)[0]
    url = f"{server.url}/__api__/v1/content/{fastapi_app}/jobs/{job['key']}"
    assert client.delete(url).status_code == 200
    assert client.get(url).json()["status"] == 1
    again = client.delete(url)
    assert again.status_code == 409 and again.json()["code"] == 163


# --- build failures ---------------------------------------------------------------------


def test_failed_build_keeps_previous_bundle_serving(server: RunningServer, home: Path, fastapi_app: str, tmp_path: Path) -> None:
    record_dir = tmp_path / "broken"
    directory = write_app(tmp_path, "broken", FASTAPI_APP, "fastapi\nthis-package-does-not-exist-podium==9.9.9\n")
    assert directory == record_dir
    done = deploy_dir(home, "fastapi", directory, "--app-id", fastapi_app)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "this-package-does-not-exist-podium" in output and "Building the package environment failed" in output
    assert publisher(server).get(content_url(server, fastapi_app)).json()["hello"] == "podium"


def test_no_matching_python_fails_clearly(server: RunningServer, home: Path, tmp_path: Path) -> None:
    directory = write_app(tmp_path, "oldpy", FASTAPI_APP, "fastapi\n")
    done = deploy_dir(home, "fastapi", directory, "--override-python-version", "3.5.0")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "3.5.0" in output and "Cannot find a compatible execution environment" in output
    assert "image 'Local': has Python" in output


# --- other frameworks -------------------------------------------------------------------


def test_flask_api(server: RunningServer, home: Path, tmp_path: Path) -> None:
    directory = write_app(tmp_path, "flask_app", FLASK_APP, "flask\n")
    done = deploy_dir(home, "flask", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    guid = guid_of(directory)
    body = publisher(server).get(content_url(server, guid)).json()
    assert body["flask"] is True and body["link"] == f"/content/{guid}/other"
    assert publisher(server).get(content_url(server, guid) + "other").text == "other page"


def test_dash_app(server: RunningServer, home: Path, tmp_path: Path) -> None:
    directory = write_app(tmp_path, "dash_app", DASH_APP, "dash\n")
    done = deploy_dir(home, "dash", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    guid = guid_of(directory)
    page = publisher(server).get(content_url(server, guid))
    assert page.status_code == 200 and f"/content/{guid}/_dash-component-suites/" in page.text
    layout = publisher(server).get(content_url(server, guid) + "_dash-layout")
    assert "Dash through Podium" in layout.text


def test_streamlit_app_with_websocket(server: RunningServer, home: Path, tmp_path: Path) -> None:
    import websockets

    directory = write_app(tmp_path, "streamlit_app", STREAMLIT_APP, "streamlit\n")
    done = deploy_dir(home, "streamlit", directory)
    assert done.returncode == 0, done.stdout + done.stderr
    guid = guid_of(directory)
    client = publisher(server)
    page = client.get(content_url(server, guid))
    assert page.status_code == 200 and "<div id=\"root\">" in page.text
    assert client.get(content_url(server, guid) + "_stcore/health").text.strip() == "ok"
    key = server.user_key("py_publisher", "publisher")
    url = content_url(server, guid).replace("http://", "ws://") + "_stcore/stream"

    async def connect() -> bool:
        async with websockets.connect(url, additional_headers={"Authorization": f"Key {key}"},
                                      subprotocols=["streamlit"]) as ws:  # type: ignore[list-item]
            return ws.protocol is not None

    assert asyncio.run(connect())


# --- restart safety ---------------------------------------------------------------------


def deploy_restart_app(server: RunningServer, tmp_path: Path) -> tuple[str, str, str, int | None]:
    """Deploy the FastAPI app with rsconnect as a new publisher; (key, guid, the process's
    identity, its job's pid on this host: None for a Kubernetes Job)."""
    home = tmp_path / "home"
    home.mkdir()
    key = server.user_key("restarter", "publisher")
    assert rsconnect(home, "add", "-n", "p", "-s", server.url, "-k", key).returncode == 0
    directory = write_app(tmp_path, "restart_app", FASTAPI_APP, "fastapi\n")
    done = rsconnect(home, "deploy", "fastapi", "-n", "p", str(directory))
    assert done.returncode == 0, done.stdout + done.stderr
    guid = guid_of(directory)
    process = server.api(key).get(f"{server.url}/content/{guid}/").json()["process"]
    run = next(j for j in server.api(key).get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
               if j["kind"] == "run" and j["status"] == 0)
    return key, guid, process, run["pid"]


def test_server_restart_adopts_running_processes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_server(data)
    try:
        key, guid, process, pid = deploy_restart_app(first, tmp_path)
        assert pid is not None
    finally:
        first.process.send_signal(signal.SIGKILL)  # a crash: nothing is cleaned up
        first.process.wait()
    os.kill(pid, 0)  # the app survived its server
    # The same node again: its node id names its port (settings.node_id), and a node adopts its own.
    second = start_server(data, bootstrap=False, ports=first.ports)
    try:
        second._keys = dict(first._keys)
        body = second.api(key).get(f"{second.url}/content/{guid}/").json()
        assert body["process"] == process  # adopted, not restarted
    finally:
        second.stop()
    # A clean shutdown stops the processes: nothing is orphaned.
    wait_until(lambda: not alive(pid), seconds=15)


def test_deploy_task_shows_build_output(server: RunningServer, tmp_path: Path) -> None:
    from tests.helpers import tar_gz

    key = server.user_key("py_publisher", "publisher")
    client = server.api(key)
    item = client.post(f"{server.url}/__api__/v1/content", json={"name": f"raw_{os.getpid()}"}).json()
    manifest = {"version": 1, "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
                "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
                "files": {}}
    archive = tar_gz({"manifest.json": json.dumps(manifest), "app.py": FASTAPI_APP, "requirements.txt": "fastapi\n"})
    bundle = client.post(f"{server.url}/__api__/v1/content/{item['guid']}/bundles", data=archive).json()
    task = client.post(f"{server.url}/__api__/v1/content/{item['guid']}/deploy", json={"bundle_id": bundle["id"]}).json()
    result = wait_task(server, key, task["task_id"])
    assert result["code"] == 0, result["all_output"]
    assert any("Python" in line for line in result["all_output"])
