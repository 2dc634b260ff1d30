"""Deploy benchmark: Podium's build next to uv run by hand, and a redeploy that builds nothing.

One run measures, on this machine:

1. ``uv venv && uv pip install -r requirements.txt`` run directly (fresh uv cache),
   and again with ``UV_COMPILE_BYTECODE=1``, which Podium's builds set (content runs
   with its environment read-only, so it could not write ``__pycache__`` itself);
2. a first deploy of a FastAPI bundle with the same requirements to a fresh Podium
   (fresh uv cache): upload to task finished, and upload to first 200 through
   ``/content/<guid>/``;
3. a redeploy of a changed app with unchanged requirements: upload to the new
   bundle serving (no install at all).

Usage: ``.venv/bin/python bench/deploy.py [--requirements "fastapi"]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server  # noqa: E402

APP = """
from fastapi import FastAPI
app = FastAPI()
@app.get("/")
def root():
    return {"version": %d}
"""


def bundle(version: int, requirements: str) -> bytes:
    manifest = {
        "version": 1,
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {"version": ".".join(map(str, sys.version_info[:3])),
                   "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
        "files": {},
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in (("manifest.json", json.dumps(manifest)), ("app.py", APP % version),
                           ("requirements.txt", requirements)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def direct_build(requirements: str, work: Path, compile_bytecode: bool = False) -> float:
    from uv import find_uv_bin

    uv = find_uv_bin()
    work.mkdir(parents=True, exist_ok=True)
    req = work / "requirements.txt"
    req.write_text(requirements)
    env = {**os.environ, "UV_CACHE_DIR": str(work / "cache"), "UV_LINK_MODE": "hardlink"}
    if compile_bytecode:  # as Podium's builds do (sandboxed content cannot write __pycache__)
        env["UV_COMPILE_BYTECODE"] = "1"
    started = time.perf_counter()
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(work / "venv")], check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(work / "venv" / "bin" / "python"),
                    "-r", str(req)], check=True, env=env)
    return time.perf_counter() - started


def deploy(server_url: str, key: str, guid: str, archive: bytes, version: int) -> tuple[float, float]:
    """Seconds from upload to task finished, and to the new version answering."""
    client = requests.Session()
    client.headers["Authorization"] = f"Key {key}"
    started = time.perf_counter()
    bundle_id = client.post(f"{server_url}/__api__/v1/content/{guid}/bundles", data=archive).json()["id"]
    task = client.post(f"{server_url}/__api__/v1/content/{guid}/deploy", json={"bundle_id": bundle_id}).json()
    while True:
        state = client.get(f"{server_url}/__api__/v1/tasks/{task['task_id']}", params={"wait": 1}).json()
        if state["finished"]:
            break
    if state["code"] != 0:
        raise SystemExit(f"deploy failed: {state['error']}")
    built = time.perf_counter() - started
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = client.get(f"{server_url}/content/{guid}/", headers={"Accept": "application/json"})
        if answer.status_code == 200 and answer.json().get("version") == version:
            return built, time.perf_counter() - started
        time.sleep(0.01)
    raise SystemExit(f"the deployed app did not answer within 120 s: {answer.status_code} {answer.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", default="fastapi", help="requirement lines, comma separated (the app is FastAPI: keep fastapi in)")
    args = parser.parse_args()
    requirements = "\n".join(args.requirements.split(",")) + "\n"
    work = Path(tempfile.mkdtemp(prefix="podium-bench-deploy-"))
    try:
        from podium.apps import RUNTIME_REQUIREMENTS

        extra = "".join(f"{r}\n" for r in RUNTIME_REQUIREMENTS["python-fastapi"])
        direct = direct_build(requirements + extra, work / "direct")
        compiled = direct_build(requirements + extra, work / "compiled", compile_bytecode=True)
        server = start_server(work / "podium" / "data")
        try:
            key = server.admin_key
            guid = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": "bench"}).json()["guid"]
            first_built, first_serving = deploy(server.url, key, guid, bundle(1, requirements), 1)
            again_built, again_serving = deploy(server.url, key, guid, bundle(2, requirements), 2)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"requirements: {args.requirements} (+ Podium's runtime packages for FastAPI, in both)")
    print(f"direct  uv venv + uv pip install (cold cache):   {direct:6.2f} s")
    print(f"direct  the same, with --compile-bytecode:       {compiled:6.2f} s  (as Podium builds)")
    print(f"podium  first deploy, upload -> task finished:   {first_built:6.2f} s  ({first_built / direct:.2f}x direct, {first_built / compiled:.2f}x with bytecode)")
    print(f"podium  first deploy, upload -> first 200:       {first_serving:6.2f} s")
    print(f"podium  redeploy, same requirements -> finished: {again_built:6.2f} s  (no install)")
    print(f"podium  redeploy, same requirements -> serving:  {again_serving:6.2f} s")


if __name__ == "__main__":
    main()
