"""Deploy benchmark: Podium's build next to uv run by hand, and a redeploy that builds nothing.

Each round measures, on this machine, in an order that turns from round to round:

1. ``uv venv && uv pip install -r requirements.txt`` run directly (a fresh uv cache,
   or with ``--warm-cache`` one that holds every wheel already), and the same with
   ``UV_COMPILE_BYTECODE=1`` (what Podium's builds did before they compiled after
   the deploy);
2. a first deploy of a FastAPI bundle with the same requirements to a fresh Podium
   (its uv cache as fresh, or as warm): upload to task finished, to first 200 through
   ``/content/<guid>/``, and to the environment compiled to bytecode in the
   background (its ``.podium-compiled`` marker);
3. a redeploy of a changed app with unchanged requirements: upload to the new
   bundle serving (no install at all).

The client polls the deploy task as rsconnect does (``first`` = the lines it has, up
to 1 s per request). Prints each round with the load average, then medians and the
ratio of Podium's first deploy to raw uv of the same round.

Usage: ``.venv/bin/python bench/deploy.py [--requirements fastapi] [--rounds 3] [--warm-cache]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
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


def direct_build(requirements: str, work: Path, cache: Path, compile_bytecode: bool = False) -> float:
    from uv import find_uv_bin

    uv = find_uv_bin()
    work.mkdir(parents=True, exist_ok=True)
    req = work / "requirements.txt"
    req.write_text(requirements)
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_LINK_MODE": "hardlink"}
    if compile_bytecode:  # as Podium's builds did before they compiled after the deploy
        env["UV_COMPILE_BYTECODE"] = "1"
    started = time.perf_counter()
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(work / "venv")], check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(work / "venv" / "bin" / "python"),
                    "-r", str(req)], check=True, env=env)
    return time.perf_counter() - started


def deploy(server_url: str, key: str, guid: str, archive: bytes, version: int,
           envs: Path | None = None) -> tuple[float, float, float | None]:
    """Seconds from upload to task finished, to the new version answering, and (with
    ``envs``, the data dir's) to its environment compiled to bytecode."""
    client = requests.Session()
    client.headers["Authorization"] = f"Key {key}"
    started = time.perf_counter()
    bundle_id = client.post(f"{server_url}/__api__/v1/content/{guid}/bundles", data=archive).json()["id"]
    task = client.post(f"{server_url}/__api__/v1/content/{guid}/deploy", json={"bundle_id": bundle_id}).json()
    first, output = 0, []
    while True:  # as rsconnect polls: from the lines it has, up to 1 s per request
        state = client.get(f"{server_url}/__api__/v1/tasks/{task['task_id']}",
                           params={"wait": 1, "first": first}).json()
        first = state["last"]
        output += state["output"]
        if state["finished"]:
            break
    if state["code"] != 0:
        raise SystemExit(f"deploy failed: {state['error']}")
    built = time.perf_counter() - started
    deadline = time.monotonic() + 120
    serving = None
    while time.monotonic() < deadline and serving is None:
        answer = client.get(f"{server_url}/content/{guid}/", headers={"Accept": "application/json"})
        if answer.status_code == 200 and answer.json().get("version") == version:
            serving = time.perf_counter() - started
        else:
            time.sleep(0.01)
    if serving is None:
        raise SystemExit(f"the deployed app did not answer within 120 s: {answer.status_code} {answer.text[:300]}")
    compiled = None
    background = any("to bytecode in the background" in line for line in output)
    while envs is not None and background and time.monotonic() < deadline:
        if any(envs.glob("*/.podium-compiled")):
            compiled = time.perf_counter() - started
            break
        time.sleep(0.01)
    return built, serving, compiled


def podium_round(requirements: str, work: Path, warm: Path | None) -> dict[str, float]:
    data = work / "data"
    if warm is not None:  # the wheels in the server's uv cache, as in the direct build's
        shutil.copytree(warm, data / "cache" / "uv")
    server = start_server(data)
    try:
        key = server.admin_key
        guid = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": "bench"}).json()["guid"]
        built, serving, compiled = deploy(server.url, key, guid, bundle(1, requirements), 1, data / "envs")
        again_built, again_serving, _ = deploy(server.url, key, guid, bundle(2, requirements), 2)
    finally:
        server.stop()
    return {"built": built, "serving": serving, "bytecode": compiled or float("nan"),
            "again_built": again_built, "again_serving": again_serving}


def one_round(requirements: str, extra: str, here: Path, warm: Path | None, n: int) -> dict[str, float]:
    """uv by hand with and without bytecode, and Podium, in an order turning with ``n``."""

    def cache(name: str) -> Path:
        target = here / f"cache-{name}"
        if warm is not None:
            shutil.copytree(warm, target)
        return target

    def direct() -> dict[str, float]:
        return {"direct": direct_build(requirements + extra, here / "direct", cache("direct"))}

    def compiled() -> dict[str, float]:
        return {"compiled": direct_build(requirements + extra, here / "compiled", cache("compiled"), True)}

    def podium() -> dict[str, float]:
        return podium_round(requirements, here / "podium", warm)

    steps = [direct, compiled, podium]
    row: dict[str, float] = {}
    load = os.getloadavg()[0]
    for step in steps[n % 3:] + steps[:n % 3]:
        row.update(step())
    row["load"] = (load + os.getloadavg()[0]) / 2
    shutil.rmtree(here, ignore_errors=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", default="fastapi", help="requirement lines, comma separated (the app is FastAPI: keep fastapi in)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="every uv cache (direct and Podium's) holds the wheels already")
    args = parser.parse_args()
    requirements = "\n".join(args.requirements.split(",")) + "\n"
    from podium.apps import RUNTIME_REQUIREMENTS

    extra = "".join(f"{r}\n" for r in RUNTIME_REQUIREMENTS["python-fastapi"])
    work = Path(tempfile.mkdtemp(prefix="podium-bench-deploy-"))
    rows: list[dict[str, float]] = []
    try:
        warm = None
        if args.warm_cache:
            warm = work / "warm-cache"
            direct_build(requirements + extra, work / "warming", warm)
        for n in range(args.rounds):
            row = one_round(requirements, extra, work / f"round{n}", warm, n)
            rows.append(row)
            print(f"round {n + 1}: load {row['load']:4.1f}  direct {row['direct']:5.2f} s  with bytecode "
                  f"{row['compiled']:5.2f} s  podium finished {row['built']:5.2f} s ({row['built'] / row['direct']:.2f}x)"
                  f"  first 200 {row['serving']:5.2f} s  bytecode done {row['bytecode']:5.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str) -> float:
        return statistics.median(row[name] for row in rows)

    def ratio(name: str, base: str) -> str:
        ratios = sorted(row[name] / row[base] for row in rows)
        return f"{statistics.median(ratios):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"

    kind = "warm cache" if args.warm_cache else "cold cache"
    print(f"\nrequirements: {args.requirements} (+ Podium's runtime packages for FastAPI, in both); "
          f"medians of {len(rows)} rounds; load average {min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}")
    print(f"direct  uv venv + uv pip install ({kind}):    {median('direct'):6.2f} s")
    print(f"direct  the same, with --compile-bytecode:       {median('compiled'):6.2f} s")
    print(f"podium  first deploy, upload -> task finished:   {median('built'):6.2f} s  "
          f"{ratio('built', 'direct')} direct, {ratio('built', 'compiled')} with bytecode")
    print(f"podium  first deploy, upload -> first 200:       {median('serving'):6.2f} s")
    print(f"podium  first deploy, upload -> bytecode done:   {median('bytecode'):6.2f} s  (compiled in the background)")
    print(f"podium  redeploy, same requirements -> finished: {median('again_built'):6.2f} s  (no install)")
    print(f"podium  redeploy, same requirements -> serving:  {median('again_serving'):6.2f} s")


if __name__ == "__main__":
    main()
