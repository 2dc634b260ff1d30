"""The proxy front: Podium's HTTP/1.1 + WebSocket entry point on raw asyncio.

Every viewer request reaches the front first. Targets under its prefixes
(``/content/``) are routed by a :class:`~podium.proxy.decisions.Router`; every
other request goes unchanged to the internal app (uvicorn serving the FastAPI
app on a unix socket).

Two origins. Requests on the *content origin* (those arriving on the content
listener, :meth:`Front.start_content`, or whose ``Host`` is the content origin's) go
to the ``content_router`` whatever their path, and what it passes to the app carries
``X-Podium-Origin: content``; every other request is on the dashboard origin, and
a client's own ``X-Podium-Origin`` is removed from it, so the app can tell them
apart. There is no framework on this path: request heads are
parsed with ``httptools``, bodies stream through as they arrive, responses are
forwarded as raw bytes over pooled keep-alive upstream connections (see
``podium.proxy.pool``), and a websocket becomes a byte tunnel after its 101, or, when
the router names the content process's hand-off socket, is handed over to that process
whole (``podium.proxy.socket_handoff``).

Per client connection, requests are handled one at a time in order; a
pipelined request waits (and reading pauses) until the previous response is
complete. Back-pressure both ways: when the receiving transport's write buffer
passes its high-water mark, the sending side stops reading until it drains.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from podium.proxy.connection import ClientConnection, HostMatcher
from podium.proxy.decisions import Router
from podium.proxy.pool import Key, Pool
from podium.proxy.socket_handoff import HandedSession

log = logging.getLogger(__name__)


class Front:
    """The proxy front server (see the module docstring).

    Lifecycle: ``start`` returns once listening; ``close`` stops accepting, closes
    idle client connections, lets in-flight exchanges finish for up to
    ``grace_seconds``, then drops whatever remains (calling each ``on_done``).

    Options: ``trust_forwarded_headers`` keeps the client's X-Forwarded-* values
    (set it when Podium sits behind a proxy that sets them; otherwise they are
    replaced); ``max_head_bytes`` bounds a request head (431 beyond);
    ``keepalive_timeout_seconds`` closes client connections idle, or stuck in a
    request head, that long; ``upstream_idle_seconds`` bounds how long an idle
    upstream connection is kept for reuse (keep it below the apps' own keep-alive
    timeout: uvicorn's is 5 s); ``connect_timeout_seconds`` bounds a connect to an
    upstream (504 beyond; a refused connect is a 502); ``content_router`` decides
    requests on the content origin and ``content_host`` recognises that origin's ``Host``
    on the main listener (None: only the content listener serves content);
    ``app_prefixes``, when given, makes the ``router`` decide every dashboard-origin target
    outside ``prefixes`` too (vanity paths), except those under ``app_prefixes``, which go
    straight to the app (the API's ``/__api__/``).
    """

    def __init__(
        self,
        router: Router,
        app_socket: str,
        prefixes: tuple[bytes, ...] = (b"/content/",),
        *,
        trust_forwarded_headers: bool = False,
        max_head_bytes: int = 64 * 1024,
        keepalive_timeout_seconds: float = 75.0,
        upstream_idle_seconds: float = 2.0,
        connect_timeout_seconds: float = 10.0,
        content_router: Router | None = None,
        content_host: HostMatcher | None = None,
        app_prefixes: tuple[bytes, ...] | None = None,
    ) -> None:
        self.router = router
        self.app_prefixes = app_prefixes
        self.content_router = content_router
        self.content_host = content_host
        self.app_key: Key = app_socket
        self.prefixes = prefixes
        self.trust_forwarded_headers = trust_forwarded_headers
        self.max_head_bytes = max_head_bytes
        self.keepalive_timeout_seconds = keepalive_timeout_seconds
        self.pool = Pool(idle_seconds=upstream_idle_seconds, connect_timeout=connect_timeout_seconds)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: set[ClientConnection] = set()
        self.tasks: set[asyncio.Future[Any]] = set()
        self.handed: set[HandedSession] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._content_server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.loop = self.pool.loop = loop
        self._server = await loop.create_server(
            lambda: ClientConnection(self), host, port, backlog=1024, reuse_address=True
        )
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)

    async def start_content(self, host: str, port: int) -> None:
        """Listen for the content origin too (after :meth:`start`): every request there
        goes to the ``content_router``."""
        if self.content_router is None or self.loop is None:
            raise RuntimeError("start_content needs a content_router and a started front")
        self._content_server = await self.loop.create_server(
            lambda: ClientConnection(self, content_only=True), host, port, backlog=1024, reuse_address=True
        )

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the front is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def content_port(self) -> int | None:
        if self._content_server is None:
            return None
        return int(self._content_server.sockets[0].getsockname()[1])

    async def close(self, grace_seconds: float = 5.0) -> None:
        if self._server is None or self.closing:
            return
        self.closing = True
        self._server.close()
        if self._content_server is not None:
            self._content_server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.clients):
            client.shutdown()
        if self.clients:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), grace_seconds)
            except TimeoutError:
                log.warning("dropping %d proxied connections at shutdown", len(self.clients))
                for client in list(self.clients):
                    client.abort()
        for task in list(self.tasks):
            task.cancel()
        for session in list(self.handed):  # sessions handed over live on in their processes
            session.end()
        self.pool.close()
        # Let the transports report connection_lost (and call on_done) before returning.
        for _ in range(3):
            await asyncio.sleep(0)
        await self._server.wait_closed()
        if self._content_server is not None:
            await self._content_server.wait_closed()

    def forget(self, client: ClientConnection) -> None:
        self.clients.discard(client)
        if self._drained is not None and not self.clients:
            self._drained.set()

    @property
    def _sweep_interval(self) -> float:
        return max(0.05, min(10.0, self.keepalive_timeout_seconds / 4))

    def _sweep(self) -> None:
        """Close client connections idle (or stuck in a head) past the keep-alive timeout."""
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self.keepalive_timeout_seconds
        for client in list(self.clients):
            if client.current is None and client.idle_since < oldest:
                client.shutdown()
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
