"""Recording usage: hits, visits and interactive app sessions, batched off the request path.

The proxy calls :meth:`UsageRecorder.hit` once per request it serves for content: that
marshals the request's fields (headers as they are) onto a buffer and returns (no I/O,
no lock, nothing parsed, and no object kept per hit for the garbage collector, whose
full collections would otherwise walk every buffered hit). Every ``flush_seconds`` the
server writes the buffer, as it is, to a spool file of its own (one write) and wakes the
*importer*, a process at the lowest CPU priority that builds the rows, inserts them and
prunes rows older than ``retention_days`` hourly (:mod:`podium.usage_import`). So the
database work never holds the server's GIL, and takes only time the server leaves idle
(though, on a core they share, it cools the server's caches: see bench/README.md). The importer is started at the first batch (or at start when the
spool holds files), started again if it dies, and stopped by :meth:`close`.

:meth:`close` spools what is buffered, lets the importer import everything and exit
(then imports in this process whatever is left), so a normal stop loses nothing and
leaves nothing behind. A killed server loses its buffer, at most one flush interval; its
importer sees the end of its input and imports the spool before it exits, and what a
killed importer left is imported at the next start. Without a spool
(``spool=None``), batches are written from a worker thread, as :meth:`flush` does.

A *visit* is a hit that loads a page in a browser (:func:`podium.usage_import.is_visit`).
A WebSocket request starts an app *session*; the callable :meth:`hit` returns for it
ends the session when the tunnel closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from podium import usage_import
from podium.store import Store
from podium.usage_import import Batch, End, Start, marshalled

log = logging.getLogger(__name__)
_RESTART_AFTER_SECONDS = 10.0  # between two starts of an importer that keeps dying
_STOP_SECONDS = 60.0  # for the importer to import the spool and exit on close


class UsageRecorder:
    """Buffers usage and hands it on in batches (see the module docstring)."""

    def __init__(self, store: Store, flush_seconds: float, retention_days: int,
                 spool: Path | None = None, node: str = "node") -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.retention_days = retention_days
        self.spool = spool
        self.node = node
        self._hits = bytearray()  # each hit marshalled: no object per hit for the GC to walk
        self._count = 0
        self._starts: list[Start] = []
        self._ends: list[End] = []
        self._task: asyncio.Task[None] | None = None
        self._importer: subprocess.Popen[bytes] | None = None
        self._started_at = float("-inf")  # when the importer was last started (monotonic)
        self._created_at = time.monotonic()
        self._seq = 0
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True, mode=0o700)

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
        that records the end of its session. Only marshals and appends: ``headers`` is
        read when the batch is imported."""
        now = time.time()
        self._hits += marshalled((now, content_guid, user_guid, bundle_id, target, headers, method))
        self._count += 1
        if not websocket:
            return None
        start = (str(uuid.uuid4()), now, content_guid, user_guid, bundle_id)
        self._starts.append(start)
        return lambda: self._ends.append((*start, time.time()))

    # --- handing on -----------------------------------------------------------------------

    def take(self) -> Batch:
        """What is buffered, leaving the buffers empty (on the event loop, where
        :meth:`hit` appends)."""
        batch = (usage_import.hit_list(self._count, self._hits), self._starts, self._ends)
        self._hits, self._count, self._starts, self._ends = bytearray(), 0, [], []
        return batch

    def flush(self) -> int:
        """Write what is buffered to the database now, in this thread; how many hits."""
        return self.write(self.take())

    def write(self, batch: Batch) -> int:
        """Write one batch from :meth:`take` in one transaction; how many hits."""
        return usage_import.write(self.store, batch)

    def prune(self, now: datetime | None = None) -> int:
        """Delete usage older than the retention; how many hits went."""
        return usage_import.prune(self.store, self.retention_days, now)

    def _spool_batch(self, batch: Batch) -> None:
        assert self.spool is not None
        self._seq += 1
        usage_import.spool_batch(self.spool, self.node, self._seq, batch)

    def _wake(self) -> None:
        """Tell the importer there is a file to import, starting it (again) if need be."""
        importer = self._importer
        if importer is not None and importer.poll() is not None:
            if time.monotonic() - self._started_at < _RESTART_AFTER_SECONDS:
                return  # it died just now: tried again at the next flush
            log.warning("the usage importer exited (%s); starting it again", importer.returncode)
            if importer.stdin is not None:
                importer.stdin.close()
            importer = None
        if importer is None:
            importer = self._importer = self._start_importer()
        assert importer.stdin is not None
        try:
            os.write(importer.stdin.fileno(), b"\n")
        except BlockingIOError:  # a pipe full of wake-ups: it has enough of them
            pass
        except BrokenPipeError:  # it died: the next wake starts another
            pass

    def _start_importer(self) -> subprocess.Popen[bytes]:
        self._started_at = time.monotonic()
        importer = subprocess.Popen([sys.executable, "-m", "podium.usage_import"], stdin=subprocess.PIPE)
        assert importer.stdin is not None
        config = {"database_url": self.store.url, "spool": str(self.spool), "node": self.node,
                  "retention_days": self.retention_days, "poll_seconds": max(10.0, 5 * self.flush_seconds)}
        importer.stdin.write(json.dumps(config).encode() + b"\n")
        importer.stdin.flush()
        os.set_blocking(importer.stdin.fileno(), False)
        log.info("usage importer started (pid %d)", importer.pid)
        return importer

    def _spooled(self) -> bool:
        assert self.spool is not None
        return any(not name.startswith(".") for name in os.listdir(self.spool))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self.spool is not None and self._spooled():  # left by the last run
            self._wake()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        pruned_at = time.monotonic()
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                batch = self.take()
                if self.spool is None:
                    await asyncio.to_thread(self.write, batch)
                    if time.monotonic() - pruned_at > usage_import.PRUNE_EVERY_SECONDS:
                        pruned_at = time.monotonic()
                        await asyncio.to_thread(self.prune)
                    continue
                if any(batch):
                    self._spool_batch(batch)
                    self._wake()
                elif self._importer is not None and self._importer.poll() is not None:
                    self._wake()  # it died: started again, for what it left in the spool
                elif self._importer is None and (
                        time.monotonic() - self._created_at > usage_import.PRUNE_EVERY_SECONDS):
                    self._wake()  # an idle server's usage is pruned hourly too (the importer prunes)
            except Exception:  # the next flush tries again; the server keeps serving
                log.exception("recording usage failed")

    async def close(self) -> None:
        """Stop the background task, hand on what is buffered and see it imported."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        batch = self.take()
        if self.spool is None:
            await asyncio.to_thread(self.write, batch)
            return
        if any(batch):
            self._spool_batch(batch)
        importer, self._importer = self._importer, None
        if importer is not None:
            assert importer.stdin is not None
            importer.stdin.close()  # end of input: it imports the spool and exits
            try:
                await asyncio.wait_for(asyncio.to_thread(importer.wait), _STOP_SECONDS)
            except TimeoutError:
                log.warning("the usage importer did not finish in %.0f s: stopped, this server "
                            "imports the rest", _STOP_SECONDS)
                importer.terminate()
                await asyncio.to_thread(importer.wait)
        left = usage_import.Importer(self.store, self.spool, self.node, self.retention_days, prunes=False)
        await asyncio.to_thread(left.run_once)
