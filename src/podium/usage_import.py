"""Writing recorded usage into the database: from a batch in memory, or from the spool.

The server (:mod:`podium.usage`) appends each flush interval's batch of usage to a file
of its own in the spool folder (``<data dir>/usage/``) and leaves the database work to
an *importer*: a separate process at the lowest CPU priority (``python -m
podium.usage_import``, started, woken and stopped by the server), so building rows and
inserting them never holds the server's GIL or competes with the proxy for its core.

A spool file is ``<node>.<time ns>.<seq>.usage``: a :mod:`marshal`-ed ``(version,
starts, ends)`` followed by the batch's hits as marshalled lists one after another, each
behind its length (:data:`Hit`: only the headers a hit keeps, never the request's
credentials), named once complete (written to a dot-file, then renamed). Files of spool
versions 1 and 2 (an earlier Podium's, with every header of the request) are read too.
An importer *claims* a file by renaming it to ``<name>.claimed-<host>-<pid>``: of two
importers sharing the folder, one rename wins. It takes its own node's files in order
(on its own, rather than woken by the server, only those older than the server's import
delay: :mod:`podium.usage`), another node's only once they have lain unclaimed for
:data:`ORPHAN_SECONDS` beyond that delay (that node stopped or died, rather than holds
them while busy), and a file claimed by an importer that died (same host, process gone;
another host, claimed over :data:`STALE_CLAIM_SECONDS` ago) again.

Hits are inserted in chunks of :data:`CHUNK` rows, each in its own short transaction
that also inserts the chunk's name into ``usage_imports`` and adds the chunk's hits to
their content's, viewer's and day's count in ``usage_days`` (what the dashboard's charts
read): a chunk imported before a crash (between the commit and the file's removal) is
neither imported nor counted twice. App sessions are
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, delete, insert
from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError

from podium.store import Store, upsert
from podium.store.models import AppSession, ContentHit, UsageDay, UsageImport

log = logging.getLogger(__name__)

SPOOL_VERSION = 3  # 1 and 2: hits with all their headers (2: as one list); 3: lists of :data:`Hit`
CHUNK = 1000  # hits per transaction: a few ms of the write lock at a time
ORPHAN_SECONDS = 60.0
STALE_CLAIM_SECONDS = 3600.0
PRUNE_EVERY_SECONDS = 3600.0
IMPORTS_KEPT_DAYS = 7  # how long a chunk's name keeps it from being imported twice
_SUFFIX = ".usage"
_CLAIMED = ".claimed-"
_KEPT = {b"user-agent": 0, b"sec-fetch-dest": 1, b"sec-fetch-site": 2}  # the headers a hit keeps
# (time, content guid, user guid, bundle id, request-target, method, and the values of
# the User-Agent, Sec-Fetch-Dest and Sec-Fetch-Site headers or None)
Hit = tuple[float, str, str | None, int | None, bytes, bytes, bytes | None, bytes | None, bytes | None]
# A hit of spool versions 1 and 2: (time, guid, user, bundle, request-target, headers, method)
_EarlierHit = tuple[float, str, str | None, int | None, bytes, list[tuple[bytes, bytes]], bytes]
# (key, started, content guid, user guid, bundle id); an end adds its time
Start = tuple[str, float, str, str | None, int | None]
End = tuple[str, float, str, str | None, int | None, float]
Batch = tuple[bytes | memoryview, list[Start], list[End]]  # hits: marshalled lists of them (dump_hits)


def is_visit(method: bytes, path: str, dest: str | None) -> bool:
    """A page load in a browser: ``Sec-Fetch-Dest: document``, or, from clients that do not
    send it, a GET of a path ending in ``/`` or ``.html``."""
    if method != b"GET":
        return False
    if dest is not None:
        return dest == "document"
    return path.endswith(("/", ".html"))


def _header_text(value: bytes) -> str:
    """A header's bytes as text: UTF-8 as clients that send more than ASCII mean it (a
    user agent "café" is not "cafÃ©"), else Latin-1, as HTTP defines header bytes."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def hit_rows(hits: Iterable[Hit], sqlite: bool) -> list[tuple[Any, ...]]:
    """The ``content_hits`` rows of ``hits``, in the order of :func:`_insert_hits`'s columns.
    Written for speed: after the insert, it is most of the importer's time per hit."""
    seconds: dict[int, str] = {}  # most hits of a batch share a few seconds
    rows: list[tuple[Any, ...]] = []
    append, from_timestamp = rows.append, datetime.fromtimestamp
    for at, guid, user, bundle, target, method, agent, dest, site in hits:
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
        fetch_dest = None if dest is None else dest.decode("latin-1")
        append((guid, user, bundle, when, path, raw_query.decode("utf-8", "replace") or None,
                "" if agent is None else _header_text(agent), fetch_dest,
                None if site is None else site.decode("latin-1"), is_visit(method, path, fetch_dest)))
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


