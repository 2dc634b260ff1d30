"""What the benchmarks share: a real ``podium serve`` in a temporary data dir, bundles
made in memory, and deploys through the HTTP API.

    with podium_server() as server:
        guid = server.create({"name": "report", "access_type": "all"})
        server.deploy(guid, bundle({"index.html": PAGE}, static_manifest()))
        requests.get(server.content_url(guid))
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from proxy import BIG_CHUNKS, app, free_port, stop, wait_for_port

PODIUM = [sys.executable, "-m", "podium"]


def app_source() -> str:
    """``bench/proxy.py``'s raw ASGI app as the source of an ``app.py`` (``/`` answers
    ``ok``, ``/big`` streams 10 MiB, ``/ws`` echoes websocket messages)."""
    import inspect

    return "\n".join(["from typing import Any", "BIG_CHUNK = b'x' * (64 * 1024)",
                      f"BIG_CHUNKS = {BIG_CHUNKS}", inspect.getsource(app)])


def static_manifest(primary_html: str = "index.html") -> dict[str, Any]:
    return {"version": 1, "metadata": {"appmode": "static", "primary_html": primary_html}, "files": {}}


def python_manifest(appmode: str = "python-fastapi", entrypoint: str = "app:app") -> dict[str, Any]:
    """A Python app's manifest, for this interpreter's version, with ``requirements.txt``."""
    return {"version": 1, "metadata": {"appmode": appmode, "entrypoint": entrypoint},
            "python": {"version": ".".join(map(str, sys.version_info[:3])),
                       "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
            "files": {}}


def bundle(files: Mapping[str, str | bytes], manifest: dict[str, Any]) -> bytes:
    """A gzipped tar bundle of ``files`` (name -> text or bytes) and ``manifest.json``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in {"manifest.json": json.dumps(manifest), **files}.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def proc_status_kb(pid: int, field: str = "VmRSS") -> int:
    """A field of ``/proc/<pid>/status`` in kB: ``VmRSS`` (resident now), ``VmHWM``
    (its peak), ..."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


@dataclass
class Server:
    """A running ``podium serve``: its pid, ports, data dir and an administrator's key."""

    process: subprocess.Popen[bytes]
    port: int
    content_port: int
    data_dir: str
    key: str
    log_path: str
    api: Any = field(init=False)  # a requests.Session with the administrator's key

    def __post_init__(self) -> None:
        self.api = self.session(self.key)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base(self) -> str:
        """The API's URL (``.../__api__``)."""
        return f"http://127.0.0.1:{self.port}/__api__"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def content_url(self, guid: str) -> str:
        """The content's root on the content origin."""
        return f"http://localhost:{self.content_port}/content/{guid}/"

    def session(self, key: str) -> Any:
        """A requests session sending ``key``."""
        import requests

        session = requests.Session()
        session.headers["Authorization"] = f"Key {key}"
        return session

    def create(self, body: dict[str, Any], api: Any = None) -> str:
        """Creates content (``POST v1/content``); returns its guid."""
        answer = (api or self.api).post(f"{self.base}/v1/content", json=body)
        answer.raise_for_status()
        return str(answer.json()["guid"])

    def deploy(self, guid: str, data: bytes, api: Any = None) -> int:
        """Uploads ``data`` as a bundle of ``guid``, deploys it and waits for the task;
        returns the bundle id. Raises RuntimeError when the deploy fails."""
        api = api or self.api
        answer = api.post(f"{self.base}/v1/content/{guid}/bundles", data=data)
        answer.raise_for_status()
        bundle_id = int(answer.json()["id"])
        answer = api.post(f"{self.base}/v1/content/{guid}/deploy", json={"bundle_id": str(bundle_id)})
        answer.raise_for_status()
        task = answer.json()["task_id"]
        while not (state := api.get(f"{self.base}/v1/tasks/{task}", params={"wait": 1}).json())["finished"]:
            pass
        if state["code"] != 0:
            raise RuntimeError(f"deploy of {guid} failed: {state['error']}")
        return bundle_id

    def log_errors(self) -> list[str]:
        """Lines of the server's log that show a traceback or a pool timeout."""
        with open(self.log_path, errors="replace") as text:
            return [line.strip() for line in text if "Traceback" in line or "TimeoutError" in line]


@contextlib.contextmanager
def podium_server(
    env: Mapping[str, str] | None = None, core: int | None = 0, prefix: str = "podium-bench-",
    data_dir: str | None = None, key: str | None = None,
) -> Iterator[Server]:
    """A real ``podium serve`` (pinned to ``core``; None: not pinned) on free loopback
    ports, with content on an origin of its own, in a temporary data dir bootstrapped
    with an administrator; its output goes to a log file. Stopped (SIGTERM) and cleaned
    up on exit. A ``data_dir`` given is kept: start another server on it with the first
    one's ``key`` (without ``key``, an administrator is bootstrapped there)."""
    work = tempfile.mkdtemp(prefix=prefix)
    data_dir = data_dir or os.path.join(work, "data")
    if key is None:
        key = subprocess.run([*PODIUM, "admin", "bootstrap", "--data-dir", data_dir], check=True,
                             capture_output=True, text=True).stdout.strip()
    port, content_port = free_port(), free_port()
    full_env = {**os.environ, "PODIUM_BOOTSTRAP_ADMIN_ON_FIRST_START": "false",
                "PODIUM_CONTENT_LISTEN": f"127.0.0.1:{content_port}", **(env or {})}
    log_path = os.path.join(work, "server.log")
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*pin, *PODIUM, "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
            env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, 60)
        yield Server(process, port, content_port, data_dir, key, log_path)
    finally:
        stop(process, 60)
        shutil.rmtree(work, ignore_errors=True)
