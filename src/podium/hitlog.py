"""The hits the usage recorder keeps between two flushes (:mod:`podium.usage`).

The proxy calls ``HitLog.hit`` once for every request it serves for content, so it is
the one piece of usage recording on the request path. Written in Python, the least it
can do (read the clock, keep one tuple) costs the proxy benchmark about 4% of its small
requests/s, above the 3% Podium aims for (bench/README.md). So :data:`HitLog` is the C
class of ``podium/_hitlog.c``, built by ``pip install``: it picks the three headers a
hit keeps, reads the clock and appends the hit to its buffer already serialized, without
creating a Python object (about 3%, most of it the call itself). Where it could not be built (no C compiler), or was built from
a source of another :data:`FORMAT`, :class:`PyHitLog` takes its place: the same class in
Python, at the cost above (the server says so at start).

Both hand on the same bytes: lists of :data:`~podium.usage_import.Hit` tuples in
:mod:`marshal`'s format, each behind its length (:func:`podium.usage_import.read_hits`
reads them in the importer, off the server's event loop). tests/test_hitlog.py checks
that the C class writes what ``marshal.dumps`` does.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from podium import usage_import
from podium.usage_import import Hit

log = logging.getLogger(__name__)

FORMAT = 1  # what take() returns (above); the C class says which it writes
HITS_PER_LIST = 256  # PyHitLog: hits marshalled together: tens of kB, within what malloc reuses
_BUFFER_BYTES = 1024 * 1024  # PyHitLog's buffer of marshalled hits to begin with (it grows as needed)
_SHRINK_ABOVE_BYTES = 16 * 1024 * 1024  # a buffer grown past this, a quarter used, is made smaller
_HEADERS = frozenset((b"user-agent", b"sec-fetch-dest", b"sec-fetch-site", b"upgrade"))  # what hit() reads


class HitLogType(Protocol):
    def hit(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
            content_guid: str, user_guid: str | None, bundle_id: int | None) -> bool:
        """Append one hit (``headers``: the request's, names lower-case); whether the
        request asks for a WebSocket (``Upgrade: websocket``)."""

    def take(self) -> bytes:
        """The hits appended since the last take (``b""`` if none), leaving the log empty."""

    def __len__(self) -> int:
        """How many hits were appended since the last take."""


class PyHitLog:
    """:data:`HitLog` in Python. Each hit is a tuple appended to a list (it holds only
    strings, bytes, numbers and None, so the garbage collector stops tracking it at its
    first collection); every :data:`HITS_PER_LIST` hits the list is marshalled onto a
    buffer kept from one take to the next: memory freed and taken again at every flush
    (2 s of hits marshalled at once, or a new buffer each time) cost the server a page
    fault every few dozen requests, each microseconds long on a virtual machine
    (bench/README.md)."""

    def __init__(self) -> None:
        self._hits: list[Hit] = []  # not marshalled yet
        self._buffer = bytearray(_BUFFER_BYTES)  # marshalled lists of hits, up to _end
        self._end = 0
        self._marshalled = 0  # hits in the buffer

    def hit(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
            content_guid: str, user_guid: str | None, bundle_id: int | None) -> bool:
        agent = dest = site = upgrade = None
        for name, value in headers:  # a plain loop: the cheapest per request
            if name in _HEADERS:
                if name == b"user-agent":
                    agent = value
                elif name == b"sec-fetch-dest":
                    dest = value
                elif name == b"sec-fetch-site":
                    site = value
                else:
                    upgrade = value
        self._hits.append((time.time(), content_guid, user_guid, bundle_id, target, method, agent, dest, site))
        if len(self._hits) >= HITS_PER_LIST:
            self._marshal_hits()
        return upgrade is not None and upgrade.lower() == b"websocket"

    def _marshal_hits(self) -> None:
        data = usage_import.dump_hits(self._hits)
        self._marshalled += len(self._hits)
        self._hits = []
        start = self._end + usage_import.FRAME.size
        end = start + len(data)
        if end > len(self._buffer):
            self._buffer.extend(bytes(max(len(self._buffer), end - self._end)))
        usage_import.FRAME.pack_into(self._buffer, self._end, len(data))
        self._buffer[start:end] = data
        self._end = end

    def take(self) -> bytes:
        if self._hits:
            self._marshal_hits()
        taken = bytes(memoryview(self._buffer)[:self._end])
        used, self._end, self._marshalled = self._end, 0, 0
        if len(self._buffer) > _SHRINK_ABOVE_BYTES and used < len(self._buffer) // 4:  # after a peak
            self._buffer = bytearray(max(2 * used, _BUFFER_BYTES))
        return taken

    def __len__(self) -> int:
        return self._marshalled + len(self._hits)


def _compiled() -> type[HitLogType] | None:
    try:
        from podium import _hitlog
    except ImportError:
        return None
    if _hitlog.FORMAT != FORMAT:
        log.warning("podium._hitlog hands on hits in format %s, not %s: rebuild it (make install, or "
                    "pip install -e .); usage is recorded in Python until then", _hitlog.FORMAT, FORMAT)
        return None
    return _hitlog.HitLog


HitLog: type[HitLogType] = _compiled() or PyHitLog
COMPILED = HitLog is not PyHitLog  # whether hits are recorded by the C class
