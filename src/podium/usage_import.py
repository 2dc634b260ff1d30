"""Writing recorded usage into the database: from a batch in memory, or from the spool.

The server (:mod:`podium.usage`) appends each flush interval's batch of usage to a file
of its own in the spool folder (``<data dir>/usage/``) and leaves the database work to
an *importer*: a separate process at the lowest CPU priority (``python -m
podium.usage_import``, started, woken and stopped by the server), so building rows and
inserting them never holds the server's GIL or competes with the proxy for its core.

A spool file is ``<node>.<time ns>.<seq>.usage``: a :mod:`marshal`-ed ``(version,
starts, ends)`` followed by the batch's hits as one marshalled list, whose items the
server marshalled one by one as it recorded them (so it keeps no Python object per hit
for its garbage collector to walk) and put behind a list's head at the flush (so the
importer reads them back in one call), named once complete (written to a dot-file, then
renamed). An importer *claims* a file by renaming it to ``<name>.claimed-<host>-<pid>``:
of two importers sharing the folder, one rename wins. It takes its own node's files in
order, another node's only once they have lain unclaimed for :data:`ORPHAN_SECONDS` (that
node stopped or died), and a file claimed by an importer that died (same host, process
gone; another host, claimed over :data:`STALE_CLAIM_SECONDS` ago) again.

Hits are inserted in chunks of :data:`CHUNK` rows, each in its own short transaction
that also inserts the chunk's name into ``usage_imports``: a chunk imported before a
crash (between the commit and the file's removal) is not imported twice. App sessions are
upserts by their key (a start inserts, an end inserts or sets ``ended``), so their order
across files does not matter.
"""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import json
import logging
import marshal
import os
import select
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy import select as sql_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from podium.store import Store
from podium.store.models import AppSession, ContentHit, UsageImport

log = logging.getLogger(__name__)

SPOOL_VERSION = 2  # 1: the hits one after another, without the list's head
CHUNK = 1000  # hits per transaction: a few ms of the write lock at a time
ORPHAN_SECONDS = 60.0
STALE_CLAIM_SECONDS = 3600.0
PRUNE_EVERY_SECONDS = 3600.0
IMPORTS_KEPT_DAYS = 7  # how long a chunk's name keeps it from being imported twice
_SUFFIX = ".usage"
_CLAIMED = ".claimed-"
_KEPT = {b"user-agent": 0, b"sec-fetch-dest": 1, b"sec-fetch-site": 2}  # the headers a hit keeps
# (time, content guid, user guid, bundle id, request-target, headers, method)
Hit = tuple[float, str, str | None, int | None, bytes, list[tuple[bytes, bytes]], bytes]
# (key, started, content guid, user guid, bundle id); an end adds its time
Start = tuple[str, float, str, str | None, int | None]
End = tuple[str, float, str, str | None, int | None, float]
Batch = tuple[bytes, list[Start], list[End]]  # hits: a marshalled list (b"" when none)


def is_visit(method: bytes, path: str, dest: str | None) -> bool:
    """A page load in a browser: ``Sec-Fetch-Dest: document``, or, from clients that do not
    send it, a GET of a path ending in ``/`` or ``.html``."""
    if method != b"GET":
        return False
    if dest is not None:
        return dest == "document"
    return path.endswith(("/", ".html"))


def hit_rows(hits: Iterable[Hit], sqlite: bool) -> list[tuple[Any, ...]]:
    """The ``content_hits`` rows of ``hits``, in the order of :func:`_insert_hits`'s columns.
    Written for speed: after the insert, it is most of the importer's time per hit."""
    seconds: dict[int, str] = {}  # most hits of a batch share a few seconds
    rows: list[tuple[Any, ...]] = []
    append, kept, from_timestamp = rows.append, _KEPT.get, datetime.fromtimestamp
    for at, guid, user, bundle, target, headers, method in hits:
        found: list[str | None] = [None, None, None]  # user agent, sec-fetch-dest, -site
        for name, value in headers:
            index = kept(name)
            if index is not None:
                found[index] = value.decode("latin-1")
        agent, dest, site = found
        raw_path, _, raw_query = target.partition(b"?")
        path = raw_path.decode("utf-8", "replace")
        when: Any
        if sqlite:  # as the ORM writes the column
            whole = int(at)
            prefix = seconds.get(whole)
            if prefix is None:
                prefix = seconds[whole] = from_timestamp(whole, UTC).strftime("%Y-%m-%d %H:%M:%S")
            when = f"{prefix}.{int((at - whole) * 1e6):06d}"
        else:
            when = from_timestamp(at, UTC)
        visit = is_visit(method, path, dest)
        append((guid, user, bundle, when, path, raw_query.decode("utf-8", "replace") or None,
                agent or "", dest, site, visit))
    return rows


# Rows per INSERT: many rows per statement cost a hit a fifth less than executemany's
# statement per row (measured on SQLite: 3.7 against 4.7 µs), within the bound parameters
# a statement may have (SQLite before 3.32: 999).
_ROWS_PER_INSERT = 500 if sqlite3.sqlite_version_info >= (3, 32) else 99
_HIT_COLUMNS = ("content_guid, user_guid, bundle_id, time, path, query, user_agent, sec_fetch_dest, "
                "sec_fetch_site, visit")


