"""Recording usage: hits, visits and interactive app sessions, batched off the request path.

The proxy calls ``UsageRecorder.hit`` once per request it serves for content: that is
the ``hit`` of the recorder's :mod:`hit log <podium.hitlog>` itself (written in C, with
no call of ours between), which picks the three headers a hit keeps, reads the clock and
appends the hit to its buffer (no I/O, no lock, no Python object); it returns whether
the request asks for a WebSocket, for which the router then calls
:meth:`UsageRecorder.session`. Every ``flush_seconds`` the server writes the hits taken
from the log to a spool file of its own and
wakes the *importer*, a process at the lowest CPU priority that builds the rows, inserts
them and prunes rows older than ``retention_days`` hourly (:mod:`podium.usage_import`).
So the database work never holds the server's GIL, and takes only time the server
leaves idle (though, on a core they share, it cools the server's caches: see
bench/README.md). The importer is started at the first batch (or at start when the
spool holds files), started again if it dies, and stopped by :meth:`close`.

While the server is *busy* (its process used more than :data:`BUSY_CPU` of a core over
the last flush interval) the importer is not woken: batches wait in the spool until a
quieter interval, for at most ``import_delay_seconds`` (or :data:`HOLD_BYTES` of them),
so a peak of requests is served without the database work beside it (on a machine
whose idle time is not free, the importer takes from the proxy about in proportion to
its CPU: see bench/README.md). Sustained load past the delay pays the importer's share
again; usage then shows up to the delay late.

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
from podium.hitlog import HitLog
from podium.store import Store
from podium.usage_import import Batch, End, Start

log = logging.getLogger(__name__)
_RESTART_AFTER_SECONDS = 10.0  # between two starts of an importer that keeps dying
_STOP_SECONDS = 60.0  # for the importer to import the spool and exit on close
BUSY_CPU = 0.25  # of a core, over a flush interval: the server is busy, the import waits
HOLD_BYTES = 256 * 1024 * 1024  # of batches waiting while busy: imported then regardless


class UsageRecorder:
    """Buffers usage and hands it on in batches (see the module docstring).

    ``hit(method, target, headers, content_guid, user_guid, bundle_id)`` records one
    request served by content (``headers``: its own, names lower-case) and returns whether
    it asks for a WebSocket (``Upgrade: websocket``); for one tunnelled to content, the
    caller then records an app session with :meth:`session`.
    """

    def __init__(self, store: Store, flush_seconds: float, retention_days: int,
                 spool: Path | None = None, node: str = "node", import_delay_seconds: float = 0.0) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.retention_days = retention_days
        self.spool = spool
        self.node = node
        self.import_delay_seconds = import_delay_seconds
        self._held_since: float | None = None  # when the oldest batch not yet handed on was spooled
        self._held_bytes = 0
        self._log = HitLog()
        self.hit = self._log.hit  # the router calls the log's own method (see the module docstring)
        self._starts: list[Start] = []
        self._ends: list[End] = []
        self._task: asyncio.Task[None] | None = None
        self._importer: subprocess.Popen[bytes] | None = None
        self._started_at = float("-inf")  # when the importer was last started (monotonic)
        self._created_at = time.monotonic()
        self._seq = 0
        if spool is not None:
            spool.mkdir(parents=True, exist_ok=True, mode=0o700)

    def session(self, content_guid: str, user_guid: str | None, bundle_id: int | None) -> Callable[[], None]:
        """Record the start of an app session (a WebSocket tunnelled to content) now; the
        callable returned records its end."""
        start = (str(uuid.uuid4()), time.time(), content_guid, user_guid, bundle_id)
        self._starts.append(start)
        return lambda: self._ends.append((*start, time.time()))

    # --- handing on -----------------------------------------------------------------------

    def take(self) -> Batch:
        """What is buffered, as a batch of its own, leaving the buffers empty."""
        batch = self._log.take(), self._starts, self._ends
        self._starts, self._ends = [], []
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

    def _spool_buffered(self) -> int:
        """Append what is buffered to the spool; how many bytes of hits (0 when nothing
        was buffered, or only app sessions)."""
        assert self.spool is not None
        batch = self.take()
        if any(batch):
            self._seq += 1
            usage_import.spool_batch(self.spool, self.node, self._seq, batch)
        return len(batch[0])

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
                  "retention_days": self.retention_days, "poll_seconds": max(10.0, 5 * self.flush_seconds),
                  "delay_seconds": self.import_delay_seconds}
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

    def _import_due(self, busy: bool, now: float) -> bool:
        """Whether the batches waiting in the spool are to be imported now."""
        return self._held_since is not None and (
            not busy or now - self._held_since >= self.import_delay_seconds or self._held_bytes >= HOLD_BYTES)

    async def _run(self) -> None:
        pruned_at = wall = time.monotonic()
        cpu = time.process_time()
        while True:
            await asyncio.sleep(self.flush_seconds)
            now, used = time.monotonic(), time.process_time()
            busy = used - cpu > BUSY_CPU * (now - wall)
            wall, cpu = now, used
            try:
                if self.spool is None:
                    await asyncio.to_thread(self.write, self.take())
                    if time.monotonic() - pruned_at > usage_import.PRUNE_EVERY_SECONDS:
                        pruned_at = time.monotonic()
                        await asyncio.to_thread(self.prune)
                    continue
                if len(self._log) or self._starts or self._ends:
                    self._held_bytes += self._spool_buffered()
                    if self._held_since is None:
                        self._held_since = now
                if self._import_due(busy, now):
                    self._held_since, self._held_bytes = None, 0
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
        # Whatever fails here is logged and the stop goes on: the server's content
        # processes are stopped after this, and must not be left running without it.
        lost = (f"{len(self._log)} hit(s) and {len(self._starts) + len(self._ends)} "
                "app session start(s) and end(s) lost")
        if self.spool is None:
            try:
                await asyncio.to_thread(self.write, self.take())
            except Exception:
                log.exception("recorded usage could not be written at the stop: %s", lost)
            return
        try:
            self._spool_buffered()
        except Exception:  # the folder gone, the disk full, ...
            log.exception("recorded usage could not be spooled at the stop (in %s): %s", self.spool, lost)
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
        try:
            left = usage_import.Importer(self.store, self.spool, self.node, self.retention_days, prunes=False)
            await asyncio.to_thread(left.run_once)
        except Exception:  # the database gone, ...: the spool is imported at the next start
            log.exception("the usage spool could not be imported at the stop; the next start imports it")