def _count_days(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    """Add the hits of ``rows`` (as :func:`hit_rows` makes them) to ``usage_days``, in the
    transaction that inserts them: the charts count each imported hit once."""
    if not rows:
        return
    counts: dict[tuple[str, str, str], int] = {}  # (day, content, viewer) -> hits
    latest: dict[tuple[str, str, str], Any] = {}
    as_text = isinstance(rows[0][3], str)  # SQLite's: the day is its first ten characters
    for row in rows:
        when = row[3]
        key = (when[:10] if as_text else when.date().isoformat(), row[0], row[1] or "")
        counts[key] = counts.get(key, 0) + 1
        latest[key] = when  # rows come in the order recorded: the last is the latest
    counted = upsert(connection.dialect, UsageDay)
    connection.execute(
        counted.on_conflict_do_update(
            index_elements=["day", "content_guid", "user_guid"],
            set_={"requests": UsageDay.requests + counted.excluded.requests,
                  "last": case((counted.excluded.last > UsageDay.last, counted.excluded.last), else_=UsageDay.last)},
        ),
        [{"day": date.fromisoformat(day), "content_guid": guid, "user_guid": user, "requests": requests,
          "last": datetime.fromisoformat(latest[day, guid, user]).replace(tzinfo=UTC) if as_text
          else latest[day, guid, user]}
         for (day, guid, user), requests in counts.items()],
    )


def _write_sessions(connection: Any, starts: list[Start], ends: list[End]) -> None:
    """Upsert app sessions by key: in any order, and as often as a file is imported."""

    def row(key: str, at: float, guid: str, user: str | None, bundle: int | None) -> dict[str, Any]:
        return {"key": key, "started": datetime.fromtimestamp(at, UTC), "content_guid": guid,
                "user_guid": user, "bundle_id": bundle}

    if starts:
        connection.execute(upsert(connection.dialect, AppSession).on_conflict_do_nothing(index_elements=["key"]),
                           [row(*start) for start in starts])
    if ends:
        ended = upsert(connection.dialect, AppSession)
        connection.execute(
            ended.on_conflict_do_update(index_elements=["key"], set_={"ended": ended.excluded.ended}),
            [{**row(*end[:5]), "ended": datetime.fromtimestamp(end[5], UTC)} for end in ends],
        )


FRAME = struct.Struct("<I")  # the length of a marshalled list of hits, before it


def dump_hits(hits: list[Hit]) -> bytes:
    """Hits as a batch holds them: a marshalled list (a batch has one for every few
    hundred hits, each behind its length in :data:`FRAME`: :mod:`podium.usage`)."""
    try:
        return marshal.dumps(hits)
    except ValueError:  # a value of a bytes-like type marshal does not know: as bytes
        return marshal.dumps([(*hit[:4], *(None if v is None else bytes(v) for v in hit[4:])) for hit in hits])


def read_hits(data: bytes | memoryview) -> list[Hit]:
    """The hits of a batch: marshalled lists (:func:`dump_hits`), each behind its length.
    (One ``marshal.loads`` a list: ``marshal.load`` from a file object reads each string
    with a call of its own, several microseconds a hit.)"""
    view = memoryview(data)
    hits: list[Hit] = []
    at = 0
    while at < len(view):
        (size,) = FRAME.unpack_from(view, at)
        at += FRAME.size
        hits.extend(marshal.loads(view[at:at + size]))
        at += size
    return hits


def _kept(hit: _EarlierHit) -> Hit:
    """A hit of spool version 1 or 2, with all the request's headers, as :data:`Hit`."""
    at, guid, user, bundle, target, headers, method = hit
    found: list[bytes | None] = [None, None, None]  # user agent, sec-fetch-dest, -site
    for name, value in headers:
        index = _KEPT.get(name)
        if index is not None:
            found[index] = value
    return at, guid, user, bundle, target, method, found[0], found[1], found[2]


def _read_hits_one_by_one(data: bytes) -> list[_EarlierHit]:
    """The hits of a version 1 spool file: marshalled one after another, without a list's
    head."""
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
                _count_days(connection, rows)
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
        session.execute(delete(UsageDay).where(UsageDay.day < cutoff.date()))
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
        if version == SPOOL_VERSION:
            return read_hits(source.read()), starts, ends
        if version in (1, 2):  # spooled by an earlier Podium, imported after an upgrade
            data = source.read()
            earlier = _read_hits_one_by_one(data) if version == 1 else marshal.loads(data) if data else []
            return [_kept(hit) for hit in earlier], starts, ends
        raise ValueError(f"spool version {version}, not {SPOOL_VERSION}")


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

    def __init__(self, store: Store, spool: Path, node: str, retention_days: int, prunes: bool = True,
                 delay_seconds: float = 0.0) -> None:
        self.store = store
        self.delay_seconds = delay_seconds  # the servers' import delay: how long a busy node's files may wait
        self.spool = spool
        self.node = node
        self.retention_days = retention_days
        self.host = socket.gethostname().replace(".", "_").replace("-", "_")
        self.claimer = f"{self.host}-{os.getpid()}"
        self._pruned_at = float("-inf") if prunes else float("inf")

    def _candidates(self, woken: bool) -> Iterator[Path]:
        """Files this importer may claim now, its own node's first (unless ``woken``, only
        those at least the delay old), oldest first."""
        hold_seconds = 0.0 if woken else self.delay_seconds
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
                    if not hold_seconds or _age(entry, now) >= hold_seconds:
                        own.append(entry)
                elif _age(entry, now) > ORPHAN_SECONDS + self.delay_seconds:
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

    def run_once(self, woken: bool = True) -> int:
        """Import every file it may claim (its own node's younger than the delay left for
        later, unless ``woken`` by the server), and prune when due; how many hits it
        imported."""
        imported = 0
        for path in self._candidates(woken):
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
        except (EOFError, ValueError, TypeError, struct.error) as exc:  # kept aside, not retried forever
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
                    _count_days(connection, rows)
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
    at every byte the server writes (the server does not write while it is busy), and
    every ``poll_seconds`` what is older than ``delay_seconds`` (the server's own files)
    or orphaned; at end of input (the server stopped or died) it imports what is left
    and exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the server, which stops it
    lowest_priority()
    logging.basicConfig(level=logging.INFO, format="podium usage importer: %(levelname)s %(message)s")
    config = json.loads(sys.stdin.buffer.readline())
    store = Store(config["database_url"])
    importer = Importer(store, Path(config["spool"]), config["node"], config["retention_days"],
                        delay_seconds=config.get("delay_seconds", 0.0))  # absent from an earlier server's
    stdin = sys.stdin.buffer.fileno()
    ending = False
    woken = True  # the server starts it when there is something to import
    # A batch is many small tuples whose creation would start the cyclic collector again
    # and again, walking them all for nothing (they hold no cycles; reference counting
    # frees them). So it runs once after each wake, over what start-up left out.
    gc.freeze()
    gc.disable()
    try:
        while True:
            try:
                importer.run_once(woken or ending)
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
            woken = bool(ready)
            if ready and not os.read(stdin, 65536):
                ending = True
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
