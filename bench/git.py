"""Git benchmark: what polling costs when nothing changed, and push (webhook) to serving.

One run measures, on this machine, against repositories served by ``git http-backend``
on loopback (``tests/gitserver.py``):

1. **Poll cost per item, nothing changed.** Podium's check of N polling items (claim the
   lease, one ``git ls-remote``, release; ``GitPublisher.claim_due`` + ``check``) next to
   two baselines measured in the same run: a bare ``git ls-remote`` per item (the least
   any check can cost) and a ``git clone --depth 1`` per item (what a poller that clones
   would pay).
2. **Push to serving.** A FastAPI app deployed from git to a real ``podium serve``; then
   a new commit, a signed GitHub-style webhook, and the time until the content answers
   with the new version. Baseline in the same run: the same change uploaded as a bundle
   and deployed through the API (upload to serving), the package environment warm for
   both.

Usage: ``.venv/bin/python bench/git.py [--items 20] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server  # noqa: E402
from tests.gitserver import GIT_ENV, GitHttpServer, Repo, fastapi_app, static_site  # noqa: E402

from podium.git.publish import GitPublisher  # noqa: E402
from podium.git.remote import GitRunner  # noqa: E402
from podium.layout import DataLayout  # noqa: E402
from podium.secrets import SecretBox  # noqa: E402
from podium.settings import load_settings  # noqa: E402
from podium.store import Store  # noqa: E402
from podium.store.models import Content, GitRepository, User  # noqa: E402


def poll_cost(work: Path, served: GitHttpServer, items: int) -> dict[str, float]:
    """Seconds per item: Podium's check, bare ls-remote, shallow clone."""
    urls = []
    for i in range(items):
        repo = Repo(served.root, f"poll{i}")
        repo.commit(static_site(f"item {i}"))
        urls.append(served.url(f"poll{i}"))
    env = {**os.environ, **GIT_ENV}
    start = time.perf_counter()
    for url in urls:
        subprocess.run(["git", "ls-remote", url, "main"], env=env, capture_output=True, check=True)
    bare = (time.perf_counter() - start) / items
    start = time.perf_counter()
    for i, url in enumerate(urls):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", url, str(work / f"clone{i}")],
                       env=env, capture_output=True, check=True)
    clone = (time.perf_counter() - start) / items

    settings = load_settings(None, data_dir=work / "data", git_polling_interval_seconds=60)
    layout = DataLayout(settings.data_dir).create()
    store = Store(f"sqlite:///{work / 'data' / 'db.sqlite'}")
    store.migrate()
    runner = GitRunner(60, allow_local=False)
    commits = {url: runner.ls_remote(url, "main", None, work / "s") for url in urls}
    with store.session() as session:
        owner = User(username="bench")
        for i, url in enumerate(urls):
            content = Content(name=f"poll{i}", owner=owner)
            session.add(content)
            session.flush()
            session.add(GitRepository(content_id=content.id, repository=url, branch="main", directory=".",
                                      polling=True, last_error="", last_known_commit=commits[url]))
    publisher = GitPublisher(store, settings, layout, SecretBox.from_file(work / "key"),
                             runner, None, None, node="bench")  # type: ignore[arg-type]

    async def one_pass() -> int:
        claimed = await asyncio.to_thread(publisher.claim_due, datetime.now(UTC))
        results = [await publisher.check(content_id) for content_id in claimed]
        assert all(r is None for r in results), "something changed"
        return len(claimed)

    start = time.perf_counter()
    checked = asyncio.run(one_pass())
    podium = (time.perf_counter() - start) / max(checked, 1)
    assert checked == items, checked
    store.dispose()
    return {"podium": podium, "ls_remote": bare, "clone": clone}


def _tar(files: dict[str, str | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = (text or "").encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _wait_for(url: str, key: str, wanted: str, deadline_s: float = 300) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < deadline_s:
        try:
            got = requests.get(url, headers={"Authorization": f"Key {key}"}, timeout=5)
            if got.ok and got.json().get("v") == wanted:
                return time.perf_counter() - start
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} never answered {wanted!r}")


def push_to_serving(work: Path, served: GitHttpServer, rounds: int) -> dict[str, list[float]]:
    server = start_server(work / "data")
    try:
        key = server.user_key("bench")
        client = server.api(key)
        base = f"{server.url}/__api__"
        repo = Repo(served.root, "api")
        repo.commit(fastapi_app("v0"))
        git_guid = client.post(f"{base}/v1/content", json={"name": "from-git"}).json()["guid"]
        client.put(f"{base}/v1/content/{git_guid}/repository", json={"repository": served.url("api"), "polling": False})
        secret = client.post(f"{base}/v1/content/{git_guid}/repository/webhook").json()["secret"]
        hook = f"{base}/v1/git/webhooks/{git_guid}"
        upload_guid = client.post(f"{base}/v1/content", json={"name": "uploaded"}).json()["guid"]
        client.post(f"{base}/v1/content/{git_guid}/deploy", json={"bundle_id": None})
        _wait_for(f"{server.url}/content/{git_guid}/", key, "v0")  # first build: not measured
        timings: dict[str, list[float]] = {"webhook": [], "upload": []}
        for n in range(1, rounds + 1):
            version = f"v{n}"
            repo.commit(fastapi_app(version))
            payload = json.dumps({"ref": "refs/heads/main"}).encode()
            signature = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
            start = time.perf_counter()
            pushed = requests.post(hook, data=payload, headers={"X-Hub-Signature-256": signature,
                                                                 "X-GitHub-Event": "push"})
            assert pushed.status_code == 202, pushed.text
            _wait_for(f"{server.url}/content/{git_guid}/", key, version)
            timings["webhook"].append(time.perf_counter() - start)

            start = time.perf_counter()
            bundle = client.post(f"{base}/v1/content/{upload_guid}/bundles", data=_tar(fastapi_app(version)))
            client.post(f"{base}/v1/content/{upload_guid}/deploy", json={"bundle_id": bundle.json()["id"]})
            _wait_for(f"{server.url}/content/{upload_guid}/", key, version)
            timings["upload"].append(time.perf_counter() - start)
        return timings
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=20, help="polling items for the poll cost")
    parser.add_argument("--rounds", type=int, default=3, help="push-to-serving rounds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "repos").mkdir()
        served = GitHttpServer(work / "repos")
        try:
            (work / "poll").mkdir()
            poll = poll_cost(work / "poll", served, args.items)
            print(f"poll cost per item, nothing changed ({args.items} items):")
            print(f"  bare git ls-remote        {poll['ls_remote'] * 1000:8.1f} ms")
            print(f"  podium check (lease+ls-remote+record) {poll['podium'] * 1000:8.1f} ms"
                  f"  = {poll['podium'] / poll['ls_remote']:.2f}x bare ls-remote")
            print(f"  git clone --depth 1       {poll['clone'] * 1000:8.1f} ms"
                  f"  (podium check = {poll['podium'] / poll['clone']:.2f}x a shallow clone)")
            (work / "push").mkdir()
            push = push_to_serving(work / "push", served, args.rounds)
            web, up = statistics.median(push["webhook"]), statistics.median(push["upload"])
            print(f"push to serving, FastAPI app, warm environment (median of {args.rounds}):")
            print(f"  webhook -> new commit serving   {web:6.2f} s  {[f'{t:.2f}' for t in push['webhook']]}")
            print(f"  upload  -> new bundle serving   {up:6.2f} s  {[f'{t:.2f}' for t in push['upload']]}")
            print(f"  webhook / upload = {web / up:.2f}x")
        finally:
            served.close()


if __name__ == "__main__":
    main()
