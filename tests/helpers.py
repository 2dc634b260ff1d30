"""Small builders shared by tests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import RunningServer


def tar_gz(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def static_bundle(
    pages: dict[str, str] | None = None, primary: str = "index.html", **manifest_extra: Any
) -> bytes:
    pages = pages or {"index.html": "<h1>Hello from Podium</h1>", "style.css": "h1{color:red}"}
    manifest = {
        "version": 1,
        "metadata": {"appmode": "static", "primary_html": primary, "entrypoint": primary},
        "files": {
            name: {"checksum": hashlib.md5(body.encode()).hexdigest()} for name, body in pages.items()
        },
        **manifest_extra,
    }
    return tar_gz({**pages, "manifest.json": json.dumps(manifest)})


_MINIMAL_FASTAPI = "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {'ok': True}\n"


def fastapi_bundle(app: str = _MINIMAL_FASTAPI) -> bytes:
    """A FastAPI bundle as rsconnect writes it, with ``app`` as its app.py."""
    manifest = {
        "version": 1,
        "locale": "en_US.UTF-8",
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {
            "version": "3.11.7",
            "package_manager": {"name": "pip", "version": "23.2.1", "package_file": "requirements.txt"},
        },
        "files": {"requirements.txt": {}, "app.py": {}},
    }
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": "fastapi\n", "app.py": app})


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def deploy(server: RunningServer, key: str, guid: str, archive: bytes, activate: bool = True) -> tuple[str, dict[str, Any]]:
    client = server.api(key)
    bundle = client.post(_api(server, f"v1/content/{guid}/bundles"), data=archive)
    assert bundle.status_code == 200, bundle.text
    bundle_id = bundle.json()["id"]
    body: dict[str, Any] = {"bundle_id": bundle_id}
    if not activate:
        body["activate"] = False
    task_id = client.post(_api(server, f"v1/content/{guid}/deploy"), json=body).json()["task_id"]
    return bundle_id, wait_task(server, key, task_id)


def wait_task(server: RunningServer, key: str, task_id: str) -> dict[str, Any]:
    client = server.api(key)
    import time

    first, lines = 0, []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        task = client.get(_api(server, f"v1/tasks/{task_id}"), params={"first": first, "wait": 1}).json()
        lines += task["output"]
        first = task["last"]
        if task["finished"]:
            task["all_output"] = lines
            return task
    raise AssertionError("task did not finish")


def alive(pid: int) -> bool:
    """Whether the process ``pid`` runs: it exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:  # gone between the two
        return False
