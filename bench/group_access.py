"""What group permissions cost on the content proxy, and how soon a new member gets in.

    python bench/group_access.py               # 3 rounds of 5 s per measurement
    python bench/group_access.py --quick       # 1 round of 2 s, a smoke run

A real ``podium serve`` pinned to core 0 serves this benchmark's raw ASGI app (the one of
``bench/proxy.py``: ``/`` answers ``ok``) as *private* content (``access_type: acl``),
one process taking every connection. ``wrk -t1 -c64`` pinned to core 1 asks for it on
the content origin with three API keys, interleaved round by round:

- **owner**: the publisher who owns it;
- **group**: a viewer allowed only because a group it belongs to has a viewer permission;
- **user**: a viewer named in the content's permissions itself.

If the group decision asked the database per request, the group figure would fall far
below the others (a SQLite read costs more than the whole proxy path). Then it adds and
removes the group member 20 times through the API and times, for each, the first
request that gets in (or is refused): the content router forgets its cached callers on
the change, so the next request decides anew.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and ``taskset`` (util-linux).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from podium_server import PODIUM, app_source, bundle, podium_server, python_manifest


@contextmanager
def podium() -> Iterator[dict[str, Any]]:
    """A Podium on core 0 with the app deployed as private content, and the keys."""
    with podium_server(core=0, prefix="podium-bench-groups-") as server:
        base, admin = server.base, server.api
        keys: dict[str, str] = {}
        guids: dict[str, str] = {}
        for name, role in (("owner", "publisher"), ("member", "viewer"), ("named", "viewer")):
            guids[name] = admin.post(f"{base}/v1/users", json={
                "username": name, "user_role": role, "password": f"{name}-password"}).json()["guid"]
            keys[name] = subprocess.run([*PODIUM, "admin", "create-api-key", name, "--data-dir", server.data_dir],
                                        check=True, capture_output=True, text=True).stdout.strip()
        owner = server.session(keys["owner"])
        guid = server.create({
            "name": "bench", "access_type": "acl", "max_processes": 1, "min_processes": 1,
            "max_conns_per_process": 1000, "load_factor": 1.0}, owner)
        server.deploy(guid, bundle({"app.py": app_source(), "requirements.txt": "uvicorn[standard]\n"},
                                   python_manifest()), owner)
        group = owner.post(f"{base}/v1/groups", json={"name": "readers"}).json()["guid"]
        owner.post(f"{base}/v1/groups/{group}/members", json={"user_guid": guids["member"]})
        for principal, kind in ((group, "group"), (guids["named"], "user")):
            owner.post(f"{base}/v1/content/{guid}/permissions",
                       json={"principal_guid": principal, "principal_type": kind, "role": "viewer"})
        url = f"http://127.0.0.1:{server.content_port}/content/{guid}/"
        for name in keys:
            answer = requests.get(url, headers={"Authorization": f"Key {keys[name]}"}, timeout=60)
            if answer.text != "ok":
                raise RuntimeError(f"{name} does not get in: {answer.status_code} {answer.text[:200]}")
        yield {"url": url, "keys": keys, "owner": owner, "base": base, "group": group,
               "member": guids["member"]}


def wrk(url: str, key: str, seconds: float) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{max(1, int(seconds))}s",
         "-H", f"Authorization: Key {key}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"refused requests:\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def membership_latency(setup: dict[str, Any], times: int) -> tuple[list[float], list[float]]:
    """Seconds from the API's answer to a membership change until the content decides the
    new way (first request), for adding and for removing."""
    owner, base, group, member = setup["owner"], setup["base"], setup["group"], setup["member"]
    viewer = requests.Session()
    viewer.headers["Authorization"] = f"Key {setup['keys']['member']}"
    added: list[float] = []
    removed: list[float] = []
    for _ in range(times):
        for adding in (False, True):
            if adding:
                owner.post(f"{base}/v1/groups/{group}/members", json={"user_guid": member}).raise_for_status()
            else:
                owner.delete(f"{base}/v1/groups/{group}/members/{member}").raise_for_status()
            start = time.perf_counter()
            while (viewer.get(setup["url"]).status_code == 200) != adding:
                if time.perf_counter() - start > 10:
                    raise RuntimeError("the membership change did not reach the proxy within 10 s")
            (added if adding else removed).append(time.perf_counter() - start)
    return added, removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2.0, 1
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian: apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'})")
    with podium() as setup:
        figures: dict[str, list[float]] = {"owner": [], "group": [], "user": []}
        for _ in range(args.rounds):
            for label, name in (("owner", "owner"), ("group", "member"), ("user", "named")):
                figures[label].append(wrk(setup["url"], setup["keys"][name], args.seconds))
        added, removed = membership_latency(setup, 20)
    owner_rps = statistics.median(figures["owner"])
    print(f"private content through Podium's content origin, wrk -c64, median of {args.rounds} x {args.seconds:g} s:")
    for label, text in (("owner", "owner (publisher)"), ("group", "viewer through a group"),
                        ("user", "viewer named itself")):
        rps = statistics.median(figures[label])
        print(f"  {text:26s} {rps:9.0f} requests/s  ({rps / owner_rps:.2f}x owner)")
    print("membership change -> first request decided the new way (20 times each):")
    for label, values in (("member added", added), ("member removed", removed)):
        print(f"  {label:16s} median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
