"""Static files served by the proxy front itself: resolution, validators, gzip, sending.

Static bundles and rendered output are files on disk that never change once written
(a bundle is immutable; a rendering's output directory is written once, then served).
The content router decides access from its caches and, for a file it may serve, hands
the front a :class:`FileEntry` from a :class:`FileCache`; the front answers the request
on the event loop with no database query and no thread-pool hop:

- **Resolution** happens once per (root, path): symlinks are resolved and anything
  outside the root is refused (:func:`safe_file`), a directory means its
  ``index.html``; the entry keeps the size, type and validators.
- **Validators.** The ETag is the one the app has always sent (a digest of the bundle
  or rendering id and the path: bundle files carry the archive's mtimes, often 0, so
  mtime and size could match across bundles and a rollback would show a stale page).
  ``If-None-Match`` gives a 304. ``Last-Modified`` is sent as before (the file's mtime),
  but ``If-Modified-Since`` alone is not honoured, for the same reason.
- **Bodies.** Files up to :data:`BODY_MAX_BYTES` are kept in memory (within a byte
  budget, least recently used dropped first) and written in one call; larger ones are
  sent with ``os.sendfile`` whenever the client's write buffer is empty, else read
  and written in chunks with back-pressure (:class:`FileSender`).
- **gzip** for text types between :data:`GZIP_MIN_BYTES` and :data:`GZIP_MAX_BYTES`,
  compressed once and kept (``Vary: Accept-Encoding``; the gzip variant has its own ETag).
"""

from __future__ import annotations

import asyncio
import gzip
import mimetypes
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from email.utils import formatdate
from hashlib import md5
from pathlib import Path

# Files up to this size are kept in memory once read (bigger ones are sent from disk).
BODY_MAX_BYTES = 256 * 1024
# gzip is worth it from about one packet up; beyond the upper bound it costs the loop too long.
GZIP_MIN_BYTES = 512
GZIP_MAX_BYTES = 2 * 1024 * 1024
_GZIP_LEVEL = 6
# Chunks read and written when sendfile cannot be used (the write buffer is not empty).
_CHUNK = 256 * 1024
_SENDFILE_MAX = 8 * 1024 * 1024
_COMPRESSIBLE = (
    b"text/", b"application/javascript", b"application/json", b"application/xml",
    b"image/svg+xml", b"application/wasm", b"application/manifest+json", b"application/x-ipynb+json",
)


