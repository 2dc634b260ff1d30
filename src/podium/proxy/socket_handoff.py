"""Handing a viewer's WebSocket connection over to the local content process serving it.

Through a tunnel every WebSocket message costs the front a read and a write on each
side (about 12 µs per round trip on the core the app shares: the ratio to direct access
stays near 0.6x however little Python the tunnel runs). A content process started by
Podium's runner for an ASGI app listens on a *hand-off socket* beside its app socket
(``podium.apps.runner``, ``Handoff``). Once the router has decided a viewer may open a
WebSocket to that process (:class:`~podium.proxy.decisions.Forward` with
``handoff_path``), the front connects there and sends, in one message, the viewer's TCP
socket itself (``SCM_RIGHTS``) and the upgrade request exactly as it would have forwarded
it (prefix stripped, viewer credentials removed, identity and ``X-Forwarded-*`` headers
added), preceded by the read and connection timeouts; then it forgets the connection.
The content process answers the upgrade on the viewer's socket and carries the session
with no proxy in between; it serves that one request only (anything else the viewer
sends before the switch closes the connection), and enforces the timeouts from the
kernel's counters of the socket.

The front keeps each hand-off's unix connection (a :class:`HandedSession`, one file
descriptor, no bytes) until the content process closes it at the session's end or
exits; then the ``Forward``'s ``on_done`` runs, as when a tunnel closes, so the
scheduler's connection count (idle shutdown) and usage recording see the whole session.
When anything fails before the socket is sent (no socket file, a refused connect), the
front tunnels as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# What precedes the head on a hand-off connection: the head's length, then the read and
# connection timeouts in milliseconds (0: none). podium.apps.runner.HANDOFF_HEADER reads it.
HEADER = struct.Struct("!III")
_MAX_MS = 2**32 - 1


def _ms(seconds: float | None) -> int:
    return min(_MAX_MS, max(0, round((seconds or 0) * 1000)))


class HandedSession:
    """One handed-over session, as the front sees it: the unix connection to the content
    process, which closes when the session ends; then ``on_done`` runs once."""

    __slots__ = ("sock", "on_done", "loop", "sessions", "sending")

    def __init__(
        self,
        sock: socket.socket,
        on_done: Callable[[], None] | None,
        loop: asyncio.AbstractEventLoop,
        sessions: set[HandedSession],
    ) -> None:
        self.sock = sock
        self.on_done = on_done
        self.loop = loop
        self.sessions = sessions
        self.sending: asyncio.Future[None] | None = None
        sessions.add(self)
        loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            if self.sock.recv(256):
                return  # nothing is expected; ignored
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.end()

    def end(self) -> None:
        """The session is over (or the front stops): close and report it done, once."""
        if self.sock.fileno() < 0:
            return
        self.sessions.discard(self)
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        if self.sending is not None:
            self.sending.cancel()
        self.sock.close()
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            try:
                on_done()
            except Exception:
                log.exception("on_done failed")


def hand_off(
    loop: asyncio.AbstractEventLoop,
    client: asyncio.BaseTransport,
    path: str,
    head: bytes,
    read_timeout: float | None,
    connection_timeout: float | None,
    on_done: Callable[[], None] | None,
    sessions: set[HandedSession],
) -> HandedSession | None:
    """Send ``client``'s socket and ``head`` to the hand-off socket at ``path``.

    Returns the session once the socket is sent (the caller then closes its transport,
    which leaves the connection open in the content process), or None when nothing was
    sent and the caller should tunnel instead.
    """
    sock: Any = client.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    message = HEADER.pack(len(head), _ms(read_timeout), _ms(connection_timeout)) + head
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        unix.setblocking(False)
        unix.connect(path)
        sent = socket.send_fds(unix, [message], [sock.fileno()])
    except OSError as exc:
        log.debug("cannot hand a websocket over to %s: %r; tunnelling", path, exc)
        unix.close()
        return None
    session = HandedSession(unix, on_done, loop, sessions)
    if sent < len(message):  # a head larger than the socket's buffer: the rest follows
        session.sending = asyncio.ensure_future(loop.sock_sendall(unix, message[sent:]))
    return session
