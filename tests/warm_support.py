"""What the warm pool's tests and ``bench/k8s_warmpool.py`` share: a content item's
files in a data dir, Podium's transfer endpoint served on its own, and run job specs
whose app answers with what it sees (its file, its environment's names, a secret)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from podium.api import transfer
from podium.runtime import JobHandle, JobSpec
from podium.runtime.base import Sandbox
from podium.runtime.kubernetes.backend import KubernetesBackend
from podium.runtime.transfer import TransferTokens

IMAGE = "podium.test/runtime:host"
UID = GID = 10001
APP = """
import http.server, json, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"file": open("hello.txt").read(), "env": sorted(os.environ),
                           "secret": os.environ.get("SECRET"), "cwd": os.getcwd()}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), Handler).serve_forever()
"""


def make_bundle(data: Path, guid: str, text: str) -> tuple[Path, Path]:
    """The bundle and home of content ``guid`` below data dir ``data``."""
    bundle, home = data / "apps" / guid / "bundle", data / "apps" / guid / "home"
    bundle.mkdir(parents=True)
    home.mkdir(parents=True)
    (bundle / "app.py").write_text(APP)
    (bundle / "hello.txt").write_text(text)
    return bundle, home


def run_spec(key: str, guid: str, bundle: Path, home: Path, **changes: Any) -> JobSpec:
    values: dict[str, Any] = dict(
        key=key, kind="run", content_guid=guid, image=IMAGE, command=[sys.executable, "app.py"],
        env={"GREETING": "hi"}, workdir=str(bundle), port=None, secret_env={"SECRET": f"secret-of-{guid}"},
        sandbox=Sandbox(UID, GID, read_only=(str(bundle),), writable=(str(home),)))
    values.update(changes)
    return JobSpec(**values)


def serve_transfer(tokens: TransferTokens) -> tuple[str, uvicorn.Server]:
    """Podium's transfer endpoint alone, on a free loopback port."""
    app = FastAPI()
    app.state.transfer_tokens = tokens
    app.include_router(transfer.router, prefix="/__api__")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server


async def answer(backend: KubernetesBackend, handle: JobHandle, timeout: float = 30) -> dict[str, Any]:
    """What the job's app answers once its pod is Ready (polled as the scheduler does)."""
    deadline = time.monotonic() + timeout
    while True:
        address = await backend.address(handle)
        if address is not None:
            try:
                body = await asyncio.to_thread(_get, f"http://{address[0]}:{address[1]}/")
                return dict(json.loads(body))
            except OSError:
                pass
        status = await backend.status(handle)
        assert status.state.active and time.monotonic() < deadline, status
        await asyncio.sleep(0.02)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


async def warm_ready(backend: KubernetesBackend, image: str, count: int, timeout: float = 30) -> list[str]:
    """The names of ``count`` claimable warm pods of ``image`` once there are that many."""
    deadline = time.monotonic() + timeout
    await backend.list_jobs()  # connects, and so starts the pool
    while True:
        pool = backend.pool
        if pool is not None:
            ready = [job["metadata"]["name"] for job in pool.unclaimed(image) if pool.ready_pod(job) is not None]
            if len(ready) >= count:
                return ready
        assert time.monotonic() < deadline, f"the warm pool did not fill: {_pods(backend)}"
        await asyncio.sleep(0.05)


def _pods(backend: KubernetesBackend) -> list[Any]:
    pool = backend.pool
    if pool is None:
        return []
    return [(job["metadata"]["name"], (pool.pod_of(job) or {}).get("status")) for job in pool.unclaimed()]
