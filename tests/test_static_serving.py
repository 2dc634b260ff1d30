"""Static content served by the proxy front itself (podium.proxy.files), through a real server:
many readers at once, changes that take effect at once, validators, gzip, and the refusals."""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from tests.conftest import RunningServer
from tests.helpers import deploy, static_bundle, tar_gz

from podium.proxy.files import BODY_MAX_BYTES

_PAGE = "<!doctype html><h1>Quarterly report</h1>" + "<p>numbers and more numbers</p>" * 100


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def _item(server: RunningServer, key: str, name: str, access_type: str, archive: bytes) -> dict[str, Any]:
    item = server.api(key).post(_api(server, "v1/content"), json={"name": name, "access_type": access_type}).json()
    _, task = deploy(server, key, item["guid"], archive)
    assert task["code"] == 0, task
    return item


async def _fetch_all(url: str, count: int) -> list[tuple[int, bytes]]:
    """``count`` GETs of ``url``, each on its own connection, all sent before any answer is read."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    request = (
        f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    ).encode()
    connections = await asyncio.gather(
        *(asyncio.open_connection(parts.hostname, parts.port) for _ in range(count))
    )
    for _, writer in connections:
        writer.write(request)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes]:
        raw = await asyncio.wait_for(reader.read(), 60)
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    return list(await asyncio.gather(*(answer(r, w) for r, w in connections)))


def test_static_serving_answers_200_concurrent_requests(server: RunningServer) -> None:
    key = server.user_key("static_publisher", "publisher")
    item = _item(server, key, "busy-report", "all", static_bundle({"index.html": _PAGE}))
    answers = asyncio.run(_fetch_all(f"{server.content_url}/content/{item['guid']}/", 200))
    assert len(answers) == 200
    assert all(status == 200 and body == _PAGE.encode() for status, body in answers)
    assert "QueuePool" not in server.log() and "TimeoutError" not in server.log()


def test_static_serving_permission_setting_and_redeploy_take_effect_at_once(server: RunningServer) -> None:
    owner = server.user_key("static_owner", "publisher")
    reader = server.user_key("static_reader", "viewer")
    reader_guid = server.api(reader).get(_api(server, "v1/user")).json()["guid"]
    item = _item(server, owner, "private-report", "acl", static_bundle({"index.html": "first version"}))
    page = f"{server.content_url}/content/{item['guid']}/"
    as_reader, as_owner = server.api(reader), server.api(owner)
    assert as_reader.get(page).status_code == 403
    assert requests.get(page).status_code == 401
    # Each change is seen by the very next request: nothing waits for a cache to expire.
    for _ in range(3):
        granted = as_owner.post(
            _api(server, f"v1/content/{item['guid']}/permissions"),
            json={"principal_guid": reader_guid, "principal_type": "user", "role": "viewer"},
        )
        assert granted.status_code == 200, granted.text
        assert as_reader.get(page).text == "first version"
        revoked = as_owner.delete(_api(server, f"v1/content/{item['guid']}/permissions/{granted.json()['id']}"))
        assert revoked.status_code == 204
        assert as_reader.get(page).status_code == 403
    settings = _api(server, f"v1/content/{item['guid']}")
    assert as_owner.patch(settings, json={"access_type": "all"}).status_code == 200
    assert requests.get(page).text == "first version"
    _, task = deploy(server, owner, item["guid"], static_bundle({"index.html": "second version"}))
    assert task["code"] == 0
    assert requests.get(page).text == "second version"
    assert as_owner.patch(settings, json={"access_type": "logged_in"}).status_code == 200
    assert requests.get(page).status_code == 401
    assert as_reader.get(page).text == "second version"
    assert as_owner.delete(settings).status_code == 204
    assert as_reader.get(page).status_code == 404


def test_static_serving_validators_gzip_head_and_large_files(server: RunningServer) -> None:
    key = server.user_key("static_publisher", "publisher")
    large = os.urandom(3 * 1024 * 1024 + 17)  # beyond what is kept in memory: sent from disk
    archive = tar_gz({
        "index.html": _PAGE,
        "data.bin": large,
        "manifest.json": '{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}}',
    })
    item = _item(server, key, "validated-report", "all", archive)
    page = f"{server.content_url}/content/{item['guid']}/"
    plain = requests.get(page, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.text == _PAGE
    assert "content-encoding" not in plain.headers
    assert plain.headers["content-type"] == "text/html; charset=utf-8"
    assert plain.headers["cache-control"] == "no-cache" and plain.headers["last-modified"]
    etag = plain.headers["etag"]
    again = requests.get(page, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # gzip for text, with its own validator; the client's cached copy of either variant counts.
    packed = requests.get(page, headers={"Accept-Encoding": "gzip"}, stream=True)
    raw = packed.raw.read(decode_content=False)
    assert packed.headers["content-encoding"] == "gzip" and gzip.decompress(raw).decode() == _PAGE
    assert int(packed.headers["content-length"]) == len(raw) < len(_PAGE)
    assert packed.headers["vary"] == "Accept-Encoding" and packed.headers["etag"] != etag
    assert requests.get(page, headers={"If-None-Match": f'W/{packed.headers["etag"]}'}).status_code == 304
    assert requests.get(page, headers={"Accept-Encoding": "gzip;q=0"}).headers.get("content-encoding") is None
    head = requests.head(page, headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(_PAGE.encode()))
    # A large file comes whole (sendfile), as does a range of it (answered by the app).
    assert requests.get(f"{page}data.bin").content == large
    part = requests.get(f"{page}data.bin", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == large[10:20]
    # Nothing outside the bundle: no traversal, no symlink out of it.
    assert requests.get(f"{page}..%2F..%2F..%2Fdb%2Fpodium.db").status_code == 404
    assert requests.get(f"{page}%2e%2e/%2e%2e/secret.key").status_code == 404
    bundle_dirs = list((server.data_dir / "apps").glob(f"*/{_bundle_id(server, key, item)}"))
    assert len(bundle_dirs) == 1
    outside = server.data_dir.parent / "outside.txt"
    outside.write_text("not for viewers")
    (bundle_dirs[0] / "link.txt").symlink_to(outside)
    assert requests.get(f"{page}link.txt").status_code == 404
    assert requests.get(f"{page}missing.html").status_code == 404
    assert requests.post(page).status_code in (404, 405)  # the app answers other methods, as before
    # On the dashboard origin, API-key clients are served under a CSP sandbox.
    keyed = server.api(key).get(f"{server.url}/content/{item['guid']}/")
    assert keyed.text == _PAGE and keyed.headers["content-security-policy"] == "sandbox"
    assert "content-security-policy" not in plain.headers


def _bundle_id(server: RunningServer, key: str, item: dict[str, Any]) -> str:
    content = server.api(key).get(_api(server, f"v1/content/{item['guid']}")).json()
    return str(content["bundle_id"])


def test_static_serving_keeps_a_symlink_inside_the_bundle(server: RunningServer) -> None:
    key = server.user_key("static_publisher", "publisher")
    item = _item(server, key, "linked-report", "all", static_bundle({"index.html": "home", "a.html": "page a"}))
    bundle_dir = next((server.data_dir / "apps").glob(f"*/{_bundle_id(server, key, item)}"))
    (bundle_dir / "b.html").symlink_to(Path("a.html"))
    assert requests.get(f"{server.content_url}/content/{item['guid']}/b.html").text == "page a"


def _read_response(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes, bytes]:
    """One response (head, body by Content-Length) from ``sock``; returns it and what follows."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "closed before a head"
        buffer += chunk
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
    while len(buffer) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the end of a body"
        buffer += chunk
    return head, buffer[:length], buffer[length:]


