"""Static content through a real Podium against nginx serving the same file from disk.

    python bench/static.py              # 10 s per measurement, 3 rounds
    python bench/static.py --quick      # 3 s per measurement, 2 rounds

A real ``podium serve`` (pinned to core 0) gets a static bundle deployed as public
content; nginx (Debian's, one worker, pinned to core 0, ``sendfile on``, access log off)
serves the very files Podium unpacked, from the bundle's directory in the data dir.
``wrk -t1`` (pinned to core 1) reads the primary page (4 KiB of HTML) with 64
connections and with 1, and a 1 MiB file with 8; the rounds alternate between the two
servers so that a busy neighbour hurts both alike. Printed: requests/s (or MiB/s) of
each, the ratio Podium / nginx, errors (socket errors and non-2xx answers) and the
server CPU per request (user + system microseconds of each server process: a
figure a busy neighbour disturbs less than requests/s) and the load average before and
after. The issue's goal: 64 connections at >= 0.3x nginx,
no errors.

Needs ``wrk``, ``taskset`` (util-linux) and nginx (Debian: ``apt-get install -y
nginx-light``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))

from podium_server import bundle, podium_server, static_manifest  # noqa: E402
from proxy import free_port, wait_for_port  # noqa: E402

PAGE = ("<!doctype html><html><head><title>Report</title></head><body>"
        + "<p>Quarterly numbers, rendered once and read all morning.</p>" * 64 + "</body></html>")
BIG = os.urandom(1024 * 1024)

NGINX_CONF = """
worker_processes 1;
daemon off;
user root;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    include /etc/nginx/mime.types;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {root}/; }}
    }}
}}
"""

_UNITS = {"B": 1 / 2**20, "KB": 1 / 2**10, "MB": 1.0, "GB": 2**10}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and its children that still run."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        pids += [int(child) for child in f.read().split()]
    for one in pids:
        with contextlib.suppress(OSError), open(f"/proc/{one}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measure(url: str, connections: int, seconds: float, pid: int) -> tuple[float, float, int, float]:
    """:func:`wrk`'s figures plus the server's CPU microseconds per request (``pid``'s)."""
    before = cpu_seconds(pid)
    rps, mibps, errors, requests = wrk(url, connections, seconds)
    used = cpu_seconds(pid) - before
    return rps, mibps, errors, used * 1e6 / max(requests, 1)


def wrk(url: str, connections: int, seconds: float) -> tuple[float, float, int, int]:
    """Requests/s, MiB/s, errors (socket errors + non-2xx/3xx) and requests of one wrk
    run on core 1."""
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if rps is None or transfer is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(bad.group(1)) if bad else 0
    count = re.search(r"(\d+) requests in", out)
    return (float(rps.group(1)), float(transfer.group(1)) * _UNITS[transfer.group(2)], errors,
            int(count.group(1)) if count else 0)


@contextlib.contextmanager
def podium_static() -> Iterator[tuple[str, str, int]]:
    """A real Podium on core 0 serving the bundle as public static content: yields the
    content URL on the content origin, the bundle's directory on disk and the server's pid."""
    import requests

    with podium_server(core=0, prefix="podium-bench-static-") as server:
        guid = server.create({"name": "static-bench", "access_type": "all"})
        bundle_id = server.deploy(guid, bundle({"index.html": PAGE, "big.bin": BIG}, static_manifest()))
        url = server.content_url(guid)
        if requests.get(url).text != PAGE:
            raise RuntimeError("the static page does not come back through Podium")
        content_id = server.api.get(f"{server.base}/v1/content/{guid}").json()["id"]
        yield url, os.path.join(server.data_dir, "apps", str(content_id), str(bundle_id)), server.pid
        found = server.log_errors()
        if found:
            print(f"server log has {len(found)} error lines, e.g. {found[0]}")


@contextlib.contextmanager
def nginx(root: str) -> Iterator[tuple[str, int]]:
    """nginx (one worker, core 0) serving ``root`` under /static/; yields its base URL
    and its master's pid."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        sys.exit("nginx is missing: install it with `apt-get install -y nginx-light`")
    work = tempfile.mkdtemp(prefix="podium-bench-nginx-")
    port = free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as out:
        out.write(NGINX_CONF.format(work=work, port=port, root=root))
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "-p", work, "-c", conf])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/static/", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement, 2 rounds")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    seconds, rounds = (3.0, 2) if args.quick else (args.seconds, args.rounds)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"missing {tool}: install with `apt-get install -y wrk` (taskset is in util-linux)")
    print(f"load average before: {loadavg()}", flush=True)
    with podium_static() as (podium_url, root, podium_pid), nginx(root) as (nginx_url, nginx_pid):
        cases = [
            ("4 KiB page, req/s (wrk -c64)", "index.html", 64, 0),
            ("4 KiB page, req/s (wrk -c1)", "index.html", 1, 0),
            ("1 MiB file, MiB/s (wrk -c8)", "big.bin", 8, 1),
        ]
        for _, path, connections, _ in cases:  # warm up: connections, caches
            wrk(podium_url + path, connections, 1)
            wrk(nginx_url + path, connections, 1)
        print(f"{'':32} {'podium':>10} {'nginx':>10} {'ratio':>7} {'errors':>8} {'CPU us/req':>16}")
        for index in range(rounds):
            for name, path, connections, column in cases:
                ours = measure(podium_url + path, connections, seconds, podium_pid)
                theirs = measure(nginx_url + path, connections, seconds, nginx_pid)
                a, b = ours[column], theirs[column]
                errors = f"{ours[2]}/{theirs[2]}"
                cpu = f"{ours[3]:.0f} / {theirs[3]:.0f}"
                print(f"{name:32} {a:10.0f} {b:10.0f} {a / b:6.2f}x {errors:>8} {cpu:>16}"
                      f"   (round {index + 1})", flush=True)
    print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
