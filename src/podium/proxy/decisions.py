"""What the router tells the proxy front to do with one request.

The front (``podium.proxy.front``) parses a request head and, for targets under
its prefixes, asks a :class:`Router` for a decision: forward the request to an
upstream address (:class:`Forward`), answer it directly (:class:`Respond`), serve a
file (:class:`ServeFile`), or hand it unchanged to the internal app (:data:`PASS_TO_APP`).

Lifecycle of a :class:`Forward`: the front calls ``on_done`` exactly once for
every ``Forward`` the router returns, when that exchange ends for any reason:
the response completed, the upstream failed (502/504), the client went away,
a timeout fired, the websocket tunnel closed, or the front shut down. A
scheduler can therefore count a connection when it returns a ``Forward`` and
release it in ``on_done``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from podium.proxy.files import FileCache, FileEntry


@dataclass(slots=True)
class Forward:
    """Forward the request to ``host:port`` (or the unix socket ``unix_path``) with
    ``target`` as its request-target."""

    host: str
    port: int
    # request-target sent upstream (path + query); the router may strip a prefix
    target: bytes
    # (lowercase name, value) added; an existing header with the same name is removed first
    set_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # lowercase names dropped from the request (e.g. b"authorization")
    remove_headers: frozenset[bytes] = frozenset()
    # called exactly once when this request's exchange ends (see the module docstring)
    on_done: Callable[[], None] | None = None
    # max seconds with no bytes from the client once forwarding (None/0 = no limit)
    read_timeout_seconds: float | None = None
    # max seconds with no bytes in either direction (None/0 = no limit)
    connection_timeout_seconds: float | None = None
    # when set, connect to this unix socket instead of host:port (a local process
    # listening on a unix socket costs the front and the app fewer cycles than loopback TCP)
    unix_path: str | None = None
    # when set, a WebSocket upgrade hands the viewer's connection itself to the process
    # listening on this unix socket instead of tunnelling it (podium.proxy.socket_handoff)
    handoff_path: str | None = None


@dataclass(slots=True)
class Respond:
    """Answer the request from the front itself (a 503 page, a redirect, ...)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class ServeFile:
    """Answer with a file the router may serve (a static bundle's, a rendering's),
    from the front itself (:mod:`podium.proxy.files`); ``headers`` are added to it."""

    entry: FileEntry
    files: FileCache
    headers: bytes = b""  # raw header lines, each ending in CRLF


class PassToApp:
    """Forward the request to the internal app: unchanged (use :data:`PASS_TO_APP`), or
    with ``target`` as its request-target, having come by the vanity path ``vanity``
    (the app is told in ``X-Podium-Vanity``, a header only the front sets)."""

    __slots__ = ("target", "vanity")

    def __init__(self, target: bytes | None = None, vanity: bytes | None = None) -> None:
        self.target = target
        self.vanity = vanity

    def __repr__(self) -> str:
        return "PASS_TO_APP" if self.target is None else f"PassToApp({self.target!r}, {self.vanity!r})"


PASS_TO_APP: Final = PassToApp()

Decision = Forward | Respond | PassToApp | ServeFile


class Router(Protocol):
    """Decides where a request under the front's prefixes goes.

    ``headers`` are (lowercase name, value) pairs in the order received; ``client``
    is the peer address. ``route`` should not block: when it can answer from
    memory without awaiting, the front runs it inline without creating a task.
    """

    async def route(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
    ) -> Decision: ...