def safe_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names under ``root``, or None when it escapes or is absent.

    Symlinks are resolved first, so a link pointing outside ``root`` is refused.
    Directories resolve to their ``index.html``.
    """
    root = root.resolve()
    target = (root / relative.lstrip("/")).resolve()
    if target != root and root not in target.parents:
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def open_file(path: str) -> int:
    """A read-only descriptor of ``path`` as resolved earlier: ``O_NOFOLLOW`` refuses it if
    it has become a symlink since (the resolution checked where links pointed then)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _read(path: str, limit: int) -> bytes:
    fd = open_file(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(limit)
    finally:
        os.close(fd)


def etag_for(tag: str, target: Path) -> str:
    """The ETag value (quoted) of ``target`` served from the bundle or rendering ``tag``
    (``"{bundle id}"`` or ``"r{rendering id}"``): the same the app's routes send."""
    return '"' + md5(f"{tag}:{target}".encode(), usedforsecurity=False).hexdigest() + '"'


def content_type(path: str) -> bytes:
    """The Content-Type for ``path``, as Starlette's ``FileResponse`` would send it."""
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if kind.startswith("text/"):
        kind += "; charset=utf-8"
    return kind.encode("latin-1")


class FileEntry:
    """One servable file: where it is, its headers, and its bytes once read."""

    __slots__ = ("path", "size", "etag", "gz_etag", "headers", "compressible", "body", "gz")

    def __init__(self, path: str, size: int, mtime: float, etag: str) -> None:
        self.path = path
        self.size = size
        self.etag = etag.encode()
        self.gz_etag = self.etag[:-1] + b'-gz"'
        kind = content_type(path)
        self.compressible = kind.startswith(_COMPRESSIBLE) and GZIP_MIN_BYTES <= size <= GZIP_MAX_BYTES
        # Headers every answer for this file carries (etag and length are added per variant).
        self.headers = (
            b"content-type: " + kind + b"\r\naccept-ranges: bytes\r\ncache-control: no-cache\r\n"
            b"last-modified: " + formatdate(mtime, usegmt=True).encode() + b"\r\n"
            + (b"vary: Accept-Encoding\r\n" if self.compressible else b"")
        )
        self.body: bytes | None = None
        self.gz: bytes | None = None


class FileCache:
    """Resolved files by (root, relative path), with their bodies within a byte budget.

    Roots are a bundle's or a rendering's directory, whose files never change; the
    router drops a content item's entries when that item changes (:meth:`forget`).
    """

    def __init__(self, budget_bytes: int = 64 * 1024 * 1024, max_entries: int = 20_000) -> None:
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self.used_bytes = 0
        self._entries: OrderedDict[tuple[str, str], FileEntry] = OrderedDict()

    def lookup(self, root: str, relative: str, tag: str) -> FileEntry | None:
        """The entry for ``relative`` under ``root`` (None: no such file, or outside the root)."""
        key = (root, relative)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        target = safe_file(Path(root), relative)
        if target is None:
            return None
        try:
            info = target.stat()
        except OSError:
            return None
        entry = FileEntry(str(target), info.st_size, info.st_mtime, etag_for(tag, target))
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._evict()
        return entry

    def body(self, entry: FileEntry) -> bytes | None:
        """The file's bytes when small enough to keep (read once), else None."""
        if entry.body is None and entry.size <= BODY_MAX_BYTES:
            try:
                data = _read(entry.path, BODY_MAX_BYTES + 1)
            except OSError:
                return None
            if len(data) != entry.size:
                return None  # changed under us: do not keep it
            entry.body = data
            self._charge(len(data))
        return entry.body

    def gzipped(self, entry: FileEntry) -> bytes | None:
        """The gzip variant of a compressible file (compressed once), else None."""
        if entry.gz is None and entry.compressible:
            data = self.body(entry)
            if data is None:
                try:
                    data = _read(entry.path, GZIP_MAX_BYTES + 1)
                except OSError:
                    return None
                if len(data) != entry.size:
                    return None
            packed = gzip.compress(data, _GZIP_LEVEL, mtime=0)
            if len(packed) >= entry.size:
                entry.compressible = False
                return None
            entry.gz = packed
            self._charge(len(packed))
        return entry.gz

    def forget(self, roots: Callable[[str], bool] | None = None) -> None:
        """Drop the entries whose root ``roots`` accepts (every entry without it)."""
        if roots is None:
            self._entries.clear()
            self.used_bytes = 0
            return
        for key in [key for key in list(self._entries) if roots(key[0])]:
            self._drop(key)

    def _charge(self, size: int) -> None:
        self.used_bytes += size
        if self.used_bytes > self.budget_bytes:
            self._evict()

    def _evict(self) -> None:
        while self._entries and (
            self.used_bytes > self.budget_bytes or len(self._entries) > self.max_entries
        ):
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.used_bytes -= len(entry.body or b"") + len(entry.gz or b"")


def accepts_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's Accept-Encoding allows gzip (``gzip;q=0`` refuses it)."""
    for name, value in headers:
        if name == b"accept-encoding" and b"gzip" in value:
            for part in value.lower().split(b","):
                coding, _, params = part.strip().partition(b";")
                if coding.strip() == b"gzip":
                    params = params.replace(b" ", b"")
                    return not (params.startswith(b"q=0") and params.strip(b"q=0.") == b"")
    return False


def not_modified(headers: list[tuple[bytes, bytes]], etags: tuple[bytes, ...]) -> bool:
    """Whether If-None-Match names one of ``etags`` (weak comparison, RFC 9110 §13.1.2)."""
    for name, value in headers:
        if name == b"if-none-match":
            if value.strip() == b"*":
                return True
            for tag in value.split(b","):
                tag = tag.strip()
                if tag.startswith(b"W/"):
                    tag = tag[2:]
                if tag in etags:
                    return True
    return False


_date: tuple[int, bytes] = (0, b"")


def date_header() -> bytes:
    """``date: ...\\r\\n`` for now (formatted once a second)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date[1]


class FileSender:
    """Sends ``count`` bytes of an open file to a client transport, then calls ``on_end``.

    While the transport's write buffer is empty the bytes go by ``os.sendfile`` on its
    socket (nothing queued can be overtaken); otherwise a chunk is read and written
    through the transport, whose ``pause_writing``/``resume_writing`` (reported here as
    :meth:`pause` and :meth:`resume`) pace the rest. ``on_end(True)`` once all is sent,
    ``on_end(False)`` when the file or the socket failed (the caller drops the connection).
    """

    __slots__ = ("transport", "fd", "offset", "remaining", "on_end", "sock_fd", "paused", "busy")

    def __init__(
        self, transport: asyncio.Transport, fd: int, offset: int, count: int, on_end: Callable[[bool], None]
    ) -> None:
        self.transport = transport
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.on_end = on_end
        sock = transport.get_extra_info("socket")
        self.sock_fd: int | None = sock.fileno() if sock is not None else None
        self.paused = False
        self.busy = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.run()

    def run(self) -> None:
        if self.busy:  # a write inside run() reported pause and resume at once
            return
        self.busy = True
        try:
            while self.remaining > 0 and not self.paused:
                transport = self.transport
                if transport.is_closing():
                    return self._finish(False)
                if self.sock_fd is not None and transport.get_write_buffer_size() == 0:
                    try:
                        sent = os.sendfile(self.sock_fd, self.fd, self.offset, min(self.remaining, _SENDFILE_MAX))
                    except BlockingIOError:
                        sent = 0
                    except OSError:
                        self.sock_fd = None  # not a socket sendfile can write to: read and write
                        sent = 0
                    if sent > 0:
                        self.offset += sent
                        self.remaining -= sent
                        continue
                try:
                    data = os.pread(self.fd, min(self.remaining, _CHUNK), self.offset)
                except OSError:
                    return self._finish(False)
                if not data:  # the file shrank
                    return self._finish(False)
                self.offset += len(data)
                self.remaining -= len(data)
                transport.write(data)
            if self.remaining == 0:
                self._finish(True)
        finally:
            self.busy = False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _finish(self, ok: bool) -> None:
        self.close()
        self.remaining = 0
        self.on_end(ok)
