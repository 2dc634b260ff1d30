"""WebSocket hand-off: the front gives an upgraded viewer connection to the content process.

Each test starts Podium's runner (``podium.apps.runner``, as content runs) serving a small
Starlette app on a TCP port, a unix socket and a hand-off socket, and the proxy front in
the test's event loop with a router that forwards ``/content/x/...`` to it, naming the
hand-off socket. Whether a session was handed over shows in the app: its WebSocket's
``server`` address is then the front's listener (the viewer's own socket), where a
tunnelled one arrives on the app's unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
import websockets
from websockets.asyncio.client import connect as ws_connect

from podium.apps import write_runner
from podium.proxy.decisions import Forward, Respond
from podium.proxy.front import Front

APP = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect

async def ws(websocket):
    await websocket.accept()
    while True:
        try:
            text = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        if text == "who":
            await websocket.send_json({"server": websocket.scope.get("server"),
                                       "identity": websocket.headers.get("x-identity"),
                                       "cookie": websocket.headers.get("cookie")})
        elif text == "bye":
            await websocket.close(code=4001)
            return
        else:
            await websocket.send_text(text.upper())

async def page(request):
    return JSONResponse({"identity": request.headers.get("x-identity")})

app = Starlette(routes=[WebSocketRoute("/ws", ws), Route("/", page)])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Content:
    port: int
    unix: str
    handoff: str


@pytest.fixture
def content(tmp_path: Path) -> Any:
    """The app under Podium's runner, listening on all three sockets."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "app.py").write_text(APP)
    runner = write_runner(tmp_path / "runtime")
    port = free_port()
    served = Content(port, str(tmp_path / "app.sock"), str(tmp_path / "handoff.sock"))
    proc = subprocess.Popen(
        [sys.executable, str(runner), "asgi", "--entrypoint", "app:app", "--port", str(port),
         "--prefix", "/content/x", "--unix-socket", served.unix, "--handoff-socket", served.handoff],
        cwd=bundle,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(served.handoff):
            assert proc.poll() is None and time.monotonic() < deadline, "the runner did not start"
            time.sleep(0.05)
        yield served
    finally:
        proc.terminate()
        proc.wait(10)
    assert not os.path.exists(served.handoff), "the runner removes its hand-off socket"


class Router:
    """``/content/x/...`` to the content, with an identity header set and a viewer's
    own removed, as Podium's router does; counts Forwards and their on_done."""

    def __init__(self, content: Content, handoff: str | None, **forward: Any) -> None:
        self.content = content
        self.handoff = handoff
        self.forward = forward
        self.issued = 0
        self.done = 0

    async def route(self, method: bytes, target: bytes, headers: Any, client: Any) -> Forward | Respond:
        if not target.startswith(b"/content/x/"):
            return Respond(404, [], b"")
        self.issued += 1
        return Forward(
            "127.0.0.1", self.content.port, target[len(b"/content/x"):],
            set_headers=[(b"x-identity", b"viewer")], remove_headers=frozenset({b"cookie"}),
            on_done=self._done, unix_path=self.content.unix, handoff_path=self.handoff, **self.forward,
        )

    def _done(self) -> None:
        self.done += 1

    async def wait_done(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while self.done < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a second call would show up now
        assert self.done == count


@contextlib.asynccontextmanager
async def front(router: Router) -> AsyncIterator[Front]:
    server = Front(router, "/nonexistent/podium-test.sock")
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close(grace_seconds=1.0)
        assert router.done == router.issued, "every Forward gets exactly one on_done"


def run(main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 60))  # type: ignore[arg-type]


async def who(ws: Any) -> dict[str, Any]:
    import json

    await ws.send("who")
    return dict(json.loads(await ws.recv()))


def test_websocket_is_handed_over_with_the_rewritten_head(content: Content) -> None:
    async def main() -> None:
        router = Router(content, content.handoff)
        async with front(router) as server:
            url = f"ws://127.0.0.1:{server.port}/content/x/ws"
            async with ws_connect(url, additional_headers={"Cookie": "podium_session=secret"}) as ws:
                seen = await who(ws)
                # The viewer's own socket: its server address is the front's listener.
                assert seen["server"] == ["127.0.0.1", server.port]
                assert seen["identity"] == "viewer" and seen["cookie"] is None
                await ws.send("hello")
                assert await ws.recv() == "HELLO"
                assert not server.clients and len(server.handed) == 1
                assert router.done == 0  # the session is live: its lease is held
                await ws.send("bye")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            await router.wait_done(1)  # the session's end reaches the front
            assert not server.handed
            # The viewer closing ends it too.
            async with ws_connect(url) as ws:
                assert await who(ws)
                await ws.close(code=4002)
            await router.wait_done(2)

    run(main)


def test_websocket_is_tunnelled_when_the_content_takes_no_hand_off(content: Content, tmp_path: Path) -> None:
    async def main() -> None:
        router = Router(content, str(tmp_path / "missing.sock"))
        async with front(router) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/content/x/ws") as ws:
                seen = await who(ws)
                assert seen["server"] != ["127.0.0.1", server.port]  # through the unix socket
                assert seen["identity"] == "viewer"
                assert len(server.clients) == 1 and not server.handed
            await router.wait_done(1)

    run(main)


def test_a_refused_upgrade_ends_the_handed_over_connection(content: Content) -> None:
    """A viewer whose upgrade is refused cannot go on to send requests of its own (a forged
    identity header) on the connection the content process now holds."""

    async def main() -> None:
        router = Router(content, content.handoff)
        async with front(router) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /content/x/nows HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert not head.startswith(b"HTTP/1.1 101")
            writer.write(b"GET /content/x/ HTTP/1.1\r\nHost: t\r\nX-Identity: admin\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                rest = await reader.read()
                while chunk := await reader.read():
                    rest += chunk
                assert b"admin" not in rest and b"HTTP/1.1 200" not in rest
            writer.close()
            await router.wait_done(1)

    run(main)


def test_a_handed_over_session_keeps_the_read_timeout(content: Content) -> None:
    async def main() -> None:
        router = Router(content, content.handoff, read_timeout_seconds=0.5)
        async with front(router) as server:
            async with ws_connect(f"ws://127.0.0.1:{server.port}/content/x/ws", ping_interval=None) as ws:
                assert (await who(ws))["server"] == ["127.0.0.1", server.port]
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 20)  # the content process closes it
            await router.wait_done(1)

    run(main)


def test_a_handed_over_connection_that_stays_http_serves_the_upgrade_request_only(tmp_path: Path) -> None:
    """A server with no WebSocket support answers the upgrade request as plain HTTP and
    would read the next request from the viewer's socket itself: the runner closes the
    connection instead, so nothing reaches the content without the proxy's decision."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from podium.apps import runner

    async def page(request: Request) -> JSONResponse:
        return JSONResponse({"identity": request.headers.get("x-identity")})

    async def main() -> None:
        app_socket = str(tmp_path / "app.sock")
        config = uvicorn.Config(Starlette(routes=[Route("/", page)]), uds=app_socket, ws="none",
                                lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        handoff = runner.Handoff(str(tmp_path / "handoff.sock"), runner.uvicorn_protocol_factory(server))
        handoff.start()
        router = Router(Content(0, app_socket, handoff.path), handoff.path)
        try:
            async with front(router) as proxy:
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(
                    b"GET /content/x/ HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")  # answered as HTTP, by the content
                assert not proxy.clients and len(proxy.handed) == 1  # on the handed-over socket
                writer.write(b"GET /content/x/ HTTP/1.1\r\nHost: t\r\nX-Identity: admin\r\n\r\n")
                rest = b""
                with contextlib.suppress(ConnectionError):
                    while chunk := await reader.read(65536):
                        rest += chunk
                assert b"admin" not in rest and rest.count(b"HTTP/1.1") == 0, rest
                writer.close()
                await router.wait_done(1)
        finally:
            handoff.close()
            server.should_exit = True
            await serving

    run(main)
