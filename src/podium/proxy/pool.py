"""Upstream connections of the proxy front and their keep-alive pool.

An :class:`Upstream` is one connection to an app process (TCP) or to the
internal app (unix socket). While it serves an exchange it is attached to a
:class:`Downstream` (the client connection): response bytes are written to the
client unchanged while an ``httptools`` response parser watches them for the end
of the message, so the connection can go back to the pool as soon as the
response is complete. After a ``101 Switching Protocols`` it becomes one half of
a byte tunnel.

The pool keeps idle connections per key (``(host, port)`` or a unix socket
path), newest first, for at most ``idle_seconds`` (shorter than the upstream's own
keep-alive timeout, so a reused connection is rarely one the upstream is closing).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

log = logging.getLogger(__name__)

Key = tuple[str, int] | str
# Write buffer high-water mark of every proxied transport: above it the other side
# stops reading until the buffer drains to a quarter of it.
WRITE_HIGH_WATER = 256 * 1024


def tune(transport: asyncio.Transport) -> None:
    """Set the write buffer limits (and TCP_NODELAY) of a proxied transport."""
    transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_HIGH_WATER // 4)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class Downstream(Protocol):
    """What an upstream connection reports to the client connection it serves.

    Exactly one of ``response_complete``, ``upstream_lost``, ``upstream_failed`` or
    ``upstream_upgraded`` ends (or, for the last, transforms) each exchange; after
    an upgrade, ``upstream_lost`` reports the end of the tunnel. The upstream stops
    reporting once the client calls ``close``/``abort`` or the pool takes it back.
    """

    def response_complete(self, reusable: bool, keep_alive: bool) -> None:
        """The response ended; ``reusable``: pool the connection; ``keep_alive``: the
        client may send another request (false when the response said close)."""

    def upstream_lost(self, conn: Upstream) -> None:
        """The connection closed: before any response byte (``conn.started`` false),
        at the end of a close-delimited or truncated response, or ending a tunnel."""

    def upstream_failed(self, conn: Upstream) -> None:
        """The upstream sent something that is not HTTP."""

    def upstream_upgraded(self) -> None:
        """A 101 went to the client: from now on bytes are tunnelled both ways."""

    def upstream_full(self, full: bool) -> None:
        """The upstream's write buffer passed its high-water mark (or drained)."""

    def touch(self) -> None:
        """Bytes came from the upstream (called only for exchanges with timeouts)."""


