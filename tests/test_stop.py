"""A node's stop (podium.app's lifespan): each step runs whatever became of the ones
before it, so a step that fails cannot leave content processes running without their
server; the failure is logged and ``podium serve`` exits 1. A start that fails stops
what had started the same way, and still fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from tests.conftest import PODIUM, RunningServer, free_port, start_server
from tests.helpers import alive, deploy, fastapi_bundle

from podium.app import Node, build, create_app
from podium.settings import load_settings


def _node(tmp_path: Path) -> Node:
    return build(load_settings(
        None, data_dir=tmp_path / "data", runtime_dir=tmp_path / "run", listen=f"127.0.0.1:{free_port()}",
        sandbox="off", python_installations=[sys.executable]))


def _start_and_stop(app: FastAPI) -> None:
    """The app's lifespan, its start-up and its stop, as uvicorn runs it."""

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(lifespan())


def _spy(node: Node) -> list[str]:
    """The stop steps of ``node`` that ran, in order (feed, scheduler and backend; the
    heartbeat's by the test itself)."""
    ran: list[str] = []

    def spied(name: str, stop: Any) -> Any:
        async def step(*args: Any, **kwargs: Any) -> None:
            ran.append(name)
            await stop(*args, **kwargs)
        return step

    node.feed.close = spied("feed", node.feed.close)  # type: ignore[method-assign]
    node.scheduler.close = spied("scheduler", node.scheduler.close)  # type: ignore[method-assign]
    node.backend.close = spied("backend", node.backend.close)  # type: ignore[method-assign]
    return ran


def test_a_stop_step_that_fails_is_logged_and_every_later_step_still_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    app = create_app(node)
    ran = _spy(node)

    async def broken() -> None:
        ran.append("heartbeat")
        raise RuntimeError("a bug in the heartbeat's stop")

    node.heartbeat.close = broken  # type: ignore[method-assign]

    with caplog.at_level(logging.INFO, logger="podium.app"):
        _start_and_stop(app)
    assert ran == ["heartbeat", "feed", "scheduler", "backend"]
    assert app.state.stop_failed == ["the heartbeat"]
    messages = [record.getMessage() for record in caplog.records]
    assert "stopping: the heartbeat failed; the stop goes on" in messages
    assert ("the stop was not clean: the heartbeat failed (logged above); the rest of it went on"
            in messages)


def test_a_clean_stop_fails_no_step(tmp_path: Path) -> None:
    app = create_app(_node(tmp_path))
    _start_and_stop(app)
    assert app.state.stop_failed == []


def test_a_start_that_fails_stops_what_had_started_and_still_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    app = create_app(node)
    ran = _spy(node)
    heartbeats: list[bool] = []
    close = node.heartbeat.close

    async def closed() -> None:  # the heartbeat's task had started: it is stopped
        heartbeats.append(node.heartbeat._task is not None and not node.heartbeat._task.done())
        await close()
        heartbeats.append(node.heartbeat._task.done())

    def broken() -> None:
        raise RuntimeError("a bug in the throttle's start")

    node.heartbeat.close = closed  # type: ignore[method-assign]
    node.throttle.start = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, logger="podium.app"), \
            pytest.raises(RuntimeError, match="a bug in the throttle's start"):
        _start_and_stop(app)
    assert heartbeats == [True, True]
    assert ran == ["feed", "scheduler", "backend"]
    assert app.state.stop_failed == []
    messages = [record.getMessage() for record in caplog.records]
    assert ("the start failed (RuntimeError: a bug in the throttle's start); stopping what had started"
            in messages)
    assert not any(message.startswith("Podium ") and " started;" in message for message in messages)


# `podium serve` whose throttle fails to start (the last steps of the start-up, after the
# content processes are adopted).
_FAILING_START = """
import sys
from podium import cli
from podium.throttle import Throttle

def broken(self):
    raise RuntimeError("a bug in the throttle's start")

Throttle.start = broken
sys.argv = ["podium", *sys.argv[1:]]
cli.main()
"""

_APP = "import os\nfrom fastapi import FastAPI\napp = FastAPI()\n@app.get('/')\ndef root():\n    return {'pid': os.getpid()}\n"


