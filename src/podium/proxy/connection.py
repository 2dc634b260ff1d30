"""One client connection of the proxy front: requests parsed, routed and proxied in order.

A :class:`ClientConnection` parses requests with ``httptools`` and runs one
exchange at a time: route the request (stepping the router coroutine inline so
a router answering from memory costs no task), then answer it, or forward it
over a pooled upstream connection (``podium.proxy.pool``), streaming the request
body up and letting the upstream stream the response down as raw bytes. After a
websocket's 101 both connections become a byte tunnel.

Reading from the client pauses (a bit mask of reasons) while a pipelined request
waits for the current response, while the upstream's write buffer is full, while
routing or connecting, and while bytes after an upgrade request wait for the
upstream's answer. The upstream stops reading while the client's write buffer is
full. Every :class:`~podium.proxy.decisions.Forward` gets exactly one ``on_done``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Coroutine
from types import CoroutineType
from typing import Any, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from podium.proxy import files, http, socket_handoff
from podium.proxy.decisions import Decision, Forward, PassToApp, Respond, Router, ServeFile
from podium.proxy.http import BUFFERING, DISCARD, IDEMPOTENT, SENDING, Request
from podium.proxy.pool import Key, Pool, Upstream, tune

log = logging.getLogger(__name__)

# Reasons for which reading from the client is paused (a bit mask).
_PIPELINED = 1  # a further request is parsed and waits for the current response
_UPSTREAM_FULL = 2  # the upstream's write buffer is above its high-water mark
_WAITING = 4  # the router or an upstream connect is in progress
_UPGRADE = 8  # bytes after an upgrade request wait for the upstream's answer
_STOPPED = 16  # the request stream is unusable (400, 431): read nothing more



async def finish_route(coro: Coroutine[Any, Any, Decision], yielded: Any) -> Decision:
    """Drive the rest of a router coroutine that suspended when stepped inline.

    The front steps ``route()`` once itself, so a router answering from memory
    costs no task. When it suspends instead, this task waits for the future it
    yielded and resumes it, as a task would (the coroutine reads the result).
    """
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                # The coroutine's own await marked the future as blocking; a task
                # clears that mark before waiting, and so must we.
                yielded._asyncio_future_blocking = False
                await yielded
        except asyncio.CancelledError as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            continue
        except BaseException:
            pass  # the coroutine reads the future's outcome itself when resumed
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class HostMatcher(Protocol):
    def match(self, host: bytes | None) -> bool:
        """Whether a request with this ``Host`` is on the content origin."""


# What requests passed to the app carry: the origin they arrived on. The header is the
# front's to set: on the dashboard origin a client's own is removed.
# So is X-Podium-Vanity: the vanity path a request came by (see PassToApp).
_APP_FROM_CONTENT = Forward(
    "", 0, b"", set_headers=[(b"x-podium-origin", b"content")], remove_headers=frozenset({b"x-podium-vanity"})
)
_APP_FROM_DASHBOARD = Forward(
    "", 0, b"", remove_headers=frozenset({b"x-podium-origin", b"x-podium-vanity"})
)


class Server(Protocol):
    """What a client connection needs from the server that accepted it
    (:class:`podium.proxy.front.Front`)."""

    loop: asyncio.AbstractEventLoop | None
    router: Router  # decides targets under ``prefixes`` on the dashboard origin
    content_router: Router | None  # decides every request on the content origin
    content_host: HostMatcher | None  # the content origin's Host, on the main listener
    pool: Pool
    app_key: Key  # where requests that are not routed go (the internal app)
    prefixes: tuple[bytes, ...]  # targets the router decides
    # None, or: the router decides every target except these (which go to the app)
    app_prefixes: tuple[bytes, ...] | None
    max_head_bytes: int
    trust_forwarded_headers: bool
    closing: bool
    clients: set[ClientConnection]
    tasks: set[asyncio.Future[Any]]
    handed: set[socket_handoff.HandedSession]  # websockets handed over to content processes

    def forget(self, client: ClientConnection) -> None:
        """``client`` has closed."""


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests and runs their exchanges in order."""

    __slots__ = (
        "front",
        "content_only",
        "on_content",
        "loop",
        "transport",
        "parser",
        "peer",
        "client_ip",
        "forwarded",
        "url",
        "headers",
        "head_size",
        "raw_head",
        "heads",
        "req",
        "queue",
        "current",
        "up",
        "fwd",
        "sender",
        "paused",
        "write_paused",
        "advancing",
        "closing",
        "closed",
        "eof",
        "error",
        "rest",
        "tunnel",
        "timer",
        "rx_at",
        "io_at",
        "idle_since",
    )

    def __init__(self, front: Server, content_only: bool = False) -> None:
        self.front = front
        self.content_only = content_only  # accepted by the content listener
        self.on_content = False  # the current request is on the content origin
        assert front.loop is not None
        self.loop = front.loop
        self.parser = HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.client_ip = b"unknown"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0  # bytes of the head being parsed, from the parser callbacks
        self.raw_head = 0  # bytes read while a head stayed incomplete (one huge header)
        self.heads = 0  # heads parsed so far
        self.req: Request | None = None  # the request whose body is being parsed
        self.queue: deque[Request] = deque()  # parsed requests waiting for their turn
        self.current: Request | None = None  # the request whose exchange is running
        self.up: Upstream | None = None
        self.fwd: Forward | None = None
        self.sender: files.FileSender | None = None  # a file being sent from disk
        self.paused = 0
        self.write_paused = False
        self.advancing = False
        self.closing = False  # no further request will be served
        self.closed = False
        self.eof = False
        self.error = 0  # 400 or 431 once the request stream is unusable
        self.rest: bytes | None = None  # bytes that followed an upgrade request's head
        self.tunnel = False
        self.timer: asyncio.TimerHandle | None = None
        self.rx_at = 0.0
        self.io_at = 0.0
        self.idle_since = self.loop.time()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, only quack like it.
        self.transport = cast(asyncio.Transport, transport)
        tune(self.transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))
            self.client_ip = self.peer[0].encode()
        self.forwarded = http.forwarded_for(self.client_ip)
        self.front.clients.add(self)
        if self.front.closing:
            self._close()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            up = self.up
            if up is not None:
                up.write(data)
            if self.timer is not None:
                self.rx_at = self.io_at = self.loop.time()
            return
        if self.error:
            return
        if self.timer is not None:
            self.rx_at = self.io_at = self.loop.time()
        self._feed(data)
        if self.error:
            self._pause(_STOPPED)
        if self.current is None:
            self._advance()
        if self.queue and not self.paused & _PIPELINED:
            self._pause(_PIPELINED)

    def eof_received(self) -> bool:
        if self.tunnel or self.current is None or self.req is not None:
            return False  # close: nothing in flight, or the request itself was cut short
        self.eof = True  # a half-close after a complete request: answer it, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closing = True
        self.front.forget(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        up = self.up
        self.up = None
        if up is not None:
            if self.tunnel:
                up.close()  # flush what the client sent last (its close frame)
            else:
                up.abort()
        self.current = None
        self.queue.clear()
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        self._done()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.up is not None:
            self.up.pause_reading()
        if self.sender is not None:
            self.sender.pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.up is not None:
            self.up.resume_reading()
        if self.sender is not None:
            self.sender.resume()

    # -- httptools callbacks --

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self.head_size += len(name) + len(value)

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.heads += 1
        self.raw_head = 0
        if self.head_size > self.front.max_head_bytes:
            self.error = 431
        self.head_size = 0
        req = Request(
            parser.get_method(),
            self.url,
            self.headers,
            parser.should_keep_alive(),
            parser.get_http_version() != "1.0",
            parser.should_upgrade(),
        )
        self.url = b""
        self.headers = []
        self.req = req
        if self.error:
            req.state = DISCARD
        else:
            self.queue.append(req)

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is None:
            return
        if req.state == SENDING:
            up = self.up
            if up is not None:
                up.write(http.chunk(body) if req.chunked else body)
        elif req.state == BUFFERING:
            req.parts.append(body)

    def on_message_complete(self) -> None:
        req = self.req
        if req is None:
            return
        self.req = None
        req.complete = True
        if req.state == SENDING and req.chunked and self.up is not None:
            self.up.write(http.LAST_CHUNK)

    # -- reading --

    def _feed(self, data: bytes) -> None:
        heads = self.heads
        in_head = self.req is None  # between requests or inside a head
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            # Whatever follows an upgrade request waits: it is websocket data if the
            # upstream answers 101, the next request otherwise.
            self.rest = data[exc.args[0] :]
            self._pause(_UPGRADE)
        except HttpParserError as exc:
            log.debug("bad request from %s: %s", self.peer, exc)
            if not self.error:
                self.error = 400
            current = self.current
            if current is not None and not current.complete:
                self.abort()  # the body being proxied is malformed: nothing can be saved
        if in_head and self.req is None and self.heads == heads:
            # The whole read belongs to one head that is still incomplete (one huge
            # header is buffered by httptools until it ends).
            self.raw_head += len(data)
            if self.raw_head > self.front.max_head_bytes and not self.error:
                self.error = 431

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def _advance(self) -> None:
        """Start the next exchange, if none is running and one is ready."""
        if self.advancing:
            return
        self.advancing = True
        try:
            while self.current is None and not self.closing:
                if self.queue:
                    self._dispatch(self.queue.popleft())
                elif self.rest is not None and not self.tunnel:
                    rest = self.rest
                    self.rest = None
                    self._resume(_UPGRADE)
                    self._feed(rest)
                elif self.error:
                    headers, body = http.error_body(self.error, False)
                    self.transport.write(http.response(self.error, headers, body, keep_alive=False))
                    self._close()
                else:
                    break
        finally:
            self.advancing = False
        if not self.queue and self.paused & _PIPELINED:
            self._resume(_PIPELINED)

    # -- one exchange --

    def _dispatch(self, req: Request) -> None:
        self.current = req
        front = self.front
        if req.method == b"CONNECT":
            req.keep_alive = False
            self._answer_error(req, 405)
            return
        router = front.router
        self.on_content = self.content_only or (
            front.content_host is not None and front.content_host.match(req.header(b"host"))
        )
        if self.on_content and front.content_router is not None:
            router = front.content_router
        elif not req.target.startswith(front.prefixes) and (
            front.app_prefixes is None or req.target.startswith(front.app_prefixes)
        ):
            self._forward(req, front.app_key, req.target, _APP_FROM_DASHBOARD)
            return
        try:
            coro = router.route(req.method, req.target, req.headers, self.peer)
            if type(coro) is not CoroutineType:
                self._route_later(req, asyncio.ensure_future(coro))
                return
            yielded = coro.send(None)
        except StopIteration as stop:
            self._decided(req, stop.value)
            return
        except Exception:
            log.exception("the router failed on %r", req.target)
            self._answer_error(req, 500)
            return
        self._route_later(req, asyncio.ensure_future(finish_route(coro, yielded)))

    def _route_later(self, req: Request, future: asyncio.Future[Any]) -> None:
        self._pause(_WAITING)
        self.front.tasks.add(future)
        future.add_done_callback(lambda done: self._routed(req, done))

    def _routed(self, req: Request, future: asyncio.Future[Any]) -> None:
        self.front.tasks.discard(future)
        self._resume(_WAITING)
        decision: Any = None
        if not future.cancelled():
            if future.exception() is not None:
                log.error("the router failed on %r", req.target, exc_info=future.exception())
            else:
                decision = future.result()
        if self.current is not req or self.closed:
            if isinstance(decision, Forward) and decision.on_done is not None:
                self.fwd = decision  # the router counted it: report it done
                self._done()
            return
        if decision is None:
            self._answer_error(req, 503 if future.cancelled() else 500)
        else:
            self._decided(req, decision)

    def _decided(self, req: Request, decision: Decision) -> None:
        if isinstance(decision, Forward):
            key: Key = decision.unix_path or (decision.host, decision.port)
            self._forward(req, key, decision.target, decision)
        elif isinstance(decision, PassToApp):
            origin = _APP_FROM_CONTENT if self.on_content else _APP_FROM_DASHBOARD
            if decision.vanity is not None:
                origin = Forward(
                    "", 0, b"", set_headers=[*origin.set_headers, (b"x-podium-vanity", decision.vanity)],
                    remove_headers=origin.remove_headers,
                )
            self._forward(req, self.front.app_key, decision.target or req.target, origin)
        elif isinstance(decision, Respond):
            self._answer(req, decision.status, decision.headers, decision.body)
        elif isinstance(decision, ServeFile):
            self._serve_file(req, decision)
        else:
            log.error("the router answered %r for %r", decision, req.target)
            self._answer_error(req, 500)

    def _forward(self, req: Request, key: Key, target: bytes, fwd: Forward | None) -> None:
        self.fwd = fwd
        req.head = http.upstream_head(
            req, target, self.client_ip, self.forwarded, fwd, self.front.trust_forwarded_headers
        )
        if fwd is not None and fwd.handoff_path is not None and req.websocket and self._hand_off(req, fwd):
            return
        if fwd is not None and (fwd.read_timeout_seconds or fwd.connection_timeout_seconds):
            now = self.loop.time()
            self.rx_at = self.io_at = now
            read, idle = fwd.read_timeout_seconds, fwd.connection_timeout_seconds
            first = min(read, idle) if read and idle else (read or idle)
            assert first is not None
            self.timer = self.loop.call_at(now + first, self._on_timer)
        conn = self.front.pool.take(key)
        if conn is not None:
            self._start(conn)
        else:
            self._connect(req, key)

    def _hand_off(self, req: Request, fwd: Forward) -> bool:
        """Hand this connection over to the content process (see ``socket_handoff``) when
        the upgrade request is all it carries so far and nothing is waiting to be written
        to the viewer; False: tunnel it instead."""
        if (self.rest or self.queue or not req.complete or req.has_body
                or self.transport.get_write_buffer_size()):
            return False
        assert fwd.handoff_path is not None
        session = socket_handoff.hand_off(
            self.loop, self.transport, fwd.handoff_path, req.head, fwd.read_timeout_seconds,
            fwd.connection_timeout_seconds, fwd.on_done, self.front.handed,
        )
        if session is None:
            return False
        # The connection is the content process's now: close ours without a word.
        self.fwd = None  # the session reports done
        self.current = None
        self.rest = None
        self.closing = True
        self.front.forget(self)
        self.transport.close()
        return True

    def _connect(self, req: Request, key: Key) -> None:
        self._pause(_WAITING)
        task = asyncio.ensure_future(self.front.pool.connect(key))
        self.front.tasks.add(task)
        task.add_done_callback(lambda done: self._connected(req, done))

    def _connected(self, req: Request, task: asyncio.Future[Upstream]) -> None:
        self.front.tasks.discard(task)
        self._resume(_WAITING)
        exc = None if task.cancelled() else task.exception()
        conn = task.result() if not task.cancelled() and exc is None else None
        if self.current is not req or self.closed:
            if conn is not None:
                self.front.pool.release(conn)
            return
        if conn is None:
            log.debug("cannot reach upstream %s: %r", req.target, exc)
            status = 503 if task.cancelled() else 504 if isinstance(exc, TimeoutError) else 502
            self._answer_error(req, status)
            return
        self._start(conn)

    def _start(self, conn: Upstream) -> None:
        req = self.current
        assert req is not None
        self.up = conn
        conn.begin(self, self.transport, req.method == b"HEAD", self.timer is not None)
        if self.write_paused:
            conn.pause_reading()
        data = req.head
        if req.parts:
            parts = [http.chunk(part) for part in req.parts] if req.chunked else req.parts
            data = b"".join([data, *parts])
            req.parts = []
        if req.complete and req.chunked:
            data += http.LAST_CHUNK
        req.state = SENDING
        conn.write(data)

    def _end(self, reusable: bool, keep_alive: bool) -> None:
        """The current exchange is over: recycle or close its upstream, then go on."""
        req = self.current
        self.current = None
        up = self.up
        self.up = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if up is not None:
            if reusable and req is not None and req.complete and not self.tunnel:
                self.front.pool.release(up)
            else:
                up.close()
        if self.paused & _UPSTREAM_FULL:
            self._resume(_UPSTREAM_FULL)
        if req is not None and not req.complete:
            req.state = DISCARD  # the rest of its body is not worth reading
            keep_alive = False
        self._done()
        if (
            keep_alive
            and req is not None
            and req.keep_alive
            and not (self.closing or self.eof or self.tunnel)
        ):
            self.idle_since = self.loop.time()
            self._advance()
        else:
            self._close()

    def _done(self) -> None:
        fwd = self.fwd
        if fwd is not None:
            self.fwd = None
            if fwd.on_done is not None:
                try:
                    fwd.on_done()
                except Exception:
                    log.exception("on_done failed")

    def _answer(
        self, req: Request, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        keep_alive = req.keep_alive and req.complete and not self.closing
        self.transport.write(
            http.response(
                status,
                headers,
                body,
                keep_alive=keep_alive,
                http11=req.http11,
                head_only=req.method == b"HEAD",
            )
        )
        self._end(False, keep_alive)

    def _serve_file(self, req: Request, decision: ServeFile) -> None:
        """Answer with a file (see :mod:`podium.proxy.files`): a 304 when the client's copy
        is current, else the file, gzipped for a text type when the client takes it."""
        entry, cache = decision.entry, decision.files
        keep_alive = req.keep_alive and req.complete and not self.closing
        packed = cache.gzipped(entry) if entry.compressible and files.accepts_gzip(req.headers) else None
        etag = entry.etag if packed is None else entry.gz_etag
        ending = b"" if keep_alive and req.http11 else (
            b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n"
        )
        common = files.date_header() + entry.headers + decision.headers + b"etag: " + etag + b"\r\n"
        if files.not_modified(req.headers, (entry.etag, entry.gz_etag)):
            self.transport.write(b"HTTP/1.1 304 Not Modified\r\n" + common + ending + b"\r\n")
            self._end(False, keep_alive)
            return
        head_only = req.method == b"HEAD"
        body = packed if packed is not None else (None if head_only else cache.body(entry))
        if packed is not None or head_only or body is not None:
            size = entry.size if body is None else len(body)
            encoding = b"content-encoding: gzip\r\n" if packed is not None else b""
            head = b"HTTP/1.1 200 OK\r\n%b%bcontent-length: %d\r\n%b\r\n" % (common, encoding, size, ending)
            self.transport.write(head if head_only or body is None else head + body)
            self._end(False, keep_alive)
            return
        try:  # a large file: from disk
            fd = files.open_file(entry.path)
        except OSError:
            self._answer_error(req, 404)
            return
        size = os.fstat(fd).st_size
        self.transport.write(b"HTTP/1.1 200 OK\r\n%bcontent-length: %d\r\n%b\r\n" % (common, size, ending))

        def sent(ok: bool) -> None:
            self.sender = None
            if ok:
                self._end(False, keep_alive)
            else:
                self.abort()

        self.sender = files.FileSender(self.transport, fd, 0, size, sent)
        if self.write_paused:
            self.sender.pause()
        self.sender.run()

    def _answer_error(self, req: Request, status: int) -> None:
        headers, body = http.error_body(status, req.wants_json())
        self._answer(req, status, headers, body)

    def _fail(self, status: int) -> None:
        """The exchange failed before any response byte reached the client."""
        up = self.up
        self.up = None
        if up is not None:
            up.abort()
        if self.current is not None:
            self._answer_error(self.current, status)

    def _close(self) -> None:
        self.closing = True
        if not self.transport.is_closing():
            self.transport.close()

    # -- reports from the upstream (podium.proxy.pool.Downstream) --

    response_complete = _end

    def upstream_lost(self, conn: Upstream) -> None:
        if conn is not self.up:
            return
        req = self.current
        if self.tunnel or conn.started or req is None:
            # A tunnel closed, or a response ended by close (or cut short): close ours.
            self.up = None
            self._end(False, False)
            return
        if conn.reused and req.method in IDEMPOTENT and not req.has_body and not self.closing:
            # A pooled connection the upstream had closed: try once on a fresh one.
            self.up = None
            req.state = BUFFERING
            self._connect(req, conn.key)
            return
        self._fail(502)

    def upstream_failed(self, conn: Upstream) -> None:
        if conn is not self.up:
            return
        log.warning("malformed response from upstream %s", conn.key)
        if conn.started:
            self.up = None
            conn.abort()
            self._end(False, False)
        else:
            self._fail(502)

    def upstream_upgraded(self) -> None:
        req = self.current
        up = self.up
        if req is None or up is None or not req.websocket:
            log.warning("upstream %s switched protocols unasked", up.key if up else None)
            self.abort()
            return
        self.tunnel = True
        rest = self.rest
        self.rest = None
        if rest:
            up.write(rest)
        self._resume(_UPGRADE)

    def upstream_full(self, full: bool) -> None:
        if full:
            self._pause(_UPSTREAM_FULL)
        else:
            self._resume(_UPSTREAM_FULL)

    def touch(self) -> None:
        self.io_at = self.loop.time()

    # -- timeouts and shutdown --

    def _on_timer(self) -> None:
        self.timer = None
        fwd = self.fwd
        if fwd is None or self.current is None:
            return
        now = self.loop.time()
        deadlines = []
        if fwd.read_timeout_seconds:
            deadlines.append((self.rx_at + fwd.read_timeout_seconds, "read_timeout"))
        if fwd.connection_timeout_seconds:
            deadlines.append((self.io_at + fwd.connection_timeout_seconds, "connection_timeout"))
        deadline, setting = min(deadlines)
        if now < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            return
        log.debug("exchange for %r ended by %s", self.current.target, setting)
        up = self.up
        if up is None or not (up.started or self.tunnel):
            self._fail(504)  # nothing answered yet
        else:
            self.up = None
            up.abort()
            self._end(False, False)

    def shutdown(self) -> None:
        """Serve no further request; close now if idle, else after this exchange."""
        self.closing = True
        if self.current is None:
            self._close()

    def abort(self) -> None:
        """Drop the connection and its exchange now (``connection_lost`` reports done)."""
        self.closing = True
        up = self.up
        self.up = None
        if up is not None:
            up.abort()
        self.transport.abort()