def _insert_hits(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    # Through the driver, not the ORM: a hit costs microseconds to write.
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    one = f"({', '.join([mark] * 10)})"
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        group = rows[start:start + _ROWS_PER_INSERT]
        connection.exec_driver_sql(
            f"INSERT INTO content_hits ({_HIT_COLUMNS}) VALUES {', '.join([one] * len(group))}",
            tuple(itertools.chain.from_iterable(group)),
        )


def _write_sessions(connection: Any, starts: list[Start], ends: list[End]) -> None:
    """Upsert app sessions by key: in any order, and as often as a file is imported."""
    insert = sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert

    def row(key: str, at: float, guid: str, user: str | None, bundle: int | None) -> dict[str, Any]:
        return {"key": key, "started": datetime.fromtimestamp(at, UTC), "content_guid": guid,
                "user_guid": user, "bundle_id": bundle}

    if starts:
        connection.execute(insert(AppSession).on_conflict_do_nothing(index_elements=["key"]),
                           [row(*start) for start in starts])
    if ends:
        upsert = insert(AppSession)
        connection.execute(
            upsert.on_conflict_do_update(index_elements=["key"], set_={"ended": upsert.excluded.ended}),
            [{**row(*end[:5]), "ended": datetime.fromtimestamp(end[5], UTC)} for end in ends],
        )


# Format 2 writes no back-references (version 3 on), so hits marshalled one by one stay
# valid side by side as the items of one list; it is also the cheaper to write.
_MARSHAL_FORMAT = 2


def marshalled(hit: Hit) -> bytes:
    """One hit as the server buffers it (:func:`hit_list` makes a list of them)."""
    try:
        return marshal.dumps(hit, _MARSHAL_FORMAT)
    except ValueError:  # headers of a type marshal does not know: as plain bytes
        return marshal.dumps((*hit[:5], [(bytes(n), bytes(v)) for n, v in hit[5]], bytes(hit[6])), _MARSHAL_FORMAT)


def hit_list(count: int, hits: bytes | bytearray) -> bytes:
    """``count`` hits from :func:`marshalled`, one after another, as one marshalled list
    (a list's head is its type code and its length): b"" when there are none."""
    return b"[" + struct.pack("<i", count) + hits if count else b""


def read_hits(data: bytes) -> list[Hit]:
    """The hits of a batch's bytes (:func:`hit_list`)."""
    return marshal.loads(data) if data else []


def _read_hits_one_by_one(data: bytes) -> list[Hit]:
    """The hits of a version 1 spool file (spooled by an earlier Podium, imported after
    an upgrade): marshalled one after another, without a list's head."""
    source = io.BytesIO(data)
    hits = []
    while source.tell() < len(data):
        hits.append(marshal.load(source))
    return hits


def write(store: Store, batch: Batch) -> int:
    """Write one batch in one transaction (the synchronous path: tests, a recorder without
    a spool); how many hits."""
    hits, starts, ends = batch
    rows = hit_rows(read_hits(hits), store.is_sqlite)
    if rows or starts or ends:
        with store.engine.begin() as connection:
            if rows:
                _insert_hits(connection, rows)
            _write_sessions(connection, starts, ends)
    return len(rows)


def prune(store: Store, retention_days: int, now: datetime | None = None) -> int:
    """Delete usage older than the retention (0: none) and the names of chunks imported
    long ago; how many hits went."""
    now = now or datetime.now(UTC)
    with store.session() as session:
        session.execute(delete(UsageImport).where(UsageImport.imported < now - timedelta(days=IMPORTS_KEPT_DAYS)))
        if not retention_days:
            return 0
        cutoff = now - timedelta(days=retention_days)
        gone = getattr(session.execute(delete(ContentHit).where(ContentHit.time < cutoff)), "rowcount", 0)
        session.execute(delete(AppSession).where(AppSession.started < cutoff, AppSession.ended.is_not(None)))
    return int(gone or 0)


# --- the spool ------------------------------------------------------------------------


def spool_batch(spool: Path, node: str, seq: int, batch: Batch) -> Path:
    """Append ``batch`` to the spool as one new file (complete once named); its path."""
    hits, starts, ends = batch
    name = f"{node}.{time.time_ns():020d}.{seq:08d}{_SUFFIX}"
    partial = spool / f".{name}"
    with open(partial, "wb") as out:
        out.write(marshal.dumps((SPOOL_VERSION, starts, ends)))
        out.write(hits)
    os.replace(partial, spool / name)
    return spool / name


def read_spool(path: Path) -> tuple[list[Hit], list[Start], list[End]]:
    """The hits, app session starts and ends of one spool file."""
    with open(path, "rb") as source:
        version, starts, ends = marshal.load(source)
        if version == 1:
            return _read_hits_one_by_one(source.read()), starts, ends
        if version != SPOOL_VERSION:
            raise ValueError(f"spool version {version}, not {SPOOL_VERSION}")
        return read_hits(source.read()), starts, ends


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Importer:
    """Imports the spool's files into the database (see the module docstring); one per
    process, ``claimer`` naming it among every importer sharing the spool."""

    def __init__(self, store: Store, spool: Path, node: str, retention_days: int, prunes: bool = True) -> None:
        self.store = store
        self.spool = spool
        self.node = node
        self.retention_days = retention_days
        self.host = socket.gethostname().replace(".", "_").replace("-", "_")
        self.claimer = f"{self.host}-{os.getpid()}"
        self._pruned_at = float("-inf") if prunes else float("inf")

    def _candidates(self) -> Iterator[Path]:
        """Files this importer may claim now, its own node's first, oldest first."""
        try:
            entries = sorted(os.scandir(self.spool), key=lambda e: e.name)
        except FileNotFoundError:
            return
        now = time.time()
        own, others = [], []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            if name.endswith(_SUFFIX):
                if name.rsplit(".", 3)[0] == self.node:
                    own.append(entry)
                elif _age(entry, now) > ORPHAN_SECONDS:
                    others.append(entry)
            elif _CLAIMED in name:
                host, _, pid = name.rpartition(_CLAIMED)[2].rpartition("-")
                if host == self.host:  # this importer's own (a failed attempt), or a dead one's
                    if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                        others.append(entry)
                elif _age(entry, now) > STALE_CLAIM_SECONDS:
                    others.append(entry)
        for entry in own + others:
            yield Path(entry.path)

    def run_once(self) -> int:
        """Import every file it may claim, and prune when due; how many hits it imported."""
        imported = 0
        for path in self._candidates():
            base = path.name.split(_CLAIMED)[0]
            claimed = path.with_name(f"{base}{_CLAIMED}{self.claimer}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:  # another importer claimed it first
                continue
            imported += self.import_file(claimed, base)
        if self._pruned_at != float("inf") and time.monotonic() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self._pruned_at = time.monotonic()
            prune(self.store, self.retention_days)
        return imported

    def import_file(self, path: Path, base: str) -> int:
        """Import one claimed file, then remove it; how many hits were new."""
        try:
            hits, starts, ends = read_spool(path)
        except (EOFError, ValueError, TypeError) as exc:  # kept aside, not retried forever
            log.error("%s cannot be read (%s): left as %s.bad", path, exc, base)
            os.replace(path, path.with_name(f".{base}.bad"))
            return 0
        if starts or ends:
            with self.store.engine.begin() as connection:
                _write_sessions(connection, starts, ends)
        names = [f"{base}:{start}" for start in range(0, len(hits), CHUNK)]
        with self.store.session() as session:
            done = set(session.scalars(sql_select(UsageImport.name).where(UsageImport.name.in_(names))))
        written = 0
        for name in names:
            if name in done:
                continue
            start = int(name.rpartition(":")[2])
            rows = hit_rows(hits[start:start + CHUNK], self.store.is_sqlite)
            try:
                with self.store.engine.begin() as connection:
                    connection.execute(insert(UsageImport).values(name=name, imported=datetime.now(UTC)))
                    _insert_hits(connection, rows)
            except IntegrityError:  # another importer took this chunk a moment ago
                continue
            written += len(rows)
        path.unlink()
        return written


def _age(entry: os.DirEntry[str], now: float) -> float:
    try:
        return now - entry.stat().st_ctime
    except FileNotFoundError:
        return 0.0


def lowest_priority() -> None:
    """Run only on CPU time nothing else wants: Linux's SCHED_IDLE class, below nice 19
    (a task of another class that wakes preempts it at once), where the platform has it;
    nice 19 beside it either way, and alone where SCHED_IDLE is refused."""
    os.nice(19)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def main() -> None:
    """The importer process: reads its settings as one JSON line on stdin, then imports
    at every byte the server writes, at least every ``poll_seconds``; at end of input
    (the server stopped or died) it imports what is left and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the server, which stops it
    lowest_priority()
    logging.basicConfig(level=logging.INFO, format="podium usage importer: %(levelname)s %(message)s")
    config = json.loads(sys.stdin.buffer.readline())
    store = Store(config["database_url"])
    importer = Importer(store, Path(config["spool"]), config["node"], config["retention_days"])
    stdin = sys.stdin.buffer.fileno()
    ending = False
    # A batch is many small tuples whose creation would start the cyclic collector again
    # and again, walking them all for nothing (they hold no cycles; reference counting
    # frees them). So it runs once after each wake, over what start-up left out.
    gc.freeze()
    gc.disable()
    try:
        while True:
            try:
                importer.run_once()
            except Exception:  # the database away, a bad file: tried again at the next wake
                log.exception("importing recorded usage failed")
                if ending:
                    break
                time.sleep(config["poll_seconds"])
            finally:
                gc.collect()
            if ending:
                break
            ready, _, _ = select.select([stdin], [], [], config["poll_seconds"])
            if ready and not os.read(stdin, 65536):
                ending = True
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
