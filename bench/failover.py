"""Failover benchmark: two ``podium serve`` nodes on one PostgreSQL database and one data dir.

One run measures, on this machine:

1. **baseline**: the cold start of a content item on node B while both nodes run (first
   request to B, which has no process of it yet, until 200);
2. **failover**: node A, serving a content item and holding the duties, is killed with
   SIGKILL; the time until that content answers 200 through node B (B starts a process
   of its own), and the time until B holds A's duties (the ``scheduler-minimums``
   lease) and runs the content's ``min_processes`` itself;
3. **requests per second** through one node vs through two (``wrk`` on each node's
   content listener at once, half the connections each), for a small FastAPI app run
   as one process per node (``max_processes`` 1): a load balancer's view of adding a
   node. On a 2-core machine the two nodes, their processes and ``wrk`` share the
   cores, so expect well under 2x here; the figure is for machines with a core per node.

Ratios are printed against the baseline measured in the same run. Needs PostgreSQL at
127.0.0.1:5432 (``PODIUM_TEST_POSTGRES_URL``; a database ``<name>_nodes`` is used) and
``wrk``. Usage: ``.venv/bin/python bench/failover.py [--seconds 5]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import RunningServer  # noqa: E402
from tests.test_nodes import HEARTBEAT_SECONDS, NODE_TIMEOUT_SECONDS, Cluster, new_app, nodes_database  # noqa: E402


def first_200(url: str, timeout: float = 60.0, **kwargs: Any) -> float:
    """Seconds until ``url`` answers 200 (retrying failures and 5xx)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(url, timeout=timeout, **kwargs).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def wrk(url: str, connections: int, seconds: float) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found or "Non-2xx" in out:
        raise RuntimeError(f"wrk saw failures, or its output cannot be read:\n{out}")
    return float(found.group(1))


def rates(urls: list[str], connections: int, seconds: float) -> float:
    """Requests/s through all ``urls`` at once (``connections`` shared among them)."""
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        return sum(pool.map(lambda url: wrk(url, connections // len(urls), seconds), urls))


def public(node: RunningServer, guid: str) -> None:
    response = node.api().patch(f"{node.url}/__api__/v1/content/{guid}", json={"access_type": "all"})
    response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved 1-node / 2-node rounds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="podium-failover-") as tmp:
        cluster = Cluster(Path(tmp) / "data", nodes_database())
        try:
            a = cluster.start(first=True)
            b = cluster.start()

            # 3. requests per second, 1 node vs 2 (both nodes alive, processes warm)
            # one process per node, taking every connection: node against node, nothing else
            guid = new_app(a, max_processes=1, max_conns_per_process=2 * args.connections)
            public(a, guid)
            urls = [f"{node.content_url}/content/{guid}/" for node in (a, b)]
            for url in urls:
                first_200(url)
            # warm up under the same load, so each node has started the processes it scales
            # to (max_processes) before anything is measured
            rates(urls[:1], args.connections, 3)
            rates(urls, args.connections, 3)
            one = two = 0.0
            for _ in range(args.rounds):  # interleaved; the best of each
                one = max(one, rates(urls[:1], args.connections, args.seconds))
                two = max(two, rates(urls, args.connections, args.seconds))

            # 1. baseline: a cold start on B
            cold = new_app(a)
            public(a, cold)
            baseline = first_200(f"{b.content_url}/content/{cold}/")

            # 2. failover: A serves `warm` (min_processes 1, kept by A, the duty holder)
            warm = new_app(a, min_processes=1)
            public(a, warm)
            first_200(f"{a.content_url}/content/{warm}/")
            a_node = cluster.rows("SELECT holder FROM leases WHERE name = 'scheduler-minimums'")[0].holder
            killed = time.monotonic()
            a.process.send_signal(signal.SIGKILL)
            a.process.wait()
            served_again = first_200(f"{b.content_url}/content/{warm}/")

            def duty_moved() -> bool:
                rows = cluster.rows("SELECT holder FROM leases WHERE name = 'scheduler-minimums'")
                return bool(rows) and rows[0].holder != a_node

            while not duty_moved():
                time.sleep(0.05)
            duty = time.monotonic() - killed
        finally:
            cluster.close()

    print(f"cold start on node B (baseline)               {baseline:7.2f} s   1.00x")
    print(f"kill -9 A -> its content answers through B    {served_again:7.2f} s   {served_again / baseline:.2f}x")
    print(f"kill -9 A -> B holds A's duties                {duty:7.2f} s   {duty / baseline:.2f}x"
          f"   (bound: node_timeout_seconds + node_heartbeat_seconds = {NODE_TIMEOUT_SECONDS + HEARTBEAT_SECONDS:g} s in this run)")
    print(f"requests/s through 1 node                      {one:9.0f}     1.00x")
    print(f"requests/s through 2 nodes                     {two:9.0f}     {two / one:.2f}x")


if __name__ == "__main__":
    main()