class Upstream(asyncio.Protocol):
    """One connection to an upstream; serves one exchange at a time."""

    __slots__ = (
        "key",
        "pool",
        "transport",
        "parser",
        "client",
        "client_transport",
        "reused",
        "idle_since",
        "started",
        "complete",
        "keep_alive",
        "head_request",
        "tunnel",
        "timed",
        "reading_paused",
        "closed",
    )

    def __init__(self, pool: Pool, key: Key) -> None:
        self.key = key
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.client: Downstream | None = None
        self.client_transport: asyncio.Transport | None = None
        self.reused = False
        self.idle_since = 0.0
        self.started = False  # response bytes have been written to the client
        self.complete = False
        self.keep_alive = False
        self.head_request = False
        self.tunnel = False
        self.timed = False
        self.reading_paused = False
        self.closed = False

    # -- exchange lifecycle, driven by the client connection --

    def begin(
        self,
        client: Downstream,
        client_transport: asyncio.Transport,
        head_request: bool,
        timed: bool,
    ) -> None:
        self.client = client
        self.client_transport = client_transport
        self.head_request = head_request
        self.timed = timed
        self.started = self.complete = False
        if head_request:
            self.parser = HttpResponseParser(_HeadResponse(self))

    def detach(self) -> None:
        self.client = None
        self.client_transport = None
        if self.head_request:
            # The parser still expects the body the HEAD response announced.
            self.parser = HttpResponseParser(self)
        if self.reading_paused:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self) -> None:
        """Close after flushing what was written (the exchange is over)."""
        self.client = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (the exchange was cut short)."""
        self.client = None
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, only quack like it.
        self.transport = cast(asyncio.Transport, transport)
        tune(self.transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client_transport = self.client_transport
        if client is None or client_transport is None:
            # An idle connection must not speak: it is out of step, drop it.
            self.abort()
            return
        if self.tunnel:
            client_transport.write(data)
            if self.timed:
                client.touch()
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade:
            self.started = True
            client_transport.write(data)
            self.tunnel = True
            client.upstream_upgraded()
            return
        except HttpParserError:
            if not self.tunnel:
                client.upstream_failed(self)
                return
            # "101" without upgrade headers: the rest of this read is tunnel bytes.
        self.started = True
        if self.complete and self.head_request:
            self._end_head_response(client, client_transport, data)
            return
        client_transport.write(data)
        if self.tunnel:
            client.upstream_upgraded()
        elif self.complete:
            client.response_complete(self.keep_alive, self.keep_alive)
        elif self.timed:
            client.touch()

    def _end_head_response(
        self, client: Downstream, client_transport: asyncio.Transport, data: bytes
    ) -> None:
        """Forward the end of a response to HEAD, which ends with its head.

        llhttp cannot be told the request was HEAD, so it judges keep-alive as if a
        body followed (a response without a length "needs EOF"); judge from the head
        instead. Bytes after the head (some servers send a body anyway) are dropped
        along with the connection.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0:  # the head began in an earlier read: trust the parser
            client_transport.write(data)
            client.response_complete(self.keep_alive, self.keep_alive)
            return
        head = data[:end].lower()
        keep_alive = self.parser.get_http_version() != "1.0" and not any(
            line.startswith(b"connection:") and b"close" in line for line in head.split(b"\r\n")
        )
        client_transport.write(data[: end + 4])
        client.response_complete(keep_alive and end + 4 == len(data), keep_alive)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        client = self.client
        if client is not None:
            client.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_full(True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_full(False)

    # -- httptools callback --

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self.tunnel = True
            return  # an interim response (100 Continue): the real one follows
        self.complete = True
        # Must be read here: llhttp clears its flags once the callback returns.
        self.keep_alive = self.parser.should_keep_alive()


class _HeadResponse:
    """Parser callbacks for a response to HEAD, which ends with its head."""

    __slots__ = ("conn",)

    def __init__(self, conn: Upstream) -> None:
        self.conn = conn

    def on_headers_complete(self) -> None:
        conn = self.conn
        if conn.parser.get_status_code() >= 200:
            conn.complete = True
            conn.keep_alive = conn.parser.should_keep_alive()


class Pool:
    """Idle keep-alive upstream connections, per key."""

    def __init__(
        self, idle_seconds: float = 2.0, max_idle_per_key: int = 128, connect_timeout: float = 10.0
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_idle_per_key = max_idle_per_key
        self.connect_timeout = connect_timeout
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the first connect
        self._idle: dict[Key, list[Upstream]] = {}
        self._all: set[Upstream] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def take(self, key: Key) -> Upstream | None:
        """The most recently used idle connection to ``key``, or None.

        The sweeper closes connections idle longer than ``idle_seconds`` (checking
        twice per period), so a connection handed out here is at most 1.5 times
        that old.
        """
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, key: Key) -> Upstream:
        """A new connection to ``key``; OSError if refused, TimeoutError if too slow."""
        if self._closed:
            raise ConnectionRefusedError("the proxy is closing")
        loop = self.loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            if isinstance(key, str):
                _, conn = await loop.create_unix_connection(lambda: Upstream(self, key), key)
            else:
                _, conn = await loop.create_connection(lambda: Upstream(self, key), *key)
        self._all.add(conn)
        return conn

    def release(self, conn: Upstream) -> None:
        """Give back a connection whose exchange completed cleanly."""
        conn.detach()
        if self._closed or conn.closed or conn.transport is None or conn.transport.is_closing():
            conn.close()
            return
        loop = self.loop
        assert loop is not None
        conn.idle_since = loop.time()
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = []
        idle.append(conn)
        if len(idle) > self.max_idle_per_key:
            idle.pop(0).close()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.idle_seconds / 2, self._sweep)

    def forget(self, conn: Upstream) -> None:
        """Called when a connection is lost."""
        self._all.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        loop = self.loop
        assert loop is not None
        oldest = loop.time() - self.idle_seconds
        remaining = False
        for key, idle in list(self._idle.items()):
            fresh = [conn for conn in idle if conn.idle_since >= oldest and not conn.closed]
            for conn in idle:
                if conn not in fresh:
                    conn.close()
            if fresh:
                self._idle[key] = fresh
                remaining = True
            else:
                del self._idle[key]
        if remaining and not self._closed:
            self._sweeper = loop.call_later(self.idle_seconds / 2, self._sweep)

    def close(self) -> None:
        """Close every connection, idle or not."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for conn in list(self._all):
            conn.abort()

    @property
    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())
