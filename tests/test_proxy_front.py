"""The proxy front against real upstreams on loopback.

Each test starts, in one event loop: an aiohttp app on a loopback port (the
content process), uvicorn serving a small Starlette app on a unix socket (the
internal app), and the front with a router that maps ``/content/<name>/...``
to cases below. Every test closes what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvicorn
import uvloop
import websockets
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect as ws_connect

from podium.proxy import http
from podium.proxy.decisions import PASS_TO_APP, Decision, Forward, Respond
from podium.proxy.front import Front

CHUNK = bytes(range(256)) * 256  # 64 KiB
BIG = 160  # chunks: 10 MiB


# -- the content process (aiohttp) --


@dataclass
class Upstream:
    port: int = 0
    peers: set[int] = field(default_factory=set)  # client ports of upstream connections
    got_first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    release_rest: asyncio.Event = field(default_factory=asyncio.Event)
    endless_sent: int = 0
    endless_ended: asyncio.Event = field(default_factory=asyncio.Event)
    ws_close_codes: list[int | None] = field(default_factory=list)


def upstream_app(state: Upstream) -> web.Application:
    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            state.peers.add(peer[1])
        return await handler(request)  # type: ignore[no-any-return]

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"ok")

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(BIG):
            await resp.write(CHUNK)
        await resp.write_eof()
        return resp

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(CHUNK)
                state.endless_sent += len(CHUNK)
        except (ConnectionError, asyncio.CancelledError):
            state.endless_ended.set()
            raise
        return resp

    async def echo(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        length = 0
        async for data in request.content.iter_any():
            if not state.got_first_chunk.is_set():
                state.got_first_chunk.set()
            digest.update(data)
            length += len(data)
        return web.json_response(
            {
                "length": length,
                "sha256": digest.hexdigest(),
                "transfer_encoding": request.headers.get("Transfer-Encoding"),
            }
        )

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "path": request.path_qs,
                "method": request.method,
                "headers": [
                    [k.decode("latin-1").lower(), v.decode("latin-1")]
                    for k, v in request.raw_headers
                ],
            }
        )

    async def no_content(request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "close-4001":
                await sock.close(code=4001, message=b"bye")
                break
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        state.ws_close_codes.append(sock.close_code)
        return sock

    app = web.Application(middlewares=[count])
    app.router.add_get("/small", small)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_post("/echo", echo)
    app.router.add_route("*", "/headers", headers)
    app.router.add_get("/204", no_content)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    return app


# -- the internal app (Starlette under uvicorn on a unix socket) --


async def app_whoami(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "client": request.client.host if request.client else None,
            "scheme": request.url.scheme,
            "path": request.url.path,
        }
    )


async def app_upload(request: Request) -> JSONResponse:
    length = 0
    async for data in request.stream():
        length += len(data)
    return JSONResponse(
        {
            "length": length,
            "content_type": request.headers.get("content-type"),
            "transfer_encoding": request.headers.get("transfer-encoding"),
        }
    )


async def app_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text("app:" + text)
    await websocket.close(code=4003)


internal_app = Starlette(
    routes=[
        Route("/app/whoami", app_whoami),
        Route("/content/pass/whoami", app_whoami),
        Route("/app/upload", app_upload, methods=["POST"]),
        WebSocketRoute("/app/ws", app_ws),
    ]
)


# -- the router --


class Router:
    """``/content/<case>/rest``: forwards ``/rest`` to the aiohttp upstream, or answers."""

    def __init__(self, upstream_port: int, dead_port: int) -> None:
        self.upstream_port = upstream_port
        self.dead_port = dead_port
        self.issued = 0
        self.done = 0
        self.extra: dict[str, Any] = {}

    def _forward(self, port: int, rest: bytes, **kwargs: Any) -> Forward:
        self.issued += 1
        return Forward("127.0.0.1", port, rest or b"/", on_done=self._on_done, **kwargs)

    def _on_done(self) -> None:
        self.done += 1

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Decision:
        case, _, rest = target[len(b"/content/") :].partition(b"/")
        rest = b"/" + rest
        if case == b"a":
            return self._forward(self.upstream_port, rest)
        if case == b"slowroute":
            await asyncio.sleep(0.01)
            return self._forward(self.upstream_port, rest)
        if case == b"yieldroute":
            await asyncio.sleep(0)  # a bare yield rather than a future
            return self._forward(self.upstream_port, rest)
        if case == b"slowboom":
            await asyncio.sleep(0.01)
            raise RuntimeError("router bug after a wait")
        if case == b"rewrite":
            return self._forward(
                self.upstream_port,
                rest,
                set_headers=[(b"rstudio-connect-credentials", b"{\"user\": \"ann\"}")],
                remove_headers=frozenset({b"authorization", b"cookie"}),
            )
        if case == b"down":
            return self._forward(self.dead_port, rest)
        if case == b"timeout":
            return self._forward(self.upstream_port, rest, read_timeout_seconds=0.3)
        if case == b"idle":
            return self._forward(self.upstream_port, rest, connection_timeout_seconds=0.3)
        if case == b"raw":
            return self._forward(self.extra["raw_port"], rest)
        if case == b"full":
            return Respond(503, [(b"content-type", b"text/plain")], b"all processes are busy")
        if case == b"pass":
            return PASS_TO_APP
        if case == b"boom":
            raise RuntimeError("router bug")
        return Respond(404, [], b"no such content")


# -- the stack --


@dataclass
class Stack:
    front: Front
    router: Router
    upstream: Upstream
    url: str

    @property
    def port(self) -> int:
        return self.front.port

    async def wait_done(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` exchanges reported on_done; fail if more or never."""
        deadline = time.monotonic() + timeout
        while self.router.done < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # a second call would show up now
        assert self.router.done == count


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, **front_options: Any) -> AsyncIterator[Stack]:
    state = Upstream()
    runner = web.AppRunner(
        upstream_app(state), handle_signals=False, access_log=None, handler_cancellation=True
    )
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    site = web.SockSite(runner, sock)
    await site.start()

    app_socket = str(tmp_path / "app.sock")
    config = uvicorn.Config(
        internal_app,
        uds=app_socket,
        proxy_headers=True,
        forwarded_allow_ips="*",
        lifespan="off",
        log_level="warning",
        ws="websockets-sansio",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)

    router = Router(state.port, free_port())
    front = Front(router, app_socket, **front_options)
    await front.start("127.0.0.1", 0)
    try:
        yield Stack(front, router, state, f"http://127.0.0.1:{front.port}")
    finally:
        await front.close(grace_seconds=1.0)
        server.should_exit = True
        await serving
        await runner.cleanup()
        assert router.done == router.issued, "every Forward gets exactly one on_done"


