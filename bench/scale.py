"""Podium at scale: 1,000 content items, 2,000 live websocket sessions, 64 readers.

    nice python bench/scale.py                                        # the full run (~5 min)
    nice python bench/scale.py --items 100 --sessions 200 --seconds 10  # a quick run

One run, one table. A real ``podium serve`` (SQLite, a temporary data dir, not pinned)
gets ``--items`` content items deployed through the HTTP API by ``--deploy-workers``
clients at once: nine in ten static (a small HTML page each), one in ten interactive (a
raw ASGI app echoing websocket messages, ``min_processes = 0``, one process of up to 200
connections; every one has the same ``requirements.txt``, so one environment build
serves them all: the first interactive item is deployed alone, before the clock starts).
Then it measures, in order:

- **idle items**: server RSS after start with no content against RSS after the deploys
  (no content process runs: ``min_processes = 0``), in KB per item, both over all items
  and at the margin (after the first tenth, once every code path has been used); and
  a fresh server started on the same data dir against the fresh server with none;
- **list latency** with every item deployed: ``GET /__api__/v1/content`` as the
  administrator (who owns everything) and as a viewer (who owns nothing and sees the
  public items), and the dashboard's content list (``/connect/``) as the administrator;
- **load**: ``--sessions`` websocket sessions spread over ``--ws-items`` interactive
  items (each item's process is started by its first session), each sending a 32-byte
  message once a second and timing its echo, for ``--seconds``; meanwhile ``wrk`` with
  ``--http-clients`` connections reads random static items as fast as they answer.
  Printed: round trip p50/p99, errors (failed connects, missing echoes), dropped
  sessions (closed by the server or failed mid-way), static requests/s and errors.

Server RSS and open file descriptors are read from ``/proc/<pid>`` of the server process
alone (content processes excluded) before, at the peak of and after the load. Goals
(issue 19): list p95 <= 100 ms (API) and <= 300 ms (dashboard); no errors and no
dropped sessions; RSS <= 400 MB at the end; <= 100 KB per idle item.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``). Raises its own soft limit of open
files to the hard limit (the server raises its own at start).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from podium_server import (
    PODIUM,
    Server,
    app_source,
    bundle,
    podium_server,
    proc_status_kb,
    python_manifest,
    static_manifest,
)

PAGE = "<!doctype html><html><head><title>Report {n}</title></head><body>{body}</body></html>"
BODY = "<p>Quarterly numbers, rendered once and read all morning.</p>" * 32
WS_LIMITS = {"min_processes": 0, "max_processes": 1, "max_conns_per_process": 200, "load_factor": 1.0}
PAYLOAD = b"p" * 32


# -- the server process, from /proc --


def rss_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (its own, not its children's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (content processes and their supervisors)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        one = todo.pop()
        for task in os.listdir(f"/proc/{one}/task") if os.path.isdir(f"/proc/{one}/task") else []:
            with contextlib.suppress(OSError), open(f"/proc/{one}/task/{task}/children") as f:
                children = [int(c) for c in f.read().split()]
                found += children
                todo += children
    return found


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def settle(pid: int, seconds: float = 3.0) -> float:
    """The server's RSS once it has sat idle for ``seconds``."""
    time.sleep(seconds)
    return rss_mb(pid)


# -- deploying --


