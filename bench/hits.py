"""Reading a long usage history through the hits API (``GET v1/instrumentation/content/hits``).

    python bench/hits.py                  # 1,000,000 hits (about a minute)
    python bench/hits.py --hits 200000    # a quicker run

The API answers hits as one plain array, without pages (posit-sdk's
``client.metrics.hits`` reads it so), and a crowd of viewers leaves many: one report read
ten times a second keeps 864,000 hits a day, kept for ``usage_retention_days`` (400). A
real ``podium serve`` (SQLite, a temporary data dir, pinned to core 0) gets ``--hits``
hits of one content item over the last 30 days written to its database before it starts
(by the usage importer's own code), and then one request reads them all. Printed:

- the dashboard's usage pages over that history (Admin → Usage and the item's Usage
  pane; the best of 3) against a small API request (``GET v1/content``, the best of 10);

- the whole array: seconds to its first byte and to its last, megabytes, hits a second,
  and that every hit arrived (parsed as JSON, counted, ids ascending);
- the server's memory: its peak RSS during the read (``VmHWM`` after resetting it through
  ``/proc/<pid>/clear_refs``) against its RSS just before, the baseline;
- what the read does to everybody else: a small API request (``GET v1/content``) made
  every 50 ms, its latency during the read against the same requests made while the
  server is otherwise idle, before the read (the baseline, in the same run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from podium_server import podium_server, proc_status_kb

INSERT_BATCH = 50_000


def write_hits(data_dir: str, count: int, guid: str) -> None:
    """``count`` hits of ``guid`` spread over the last 30 days, written to the data dir's
    database as the usage importer writes them (the same code: the hits and their counts
    by day for the charts), by 50 viewers and anonymous ones."""
    from podium import usage_import
    from podium.settings import load_settings
    from podium.store import Store

    store = Store(load_settings(None, data_dir=data_dir).effective_database_url)
    now = time.time()
    start, step = now - 30 * 86400 + 60, (30 * 86400 - 120) / count
    viewers = [str(uuid.uuid4()) for _ in range(50)]
    target, agent = f"/content/{guid}/".encode(), b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0"
    for first in range(0, count, INSERT_BATCH):
        hits: list[usage_import.Hit] = [(start + n * step, guid, viewers[n % 50] if n % 7 else None, 1, target, b"GET", agent,
                 b"document", b"none") for n in range(first, min(count, first + INSERT_BATCH))]
        data = usage_import.dump_hits(hits)
        usage_import.write(store, (usage_import.FRAME.pack(len(data)) + data, [], []))
    store.dispose()


def timed_get(api: Any, url: str, times: int = 3) -> float:
    """The best of ``times`` answers to ``GET url``, in seconds."""
    best = float("inf")
    for _ in range(times):
        started = time.monotonic()
        api.get(url).raise_for_status()
        best = min(best, time.monotonic() - started)
    return best


@contextlib.contextmanager
def pinging(api: Any, url: str) -> Iterator[list[float]]:
    """``GET url`` every 50 ms while the block runs; the latencies, in seconds."""
    latencies: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        while not stop.is_set():
            started = time.monotonic()
            api.get(url).raise_for_status()
            latencies.append(time.monotonic() - started)
            stop.wait(0.05)

    thread = threading.Thread(target=ping)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=1_000_000, help="hits in the database (default 1,000,000)")
    args = parser.parse_args()

    import tempfile

    import requests

    with tempfile.TemporaryDirectory(prefix="podium-bench-hits-") as work:
        data_dir = os.path.join(work, "data")
        with podium_server(data_dir=data_dir) as server:  # an administrator, the schema, one content item
            key = server.key
            guid = server.create({"name": "busy-report", "access_type": "all"})
        started = time.monotonic()
        write_hits(data_dir, args.hits, guid)
        print(f"{args.hits:,} hits written in {time.monotonic() - started:.1f} s", flush=True)

        with podium_server(data_dir=data_dir, key=key) as server:
            small = f"{server.base}/v1/content"
            for _ in range(20):  # warm
                server.api.get(small).raise_for_status()
            pages = {"GET v1/content (baseline)": timed_get(server.api, small, 10),
                     "Admin → Usage": timed_get(server.api, f"{server.dashboard}/connect/admin/usage"),
                     "the content's Usage pane": timed_get(
                         server.api, f"{server.dashboard}/connect/apps/{guid}/usage")}
            with pinging(server.session(key), small) as idle:
                time.sleep(3)

            before = proc_status_kb(server.pid, "VmRSS")
            with open(f"/proc/{server.pid}/clear_refs", "w") as refs:
                refs.write("5")  # VmHWM := VmRSS
            with pinging(server.session(key), small) as busy:
                started = time.monotonic()
                first_byte = None
                body = bytearray()
                with requests.get(f"{server.base}/v1/instrumentation/content/hits", stream=True,
                                  headers={"Authorization": f"Key {key}"}) as answer:
                    answer.raise_for_status()
                    for chunk in answer.iter_content(1 << 16):
                        if first_byte is None:
                            first_byte = time.monotonic() - started
                        body += chunk
                total = time.monotonic() - started
            peak = proc_status_kb(server.pid, "VmHWM")
            after = proc_status_kb(server.pid, "VmRSS")
            hits = json.loads(body)
            ids = [hit["id"] for hit in hits]
            complete = len(hits) == args.hits and all(a < b for a, b in zip(ids, ids[1:], strict=False))
            errors = server.log_errors()

    assert first_byte is not None
    print(f"whole array of {args.hits:,} hits: first byte {first_byte:.2f} s, last byte {total:.2f} s, "
          f"{len(body) / 1e6:.0f} MB, {args.hits / total:,.0f} hits/s; every hit, in order: "
          f"{'yes' if complete else 'NO'}")
    print(f"server RSS: {before / 1024:.0f} MB before (baseline), peak {peak / 1024:.0f} MB during the read "
          f"({peak / before:.2f}x, +{(peak - before) / 1024:.0f} MB), {after / 1024:.0f} MB after")
    for name, values in (("idle (baseline)", idle), ("during the read", busy)):
        print(f"GET v1/content every 50 ms, {name}: {len(values)} requests, "
              f"p50 {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.0f} ms")
    print(f"small requests during the read, p50 against idle: "
          f"{statistics.median(busy) / statistics.median(idle):.2f}x, max against idle max: "
          f"{max(busy) / max(idle):.1f}x")
    for name, seconds in pages.items():
        print(f"{name}, {args.hits:,} hits in the last 30 days: {seconds * 1000:.0f} ms (best), "
              f"{seconds / pages['GET v1/content (baseline)']:.1f}x the baseline")
    if errors:
        print(f"server log errors: {errors[:3]}")


if __name__ == "__main__":
    main()