def test_static_serving_pipelined_requests_and_a_slow_reader_get_every_byte(server: RunningServer) -> None:
    key = server.user_key("static_publisher", "publisher")
    large = os.urandom(4 * 1024 * 1024 + 5)
    archive = tar_gz({
        "index.html": _PAGE,
        "data.bin": large,
        "manifest.json": '{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}}',
    })
    item = _item(server, key, "pipelined-report", "all", archive)
    parts = urlsplit(server.content_url)
    assert parts.hostname is not None and parts.port is not None
    base = f"/content/{item['guid']}/"
    request = f"GET {base}{{}} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        # A small receive buffer and slow reads: the server must wait for the reader
        # (sendfile meets a full socket, then the write buffer's back-pressure).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.sendall("".join(request.format(p) for p in ("data.bin", "", "data.bin", "missing.html")).encode())
        time.sleep(1.0)
        head, body, rest = _read_response(sock, b"")
        assert head.startswith(b"HTTP/1.1 200") and body == large
        head, body, rest = _read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and body == _PAGE.encode()
        head, body, rest = _read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 200") and body == large
        head, body, rest = _read_response(sock, rest)
        assert head.startswith(b"HTTP/1.1 404")
    # A reader that goes away mid-file leaves the server serving the next one.
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.sendall(request.format("data.bin").encode())
        sock.recv(1000)
    assert requests.get(f"{server.content_url}{base}data.bin").content == large


def test_static_serving_refuses_a_served_file_replaced_by_a_symlink(server: RunningServer) -> None:
    key = server.user_key("static_publisher", "publisher")
    large = os.urandom(BODY_MAX_BYTES + 1)  # not kept in memory: opened for each request
    item = _item(server, key, "swapped-report", "all", tar_gz({
        "index.html": "home", "data.bin": large,
        "manifest.json": '{"version": 1, "metadata": {"appmode": "static", "primary_html": "index.html"}}',
    }))
    url = f"{server.content_url}/content/{item['guid']}/data.bin"
    assert requests.get(url).content == large  # resolved and cached
    secret = server.data_dir.parent / "swapped-secret.txt"
    secret.write_text("not for viewers")
    served = next((server.data_dir / "apps").glob(f"*/{_bundle_id(server, key, item)}")) / "data.bin"
    served.unlink()
    served.symlink_to(secret)
    answer = requests.get(url)
    assert answer.status_code == 404 and b"not for viewers" not in answer.content
