"""Change notices between server nodes, over PostgreSQL ``LISTEN``/``NOTIFY``.

Each node's request-path caches forget what a change makes stale through
:class:`podium.changes.Changes`, which only reaches listeners on its own node. A
:class:`ChangeFeed` carries the same notices to every other node sharing the database:
:meth:`ChangeFeed.publish` sends ``NOTIFY podium_changes`` with the kind (``content``,
``users``), the content guid and the sending node, and each node's feed, listening on
its own connection, hands other nodes' notices to ``deliver`` within milliseconds. No
polling: one idle connection per node waits for the server to push.

Delivery is best effort: a notice sent while a node's listening connection is down is
lost, so on every (re)connection the feed delivers "everything changed" (``guid``
None), and the caches keep their own short expiry as the last fallback. On SQLite
(one node) there is no feed. Publishing never blocks the caller: notices queue and a
task sends them on a connection of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
CHANNEL = "podium_changes"
_KEEPALIVE_SECONDS = 30.0
_MAX_BACKOFF_SECONDS = 5.0

Deliver = Callable[[str, str | None], None]


def conninfo(database_url: str) -> str | None:
    """The libpq connection string of a PostgreSQL SQLAlchemy URL; None for other databases."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeFeed:
    """This node's end of the change feed: sends its notices, delivers the others'."""

    def __init__(self, database_url: str, node_id: str, deliver: Deliver) -> None:
        self.conninfo = conninfo(database_url)
        self.node_id = node_id
        self.deliver = deliver
        self.connected = asyncio.Event()  # the listening connection is up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: asyncio.Queue[str] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return self.conninfo is not None

    def publish(self, kind: str, guid: str | None = None) -> None:
        """Tell the other nodes (from any thread; never blocks, never raises)."""
        if self._loop is None or self._outbox is None or self._loop.is_closed():
            return
        payload = json.dumps({"node": self.node_id, "kind": kind, "guid": guid})
        outbox = self._outbox
        try:
            if asyncio.get_running_loop() is self._loop:
                outbox.put_nowait(payload)
                return
        except RuntimeError:  # not in an event loop: a worker thread
            pass
        self._loop.call_soon_threadsafe(outbox.put_nowait, payload)

    async def announce(self, kind: str, timeout: float = 5.0) -> None:
        """Send one notice now, on a connection of its own, and return once it is sent (or
        could not be): for a node's last word as it stops, after :meth:`close`."""
        if not self.enabled:
            return
        import psycopg

        assert self.conninfo is not None
        payload = json.dumps({"node": self.node_id, "kind": kind, "guid": None})
        try:
            async with asyncio.timeout(timeout):
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
        except Exception as exc:
            log.warning("change feed: the %s notice was not sent (%s)", kind, exc)

    def start(self) -> None:
        if not self.enabled:
            return
        self._loop = asyncio.get_running_loop()
        self._outbox = asyncio.Queue()
        self._tasks = [self._loop.create_task(self._listen()), self._loop.create_task(self._send())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._loop = None

    def _received(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            kind, guid, node = notice["kind"], notice.get("guid"), notice.get("node")
        except (ValueError, KeyError, TypeError):
            log.warning("change feed: ignored a malformed notice %r", payload[:200])
            return
        if node != self.node_id and kind in ("content", "users", "nodes"):
            self.deliver(str(kind), str(guid) if guid is not None else None)

    async def _listen(self) -> None:
        import psycopg

        assert self.conninfo is not None
        backoff = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Whatever changed while no connection listened is unknown: forget it all.
                    self.deliver("content", None)
                    self.deliver("users", None)
                    self.connected.set()
                    backoff = 0.2
                    while True:
                        async for notify in conn.notifies(timeout=_KEEPALIVE_SECONDS):
                            self._received(notify.payload)
                        await conn.execute("SELECT 1")  # a dead connection raises here
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: listen again when it is back
                self.connected.clear()
                log.warning("change feed: listening connection lost (%s); again in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)

    async def _send(self) -> None:
        import psycopg

        assert self.conninfo is not None and self._outbox is not None
        conn: psycopg.AsyncConnection[object] | None = None
        try:
            while True:
                payload = await self._outbox.get()
                for attempt in range(2):  # once more on a fresh connection
                    try:
                        if conn is None or conn.closed:
                            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
                        break
                    except Exception as exc:
                        if conn is not None:
                            await conn.close()
                        conn = None
                        if attempt:
                            log.warning("change feed: a notice was not sent (%s); other nodes' "
                                        "caches expire on their own", exc)
        finally:
            if conn is not None:
                await conn.close()
