"""HTTP/1.1 bytes for the proxy front: the request object, upstream heads, own answers.

Pure functions and one small record; no I/O. Header names are lowercase
throughout (the front lowercases them as it parses).
"""

from __future__ import annotations

import json
from html import escape
from http import HTTPStatus

from podium.proxy.decisions import Forward

# Buffering states of a request body (``Request.state``).
BUFFERING = 0  # not yet sent upstream: body chunks are kept in ``parts``
SENDING = 1  # the upstream exchange is running: body chunks go straight upstream
DISCARD = 2  # the exchange ended before the body did: drop the rest

# Methods a stale pooled connection may be retried with (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# Request headers the head builder looks at: hop-by-hop headers (RFC 9110 §7.6.1) and
# the ones it rewrites. Everything else is copied through unchanged.
_SPECIAL = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
    }
)
_NO_NAMES: frozenset[bytes] = frozenset()
# _SPECIAL with a forward's dropped names, by those names (a few distinct sets in all)
_SPECIAL_WITH: dict[frozenset[bytes], frozenset[bytes]] = {}
_WEBSOCKET_UPGRADE = b"upgrade: websocket\r\nconnection: upgrade"
_HTTP11 = b" HTTP/1.1"
_HTTP10 = b" HTTP/1.0"


class Request:
    """One parsed request head plus the state of its body while it is proxied."""

    __slots__ = (
        "method",
        "target",
        "headers",
        "keep_alive",
        "http11",
        "upgrade",
        "complete",
        "parts",
        "state",
        "chunked",
        "has_body",
        "websocket",
        "head",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http11: bool,
        upgrade: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.keep_alive = keep_alive
        self.http11 = http11
        self.upgrade = upgrade  # the parser saw Upgrade + Connection: upgrade (or CONNECT)
        self.complete = False  # the whole request (head and body) has been read
        self.parts: list[bytes] = []  # body chunks read before the exchange started
        self.state = BUFFERING
        self.chunked = False
        self.has_body = False
        self.websocket = False
        self.head = b""  # the head sent upstream, kept for one retry

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def wants_json(self) -> bool:
        accept = self.header(b"accept")
        return accept is not None and b"application/json" in accept


def forwarded_for(client_ip: bytes) -> bytes:
    """The X-Forwarded-For/Proto lines for a client (computed once per connection)."""
    return b"x-forwarded-for: " + client_ip + b"\r\nx-forwarded-proto: http"


def upstream_head(
    req: Request,
    target: bytes,
    client_ip: bytes,
    forwarded: bytes,
    forward: Forward | None,
    trust_forwarded: bool,
) -> bytes:
    """The request head to send upstream; also sets ``req.chunked/has_body/websocket``.

    Hop-by-hop headers are dropped (``upgrade``/``connection`` are re-added for a
    websocket upgrade, ``transfer-encoding`` is kept for a chunked body), the
    forward's ``remove_headers`` and the names in its ``set_headers`` are dropped,
    then ``X-Forwarded-For/Proto/Host`` and the ``set_headers`` are added. With
    ``trust_forwarded`` the client's X-Forwarded-* values are kept (the front sits
    behind another proxy); otherwise they are replaced, so apps that trust them
    (uvicorn with ``forwarded_allow_ips="*"``) cannot be lied to. ``forwarded`` is
    :func:`forwarded_for` of ``client_ip``.
    """
    if forward is None or not (forward.set_headers or forward.remove_headers):
        special = _SPECIAL
        dropped = _NO_NAMES
        added: list[tuple[bytes, bytes]] = []
    else:
        added = forward.set_headers
        dropped = forward.remove_headers
        for name, _ in added:
            if name not in dropped:
                dropped = dropped | {name}
        # The content router drops the same names from every request: the union is cached.
        special = _SPECIAL_WITH.get(dropped)  # type: ignore[assignment]
        if special is None:
            special = _SPECIAL | dropped
            if len(_SPECIAL_WITH) < 64:
                _SPECIAL_WITH[dropped] = special
    # Lines joined with CRLF at the end; each header is one b": ".join((name, value)).
    lines = [req.method + b" " + target + (_HTTP11 if req.http11 else _HTTP10)]
    append = lines.append
    host = xff = xfp = xfh = upgrade = None
    for header in req.headers:
        name = header[0]
        if name in special:
            if name in dropped:
                continue
            if name == b"host":
                host = header[1]
            elif name == b"content-length":
                req.has_body = header[1].strip() != b"0"
            elif name == b"transfer-encoding":
                # llhttp only accepts a request whose last coding is chunked; the body
                # is re-chunked as it streams, so the original value stays true.
                req.chunked = req.has_body = True
            else:
                if name == b"upgrade":
                    upgrade = header[1]
                elif name == b"x-forwarded-for":
                    xff = header[1]
                elif name == b"x-forwarded-proto":
                    xfp = header[1]
                elif name == b"x-forwarded-host":
                    xfh = header[1]
                continue
        append(b": ".join(header))
    if req.upgrade and upgrade is not None and upgrade.strip().lower() == b"websocket":
        req.websocket = True
        append(_WEBSOCKET_UPGRADE)
    if not (trust_forwarded or dropped):
        append(forwarded)
        if host is not None:
            append(b"x-forwarded-host: " + host)
    else:
        if b"x-forwarded-for" not in dropped:
            append(b"x-forwarded-for: " + (xff + b", " + client_ip if trust_forwarded and xff else client_ip))
        if b"x-forwarded-proto" not in dropped:
            append(b"x-forwarded-proto: " + (xfp if trust_forwarded and xfp else b"http"))
        forwarded_host = xfh if trust_forwarded and xfh else host
        if forwarded_host is not None and b"x-forwarded-host" not in dropped:
            append(b"x-forwarded-host: " + forwarded_host)
        for header in added:
            append(b": ".join(header))
    append(b"\r\n")
    return b"\r\n".join(lines)


def chunk(body: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(body), body)


LAST_CHUNK = b"0\r\n\r\n"

_DROPPED_IN_ANSWERS = frozenset({b"content-length", b"connection", b"transfer-encoding"})


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    http11: bool = True,
    head_only: bool = False,
) -> bytes:
    """A complete response written by the front itself."""
    parts = [b"HTTP/1.1 %d %b\r\n" % (status, _reason(status))]
    for name, value in headers:
        if name.lower() not in _DROPPED_IN_ANSWERS:
            parts.append(b"%b: %b\r\n" % (name, value))
    if status in (204, 304) or status < 200:
        body = b""  # these carry neither a body nor its length (RFC 9110 §8.6)
    else:
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    elif not http11:
        parts.append(b"connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


# Messages of the front's own error answers; the JSON form uses Connect's shape.
MESSAGES = {
    400: ("Bad request", "The request could not be understood."),
    404: ("Not found", "There is nothing at this address."),
    405: ("Method not allowed", "This server does not accept that method."),
    431: ("Request header fields too large", "The request head is too large."),
    500: ("Internal error", "An internal error occurred; the server log has the details."),
    502: ("The content is not responding", "The content is not responding; try again shortly."),
    503: ("Service unavailable", "The server is shutting down; try again shortly."),
    504: ("The content took too long to respond", "The content took too long to respond."),
}
# Connect error code carried in JSON answers (reference/connect-api.md §1: 1 = internal failure).
_JSON_CODE = 1


def error_body(status: int, wants_json: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of one of the front's own error answers."""
    title, text = MESSAGES.get(status, MESSAGES[500])
    if wants_json:
        body = json.dumps({"code": _JSON_CODE, "error": text, "payload": None}).encode()
        return [(b"content-type", b"application/json")], body
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} - Podium</title></head><body style='font-family:sans-serif;"
        f"max-width:40em;margin:4em auto'><h1>{escape(title)}</h1><p>{escape(text)}</p>"
        "</body></html>"
    )
    return [(b"content-type", b"text/html; charset=utf-8")], page.encode()
