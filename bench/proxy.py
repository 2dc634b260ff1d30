"""What the proxy front costs: a minimal app reached directly and through the front.

    python bench/proxy.py                 # 10 s per measurement
    python bench/proxy.py --quick         # 3 s per measurement, for a smoke run
    python bench/proxy.py --through URL   # measure an already running proxy at URL
                                          # (e.g. http://127.0.0.1:3939/content/<guid>)
    python bench/proxy.py --nginx         # also nginx in front of the same app (Debian's
                                          # nginx, one worker on core 0), for comparison
    python bench/proxy.py --podium        # a real `podium serve` (pinned to core 0) with
                                          # the app deployed as content; direct = the same
                                          # content process reached at its own port
    python bench/proxy.py --sandbox       # two real servers, content sandboxed and not,
                                          # side by side: requests/s through each, and
                                          # the cold start (first request of a stopped app)
    python bench/proxy.py --usage         # real servers, usage recording off and on
                                          # (hits, visits, sessions), side by side; on
                                          # twice: importing as the default does (held
                                          # while the server is busy) and at once
    python bench/proxy.py --usage --control
                                          # the same, and a second recording-off server
                                          # paired with the first: the noise floor
    python bench/proxy.py --usage --importer-cpus 0,1
                                          # the same, the importer free to run on either
                                          # core rather than the server's (a diagnostic)
    python bench/proxy.py --usage-toggle --pairs 16 --sets 2
                                          # usage recording off and on within one server,
                                          # switched while it runs (no difference between
                                          # two server instances in the ratio); twice:
                                          # import held while busy (default) and at once
    python bench/proxy.py --usage-interleave --seconds 30 --rounds 3
                                          # usage recording off and on within one server,
                                          # switched every 0.1 s (--window) under one
                                          # steady load, against control runs that switch
                                          # nothing: the steadiest of the usage figures

The app (a raw ASGI callable: ``/`` answers ``ok``, ``/big`` streams 10 MiB in 64 KiB
chunks, ``/ws`` echoes websocket messages) runs under uvicorn (uvloop, httptools, no
access log) pinned to core 0. The front runs pinned to core 0 as well, the same core
as the app, as in DESIGN.md ("What the proxy path costs"), and reaches the app on the
unix socket the app also listens on, as Podium reaches local content processes
(``--tcp-upstream``: over loopback TCP, as on Kubernetes). The load generators are
pinned to core 1: ``wrk -t1 -c64`` for small requests, ``wrk -t1 -c8`` for ``/big``,
and a websocket client doing send/receive round trips over 16 connections.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and ``taskset`` (util-linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "src"))

from podium.proxy.decisions import Forward, Respond  # noqa: E402

BIG_CHUNK = b"x" * (64 * 1024)
BIG_CHUNKS = 160  # 10 MiB
WS_CONNECTIONS = 16
# The websocket client library: aiohttp's (C-accelerated framing, so the servers and
# not the client set the pace) or websockets' (pure Python: client-bound, gentler ratios).
WS_CLIENT = ["aiohttp"]


# -- the app --


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: ``/big`` streams 10 MiB, ``/ws`` echoes, anything else answers ``ok``."""
    if scope["type"] == "http":
        if scope["path"].endswith("/big"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(BIG_CHUNKS):
                await send({"type": "http.response.body", "body": BIG_CHUNK, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message["text"]})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def app_socket_path(port: int) -> str:
    """The unix socket the app also listens on, next to its TCP ``port``."""
    return f"/tmp/podium-bench-app-{port}.sock"


def app_handoff_path(port: int) -> str:
    """Where the app takes WebSocket connections the front hands over."""
    return f"/tmp/podium-bench-app-{port}.handoff.sock"


def serve_app_runner(port: int) -> None:
    """The app as Podium runs ASGI content (``podium.apps.runner``): on 127.0.0.1:``port``
    (direct), on a unix socket (the front's upstream) and on a hand-off socket."""
    from podium.apps import runner

    runner.serve_asgi("__main__:app", port, "", app_socket_path(port), app_handoff_path(port))


def serve_app(port: int) -> None:
    """The app on 127.0.0.1:``port`` (direct) and on a unix socket (for the front)."""
    import uvicorn

    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", port))
    path = app_socket_path(port)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[tcp, unix])


# -- the front, with a fixed router --


class FixedRouter:
    """Forwards ``/content/x/...`` to the app, with ``/content/x`` stripped."""

    prefix = b"/content/x"

    def __init__(self, port: int, unix: bool, handoff: bool = False) -> None:
        self.port = port
        self.unix_path = app_socket_path(port) if unix else None
        self.handoff_path = app_handoff_path(port) if handoff else None

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Any:
        if target.startswith(self.prefix):
            rest = target[len(self.prefix) :] or b"/"
            return Forward("127.0.0.1", self.port, rest, unix_path=self.unix_path,
                           handoff_path=self.handoff_path)
        return Respond(404, [], b"not found")


def serve_front(port: int, upstream_port: int, unix: bool, handoff: bool = False) -> None:
    import uvloop

    from podium.proxy.front import Front

    async def main() -> None:
        front = Front(FixedRouter(upstream_port, unix, handoff), "/nonexistent/podium-bench.sock")
        await front.start("127.0.0.1", port)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())


# -- the websocket client --


async def _ws_round_trips(url: str, connections: int, seconds: float, client: str) -> int:
    """Round trips of 32-byte binary messages, one in flight per connection."""
    counts = [0] * connections
    start = asyncio.Event()
    deadline = 0.0
    payload = b"p" * 32

    async def with_aiohttp(index: int, session: Any) -> None:
        async with session.ws_connect(url, compress=0, autoping=False) as ws:
            await start.wait()
            while time.monotonic() < deadline:
                await ws.send_bytes(payload)
                await ws.receive()
                counts[index] += 1

    async def with_websockets(index: int, session: Any) -> None:
        from websockets.asyncio.client import connect

        async with connect(url, compression=None, max_size=None) as ws:
            await start.wait()
            while time.monotonic() < deadline:
                await ws.send(payload)
                await ws.recv()
                counts[index] += 1

    import aiohttp

    one = with_aiohttp if client == "aiohttp" else with_websockets
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(one(i, session)) for i in range(connections)]
        await asyncio.sleep(0.5)  # all connected
        deadline = time.monotonic() + seconds
        start.set()
        await asyncio.gather(*tasks)
    return sum(counts)


def ws_client(url: str, connections: int, seconds: float, client: str) -> None:
    import uvloop

    total = uvloop.run(_ws_round_trips(url, connections, seconds, client))
    print(total / seconds)


# -- measuring --


@dataclass
class Figures:
    small_rps: float
    big_mibps: float
    ws_rtps: float


_UNITS = {"B": 1 / 2**20, "KB": 1 / 2**10, "MB": 1.0, "GB": 2**10, "TB": 2**20}