def run(main: Callable[[], Awaitable[None]], loop: str = "uvloop") -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), 60))  # type: ignore[arg-type]


# -- raw HTTP helpers --


async def read_response(
    reader: asyncio.StreamReader, head_request: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_request or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body[:-2]
            body = body[:-2]
    return status, headers, await reader.read()


@contextlib.asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: example.test\r\n{extra}\r\n".encode()


# -- tests --


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_front_small_get(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/content/a/small") as resp:
                assert resp.status == 200
                assert await resp.read() == b"ok"
            await s.wait_done(1)

    run(main, loop)


def test_front_keepalive_reuses_upstream_connections(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                for _ in range(20):
                    writer.write(get("/content/a/small"))
                    status, _, body = await read_response(reader)
                    assert (status, body) == (200, b"ok")
            # a second client connection reuses the pooled upstream connection too
            async with raw(s.port) as (reader, writer):
                writer.write(get("/content/a/small"))
                assert (await read_response(reader))[0] == 200
            assert len(s.upstream.peers) == 1
            await s.wait_done(21)

    run(main)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_front_streams_chunked_post(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            sent = hashlib.sha256()

            async def body() -> AsyncIterator[bytes]:
                sent.update(CHUNK)
                yield CHUNK
                # The upstream must see the first chunk before the client sends the rest.
                await asyncio.wait_for(s.upstream.got_first_chunk.wait(), 5)
                for _ in range(30):
                    sent.update(CHUNK)
                    yield CHUNK

            async with client.post(s.url + "/content/a/echo", data=body()) as resp:
                assert resp.status == 200
                got = await resp.json()
            assert got["length"] == 31 * len(CHUNK)
            assert got["sha256"] == sent.hexdigest()
            assert got["transfer_encoding"] == "chunked"
            await s.wait_done(1)

    run(main, loop)


def test_front_streams_content_length_post(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            data = CHUNK * 40
            async with client.post(s.url + "/content/a/echo", data=io.BytesIO(data)) as resp:
                got = await resp.json()
            assert got["length"] == len(data)
            assert got["sha256"] == hashlib.sha256(data).hexdigest()
            assert got["transfer_encoding"] is None
            await s.wait_done(1)

    run(main)


def test_front_accepts_a_body_that_ends_in_one_large_read(tmp_path: Path) -> None:
    async def main() -> None:
        # A read that completes a body is not a head, however large.
        async with stack(tmp_path, max_head_bytes=8192) as s:
            async with raw(s.port) as (reader, writer):
                body = CHUNK * 3  # 192 KiB, arriving after the head in one write
                writer.write(
                    b"POST /content/a/echo HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)
                )
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(body)
                status, _, answer = await read_response(reader)
                assert status == 200
                assert json.loads(answer)["length"] == len(body)
                writer.write(get("/content/a/small"))
                status, _, body = await read_response(reader)
                assert (status, body) == (200, b"ok")
            await s.wait_done(2)

    run(main)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_front_streams_big_response(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/content/a/big") as resp:
                digest = hashlib.sha256()
                length = 0
                async for data in resp.content.iter_any():
                    digest.update(data)
                    length += len(data)
            assert length == BIG * len(CHUNK)
            assert digest.hexdigest() == hashlib.sha256(CHUNK * BIG).hexdigest()
            await s.wait_done(1)

    run(main, loop)


def test_front_applies_backpressure_to_endless_response(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(get("/content/a/endless"))
                await reader.readexactly(1024)
                await asyncio.sleep(1.0)  # the client stops reading
                sent = s.upstream.endless_sent
                await asyncio.sleep(0.5)
                # The upstream was stopped (only kernel buffers + high-water marks in between).
                assert s.upstream.endless_sent == sent
                assert sent < 64 * 1024 * 1024
            # The client went away mid-response: the upstream connection is dropped.
            await asyncio.wait_for(s.upstream.endless_ended.wait(), 5)
            await s.wait_done(1)

    run(main)


def test_front_head_and_204_keep_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(b"HEAD /content/a/small HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, _ = await read_response(reader, head_request=True)
                assert status == 200 and headers["content-length"] == "2"
                writer.write(get("/content/a/204"))
                assert (await read_response(reader))[0] == 204
                writer.write(b"HEAD /app/whoami HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_response(reader, head_request=True))[0] == 200
                # aiohttp sends a body after the head of a HEAD answer from a
                # StreamResponse: the front cuts it and drops that connection.
                writer.write(b"HEAD /content/a/big HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await read_response(reader, head_request=True))[0] == 200
                writer.write(get("/content/a/small"))
                status, _, body = await read_response(reader)
                assert (status, body) == (200, b"ok")
            await s.wait_done(4)
            assert len(s.upstream.peers) == 2

    run(main)


def test_front_rewrites_request_headers(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(
                    get(
                        "/content/rewrite/headers?x=1",
                        "Authorization: Key secret\r\n"
                        "Cookie: session=abc\r\n"
                        "RStudio-Connect-Credentials: forged\r\n"
                        "X-Forwarded-For: 10.9.9.9\r\n"
                        "X-Forwarded-Proto: https\r\n"
                        "Keep-Alive: timeout=5\r\n"
                        "TE: trailers\r\n"
                        "Connection: keep-alive, TE\r\n"
                        "X-Custom: kept\r\n",
                    )
                )
                status, _, body = await read_response(reader)
            assert status == 200
            seen = json.loads(body)
            headers = dict(seen["headers"])
            names = [name for name, _ in seen["headers"]]
            assert seen["path"] == "/headers?x=1"
            assert "authorization" not in headers and "cookie" not in headers
            assert names.count("rstudio-connect-credentials") == 1
            assert headers["rstudio-connect-credentials"] == '{"user": "ann"}'
            assert headers["host"] == "example.test"
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"
            assert headers["x-forwarded-host"] == "example.test"
            assert headers["x-custom"] == "kept"
            for hop in ("keep-alive", "te", "connection", "upgrade", "transfer-encoding"):
                assert hop not in headers
            await s.wait_done(1)

    run(main)


def test_front_trusted_forwarded_headers_are_appended(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path, trust_forwarded_headers=True) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(
                    get(
                        "/content/a/headers",
                        "X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Proto: https\r\n"
                        "X-Forwarded-Host: podium.example\r\n",
                    )
                )
                _, _, body = await read_response(reader)
            headers = dict(json.loads(body)["headers"])
            assert headers["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
            assert headers["x-forwarded-proto"] == "https"
            assert headers["x-forwarded-host"] == "podium.example"
            await s.wait_done(1)

    run(main)


def test_front_routes_prefix_and_passes_the_rest_to_the_app(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/app/whoami") as resp:
                assert resp.status == 200
                who = await resp.json()
            # uvicorn (proxy_headers) sees the viewer, not the unix socket
            assert who == {"client": "127.0.0.1", "scheme": "http", "path": "/app/whoami"}
            async with client.get(s.url + "/content/pass/whoami") as resp:
                assert (await resp.json())["path"] == "/content/pass/whoami"
            async with client.get(s.url + "/content/a/small") as resp:
                assert await resp.read() == b"ok"
            assert len(s.upstream.peers) == 1  # only the /content/a request went there
            await s.wait_done(1)

    run(main)


def test_front_passes_chunked_upload_without_content_type_to_the_app(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(
                    b"POST /app/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for _ in range(50):
                    writer.write(b"%x\r\n%b\r\n" % (len(CHUNK), CHUNK))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                status, _, body = await read_response(reader)
            assert status == 200
            assert json.loads(body) == {
                "length": 50 * len(CHUNK),
                "content_type": None,
                "transfer_encoding": "chunked",
            }

    run(main)


def test_front_passes_websockets_to_the_app(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with ws_connect(f"ws://127.0.0.1:{s.port}/app/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "app:hi"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003

    run(main)


def test_front_answers_502_when_upstream_down(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/content/down/") as resp:
                assert resp.status == 502
                assert "text/html" in resp.headers["content-type"]
                assert "The content is not responding" in await resp.text()
            async with client.get(
                s.url + "/content/down/", headers={"Accept": "application/json"}
            ) as resp:
                assert resp.status == 502
                body = await resp.json()
            assert set(body) == {"code", "error", "payload"} and body["payload"] is None
            # the client connection stays usable
            async with client.get(s.url + "/content/a/small") as resp:
                assert resp.status == 200
            await s.wait_done(3)

    run(main)


def test_front_answers_504_on_read_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            started = time.monotonic()
            async with client.get(s.url + "/content/timeout/slow") as resp:
                assert resp.status == 504
            assert time.monotonic() - started < 3
            await s.wait_done(1)

    run(main)


def test_front_connection_timeout_closes_an_idle_websocket(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with ws_connect(f"ws://127.0.0.1:{s.port}/content/idle/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "echo:hi"
                started = time.monotonic()
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
                assert time.monotonic() - started < 3
            await s.wait_done(1)

    run(main)


def test_front_on_done_once_when_client_disconnects_mid_response(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(get("/content/a/big"))
                await reader.readexactly(100_000)
            await s.wait_done(1)

    run(main)


async def _raw_upstream(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.Server:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(guarded, "127.0.0.1", 0)


def test_front_on_done_once_when_upstream_fails_mid_response(tmp_path: Path) -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b")
        await writer.drain()

    async def main() -> None:
        server = await _raw_upstream(cut_short)
        try:
            async with stack(tmp_path) as s:
                s.router.extra["raw_port"] = server.sockets[0].getsockname()[1]
                async with raw(s.port) as (reader, writer):
                    writer.write(get("/content/raw/"))
                    with pytest.raises(asyncio.IncompleteReadError):
                        await read_response(reader)
                await s.wait_done(1)
        finally:
            server.close()

    run(main)


def test_front_applies_backpressure_to_an_upload_the_upstream_does_not_read(
    tmp_path: Path,
) -> None:
    measured = asyncio.Event()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await measured.wait()  # reads none of the body meanwhile

    async def main() -> None:
        server = await _raw_upstream(stalls)
        try:
            async with stack(tmp_path) as s:
                s.router.extra["raw_port"] = server.sockets[0].getsockname()[1]
                async with raw(s.port) as (_, writer):
                    writer.write(
                        b"POST /content/raw/ HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1000000000\r\n\r\n"
                    )
                    sent = 0
                    with contextlib.suppress(TimeoutError):
                        while sent < 512 * 1024 * 1024:
                            writer.write(CHUNK * 16)
                            await asyncio.wait_for(writer.drain(), 1.0)
                            sent += len(CHUNK) * 16
                    # Only socket buffers and high-water marks lie between the two ends.
                    assert sent < 64 * 1024 * 1024
                    measured.set()
                    writer.transport.abort()
                await s.wait_done(1)
        finally:
            server.close()

    run(main)


def test_front_forwards_close_delimited_response(tmp_path: Path) -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async def main() -> None:
        server = await _raw_upstream(close_delimited)
        try:
            async with stack(tmp_path) as s:
                s.router.extra["raw_port"] = server.sockets[0].getsockname()[1]
                async with raw(s.port) as (reader, writer):
                    writer.write(get("/content/raw/"))
                    status, _, body = await read_response(reader)
                    assert (status, body) == (200, b"until the end")
                    assert await reader.read() == b""  # and the connection is closed
                await s.wait_done(1)
        finally:
            server.close()

    run(main)


def test_front_retries_a_stale_pooled_connection_for_idempotent_methods(tmp_path: Path) -> None:
    connections = 0

    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Answers one request, then closes without answering the next one: a keep-alive
        # connection the upstream closed just as the proxy reused it.
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")

    async def main() -> None:
        server = await _raw_upstream(one_per_connection)
        try:
            async with stack(tmp_path) as s:
                s.router.extra["raw_port"] = server.sockets[0].getsockname()[1]
                async with raw(s.port) as (reader, writer):
                    writer.write(get("/content/raw/"))
                    assert (await read_response(reader))[0] == 200
                    writer.write(get("/content/raw/"))  # stale connection: retried
                    assert (await read_response(reader))[0] == 200
                    assert connections == 2
                    writer.write(
                        b"POST /content/raw/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                    )
                    assert (await read_response(reader))[0] == 502  # not retried
                    assert connections == 2
                await s.wait_done(3)
        finally:
            server.close()

    run(main)


def test_front_does_not_reuse_an_upstream_connection_after_connection_close(
    tmp_path: Path,
) -> None:
    connections = 0

    async def close_after_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.2)  # the proxy must not send another request meanwhile

    async def main() -> None:
        server = await _raw_upstream(close_after_each)
        try:
            async with stack(tmp_path) as s:
                s.router.extra["raw_port"] = server.sockets[0].getsockname()[1]
                for _ in range(2):
                    async with raw(s.port) as (reader, writer):
                        writer.write(get("/content/raw/"))
                        assert (await read_response(reader))[2] == b"ok"
                        assert await reader.read() == b""  # the client was told close
                assert connections == 2
                await s.wait_done(2)
        finally:
            server.close()

    run(main)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_front_websocket_echo_and_close_codes(tmp_path: Path, loop: str) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with ws_connect(f"ws://127.0.0.1:{s.port}/content/a/ws") as ws:
                await ws.send("hello")
                assert await ws.recv() == "echo:hello"
                await ws.send(CHUNK * 4)  # a 256 KiB binary frame each way
                assert await ws.recv() == CHUNK * 4
                await ws.send("close-4001")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
            # The client closes with its own code: the content sees it.
            async with ws_connect(f"ws://127.0.0.1:{s.port}/content/a/ws") as ws:
                await ws.send("x")
                await ws.recv()
                await ws.close(code=4002, reason="leaving")
            await s.wait_done(2)
            assert s.upstream.ws_close_codes == [4001, 4002]

    run(main, loop)


def test_front_websocket_through_async_router(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with ws_connect(f"ws://127.0.0.1:{s.port}/content/slowroute/ws") as ws:
                await ws.send("a")
                assert await ws.recv() == "echo:a"
            await s.wait_done(1)

    run(main)


def test_front_close_drops_websockets_after_the_grace_period(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with ws_connect(f"ws://127.0.0.1:{s.port}/content/a/ws") as ws:
                await ws.send("hi")
                assert await ws.recv() == "echo:hi"
                started = time.monotonic()
                await s.front.close(grace_seconds=0.2)
                assert time.monotonic() - started < 2
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
            await s.wait_done(1)

    run(main)


def test_front_router_respond_and_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/content/full/") as resp:
                assert resp.status == 503
                assert await resp.read() == b"all processes are busy"
            async with client.get(s.url + "/content/boom/") as resp:
                assert resp.status == 500
            async with client.get(s.url + "/content/slowroute/small") as resp:
                assert await resp.read() == b"ok"
            async with client.get(s.url + "/content/yieldroute/small") as resp:
                assert await resp.read() == b"ok"
            async with client.get(s.url + "/content/slowboom/") as resp:
                assert resp.status == 500
            await s.wait_done(2)

    run(main)


def test_front_rejects_oversized_head_with_431(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            for extra in (f"X-Big: {'a' * 70_000}\r\n", "".join(f"X-{i}: {'b' * 90}\r\n" for i in range(800))):
                async with raw(s.port) as (reader, writer):
                    writer.write(get("/content/a/small", extra))
                    status, headers, _ = await read_response(reader)
                    assert status == 431
                    assert headers["connection"] == "close"
                    assert await reader.read() == b""
            assert not s.upstream.peers

    run(main)


def test_front_rejects_malformed_request_with_400(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(b"GET /content/a/small HTTP/1.1\r\nBad Header\r\n\r\n")
                status, _, _ = await read_response(reader)
                assert status == 400
                assert await reader.read() == b""
            # the server carries on
            async with raw(s.port) as (reader, writer):
                writer.write(get("/content/a/small"))
                assert (await read_response(reader))[2] == b"ok"
            await s.wait_done(1)

    run(main)


def test_front_drops_an_exchange_whose_body_turns_malformed(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(
                    b"POST /content/a/echo HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                )
                await asyncio.wait_for(s.upstream.got_first_chunk.wait(), 5)
                writer.write(b"not a chunk size\r\n")
                assert await reader.read() == b""
            await s.wait_done(1)

    run(main)


def test_front_answers_pipelined_requests_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(
                    get("/content/a/headers?n=1")
                    + get("/content/full/")
                    + get("/app/whoami")
                    + b"POST /content/a/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                    + get("/content/a/headers?n=2")
                )
                first = await read_response(reader)
                assert json.loads(first[2])["path"] == "/headers?n=1"
                assert (await read_response(reader))[0] == 503
                assert json.loads((await read_response(reader))[2])["path"] == "/app/whoami"
                assert json.loads((await read_response(reader))[2])["length"] == 5
                last = await read_response(reader)
                assert json.loads(last[2])["path"] == "/headers?n=2"
            await s.wait_done(3)

    run(main)


def test_front_closes_idle_client_connections_after_the_keepalive_timeout(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with stack(tmp_path, keepalive_timeout_seconds=0.2) as s:
            async with raw(s.port) as (reader, writer):
                writer.write(get("/content/a/small"))
                assert (await read_response(reader))[0] == 200
                assert await asyncio.wait_for(reader.read(), 2) == b""
            async with raw(s.port) as (reader, writer):
                writer.write(b"GET /content/a/small HTTP/1.1\r\n")  # and nothing more
                assert await asyncio.wait_for(reader.read(), 2) == b""
            await s.wait_done(1)

    run(main)


def test_front_close_lets_in_flight_exchanges_finish(tmp_path: Path) -> None:
    async def main() -> None:
        async with stack(tmp_path) as s, aiohttp.ClientSession() as client:
            async with client.get(s.url + "/content/a/big") as resp:
                closing = asyncio.ensure_future(s.front.close(grace_seconds=5))
                await asyncio.sleep(0.05)
                assert len(await resp.read()) == BIG * len(CHUNK)
            await closing
            with pytest.raises(aiohttp.ClientConnectionError):
                async with client.get(s.url + "/content/a/small"):
                    pass
            await s.wait_done(1)

    run(main)


# -- the pure builders --


def test_http_upstream_head_is_exact() -> None:
    req = http.Request(
        b"POST",
        b"/content/a/x?y=1",
        [
            (b"host", b"podium.test"),
            (b"authorization", b"Key k"),
            (b"transfer-encoding", b"chunked"),
            (b"connection", b"keep-alive"),
            (b"accept", b"*/*"),
        ],
        True,
        True,
        False,
    )
    forward = Forward(
        "127.0.0.1",
        1,
        b"/x?y=1",
        set_headers=[(b"x-user", b"ann")],
        remove_headers=frozenset({b"authorization"}),
    )
    head = http.upstream_head(req, b"/x?y=1", b"10.0.0.9", b"unused", forward, False)
    assert head == (
        b"POST /x?y=1 HTTP/1.1\r\n"
        b"host: podium.test\r\n"
        b"transfer-encoding: chunked\r\n"
        b"accept: */*\r\n"
        b"x-forwarded-for: 10.0.0.9\r\n"
        b"x-forwarded-proto: http\r\n"
        b"x-forwarded-host: podium.test\r\n"
        b"x-user: ann\r\n"
        b"\r\n"
    )
    assert req.chunked and req.has_body and not req.websocket
    plain = http.Request(b"GET", b"/", [(b"host", b"h")], True, False, False)
    ip = b"10.0.0.9"
    assert http.upstream_head(plain, b"/", ip, http.forwarded_for(ip), None, False) == (
        b"GET / HTTP/1.0\r\nhost: h\r\n"
        b"x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n"
    )


def test_http_response_has_no_length_for_204_and_closes_when_asked() -> None:
    assert http.response(204, [(b"Content-Length", b"9")], b"ignored", keep_alive=False) == (
        b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    )
    assert http.response(302, [(b"location", b"/login")], b"", keep_alive=True) == (
        b"HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\n\r\n"
    )
