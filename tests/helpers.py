"""Small builders shared by tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any


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


def fastapi_bundle() -> bytes:
    app = "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {'ok': True}\n"
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
