"""Recording usage: hits, visits and interactive app sessions, batched off the request path.

The proxy calls :meth:`UsageRecorder.hit` once per request it serves for content: that
appends a tuple to a list and returns (no I/O, no lock, nothing parsed beyond the
headers it keeps). A background task writes the buffer every ``flush_seconds`` in one
transaction from a worker thread, and prunes rows older than ``retention_days`` once an
hour. :meth:`close` writes what is left, so a normal stop loses nothing; a killed
server loses at most one flush interval.

A *visit* is a hit that loads a page in a browser (``Sec-Fetch-Dest: document``, or,
from clients that do not send it, a GET of a path ending in ``/`` or ``.html``). A
WebSocket request starts an app *session*; the callable :meth:`hit` returns for it
ends the session when the tunnel closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, update

from podium.store import Store
from podium.store.models import AppSession, ContentHit

log = logging.getLogger(__name__)
_PRUNE_EVERY_SECONDS = 3600.0
_KEPT = {b"user-agent", b"sec-fetch-dest", b"sec-fetch-site"}
# (time, content guid, user guid, bundle id, request-target, headers, method)
_Hit = tuple[float, str, str | None, int | None, bytes, list[tuple[bytes, bytes]], bytes]
_Start = tuple[str, float, str, str | None, int | None]  # (key, time, content guid, user guid, bundle id)
_End = tuple[str, float]  # (key, time)


def _is_visit(method: bytes, path: str, dest: str | None) -> bool:
    if method != b"GET":
        return False
    if dest is not None:
        return dest == "document"
    return path.endswith("/") or path.endswith(".html")


class UsageRecorder:
    """Buffers usage and writes it in batches (see the module docstring)."""

    def __init__(self, store: Store, flush_seconds: float, retention_days: int) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.retention_days = retention_days
        self._hits: list[_Hit] = []
        self._starts: list[_Start] = []
        self._ends: list[_End] = []
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def hit(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content_guid: str,
        user_guid: str | None,
        bundle_id: int | None,
        websocket: bool = False,
    ) -> Callable[[], None] | None:
        """Record one request served by content; for a WebSocket, return the callable
        that records the end of its session. Only appends: ``headers`` is kept as it is
        (the caller does not change it afterwards) and read when the batch is written."""
        now = time.time()
        self._hits.append((now, content_guid, user_guid, bundle_id, target, headers, method))
        if not websocket:
            return None
        key = str(uuid.uuid4())
        self._starts.append((key, now, content_guid, user_guid, bundle_id))
        return lambda: self._ends.append((key, time.time()))

    # --- writing ------------------------------------------------------------------------

    def take(self) -> tuple[list[_Hit], list[_Start], list[_End]]:
        """What is buffered, leaving the buffers empty (on the event loop, where
        :meth:`hit` appends)."""
        batch = (self._hits, self._starts, self._ends)
        self._hits, self._starts, self._ends = [], [], []
        return batch

    def flush(self) -> int:
        """Write what is buffered; how many hits (tests, and the end of :meth:`close`)."""
        return self.write(self.take())

    def write(self, batch: tuple[list[_Hit], list[_Start], list[_End]]) -> int:
        """Write one batch from :meth:`take` in one transaction; how many hits."""
        hits, starts, ends = batch
        if not (hits or starts or ends):
            return 0
        sqlite = self.store.is_sqlite

        seconds: dict[int, str] = {}  # most hits of a batch share a few seconds

        def when(at: float) -> Any:  # as the ORM writes the column on each database
            if not sqlite:
                return datetime.fromtimestamp(at, UTC)
            whole = int(at)
            prefix = seconds.get(whole)
            if prefix is None:
                prefix = seconds[whole] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%d %H:%M:%S")
            return f"{prefix}.{int((at - whole) * 1e6):06d}"

        rows = []
        for at, guid, user, bundle, target, headers, method in hits:
            agent = dest = site = None
            for name, value in headers:
                if name in _KEPT:
                    if name == b"user-agent":
                        agent = value.decode("latin-1")
                    elif name == b"sec-fetch-dest":
                        dest = value.decode("latin-1")
                    else:
                        site = value.decode("latin-1")
            raw_path, _, raw_query = target.partition(b"?")
            path = raw_path.decode("utf-8", "replace")
            rows.append((guid, user, bundle, when(at), path, raw_query.decode("utf-8", "replace") or None,
                         agent or "", dest, site, _is_visit(method, path, dest)))
        with self.store.engine.begin() as connection:
            # The driver's executemany, no ORM per row: a hit costs microseconds to write.
            if rows:
                mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
                connection.exec_driver_sql(
                    "INSERT INTO content_hits (content_guid, user_guid, bundle_id, time, path, query, "
                    f"user_agent, sec_fetch_dest, sec_fetch_site, visit) VALUES ({', '.join([mark] * 10)})",
                    rows,
                )
            if starts:
                connection.execute(insert(AppSession), [
                    {"key": key, "started": datetime.fromtimestamp(at, UTC), "content_guid": guid,
                     "user_guid": user, "bundle_id": bundle}
                    for key, at, guid, user, bundle in starts
                ])
            for key, at in ends:
                connection.execute(update(AppSession).where(AppSession.key == key)
                                   .values(ended=datetime.fromtimestamp(at, UTC)))
        return len(rows)

    def prune(self, now: datetime | None = None) -> int:
        """Delete usage older than the retention; how many hits went."""
        if not self.retention_days:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        with self.store.session() as session:
            gone = getattr(session.execute(delete(ContentHit).where(ContentHit.time < cutoff)), "rowcount", 0)
            session.execute(delete(AppSession).where(AppSession.started < cutoff, AppSession.ended.is_not(None)))
        return int(gone or 0)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await asyncio.to_thread(self.write, self.take())
                if time.monotonic() - self._pruned_at > _PRUNE_EVERY_SECONDS:
                    self._pruned_at = time.monotonic()
                    await asyncio.to_thread(self.prune)
            except Exception:  # the next flush tries again; the server keeps serving
                log.exception("writing recorded usage failed")

    async def close(self) -> None:
        """Stop the background writer and write what is buffered."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.to_thread(self.write, self.take())