def wrk(url: str, connections: int, seconds: float) -> tuple[float, float]:
    """Requests/s and MiB/s from one wrk run pinned to core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if rps is None or transfer is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} failed requests to {url}:\n{out}")
    return float(rps.group(1)), float(transfer.group(1)) * _UNITS[transfer.group(2)]


def ws_rate(url: str, seconds: float) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", sys.executable, HERE, "ws-client", url, str(WS_CONNECTIONS),
         str(seconds), WS_CLIENT[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


# CPU time (user + system) of the servers on core 0 per operation, from /proc: unlike
# the rates, it hardly moves with other load on the machine, so it says what each path
# costs the core the app shares (through / direct cost = the ratio a quiet machine shows
# when core 0 is the bottleneck).
CPU_PIDS: list[int] = []
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's worker, Podium's content processes)."""
    found = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as children:
                for child in children.read().split():
                    found += _tree(int(child))
    return found


def listening_pids(port: int) -> list[int]:
    """The processes holding a socket that listens on TCP ``port`` (a content process, which
    Podium starts in a session of its own: not among the server's descendants)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
                pids.append(int(pid))
    return pids


def cpu_seconds() -> float:
    total = 0
    for root in CPU_PIDS:
        for pid in _tree(root):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


@dataclass
class Cpu:
    small_us: float  # per request
    big_ms: float  # per 10 MiB response
    ws_us: float  # per round trip


def measure(base_url: str, seconds: float, cpu: list[Cpu] | None = None) -> Figures:
    """Small requests/s, /big MiB/s and websocket round trips/s against ``base_url``.

    ``base_url`` is where the app's root is reached: ``http://127.0.0.1:PORT`` for the
    app itself, or a proxy URL whose path prefix maps to the app's root (a real
    Podium server: ``http://127.0.0.1:3939/content/<guid>``). With ``cpu``, the core-0
    servers' CPU time per operation (``CPU_PIDS``) is appended to it.
    """
    base = base_url.rstrip("/")
    used = [cpu_seconds()]
    small, _ = wrk(base + "/", 64, seconds)
    used.append(cpu_seconds())
    _, big = wrk(base + "/big", 8, seconds)
    used.append(cpu_seconds())
    ws = ws_rate(re.sub(r"^http", "ws", base) + "/ws", seconds)
    used.append(cpu_seconds())
    if cpu is not None and CPU_PIDS:
        spent = [b - a for a, b in zip(used, used[1:], strict=False)]
        cpu.append(Cpu(spent[0] / (small * seconds) * 1e6, spent[1] / (big * seconds / 10) * 1e3,
                       spent[2] / (ws * seconds) * 1e6))
    return Figures(small, big, ws)


def compare(direct_url: str, through_url: str, seconds: float, rounds: int) -> None:
    """Measure both sides ``rounds`` times, interleaved, and report the best of each.

    Interleaving and best-of-N keep other load on the machine from deciding the
    ratios; every round is printed too, and (with ``CPU_PIDS``) the median CPU time the
    core-0 servers spent per operation on each side.
    """
    for url in (direct_url, through_url):
        wrk(url.rstrip("/") + "/", 64, 1)  # warm up: connections, pools, caches
    directs: list[Figures] = []
    throughs: list[Figures] = []
    cpus: tuple[list[Cpu], list[Cpu]] = ([], [])
    for index in range(rounds):
        directs.append(measure(direct_url, seconds, cpus[0]))
        throughs.append(measure(through_url, seconds, cpus[1]))
        if rounds > 1:
            print(f"round {index + 1}: (load average {load_average()})", flush=True)
            report(directs[-1], throughs[-1])
    best = [
        Figures(*(max(getattr(f, name) for f in figures) for name in Figures.__dataclass_fields__))
        for figures in (directs, throughs)
    ]
    if rounds > 1:
        print(f"best of {rounds}: (load average {load_average()})")
    report(*best)
    if cpus[0] and cpus[1]:
        print(f"core-0 servers' CPU per operation, median of {rounds}:")
        print(f"{'':40} {'direct':>10} {'through':>10} {'d/t':>7}")
        for name, field, unit in (("small request", "small_us", "µs"), ("10 MiB response", "big_ms", "ms"),
                                  ("websocket round trip", "ws_us", "µs")):
            d = sorted(getattr(c, field) for c in cpus[0])[len(cpus[0]) // 2]
            t = sorted(getattr(c, field) for c in cpus[1])[len(cpus[1]) // 2]
            print(f"{name + ' (' + unit + ')':40} {d:10.1f} {t:10.1f} {d / t:6.2f}x")


def ws_at_once(direct_url: str, through_url: str, seconds: float, rounds: int) -> None:
    """Half the websocket connections direct and half through, at the same time, against
    the same app: both halves see the same load on the machine, so the ratio of their
    round trip rates holds steady where separate runs do not. A handed-over session
    should match a direct one (1.0x); a tunnelled one pays the extra hop's latency."""
    half = WS_CONNECTIONS // 2
    ratios = []
    for _ in range(rounds):
        procs = [
            subprocess.Popen(
                ["taskset", "-c", "1", sys.executable, HERE, "ws-client",
                 re.sub(r"^http", "ws", url.rstrip("/")) + "/ws", str(half), str(seconds), WS_CLIENT[0]],
                stdout=subprocess.PIPE, text=True,
            )
            for url in (direct_url, through_url)
        ]
        direct, through = (float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
        ratios.append(through / direct)
        print(f"websocket round trips/s at once, {half} + {half} conns: direct {direct:.0f}, "
              f"through {through:.0f}, {through / direct:.2f}x (load average {load_average()})", flush=True)
    print(f"at once: median {sorted(ratios)[len(ratios) // 2]:.2f}x of {rounds}")


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream app {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location /content/x/ {{
            proxy_pass http://app/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(port: int, upstream: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx (one worker, pinned to core 0) proxying ``/content/x/`` to ``upstream``
    (``unix:/path`` or ``host:port``) as the front does: streaming, websocket upgrades,
    upstream keep-alive."""
    import tempfile

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    work = tempfile.mkdtemp(prefix="podium-bench-nginx-")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as out:
        out.write(NGINX_CONF.format(work=work, upstream=upstream, port=port))
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "-p", work, "-c", conf])
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def pinned(core: int, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_src(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(["taskset", "-c", str(core), sys.executable, HERE, *args], env=env)
    try:
        yield proc
    finally:
        stop(proc, 10)


def stop(proc: subprocess.Popen[Any], seconds: float) -> None:
    """Stop ``proc``: SIGTERM, and SIGKILL if it has not exited after ``seconds``."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _src() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(HERE)), "src")


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset") if shutil.which(tool) is None]
    if missing:
        sys.exit(
            f"missing {', '.join(missing)}: install with `apt-get install -y wrk` "
            "(taskset is in util-linux)"
        )
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores: the servers on core 0, the load generators on core 1")


def report(direct: Figures, through: Figures) -> None:
    rows = [
        ("small requests/s (wrk -c64)", direct.small_rps, through.small_rps),
        ("/big 10 MiB MiB/s (wrk -c8)", direct.big_mibps, through.big_mibps),
        (f"websocket round trips/s ({WS_CONNECTIONS} conns)", direct.ws_rtps, through.ws_rtps),
    ]
    print(f"{'':40} {'direct':>10} {'through':>10} {'ratio':>7}")
    for name, d, t in rows:
        print(f"{name:40} {d:10.0f} {t:10.0f} {t / d:6.2f}x")


@dataclass
class Served:
    direct: str  # the content process at its own port
    through: str  # the content through Podium, on the content origin
    api: Any  # a requests session with the admin key
    base: str  # the API's URL
    cold_guid: str  # a second copy of the app, min_processes 0, for cold starts
    data_dir: str = ""  # the server's data dir
    pid: int = 0  # the server's (its content processes are its descendants)


@contextlib.contextmanager
def podium_content(sandbox: str = "required", extra_env: dict[str, str] | None = None,
                   toggled: bool = False) -> Iterator[Served]:
    """A real Podium on core 0 serving this benchmark's app as public content, with the
    ``sandbox`` setting given (and ``extra_env``). The content process is Podium's own run
    job, so it inherits the server's core. ``toggled``: the server is started by
    :func:`serve_toggled`, its usage recording switched by SIGUSR1.
    """
    import inspect
    import json
    import tempfile

    import requests

    source = "\n".join(
        ["from typing import Any", "BIG_CHUNK = b'x' * (64 * 1024)", f"BIG_CHUNKS = {BIG_CHUNKS}",
         inspect.getsource(app)]
    )
    manifest = {"version": 1, "metadata": {"appmode": "python-fastapi", "entrypoint": "app:app"},
                "python": {"version": ".".join(map(str, sys.version_info[:3])),
                           "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
                "files": {}}
    from podium_server import bundle  # here: podium_server imports this module

    tarball = bundle({"app.py": source, "requirements.txt": "uvicorn[standard]\n"}, manifest)
    work = tempfile.mkdtemp(prefix="podium-bench-proxy-")
    data_dir = os.path.join(work, "data")
    podium = [sys.executable, "-m", "podium"]
    key = subprocess.run([*podium, "admin", "bootstrap", "--data-dir", data_dir], check=True,
                         capture_output=True, text=True).stdout.strip()
    port, content_port = free_port(), free_port()
    env = {**os.environ, "PODIUM_BOOTSTRAP_ADMIN_ON_FIRST_START": "false", "PODIUM_SANDBOX": sandbox,
           "PODIUM_CONTENT_LISTEN": f"127.0.0.1:{content_port}", **(extra_env or {})}
    serve = [sys.executable, HERE, "serve-toggled"] if toggled else [*podium, "serve"]
    server = subprocess.Popen(
        ["taskset", "-c", "0", *serve, "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 60)
        api = requests.Session()
        api.headers["Authorization"] = f"Key {key}"
        base = f"http://127.0.0.1:{port}/__api__"
        # One process taking every connection, as the direct side has: the comparison is
        # of the path, not of the scheduler spreading load.
        guids = []
        for name, warm in (("bench", 1), ("bench-cold", 0)):
            guid = api.post(f"{base}/v1/content", json={
                "name": name, "access_type": "all", "max_processes": 1, "min_processes": warm,
                "max_conns_per_process": 1000, "load_factor": 1.0}).json()["guid"]
            bundle_id = api.post(f"{base}/v1/content/{guid}/bundles", data=tarball).json()["id"]
            task = api.post(f"{base}/v1/content/{guid}/deploy", json={"bundle_id": bundle_id}).json()["task_id"]
            while not (state := api.get(f"{base}/v1/tasks/{task}", params={"wait": 1}).json())["finished"]:
                pass
            if state["code"] != 0:
                raise RuntimeError(f"deploy failed: {state['error']}")
            guids.append(guid)
        guid = guids[0]
        through = f"http://localhost:{content_port}/content/{guid}"
        if requests.get(through + "/").text != "ok":
            answer = requests.get(through + "/")
            raise RuntimeError(f"the deployed app does not answer through Podium: {answer.status_code} {answer.text[:300]}")
        job = next(j for j in api.get(f"{base}/v1/content/{guid}/jobs").json() if j["status"] == 0)
        with open(os.path.join(data_dir, "jobs", job["key"], "job.json")) as record:
            app_port = json.load(record)["port"]
        yield Served(f"http://127.0.0.1:{app_port}", through, api, base, guids[1], data_dir, server.pid)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def cold_start(served: Served) -> float:
    """Seconds from a request to a stopped app's first answer (process start included)."""
    import requests

    url = served.through.rsplit("/content/", 1)[0] + f"/content/{served.cold_guid}/"
    for job in served.api.get(f"{served.base}/v1/content/{served.cold_guid}/jobs").json():
        if job["status"] == 0 and job["kind"] == "run":
            served.api.delete(f"{served.base}/v1/content/{served.cold_guid}/jobs/{job['key']}")
    time.sleep(1.0)
    started = time.monotonic()
    answer = requests.get(url, timeout=60)
    if answer.text != "ok":
        raise RuntimeError(f"cold start failed: {answer.status_code} {answer.text[:200]}")
    return time.monotonic() - started


def compare_sandbox(seconds: float, rounds: int, cold_samples: int = 9) -> None:
    """Content sandboxed (the default) against unsandboxed: two real servers at once,
    measured in turn, round after round, so other load on the machine weighs on both."""
    modes = ("off", "required")
    with contextlib.ExitStack() as stack:
        servers = {mode: stack.enter_context(podium_content(mode)) for mode in modes}
        figures: dict[str, list[Figures]] = {mode: [] for mode in modes}
        colds: dict[str, list[float]] = {mode: [] for mode in modes}
        for mode in modes:
            wrk(servers[mode].through + "/", 64, 1)
        for _ in range(rounds):
            for mode in modes:
                figures[mode].append(measure(servers[mode].through, seconds))
        for _ in range(cold_samples):
            for mode in modes:
                colds[mode].append(cold_start(servers[mode]))
    best = {
        mode: Figures(*(max(getattr(f, name) for f in figures[mode]) for name in Figures.__dataclass_fields__))
        for mode in modes
    }
    median = {mode: sorted(colds[mode])[len(colds[mode]) // 2] for mode in modes}
    off, on = best["off"], best["required"]
    print(f"{'':40} {'unsandboxed':>12} {'sandboxed':>10} {'ratio':>7}")
    for name, a, b in (("small requests/s (64 conns)", off.small_rps, on.small_rps),
                       ("10 MiB responses, MiB/s (8 conns)", off.big_mibps, on.big_mibps),
                       ("websocket round trips/s (16 conns)", off.ws_rtps, on.ws_rtps)):
        print(f"{name:40} {a:12.0f} {b:10.0f} {b / a:6.2f}x")
    print(f"{f'cold start, ms (median of {cold_samples})':40} {median['off'] * 1000:12.0f} "
          f"{median['required'] * 1000:10.0f} {(median['required'] - median['off']) * 1000:+6.0f} ms")


USAGE_FLUSH_SECONDS = 2  # the servers' usage_flush_seconds (the default, set)
HITLOG = "BENCH_HITLOG"  # how serve_toggled records hits: "c" (as installed), "python", "call" (--hitlog)


def spooled(served: Served) -> int:
    """How many files of recorded usage wait in the server's spool for its importer."""
    try:
        return sum(not name.startswith(".") for name in os.listdir(os.path.join(served.data_dir, "usage")))
    except FileNotFoundError:
        return 0


def drain(served: Served, timeout: float = 300.0) -> float:
    """Seconds until the importer has imported the spool (so no measurement of either
    server shares the core with a backlog left by the one before)."""
    started = time.monotonic()
    while spooled(served) and time.monotonic() - started < timeout:
        time.sleep(0.1)
    return time.monotonic() - started


def importer_pid(pid: int) -> int | None:
    """The usage importer child of the server ``pid`` (None when it has none)."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                parent, command = stat.read().rpartition(")")[2].split()[1], cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == str(pid) and b"podium.usage_import" in command:
            return int(entry)
    return None


def process_cpu_seconds(pid: int, importer: bool = False) -> float:
    """CPU time (user + system) the process ``pid`` has used; ``importer``: that of its
    usage importer child instead (0 when it has none)."""
    if importer:
        child = importer_pid(pid)
        if child is None:
            return 0.0
        pid = child
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return float(int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """The lower quartile, median and upper quartile of ``values``."""
    low, median, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return low, median, high


def paired_run(servers: dict[str, Served], mode: str, flip: bool, seconds: int,
               waits: list[float], recording: list[str],
               switch: Callable[[str], None] | None = None) -> tuple[float, float, float, float]:
    """One pair of small-request measurements of the server ``mode`` against the "off"
    one: four runs of ``seconds`` in the order off, mode, mode, off (mode, off, off, mode
    when ``flip``), each after a flush interval of the same load, unmeasured, so the
    importer works during it as under a steady stream of requests (rather than after it,
    while the other server is measured or nothing is), unless the server holds it back
    while busy (as the default does, up to usage_import_delay_seconds). Each run starts
    with the spools of the ``recording`` servers imported. The ratios mode/off of
    requests/s and of server CPU per request, how many requests ``mode`` served, and its
    importer's CPU seconds during its measured runs. ``switch``, when given, is called
    with the side before each run (one server switched between two modes)."""
    measured: dict[str, list[float]] = {"off": [0.0, 0.0], mode: [0.0, 0.0]}  # requests, CPU seconds
    served_on = importing = 0.0
    for side in (mode, "off", "off", mode) if flip else ("off", mode, mode, "off"):
        if switch is not None:
            switch(side)
        waits.append(max(drain(servers[name]) for name in recording))
        warm, _ = wrk(servers[side].through + "/", 64, USAGE_FLUSH_SECONDS)
        before = process_cpu_seconds(servers[side].pid)
        importer_before = process_cpu_seconds(servers[side].pid, importer=True)
        rate, _ = wrk(servers[side].through + "/", 64, seconds)
        measured[side][0] += rate * seconds
        measured[side][1] += process_cpu_seconds(servers[side].pid) - before
        if side == mode:
            importing += process_cpu_seconds(servers[side].pid, importer=True) - importer_before
        if side == mode:
            served_on += warm * USAGE_FLUSH_SECONDS + rate * seconds
    (requests, cpu), (requests_off, cpu_off) = measured[mode], measured["off"]
    return requests / requests_off, (cpu / requests) / (cpu_off / requests_off), served_on, importing


def compare_usage(seconds: float, rounds: int, importer_cpus: set[int] | None = None, pairs: int = 12,
                  pair_seconds: int = 2, control: bool = False, sets: int = 1) -> None:
    """Usage recording off against on (the default): two real servers at once, measured
    in turn, round after round, so other load on the machine weighs on both. With it on,
    every request is a hit and every websocket a session, spooled every flush interval and
    imported by the server's nice 19 importer process. Each measurement starts with the
    spool imported, so the importer's work is charged to the measurement that made it.

    Besides throughput, the server process's CPU time per small request is reported (the
    less noisy figure on a shared machine: other load slows both servers but does not
    add to their CPU time), and the importer's CPU time per hit it imported.

    Then ``pairs`` paired measurements of small requests alone (:func:`paired_run`): on a
    machine whose speed drifts from second to second with other load, the ratio within a
    pair of neighbouring runs is steadier than a best of rounds; their median and
    quartiles are reported. The recording server is paired with the first, and so is a
    third, recording too but importing at once (usage_import_delay_seconds = 0): the
    default holds the import back while the server is busy, for up to two minutes, and
    a pair's 4 s of load are a peak within that; "at once" imports during the load, as
    the default does under load sustained past the delay (where the importer finds CPU
    time: pinned beside a saturated server at SCHED_IDLE it finds little, with
    ``importer_cpus`` 0,1 it finds the load generator's idle moments). With ``control``,
    a fourth server, recording off too, is paired the same way: what two identical servers differ by is the benchmark's noise floor on
    this machine. With ``sets`` above 1 the servers are started again that many times,
    in a rotated order (the rounds run with the first set), the pairs shared among the
    sets: a server can be a few percent faster than an identical one for as long as it
    runs (where its memory and processes landed), which averages out over sets.

    The importer inherits the server's core (both pinned to core 0) unless
    ``importer_cpus`` moves it: a diagnostic of where its cost falls, not a measurement of
    recording (see bench/README.md)."""
    flush = {"PODIUM_USAGE_FLUSH_SECONDS": str(USAGE_FLUSH_SECONDS)}
    modes = {"off": {"PODIUM_USAGE_RECORDING": "false", **flush}, "on": {"PODIUM_USAGE_RECORDING": "true", **flush}}
    others = {"at once": {**modes["on"], "PODIUM_USAGE_IMPORT_DELAY_SECONDS": "0"}} if pairs else {}
    if control and pairs:
        others["control"] = modes["off"]
    with open("/proc/loadavg") as load:
        print(f"load average at the start: {load.read().strip()}", flush=True)
    waits: list[float] = []
    figures: dict[str, list[Figures]] = {mode: [] for mode in modes}
    per_request: dict[str, list[float]] = {mode: [] for mode in modes}
    recording = ["on", *(["at once"] if "at once" in others else [])]
    requests = dict.fromkeys(recording, 0.0)  # served by each recording server: its hits
    importer_cpu = dict.fromkeys(recording, 0.0)
    in_window = dict.fromkeys(recording, 0.0)  # importer CPU seconds during the pairs' measured runs
    paired: dict[str, list[tuple[float, float]]] = {mode: [] for mode in ("on", *others)}
    marked = False
    for set_index in range(sets):
        with contextlib.ExitStack() as stack:
            # Started in a rotated order from one set to the next: where a server lands
            # by starting first or last weighs on each mode in turn.
            order = list({**modes, **others}.items())
            turn = set_index % len(order)
            servers = {mode: stack.enter_context(podium_content("off", env))
                       for mode, env in order[turn:] + order[:turn]}
            if sets > 1:
                print(f"server set {set_index + 1} of {sets} started", flush=True)
            for mode in servers:
                wrk(servers[mode].through + "/", 64, 1)
            for mode in recording:
                drain(servers[mode])
                if importer_cpus is not None:
                    child = importer_pid(servers[mode].pid)
                    if child is None:
                        raise RuntimeError(f"the server recording ({mode}) has no usage importer after the warm-up")
                    os.sched_setaffinity(child, importer_cpus)
                    print(f"the importer of {mode!r} (pid {child}) moved to cores {sorted(importer_cpus)}",
                          flush=True)
            importer_before = {mode: process_cpu_seconds(servers[mode].pid, importer=True) for mode in recording}
            for index in range(rounds if set_index == 0 else 0):
                for mode in (modes if index % 2 == 0 else reversed(list(modes))):
                    waits.append(max(drain(servers[name]) for name in recording))
                    served = servers[mode]
                    base = served.through.rstrip("/")
                    before = process_cpu_seconds(served.pid)
                    small, _ = wrk(base + "/", 64, seconds)
                    per_request[mode].append((process_cpu_seconds(served.pid) - before) / (small * seconds))
                    _, big = wrk(base + "/big", 8, seconds)
                    got = Figures(small, big, ws_rate(re.sub(r"^http", "ws", base) + "/ws", seconds))
                    figures[mode].append(got)
                    if mode == "on":
                        requests["on"] += small * seconds
                    print(f"round {index + 1} {mode:>3}: {got.small_rps:8.0f} req/s {got.big_mibps:6.0f} MiB/s "
                          f"{got.ws_rtps:7.0f} ws/s; server CPU {per_request[mode][-1] * 1e6:5.1f} µs/request",
                          flush=True)
            for index in range(pairs // sets + (1 if set_index < pairs % sets else 0)):
                for mode in paired:
                    rate, cpu, served_on, importing = paired_run(servers, mode, index % 2 == 1, pair_seconds, waits,
                                                                 recording)
                    if mode in requests:
                        requests[mode] += served_on
                        in_window[mode] += importing
                    paired[mode].append((rate, cpu))
                    print(f"pair {len(paired[mode])}: small requests {mode}/off {rate:.3f}x, "
                          f"server CPU per request {cpu:.3f}x", flush=True)
            waits.append(max(drain(servers[name]) for name in recording))
            for mode in recording:
                importer_cpu[mode] += process_cpu_seconds(servers[mode].pid, importer=True) - importer_before[mode]
            if set_index == sets - 1:
                # Recording really was on: one marked request afterwards is found among the hits.
                import requests as http

                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
                http.get(servers["on"].through + "/?bench-marker")
                marked = recorded_queries(servers["on"], since, "bench-marker") is not None
    best = {
        mode: Figures(*(max(getattr(f, name) for f in figures[mode]) for name in Figures.__dataclass_fields__))
        for mode in modes
    }
    off, on = best["off"], best["on"]
    print(f"best of {rounds} rounds:")
    print(f"{'':40} {'recording off':>14} {'recording on':>13} {'ratio':>7}")
    for name, a, b in (("small requests/s (64 conns)", off.small_rps, on.small_rps),
                       ("10 MiB responses, MiB/s (8 conns)", off.big_mibps, on.big_mibps),
                       ("websocket round trips/s (16 conns)", off.ws_rtps, on.ws_rtps)):
        print(f"{name:40} {a:14.0f} {b:13.0f} {b / a:6.3f}x")
    cpu_off, cpu_on = (sorted(per_request[mode])[len(per_request[mode]) // 2] * 1e6 for mode in modes)
    print(f"{'server CPU µs per small request (median)':40} {cpu_off:14.1f} {cpu_on:13.1f} {cpu_on / cpu_off:6.3f}x")
    for mode, label in (("on", "recording on/off (import held while busy, the default)"),
                        ("at once", "recording on, imported at once/off (as past the delay)"),
                        ("control", "control (off)/off, the noise floor")):
        if paired.get(mode):
            rate_q = quartiles([rate for rate, _ in paired[mode]])
            cpu_q = quartiles([cpu for _, cpu in paired[mode]])
            print(f"{pairs} pairs of {pair_seconds} s runs (A B B A), {label}: small requests/s median "
                  f"{rate_q[1]:.3f}x (quartiles {rate_q[0]:.3f}-{rate_q[2]:.3f}x), server CPU per request "
                  f"median {cpu_q[1]:.3f}x (quartiles {cpu_q[0]:.3f}-{cpu_q[2]:.3f}x)")
    if paired.get("control"):
        floor = statistics.median(rate for rate, _ in paired["control"])
        floor_cpu = statistics.median(cpu for _, cpu in paired["control"])
        for mode in recording:
            print(f"against the control, {mode}: small requests/s "
                  f"{statistics.median(rate for rate, _ in paired[mode]) / floor:.3f}x, server CPU per request "
                  f"{statistics.median(cpu for _, cpu in paired[mode]) / floor_cpu:.3f}x (ratios of the medians)")
    for mode in recording:
        print(f"importer CPU ({mode}): {importer_cpu[mode] * 1e6 / max(requests[mode], 1):.1f} µs per small "
              f"request recorded (SCHED_IDLE, nice 19; websocket and 10 MiB hits included), "
              f"{in_window[mode]:.2f} s of it during the pairs' measured runs")
    print(f"waited for the importer before a measurement: at most {max(waits):.1f} s")
    print(f"recording on: the marked request was recorded: {'yes' if marked else 'NO'}")
    with open("/proc/loadavg") as load:
        print(f"load average at the end: {load.read().strip()}")


def serve_toggled(argv: list[str]) -> None:
    """``podium serve`` with ``argv``, its usage recording switched off and on again by
    each SIGUSR1 while it runs (for ``--usage-toggle``): the content router's recorder is
    set aside and put back, as usage_recording = false leaves the router none. Switched
    off, no request is recorded; the recorder's flushes and its importer go on, with
    nothing to do but what was recorded before."""
    import signal

    from podium.cli import main as podium
    from podium.proxy.router import ContentRouter

    routers: list[ContentRouter] = []
    set_aside: dict[int, Any] = {}
    init = ContentRouter.__init__

    def kept(self: ContentRouter, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        routers.append(self)

    def swap(router: ContentRouter) -> None:
        router.usage, set_aside[id(router)] = set_aside.get(id(router)), router.usage

    def toggle(signum: int, frame: Any) -> None:
        # A Python signal handler runs between any two bytecodes, even in the middle of
        # routing a request (between `usage is not None` and `usage.hit`): the swap is
        # left to the event loop, between two steps of its tasks. (The router knows its
        # loop once it has routed a request: the benchmark switches after its warm-up.)
        for router in routers:
            assert router._loop is not None, "switched before the first request"
            router._loop.call_soon_threadsafe(swap, router)

    ContentRouter.__init__ = kept  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, toggle)
    kind = os.environ.get(HITLOG, "c")
    if kind != "c":  # --hitlog
        from podium import hitlog, usage

        class CallOnly(hitlog.PyHitLog):
            """A hit that is a call of a C function doing nothing: what any call from the
            router costs (nothing is recorded)."""

            def __init__(self) -> None:
                super().__init__()
                self.hit = "".format  # type: ignore[assignment]  # takes any arguments, returns ""

        usage.HitLog = hitlog.PyHitLog if kind == "python" else CallOnly  # type: ignore[attr-defined]
    sys.argv = ["podium", "serve", *argv]
    podium()


def switch_recording(served: Served, recording: dict[int, bool], side: str) -> None:
    """Switch the usage recording of a server started by :func:`serve_toggled` off for
    the ``side`` "off", on for any other (``recording``: whether each server records, by
    pid; one not in it does)."""
    import signal

    on = side != "off"
    if recording.get(served.pid, True) != on:
        os.kill(served.pid, signal.SIGUSR1)
        recording[served.pid] = on


def recorded_queries(served: Served, since: str, waiting_for: str, seconds: float = 120.0) -> set[str] | None:
    """The query strings of the hits ``served`` has recorded since ``since``, once the
    request with the query ``waiting_for`` is among them (None if it is not within
    ``seconds``: the importer imports when the server is quiet)."""
    deadline = time.monotonic() + seconds
    while True:
        hits = served.api.get(f"{served.base}/v1/instrumentation/content/hits", params={"from": since}).json()
        queries = {hit["data"].get("query") or "" for hit in hits}
        if waiting_for in queries:
            return queries
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def check_switch(served: Served, recording: dict[int, bool]) -> None:
    """Show that switching the recording of ``served`` (:func:`serve_toggled`) works: a
    request made with it switched off is not recorded, one made with it on is."""
    import requests as http

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    switch_recording(served, recording, "off")
    http.get(served.through + "/?bench-switched-off")
    switch_recording(served, recording, "on")
    http.get(served.through + "/?bench-switched-on")
    queries = recorded_queries(served, since, "bench-switched-on")
    if queries is None:
        raise RuntimeError("the request made with recording switched on was not recorded")
    if "bench-switched-off" in queries:
        raise RuntimeError("the request made with recording switched off was recorded: the switch does not work")
    print("switch checked: recorded switched on, not switched off", flush=True)


def compare_usage_toggled(pairs: int, pair_seconds: int = 2, sets: int = 1) -> None:
    """Usage recording off against on within one server, switched while it runs
    (:func:`serve_toggled`): no difference between two server instances (where each
    landed, a few percent for as long as it runs: bench/README.md) weighs on the ratio.
    Two servers, both started recording: the default (the import held while the server
    is busy) and one importing at once (usage_import_delay_seconds = 0); each measured
    in ``pairs`` pairs of runs with recording off and on (:func:`paired_run`), the pairs
    shared among ``sets`` starts of the servers, in a rotated order. Before the pairs,
    one request with recording switched off and one switched on show that the switch
    works: only the second is found among the hits."""
    flush = {"PODIUM_USAGE_RECORDING": "true", "PODIUM_USAGE_FLUSH_SECONDS": str(USAGE_FLUSH_SECONDS)}
    variants = {"on": flush, "at once": {**flush, "PODIUM_USAGE_IMPORT_DELAY_SECONDS": "0"}}
    with open("/proc/loadavg") as load:
        print(f"load average at the start: {load.read().strip()}", flush=True)
    waits: list[float] = []
    paired: dict[str, list[tuple[float, float]]] = {mode: [] for mode in variants}
    in_window = dict.fromkeys(variants, 0.0)  # importer CPU seconds during the measured runs
    switch_works = False
    recording: dict[int, bool] = {}  # by server pid: whether it records (started recording)
    for set_index in range(sets):
        with contextlib.ExitStack() as stack:
            order = list(variants.items())
            turn = set_index % len(order)
            servers = {mode: stack.enter_context(podium_content("off", env, toggled=True))
                       for mode, env in order[turn:] + order[:turn]}
            for served in servers.values():
                wrk(served.through + "/", 64, 1)
                drain(served)
            if set_index == 0:
                check_switch(servers["on"], recording)
                switch_works = True
            for index in range(pairs // sets + (1 if set_index < pairs % sets else 0)):
                for mode in variants:
                    served = servers[mode]
                    rate, cpu, _, importing = paired_run(
                        {"off": served, mode: served}, mode, index % 2 == 1, pair_seconds, waits, [mode],
                        functools.partial(switch_recording, served, recording))
                    in_window[mode] += importing
                    paired[mode].append((rate, cpu))
                    print(f"pair {len(paired[mode])}: small requests {mode}/off {rate:.3f}x, "
                          f"server CPU per request {cpu:.3f}x", flush=True)
    for mode, label in (("on", "import held while busy, the default"),
                        ("at once", "imported at once, as past the delay")):
        rate_q = quartiles([rate for rate, _ in paired[mode]])
        cpu_q = quartiles([cpu for _, cpu in paired[mode]])
        print(f"one server switched, {pairs} pairs of {pair_seconds} s runs (A B B A), recording on/off, "
              f"{label}: small requests/s median {rate_q[1]:.3f}x (quartiles {rate_q[0]:.3f}-{rate_q[2]:.3f}x), "
              f"server CPU per request median {cpu_q[1]:.3f}x (quartiles {cpu_q[0]:.3f}-{cpu_q[2]:.3f}x), "
              f"importer CPU during the measured runs {in_window[mode]:.2f} s")
    print(f"waited for the importer before a measurement: at most {max(waits):.1f} s")
    print(f"the switch works: {'yes' if switch_works else 'NO'}")
    with open("/proc/loadavg") as load:
        print(f"load average at the end: {load.read().strip()}")


def io_count(pid: int, field: str) -> int:
    """A counter of ``/proc/<pid>/io`` (``syscr``: the read system calls the process made)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            name, _, value = line.partition(":")
            if name == field:
                return int(value)
    raise RuntimeError(f"no {field} in /proc/{pid}/io")


def minor_faults(pid: int) -> int:
    """The minor page faults of the whole process (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[7])


def thread_cpu_ns(pid: int) -> int:
    """CPU time of the process's main thread (the server's event loop), in nanoseconds."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


@dataclass
class Window:
    side: str  # "off" or "on"
    seconds: float
    requests: int  # read system calls of the app: one per request
    cpu_ns: int  # of the server's event loop thread
    faults: int  # the server's minor page faults


def interleaved_run(served: Served, app_pid: int, seconds: float, window: float,
                    switch: Callable[[str], None]) -> list[Window]:
    """Small requests through ``served`` for ``seconds`` (after 1 s of warm-up), the
    side switched by ``switch`` every ``window`` seconds in quads of windows (off, on,
    on, off, then on, off, off, on): the requests (counted as the app's read system
    calls, one per request) and the server's CPU of each window."""
    windows: list[Window] = []
    with subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{int(seconds) + 2}s",
                           served.through + "/"], stdout=subprocess.PIPE, text=True) as load:
        time.sleep(1.0)
        quad = 0
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for side in ("on", "off", "off", "on") if quad % 2 else ("off", "on", "on", "off"):
                switch(side)
                at, requests, cpu = time.monotonic(), io_count(app_pid, "syscr"), thread_cpu_ns(served.pid)
                faults = minor_faults(served.pid)
                time.sleep(window)
                windows.append(Window(side, time.monotonic() - at, io_count(app_pid, "syscr") - requests,
                                      thread_cpu_ns(served.pid) - cpu, minor_faults(served.pid) - faults))
            quad += 1
        out, _ = load.communicate()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if load.returncode or errors:
        raise RuntimeError(f"the load failed (exit {load.returncode}):\n{out}")
    return windows


def side_totals(windows: list[Window]) -> dict[str, Window]:
    """The sums of ``windows`` for each side ("on" and "off"), each as one window."""
    return {side: Window(side, sum(w.seconds for w in windows if w.side == side),
                         sum(w.requests for w in windows if w.side == side),
                         sum(w.cpu_ns for w in windows if w.side == side),
                         sum(w.faults for w in windows if w.side == side))
            for side in ("on", "off")}


def window_ratios(windows: list[Window]) -> tuple[float, float, list[float]]:
    """Requests/s and server CPU per request, on against off, over all ``windows``; and
    the requests/s ratio of each quad of them."""
    def rate(sums: dict[str, Window]) -> float:
        return (sums["on"].requests / sums["on"].seconds) / (sums["off"].requests / sums["off"].seconds)

    whole = side_totals(windows)
    cpu = (whole["on"].cpu_ns / whole["on"].requests) / (whole["off"].cpu_ns / whole["off"].requests)
    quads = [rate(side_totals(windows[i:i + 4])) for i in range(0, len(windows) - 3, 4)]
    return rate(whole), cpu, quads


def compare_usage_interleaved(runs: int, seconds: float, window: float, app_cpus: str | None = None,
                              hitlog_kind: str = "c") -> None:
    """Usage recording off against on within one server (:func:`serve_toggled`, the
    import held while busy: the default), switched every ``window`` seconds under one
    steady load (:func:`interleaved_run`): on this machine, whose speed changes from one
    tenth of a second to the next, both sides meet the same changes, which runs of
    seconds each do not. Each run of the switched server alternates with a control run
    of the same length where nothing is switched (both sides recording off): the noise
    floor of the method. ``app_cpus``: move the app's process to these cores (the server
    then has core 0 to itself; a diagnostic). ``hitlog_kind``: "python" records hits with
    the Python class, as a server installed without the C one does (:mod:`podium.hitlog`);
    "call" only calls a C function that does nothing (a diagnostic: nothing is recorded,
    the switch is not checked)."""
    with open("/proc/loadavg") as load:
        print(f"load average at the start: {load.read().strip()}", flush=True)
    flush = {"PODIUM_USAGE_RECORDING": "true", "PODIUM_USAGE_FLUSH_SECONDS": str(USAGE_FLUSH_SECONDS),
             HITLOG: hitlog_kind}
    from podium import hitlog

    if hitlog_kind == "c" and not hitlog.COMPILED:
        raise SystemExit("podium._hitlog is not built (make install builds it with a C compiler); "
                         "--hitlog python measures the Python class")
    print(f"hits recorded by: {dict(c='the C class', python='the Python class', call='nothing (a C call only)')[hitlog_kind]}",
          flush=True)
    recording: dict[int, bool] = {}
    figures: dict[str, list[tuple[float, float]]] = {"switched": [], "control": []}
    quads: dict[str, list[float]] = {"switched": [], "control": []}
    with podium_content("off", flush, toggled=True) as served:
        app_pid = listening_pids(int(served.direct.rpartition(":")[2]))[0]
        if app_cpus is not None:  # every thread of the app's process
            subprocess.run(["taskset", "-a", "-pc", app_cpus, str(app_pid)], check=True, stdout=subprocess.DEVNULL)
            print(f"the app's process moved to cores {app_cpus}; the server keeps core 0", flush=True)
        wrk(served.through + "/", 64, 1)
        if hitlog_kind != "call":
            check_switch(served, recording)
        switch_recording(served, recording, "off")
        for index in range(2 * runs):
            kind = ("switched", "control")[(index + index // 2) % 2]  # S C C S S C ...
            drain(served)
            switch = (functools.partial(switch_recording, served, recording) if kind == "switched"
                      else lambda side: None)
            windows = interleaved_run(served, app_pid, seconds, window, switch)
            switch_recording(served, recording, "off")
            rate, cpu, quad = window_ratios(windows)
            figures[kind].append((rate, cpu))
            quads[kind].extend(quad)
            sums = side_totals(windows)
            off = sums["off"]
            faults = {side: 1000 * sums[side].faults / max(1, sums[side].requests) for side in sums}
            print(f"{kind} run {len(figures[kind])}: {len(windows)} windows of {window:g} s, "
                  f"small requests/s on/off {rate:.4f}x, server loop CPU per request {cpu:.4f}x "
                  f"(off: {off.requests / off.seconds:.0f} requests/s, "
                  f"{off.cpu_ns / max(1, off.requests) / 1000:.1f} us a request), "
                  f"page faults per 1000 requests on {faults['on']:.2f}, off {faults['off']:.2f}", flush=True)
    for kind, label in (("switched", "recording on/off"), ("control", "off/off, nothing switched")):
        rates = [rate for rate, _ in figures[kind]]
        cpus = [cpu for _, cpu in figures[kind]]
        low, median, high = quartiles(quads[kind])
        print(f"{kind} ({label}), {runs} runs of {seconds:g} s: small requests/s "
              f"{statistics.mean(rates):.4f}x (runs {min(rates):.4f}-{max(rates):.4f}x; quads' median "
              f"{median:.4f}x, quartiles {low:.4f}-{high:.4f}x), server loop CPU per request "
              f"{statistics.mean(cpus):.4f}x (runs {min(cpus):.4f}-{max(cpus):.4f}x)")
    with open("/proc/loadavg") as load:
        print(f"load average at the end: {load.read().strip()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best of)")
    parser.add_argument("--quick", action="store_true", help="3 s per measurement, 1 round")
    parser.add_argument(
        "--through",
        metavar="URL",
        help="measure this proxy URL (mapping to the app root) instead of starting a front",
    )
    parser.add_argument("--app-port", type=int, help="use the app already listening on PORT")
    parser.add_argument(
        "--tcp-upstream", action="store_true",
        help="the front reaches the app over loopback TCP instead of its unix socket",
    )
    parser.add_argument(
        "--nginx", action="store_true",
        help="also measure nginx (Debian's, one worker) in front of the same app",
    )
    parser.add_argument(
        "--tunnel", action="store_true",
        help="the front tunnels websockets (no hand-off; the app under plain uvicorn, as before)",
    )
    parser.add_argument("--podium", action="store_true",
                        help="measure a real podium serve with the app deployed as content")
    parser.add_argument("--sandbox", action="store_true",
                        help="compare content sandboxed and not: requests/s and cold start")
    parser.add_argument("--usage", action="store_true",
                        help="compare usage recording off and on: requests/s through each")
    parser.add_argument("--usage-toggle", action="store_true",
                        help="compare usage recording off and on within one server, switched while it runs")
    parser.add_argument("--usage-interleave", action="store_true",
                        help="compare usage recording off and on within one server, switched every "
                             "--window seconds under one load, against a control run switching nothing")
    parser.add_argument("--window", type=float, default=0.1, help="with --usage-interleave: seconds a side")
    parser.add_argument("--pairs", type=int, default=12,
                        help="with --usage: paired small-request measurements after the rounds (0: none); "
                             "with --usage-toggle: the pairs of each server")
    parser.add_argument("--control", action="store_true",
                        help="with --usage: pair a second recording-off server with the first as well "
                             "(the noise floor)")
    parser.add_argument("--sets", type=int, default=1,
                        help="with --usage or --usage-toggle: start the servers this many times, the pairs "
                             "shared among the sets "
                             "(what a server's own placement adds to its speed then averages out)")
    parser.add_argument("--importer-cpus", metavar="LIST",
                        help="with --usage: move the usage importer to these cores (e.g. 0,1) "
                             "after the warm-up, instead of the server's core 0 (a diagnostic)")
    parser.add_argument("--hitlog", choices=("c", "python", "call"), default="c",
                        help="with --usage-interleave: hits recorded by the C class (the default), the Python "
                             "one (as on a server installed without a C compiler: podium.hitlog), or not at "
                             "all, only a call of a C function doing nothing (a diagnostic)")
    parser.add_argument("--app-cpus", metavar="LIST",
                        help="with --usage-interleave: move the app's process to these cores (e.g. 1) after "
                             "its start, instead of sharing the server's core 0 (a diagnostic)")
    parser.add_argument(
        "--ws-client", choices=["aiohttp", "websockets"], default="aiohttp",
        help="websocket client library for the round trips",
    )
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    WS_CLIENT[0] = args.ws_client
    check_tools()

    if args.podium:
        with podium_content() as served:
            CPU_PIDS.append(served.pid)
            CPU_PIDS.extend(listening_pids(int(served.direct.rpartition(":")[2])))
            print(f"direct {served.direct}, through Podium {served.through}: {seconds:g} s each", flush=True)
            compare(served.direct, served.through, seconds, rounds)
            ws_at_once(served.direct, served.through, seconds, rounds)
        return
    if args.sandbox:
        compare_sandbox(seconds, rounds)
        return
    if args.usage_interleave:
        compare_usage_interleaved(rounds, seconds, args.window, args.app_cpus, args.hitlog)
        return
    if args.usage_toggle:
        compare_usage_toggled(args.pairs, sets=max(1, args.sets))
        return
    if args.usage:
        cpus = {int(core) for core in args.importer_cpus.split(",")} if args.importer_cpus else None
        compare_usage(seconds, rounds, cpus, args.pairs, control=args.control, sets=max(1, args.sets))
        return
    app_port = args.app_port or free_port()
    front_port = free_port()
    with contextlib.ExitStack() as stack:
        if not args.app_port:
            app_proc = stack.enter_context(pinned(0, "serve-app" if args.tunnel else "serve-app-runner", str(app_port)))
            CPU_PIDS.append(app_proc.pid)
        wait_for_port(app_port)
        if args.through:
            through_url = args.through
        else:
            upstream = "tcp" if args.tcp_upstream or args.app_port else "unix"
            handoff = [] if args.tunnel or args.app_port else ["handoff"]
            front_proc = stack.enter_context(
                pinned(0, "serve-front", str(front_port), str(app_port), upstream, *handoff))
            CPU_PIDS.append(front_proc.pid)
            wait_for_port(front_port)
            through_url = f"http://127.0.0.1:{front_port}/content/x"
        direct_url = f"http://127.0.0.1:{app_port}"
        print(f"direct {direct_url}, through {through_url}: {seconds:g} s each", flush=True)
        compare(direct_url, through_url, seconds, rounds)
        ws_at_once(direct_url, through_url, seconds, rounds)
        if args.nginx:
            nginx_port = free_port()
            upstream = (f"127.0.0.1:{app_port}" if args.tcp_upstream or args.app_port
                        else f"unix:{app_socket_path(app_port)}")
            if not args.through:
                CPU_PIDS[1:] = []  # the front is idle now
            CPU_PIDS.append(stack.enter_context(nginx(nginx_port, upstream)).pid)
            wait_for_port(nginx_port)
            nginx_url = f"http://127.0.0.1:{nginx_port}/content/x"
            print(f"\nnginx, for comparison: direct {direct_url}, through {nginx_url}", flush=True)
            compare(direct_url, nginx_url, seconds, rounds)
            ws_at_once(direct_url, nginx_url, seconds, rounds)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-app":
        serve_app(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "serve-front":
        serve_front(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "unix", sys.argv[5:] == ["handoff"])
    elif len(sys.argv) > 1 and sys.argv[1] == "serve-app-runner":
        serve_app_runner(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "serve-toggled":
        serve_toggled(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "ws-client":
        ws_client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        main()
