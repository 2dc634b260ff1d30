"""Cold start after idle shutdown: an app started directly against the same app through Podium.

    python bench/coldstart.py                     # fastapi, flask, dash, streamlit; 7 samples
    python bench/coldstart.py --apps fastapi --samples 11
    python bench/coldstart.py --sandbox off       # content unsandboxed (default: required)
    python bench/coldstart.py --browser           # through Podium as a browser asks (Accept: text/html)
    python bench/coldstart.py --baseline /tmp/main/src   # and a second server running another
                                                  # checkout's Podium, interleaved (before/after)

For each framework a minimal app (one page) is deployed to a real ``podium serve`` as
public content with ``min_processes = 0``; Podium builds its environment as it builds any
other. Then, in alternation, sample after sample:

- **direct**: the same ``app.py`` started from the same environment (the venv Podium
  built: ``<data>/envs/<fingerprint>/bin/python``) by the framework's own server
  (``uvicorn app:app``, ``gunicorn app:app``, ``gunicorn app:server``, ``streamlit run
  app.py``) on a free port; the time from the spawn to the first ``200`` to ``GET /``
  (polled every 5 ms), then the process is stopped;
- **through Podium**: the content's process is stopped (the jobs API, as idle shutdown
  stops it: the same scheduler path), then the time from ``GET /content/<guid>/`` on
  the content origin to its ``200``, whatever the proxy does meanwhile (starting the
  process, waiting for it, retrying after a "starting" page with ``--browser``).

With ``--baseline``, a second ``podium serve`` runs Podium from another source tree (the
same venv, its ``src`` first on ``PYTHONPATH``) and takes its turn in every sample.

Prints each sample, then per framework the medians side by side and their difference in
ms (the goal: within 200 ms), with the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import podium_server
import requests
from proxy import free_port, wait_for_port

PY_VERSION = ".".join(map(str, sys.version_info[:3]))


@dataclass(frozen=True)
class App:
    name: str
    app_mode: str
    entrypoint: str
    requirements: str
    source: str
    # the direct command after the venv's python, {port} filled in
    direct: tuple[str, ...]


APPS = {
    "fastapi": App(
        "fastapi", "python-fastapi", "app:app", "fastapi\nuvicorn[standard]\n",
        "from fastapi import FastAPI\n\napp = FastAPI()\n\n\n@app.get('/')\n"
        "def root() -> dict[str, str]:\n    return {'hello': 'world'}\n",
        ("-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "{port}"),
    ),
    "flask": App(
        "flask", "python-api", "app:app", "flask\ngunicorn\n",
        "from flask import Flask\n\napp = Flask(__name__)\n\n\n@app.route('/')\n"
        "def root() -> str:\n    return 'hello world'\n",
        ("-m", "gunicorn", "--bind", "127.0.0.1:{port}", "app:app"),
    ),
    "dash": App(
        "dash", "python-dash", "app:app", "dash\ngunicorn\n",
        "from dash import Dash, html\n\napp = Dash(__name__)\n"
        "app.layout = html.Div([html.H1('hello'), html.P('world')])\nserver = app.server\n",
        ("-m", "gunicorn", "--bind", "127.0.0.1:{port}", "app:server"),
    ),
    "streamlit": App(
        "streamlit", "python-streamlit", "app.py", "streamlit\n",
        "import streamlit as st\n\nst.title('hello')\nst.write('world')\n",
        ("-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port", "{port}",
         "--server.headless", "true", "--browser.gatherUsageStats", "false"),
    ),
}


def bundle(app: App) -> bytes:
    manifest = {
        "version": 1,
        "metadata": {"appmode": app.app_mode, "entrypoint": app.entrypoint},
        "python": {"version": PY_VERSION,
                   "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
        "files": {},
    }
    return podium_server.bundle({"app.py": app.source, "requirements.txt": app.requirements}, manifest)


def load() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


@dataclass
class Server:
    data_dir: str
    base: str  # the API
    content: str  # the content origin
    api: requests.Session


@contextlib.contextmanager
def podium(sandbox: str, source: str | None = None) -> Iterator[Server]:
    """A real ``podium serve`` in a fresh data dir, with its admin's API key; with
    ``source``, Podium's ``src`` folder of another checkout (on ``PYTHONPATH``)."""
    work = tempfile.mkdtemp(prefix="podium-bench-coldstart-")
    data_dir = os.path.join(work, "data")
    command = [sys.executable, "-m", "podium"]
    port, content_port = free_port(), free_port()
    env = {**os.environ, "PODIUM_BOOTSTRAP_ADMIN_ON_FIRST_START": "false", "PODIUM_SANDBOX": sandbox,
           "PODIUM_CONTENT_LISTEN": f"127.0.0.1:{content_port}"}
    if source is not None:
        env["PYTHONPATH"] = os.path.abspath(source)
    key = subprocess.run([*command, "admin", "bootstrap", "--data-dir", data_dir], check=True,
                         capture_output=True, text=True, env=env).stdout.strip()
    log = open(os.path.join(work, "server.log"), "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [*command, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, 60.0)
        api = requests.Session()
        api.headers["Authorization"] = f"Key {key}"
        print(f"podium serve: data dir {data_dir}, log {log.name}", flush=True)
        yield Server(data_dir, f"http://127.0.0.1:{port}/__api__", f"http://localhost:{content_port}", api)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        if os.environ.get("PODIUM_BENCH_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def deploy(server: Server, app: App) -> str:
    """Deploy ``app`` as public content that no process keeps warm; its guid."""
    base, api = server.base, server.api
    guid: str = api.post(f"{base}/v1/content", json={
        "name": f"cold-{app.name}", "access_type": "all", "min_processes": 0, "max_processes": 1,
    }).json()["guid"]
    bundle_id = api.post(f"{base}/v1/content/{guid}/bundles", data=bundle(app)).json()["id"]
    task = api.post(f"{base}/v1/content/{guid}/deploy", json={"bundle_id": bundle_id}).json()["task_id"]
    while not (state := api.get(f"{base}/v1/tasks/{task}", params={"wait": 1}).json())["finished"]:
        pass
    if state["code"] != 0:
        raise RuntimeError(f"deploy of {app.name} failed: {state['error']}\n" + "\n".join(state["output"][-20:]))
    return guid


def running_jobs(server: Server, guid: str) -> list[dict[str, object]]:
    jobs = server.api.get(f"{server.base}/v1/content/{guid}/jobs").json()
    return [job for job in jobs if job["status"] == 0 and job["kind"] == "run"]


def stop_all(server: Server, guid: str) -> None:
    """Stop the content's processes and wait until none runs."""
    deadline = time.monotonic() + 60
    while jobs := running_jobs(server, guid):
        for job in jobs:
            server.api.delete(f"{server.base}/v1/content/{guid}/jobs/{job['key']}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the processes of {guid} do not stop")
        time.sleep(0.1)


def environments(server: Server) -> set[str]:
    """The package environments Podium has built (``<data>/envs/<fingerprint>``)."""
    return set(glob.glob(os.path.join(server.data_dir, "envs", "*", "bin", "python")))


def wait_compiled(python: str, timeout: float = 300.0) -> None:
    """Wait until the environment of ``python`` is byte-compiled (local builds compile in
    the background after the deploy and mark it with ``.podium-compiled``; a checkout
    from before that compiled during the build and has no marker: its environment is
    ready at once). Cold starts are timed against compiled environments, as after an
    idle shutdown."""
    env = os.path.dirname(os.path.dirname(python))
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(env, ".podium-compiled")):
        if not glob.glob(os.path.join(os.path.dirname(env), f".{os.path.basename(env)}.compile-*")) and \
                time.monotonic() > deadline - timeout + 5:
            return  # no compile job at work after 5 s: a checkout that compiles in the build
        if time.monotonic() > deadline:
            raise RuntimeError(f"{env} was not byte-compiled within {timeout:.0f} s")
        time.sleep(0.2)


def get(port: int, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One ``GET`` on a fresh connection to ``127.0.0.1:port``, the same plain socket for both
    sides (a client library's own overhead would count against one side only)."""
    head = f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n"
    if accept is not None:
        head += f"Accept: {accept}\r\n"
    with socket.create_connection(("127.0.0.1", port), 1.0) as sock:
        sock.sendall((head + "\r\n").encode())
        sock.settimeout(120)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().strip()):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read() if status != 200 else b""
    return status, headers, body


def through_podium(server: Server, guid: str, browser: bool) -> float:
    """Seconds from a request for the stopped content to its 200."""
    port = int(server.content.rsplit(":", 1)[1])
    accept = "text/html,application/xhtml+xml,*/*;q=0.8" if browser else None
    started = time.monotonic()
    while True:
        status, headers, body = get(port, f"/content/{guid}/", accept)
        if status == 200:
            return time.monotonic() - started
        if status == 503 and "retry-after" in headers:  # the "starting" page
            time.sleep(float(headers["retry-after"]))
            continue
        raise RuntimeError(f"cold start through Podium failed: {status} {body[:300]!r}")


def direct(python: str, app: App, folder: str) -> float:
    """Seconds from spawning the app's own server to its first 200 to ``GET /``."""
    port = free_port()
    argv = [python, *(part.format(port=port) for part in app.direct)]
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
            with contextlib.suppress(OSError):
                if get(port, "/")[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="fastapi,flask,dash,streamlit", help="comma-separated: " + ", ".join(APPS))
    parser.add_argument("--samples", type=int, default=7, help="cold starts of each side per app")
    parser.add_argument("--sandbox", choices=["required", "optional", "off"], default="required")
    parser.add_argument("--browser", action="store_true",
                        help="through Podium, ask as a browser does (Accept: text/html)")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also a second server running Podium from this src folder (e.g. "
                        "`git archive main src | tar -x -C /tmp/main`, then /tmp/main/src), interleaved")
    args = parser.parse_args(argv)
    apps = [APPS[name] for name in args.apps.split(",")]
    sides = ["direct", "podium"] + (["baseline"] if args.baseline else [])
    print(f"load average at the start: {load()}", flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        servers = {"podium": stack.enter_context(podium(args.sandbox))}
        if args.baseline:
            servers["baseline"] = stack.enter_context(podium(args.sandbox, args.baseline))
        for app in apps:
            guids: dict[str, str] = {}
            python = ""
            for side, server in servers.items():
                before = environments(server)
                guids[side] = deploy(server, app)
                built = sorted(environments(server) - before)
                if len(built) != 1:
                    raise RuntimeError(f"deploying {app.name} built {len(built)} environments, not one")
                python = python or built[0]
                wait_compiled(built[0])
            folder = tempfile.mkdtemp(prefix=f"podium-bench-{app.name}-")
            try:
                with open(os.path.join(folder, "app.py"), "w") as file:
                    file.write(app.source)
                # A first start of each side warms the page cache and the servers' routes.
                for side, server in servers.items():
                    through_podium(server, guids[side], args.browser)
                    stop_all(server, guids[side])
                direct(python, app, folder)
                times: dict[str, list[float]] = {side: [] for side in sides}
                for index in range(args.samples):
                    for side, server in servers.items():
                        stop_all(server, guids[side])
                    time.sleep(0.5)
                    said = []
                    # Each side goes first as often as the others.
                    for side in sides[index % len(sides):] + sides[:index % len(sides)]:
                        if side == "direct":
                            times[side].append(direct(python, app, folder))
                        else:
                            times[side].append(through_podium(servers[side], guids[side], args.browser))
                        said.append(f"{side} {times[side][-1] * 1000:6.0f} ms")
                        time.sleep(0.2)
                    print(f"{app.name:10} sample {index + 1}: {', '.join(said)}  (load {load()})", flush=True)
                for side, server in servers.items():
                    stop_all(server, guids[side])
                results[app.name] = times
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"load average at the end: {load()}")
    # "paired": the median of each sample's own difference, which a machine whose speed
    # drifts from one sample to the next disturbs less than the difference of the medians.
    head = (f"\n{'median of ' + str(args.samples):18} {'direct ms':>10} {'podium ms':>10} {'difference':>11} "
            f"{'paired':>10} {'goal':>6}")
    print(head + (f" {'baseline ms':>12} {'difference':>11} {'paired':>10}" if args.baseline else ""))
    for name, times in results.items():
        d, t = statistics.median(times["direct"]), statistics.median(times["podium"])
        paired = statistics.median(p - q for p, q in zip(times["podium"], times["direct"], strict=True))
        line = (f"{name:18} {d * 1000:10.0f} {t * 1000:10.0f} {(t - d) * 1000:+8.0f} ms {paired * 1000:+7.0f} ms "
                f"{'met' if t - d <= 0.2 else 'missed':>6}")
        if args.baseline:
            b = statistics.median(times["baseline"])
            paired = statistics.median(p - q for p, q in zip(times["baseline"], times["direct"], strict=True))
            line += f" {b * 1000:12.0f} {(b - d) * 1000:+8.0f} ms {paired * 1000:+7.0f} ms"
        print(line)


if __name__ == "__main__":
    main()