@dataclass
class Deployed:
    static: list[str] = field(default_factory=list)
    interactive: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def deploy_items(server: Server, kinds: list[str], workers: int, out: Deployed, start: int = 0) -> None:
    """Creates and deploys one item per entry of ``kinds`` ("static"/"interactive"),
    ``workers`` at a time, each worker with its own HTTP session."""
    app_bundle = bundle({"app.py": app_source(), "requirements.txt": "uvicorn[standard]\n"},
                        python_manifest())
    local = threading.local()

    def one(index: int, kind: str) -> None:
        api = getattr(local, "api", None) or server.session(server.key)
        local.api = api
        try:
            if kind == "static":
                guid = server.create({"name": f"report-{index}", "access_type": "all"}, api)
                page = PAGE.format(n=index, body=BODY)
                server.deploy(guid, bundle({"index.html": page}, static_manifest()), api)
                out.static.append(guid)
            else:
                guid = server.create({"name": f"echo-{index}", "access_type": "all", **WS_LIMITS}, api)
                server.deploy(guid, app_bundle, api)
                out.interactive.append(guid)
        except Exception as error:
            out.errors.append(f"{kind} item {index}: {error}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda pair: one(*pair), enumerate(kinds, start)))


def item_kinds(items: int) -> list[str]:
    """One in ten interactive, spread through the list."""
    return ["interactive" if n % 10 == 0 else "static" for n in range(items)]


# -- list latency --


@dataclass
class Timed:
    wall: list[float]  # seconds per request, as the client saw it
    cpu: float  # the server's CPU seconds per request (a busy machine moves it less)


def timed(call: Callable[[], Any], samples: int, pid: int) -> Timed:
    call()  # warm
    times = []
    cpu = cpu_seconds(pid)
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return Timed(times, (cpu_seconds(pid) - cpu) / samples)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def list_latencies(server: Server, viewer_key: str, samples: int, expected: int) -> dict[str, Timed]:
    admin, viewer = server.session(server.key), server.session(viewer_key)

    def api_list(session: Any) -> Callable[[], Any]:
        def call() -> None:
            answer = session.get(f"{server.base}/v1/content")
            answer.raise_for_status()
            if len(answer.json()) != expected:
                raise RuntimeError(f"the list has {len(answer.json())} items, not {expected}")
        return call

    def dashboard() -> None:
        answer = admin.get(f"{server.dashboard}/connect/")
        answer.raise_for_status()
        if "report-" not in answer.text:
            raise RuntimeError("the dashboard's content list shows no report")

    return {
        "API v1/content, administrator": timed(api_list(admin), samples, server.pid),
        "API v1/content, viewer": timed(api_list(viewer), samples, server.pid),
        "dashboard /connect/, administrator": timed(dashboard, samples, server.pid),
    }


# -- the load --

WRK_SCRIPT = """
paths = {%s}
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


@dataclass
class Load:
    round_trips: list[float] = field(default_factory=list)
    connect_errors: int = 0
    echo_errors: int = 0
    dropped: int = 0
    connected: int = 0
    first_error: str = ""
    peak_rss: float = 0.0
    peak_fds: int = 0
    wrk_out: str = ""
    server_cpu: float = 0.0  # the server's CPU seconds per second while measuring
    client_cpu: float = 0.0  # this benchmark's own (the websocket client's)


async def run_load(server: Server, guids: list[str], statics: list[str], sessions: int, seconds: float,
                   http_clients: int, load: Load) -> None:
    import aiohttp

    ramp_done = asyncio.Event()
    deadline = [0.0]
    connect_gate = asyncio.Semaphore(64)

    def error(kind: str, text: str) -> None:
        if not load.first_error:
            load.first_error = f"{kind}: {text}"

    async def session(index: int, http: aiohttp.ClientSession) -> None:
        url = f"ws://localhost:{server.content_port}/content/{guids[index % len(guids)]}/ws"
        try:
            async with connect_gate:
                # autoping: pongs answer the app's pings, as a browser's would
                ws = await http.ws_connect(url, compress=0, autoping=True,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except Exception as exc:
            load.connect_errors += 1
            error("connect", repr(exc))
            return
        load.connected += 1
        try:
            await ramp_done.wait()
            await asyncio.sleep(random.random())  # spread the sends over each second
            tick = time.monotonic()
            while tick < deadline[0]:
                sent = time.perf_counter()
                await ws.send_bytes(PAYLOAD)
                try:
                    message = await asyncio.wait_for(ws.receive(), 10)
                except TimeoutError:
                    load.echo_errors += 1
                    error("echo", "no answer within 10 s")
                    continue
                if message.type != aiohttp.WSMsgType.BINARY or message.data != PAYLOAD:
                    load.dropped += 1
                    error("dropped", f"{message.type} {message.data!r}"[:200])
                    return
                load.round_trips.append(time.perf_counter() - sent)
                tick += 1.0
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
        except Exception as exc:
            load.dropped += 1
            error("dropped", repr(exc))
        finally:
            await ws.close()

    async def sample() -> None:
        while True:
            load.peak_rss = max(load.peak_rss, rss_mb(server.pid))
            load.peak_fds = max(load.peak_fds, open_fds(server.pid))
            await asyncio.sleep(0.5)

    work = tempfile.mkdtemp(prefix="podium-bench-scale-wrk-")
    script = os.path.join(work, "paths.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % ", ".join(json.dumps(f"/content/{g}/") for g in statics))
    sampler = asyncio.create_task(sample())
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            tasks = [asyncio.create_task(session(i, http)) for i in range(sessions)]
            while load.connected + load.connect_errors < sessions:
                await asyncio.sleep(0.1)
            deadline[0] = time.monotonic() + seconds + 1
            print(f"  {load.connected} sessions connected; measuring for {seconds:g} s", flush=True)
            cpu_before = cpu_seconds(server.pid)
            client_before = resource.getrusage(resource.RUSAGE_SELF)
            ramp_done.set()
            if http_clients:
                wrk = await asyncio.create_subprocess_exec(
                    "wrk", "-t1", f"-c{http_clients}", f"-d{int(seconds)}s", "-s", script,
                    f"http://localhost:{server.content_port}",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )
                load.wrk_out = (await wrk.communicate())[0].decode()
            else:
                await asyncio.sleep(seconds)
            load.server_cpu = (cpu_seconds(server.pid) - cpu_before) / seconds
            client_after = resource.getrusage(resource.RUSAGE_SELF)
            load.client_cpu = (client_after.ru_utime + client_after.ru_stime
                               - client_before.ru_utime - client_before.ru_stime) / seconds
            await asyncio.gather(*tasks)
    finally:
        sampler.cancel()
        shutil.rmtree(work, ignore_errors=True)


def wrk_figures(out: str) -> tuple[float, int]:
    import re

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(bad.group(1)) if bad else 0
    return (float(rps.group(1)) if rps else float("nan")), errors


# -- the run --


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="content items deployed (1 in 10 interactive)")
    parser.add_argument("--sessions", type=int, default=2000, help="concurrent websocket sessions")
    parser.add_argument("--ws-items", type=int, default=20, help="interactive items the sessions spread over")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the sessions and readers run")
    parser.add_argument("--http-clients", type=int, default=64,
                        help="wrk connections reading static items (0: none, websockets alone)")
    parser.add_argument("--deploy-workers", type=int, default=4, help="API clients deploying at once")
    parser.add_argument("--samples", type=int, default=30, help="requests per list latency figure")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("missing wrk: install with `apt-get install -y wrk`")
    if args.items < 20:
        sys.exit("--items: at least 20")
    nofile = raise_nofile()
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, goal: str = "") -> None:
        rows.append((name, value, goal))
        print(f"  {name}: {value} {goal}", flush=True)

    print(f"load average before: {loadavg()}; open files limit {nofile}", flush=True)
    data = tempfile.mkdtemp(prefix="podium-bench-scale-")
    try:
        with podium_server(core=None, data_dir=os.path.join(data, "data")) as server:
            empty_rss = settle(server.pid)
            row("server RSS at start, no content", f"{empty_rss:.0f} MB")
            key = server.key
            viewer_key = make_viewer(server)
            deployed = Deployed()
            kinds = item_kinds(args.items)
            started = time.perf_counter()
            deploy_items(server, kinds[:1], 1, deployed)  # the environment build, alone
            build_seconds = time.perf_counter() - started
            warm = max(10, args.items // 10)
            started = time.perf_counter()
            deploy_items(server, kinds[1:warm], args.deploy_workers, deployed, 1)
            first_seconds = time.perf_counter() - started
            warm_rss = settle(server.pid)
            started = time.perf_counter()
            deploy_items(server, kinds[warm:], args.deploy_workers, deployed, warm)
            rest_seconds = time.perf_counter() - started
            for line in deployed.errors[:5]:
                print(f"    {line}")
            row("environment build (first interactive item, alone)", f"{build_seconds:.1f} s")
            row(f"deploy throughput ({args.items - 1} items, {args.deploy_workers} clients)",
                f"{(args.items - 1) / (first_seconds + rest_seconds):.1f} items/s",
                f"({len(deployed.errors)} failed)")
            running = descendants(server.pid)
            deployed_rss = settle(server.pid)
            row("content processes running after the deploys", str(len(running)))
            row(f"server RSS with {args.items} idle items", f"{deployed_rss:.0f} MB")
            per_item = (deployed_rss - empty_rss) * 1024 / args.items
            marginal = (deployed_rss - warm_rss) * 1024 / (args.items - warm)
            row("RSS per idle item, over all", f"{per_item:.0f} KB", "(goal <= 100 KB)")
            row(f"RSS per idle item, after the first {warm}", f"{marginal:.0f} KB", "(goal <= 100 KB)")

            latencies = list_latencies(server, viewer_key, args.samples, args.items)
            for name, times in latencies.items():
                goal = "(goal p95 <= 300 ms)" if "dashboard" in name else "(goal p95 <= 100 ms)"
                row(f"{name}, {args.items} items", f"p50 {pct(times.wall, 50) * 1000:.0f} ms, "
                    f"p95 {pct(times.wall, 95) * 1000:.0f} ms, server CPU {times.cpu * 1000:.0f} ms", goal)

            row("load average after timing the lists", loadavg())
            before_rss, before_fds = rss_mb(server.pid), open_fds(server.pid)
            ws_guids = deployed.interactive[: args.ws_items]
            print(f"load: {args.sessions} websocket sessions over {len(ws_guids)} items, "
                  f"{args.http_clients} readers, {args.seconds:g} s; load average {loadavg()}", flush=True)
            load = Load()
            asyncio.run(run_load(server, ws_guids, deployed.static, args.sessions, args.seconds,
                                 args.http_clients, load))
            load_during = loadavg()
            after_rss = settle(server.pid, 5)
            after_fds = open_fds(server.pid)
            row("websocket round trip", f"p50 {pct(load.round_trips, 50) * 1000:.1f} ms, "
                f"p99 {pct(load.round_trips, 99) * 1000:.1f} ms ({len(load.round_trips)} round trips)")
            row("websocket sessions connected / failed to connect",
                f"{load.connected} / {load.connect_errors}", "(goal: all / 0)")
            row("websocket errors (no echo within 10 s) / dropped sessions",
                f"{load.echo_errors} / {load.dropped}", "(goal 0 / 0)")
            if load.first_error:
                print(f"    first: {load.first_error}")
            if args.http_clients:
                rps, http_errors = wrk_figures(load.wrk_out)
                row(f"static reads ({args.http_clients} connections)", f"{rps:.0f} req/s, {http_errors} errors",
                    "(goal 0 errors)")
            row("server RSS before / peak / after the load",
                f"{before_rss:.0f} / {load.peak_rss:.0f} / {after_rss:.0f} MB", "(goal <= 400 MB)")
            row("server open files before / peak / after the load", f"{before_fds} / {load.peak_fds} / {after_fds}")
            row("server / websocket client CPU while measuring (1.0 = one core)",
                f"{load.server_cpu:.2f} / {load.client_cpu:.2f}")
            row("load average during the load", load_during)
            errors = server.log_errors()
            row("server log: tracebacks / pool timeouts", str(len(errors)))
            if errors:
                print(f"    e.g. {errors[0][:200]}")
        with podium_server(core=None, data_dir=os.path.join(data, "data"), key=key) as again:
            restarted_rss = settle(again.pid)
            row(f"fresh server RSS on {args.items} items (vs {empty_rss:.0f} MB with none)",
                f"{restarted_rss:.0f} MB, {(restarted_rss - empty_rss) * 1024 / args.items:.0f} KB per item",
                "(goal <= 100 KB)")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(f"\nload average after: {loadavg()}")
    width = max(len(name) for name, _, _ in rows)
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value}  {goal}".rstrip())


def make_viewer(server: Server) -> str:
    """A viewer who owns nothing; returns its API key."""
    import subprocess

    server.api.post(f"{server.base}/v1/users", json={
        "username": "reader", "user_role": "viewer", "password": "reader-password"}).raise_for_status()
    return subprocess.run([*PODIUM, "admin", "create-api-key", "reader", "--data-dir", server.data_dir],
                          check=True, capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