@contextlib.contextmanager
def _killed_serving_an_app(tmp_path: Path) -> Iterator[tuple[RunningServer, list[str]]]:
    """A server that served an app, killed: the app's process outlives it, for the next
    start of the same node (the same ports) to adopt. Yields the server and a list for
    the output of that start. Afterwards the app's process must be gone within 10 s; one
    still running is killed and the test fails, with the podium lines of that output."""
    server = start_server(tmp_path / "data", {"PODIUM_SANDBOX": "off"})  # the app's own pid, not its sandbox's
    pid = 0
    output: list[str] = []
    try:
        item = server.api().post(f"{server.url}/__api__/v1/content", json={"name": "adopted"}).json()
        deploy(server, server.admin_key, item["guid"], fastapi_bundle(_APP))
        pid = requests.get(f"{server.content_url}/content/{item['guid']}/",
                           headers={"Authorization": f"Key {server.admin_key}"}).json()["pid"]
        server.process.kill()
        server.process.wait(10)
        assert alive(pid)
        yield server, output
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        server.stop()
        if pid and alive(pid):  # left running by the failed start: this test's to end
            os.kill(pid, signal.SIGKILL)
            logged = [line for line in "".join(output).splitlines() if " podium." in line]
            raise AssertionError(f"the app's process {pid} outlived the failed start; it logged:\n" + "\n".join(logged))


def _start_again(server: RunningServer, command: list[str], output: list[str]) -> subprocess.CompletedProcess[str]:
    """``command`` (a podium serve) as the same node as ``server``, which adopts its processes."""
    done = subprocess.run([*command, "serve", "--data-dir", str(server.data_dir),
                           "--listen", f"127.0.0.1:{server.ports[0]}"],
                          env=server.env, capture_output=True, text=True, timeout=120)
    output.append(done.stderr)
    return done


def test_a_start_that_fails_stops_the_content_processes_it_adopted_and_exits_3(tmp_path: Path) -> None:
    # The next start adopts the app, then fails: the app's process is stopped with it,
    # not left running without a server.
    with _killed_serving_an_app(tmp_path) as (server, output):
        failed = _start_again(server, [sys.executable, "-c", _FAILING_START], output)
        assert failed.returncode == 3, failed.stderr[-3000:]
        assert "the start failed (RuntimeError: a bug in the throttle's start); stopping what had started" \
            in failed.stderr
        assert "error: the server could not start (see the log above); exit status 3" in failed.stderr
        assert "never retrieved" not in failed.stderr


def test_a_start_whose_address_is_taken_says_so_and_stops_the_processes_it_adopted(tmp_path: Path) -> None:
    # The next start adopts the app and finds its content port taken by another program:
    # the start is undone by its stop (the app's process stopped) and the error names the
    # address and the setting.
    with _killed_serving_an_app(tmp_path) as (server, output), socket.socket() as taken:
        taken.bind(("127.0.0.1", server.ports[1]))
        taken.listen()
        failed = _start_again(server, PODIUM, output)
        assert failed.returncode == 3, failed.stderr[-3000:]
        assert (f"error: cannot listen on 127.0.0.1:{server.ports[1]}: Address already in use. Another server "
                "may be using it; choose the address with the setting content_listen") in failed.stderr
        assert "Traceback" not in failed.stderr, failed.stderr[-3000:]


async def _listen_error(host: str, port: int) -> OSError:
    """The error the event loop raises when a server cannot listen on ``host:port``."""
    try:
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, host, port)
    except OSError as exc:
        return exc
    server.close()
    raise AssertionError(f"listening on {host}:{port} worked")


def test_an_address_the_front_cannot_listen_on_is_explained_by_its_reason() -> None:
    """Each reason the front's bind fails (real errors of the event loop) gets its own
    advice and the setting that chooses the address, not a guess that it is in use."""
    from podium.serve import _cannot_listen

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = asyncio.run(_listen_error("127.0.0.1", port))
    assert _cannot_listen(in_use, "listen", "127.0.0.1", port) == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use. Another server may be using it; "
        "choose the address with the setting listen (podium serve --listen)")
    # TEST-NET-1 (RFC 5737) is never an address of this machine.
    foreign = _cannot_listen(asyncio.run(_listen_error("192.0.2.1", port)), "content_listen", "192.0.2.1", port)
    assert foreign == (
        f"cannot listen on 192.0.2.1:{port}: Cannot assign requested address. This machine has no such "
        "address: give one of its own, 127.0.0.1 for this machine only or 0.0.0.0 for all of its addresses; "
        "choose the address with the setting content_listen")
    unknown = _cannot_listen(asyncio.run(_listen_error("nohost.invalid", port)), "listen", "nohost.invalid", port)
    assert unknown.startswith(f"cannot listen on nohost.invalid:{port}: ")
    assert ("The host name nohost.invalid is not known here: give an IP address or a name this machine "
            "resolves; choose the address with the setting listen (podium serve --listen)") in unknown
    assert "Unknown error" not in unknown and "Errno" not in unknown
    # Binding a port below 1024 needs a privilege that tests run as root have.
    denied = OSError(13, os.strerror(13))
    assert _cannot_listen(denied, "listen", "0.0.0.0", 80) == (
        "cannot listen on 0.0.0.0:80: Permission denied. Ports below 1024 need privileges this user lacks: "
        "choose a port from 1024 up; choose the address with the setting listen (podium serve --listen)")
