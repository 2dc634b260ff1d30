"""The hit log: the C class (podium/_hitlog.c) hands on what marshal writes and what the
Python class hands on, for every kind of field; and the server falls back to Python when
the C class is missing or of another format."""

from __future__ import annotations

import logging
import marshal
import time
from typing import Any

import pytest

from podium import _hitlog, hitlog, usage_import
from podium.hitlog import PyHitLog

GUID = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
BROWSER = [(b"host", b"x"), (b"User-Agent", b"not picked: names are lower case"), (b"user-agent", b"Firefox"),
           (b"sec-fetch-dest", b"document"), (b"sec-fetch-site", b"same-origin"),
           (b"authorization", b"Key sekrit"), (b"cookie", b"session=sekrit")]
# (method, target, headers, content guid, user guid, bundle id)
CASES: list[tuple[Any, ...]] = [
    (b"GET", b"/content/x/", [], GUID, None, None),
    (b"GET", b"/content/x/page?a=1&b=%C3%A9", BROWSER, GUID, "u1", 3),
    (b"POST", bytes(range(256)), [(b"user-agent", "café ☃".encode())], GUID, "\u00fcser \u2603", 0),
    (b"GET", b"", [(b"user-agent", b""), (b"sec-fetch-dest", b"")], GUID, "", -1),
    (b"GET", b"/t", [(b"user-agent", b"first"), (b"user-agent", b"last wins")], GUID, None, 2**31 - 1),
    (b"GET", b"/t", [(b"user-agent", bytearray(b"a bytearray"))], GUID, None, 2**31),
    (b"HEAD", b"/t", [(b"sec-fetch-site", memoryview(b"a view"))], GUID, None, -(2**31)),
    (b"GET", b"/t", ((b"user-agent", b"headers in a tuple"),), GUID, None, -(2**31) - 1),
    (b"GET", b"/t", [[b"user-agent", b"pairs as lists"]], GUID, None, 5),
    (b"GET", b"/t", [], GUID, None, 2**62 + 12345),
    (b"GET", b"/t", [], GUID, None, 2**63 - 1),
    (b"GET", b"/t", [], GUID, None, -(2**63)),
    (b"GET", b"/" + b"x" * 70_000, [(b"user-agent", b"y" * 300)], GUID, None, 1),
]
UPGRADES = {b"websocket": True, b"WebSocket": True, b"WEBSOCKET": True, b"websocket ": False, b"h2c": False,
            b"": False}


def _log_all(log: Any, cases: list[tuple[Any, ...]]) -> tuple[list[bool], bytes]:
    return [log.hit(*case) for case in cases], log.take()


def _without_times(hits: list[usage_import.Hit]) -> list[tuple[Any, ...]]:
    return [hit[1:] for hit in hits]


def test_the_c_hit_log_is_built() -> None:
    # make install builds it (it needs a C compiler and Python's headers); without it the
    # server records usage in Python, which costs the proxy more (podium.hitlog).
    assert hitlog.COMPILED and hitlog.HitLog is _hitlog.HitLog


def test_the_c_hit_log_hands_on_what_marshal_writes_and_the_python_one_does() -> None:
    before = time.time()
    c_upgrades, c_bytes = _log_all(_hitlog.HitLog(), CASES)
    after = time.time()
    py_upgrades, py_bytes = _log_all(PyHitLog(), CASES)
    c_hits = usage_import.read_hits(c_bytes)
    # One list of every hit, as FRAME.pack(len(data)) + marshal.dumps(hits, 2) writes it.
    data = marshal.dumps(c_hits, 2)
    assert c_bytes == usage_import.FRAME.pack(len(data)) + data
    assert all(before <= hit[0] <= after for hit in c_hits)
    assert _without_times(c_hits) == _without_times(usage_import.read_hits(py_bytes))
    assert c_hits[1][1:] == (GUID, "u1", 3, b"/content/x/page?a=1&b=%C3%A9", b"GET", b"Firefox", b"document",
                             b"same-origin")  # the request's credentials are not kept
    assert c_hits[5][6] == b"a bytearray" and c_hits[6][8] == b"a view"
    assert c_hits[7][6] == b"headers in a tuple" and c_hits[8][6] == b"pairs as lists"
    assert c_upgrades == py_upgrades == [False] * len(CASES)


@pytest.mark.parametrize("log_class", [_hitlog.HitLog, PyHitLog])
def test_a_hit_log_tells_websockets_apart_and_empties_on_take(log_class: Any) -> None:
    log = log_class()
    assert len(log) == 0 and log.take() == b""
    for value, websocket in UPGRADES.items():
        assert log.hit(b"GET", b"/ws", [(b"upgrade", value)], GUID, None, None) is websocket, value
    assert len(log) == len(UPGRADES)
    assert len(usage_import.read_hits(log.take())) == len(UPGRADES)
    assert len(log) == 0 and log.take() == b""
    log.hit(b"GET", b"/again", [], GUID, None, None)
    assert [hit[4] for hit in usage_import.read_hits(log.take())] == [b"/again"]


def _frames(data: bytes) -> list[int]:
    """The number of hits in each marshalled list of ``data``."""
    counts, at = [], 0
    while at < len(data):
        (size,) = usage_import.FRAME.unpack_from(data, at)
        assert data[at + 4:at + 5] == b"["
        counts.append(int.from_bytes(data[at + 5:at + 9], "little"))
        at += 4 + size
    assert at == len(data)
    return counts


def test_the_c_hit_log_grows_and_shrinks_again_after_a_peak() -> None:
    log = _hitlog.HitLog()
    target = b"/content/x/" + b"p" * 1000
    for index in range(70_000):  # about 77 MB: past the 1 MB to begin with, 16 MB, and a list's 64 MiB
        log.hit(b"GET", target, [(b"user-agent", str(index).encode())], GUID, None, index)
    data = log.take()
    frames = _frames(data)
    assert len(frames) == 2 and sum(frames) == 70_000, frames
    peak = usage_import.read_hits(data)
    assert [(hit[3], hit[6]) for hit in peak[::23333]] == [(i, str(i).encode()) for i in (0, 23333, 46666, 69999)]
    log.hit(b"GET", b"/after", [], GUID, None, None)  # into the buffer made smaller
    assert [hit[4] for hit in usage_import.read_hits(log.take())] == [b"/after"]


def test_the_c_hit_log_refuses_what_is_not_a_hit() -> None:
    log = _hitlog.HitLog()
    with pytest.raises(TypeError, match="6 arguments"):
        log.hit(b"GET", b"/", [], GUID, None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="headers must be a list or a tuple"):
        log.hit(b"GET", b"/", {(b"user-agent", b"x")}, GUID, None, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes, str or None, not int"):
        log.hit(b"GET", b"/", [], 7, None, None)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        log.hit(b"GET", b"/", [], GUID, None, 2**63)
    with pytest.raises(ValueError, match="more than 64 MiB"):
        log.hit(b"GET", b"/" * (65 * 1024 * 1024), [], GUID, None, None)
    with pytest.raises(TypeError, match="not int"):  # a header's value that is not bytes
        log.hit(b"GET", b"/", [(b"user-agent", 5)], GUID, None, None)  # type: ignore[list-item]
    assert len(log) == 0 and log.take() == b""  # nothing half written
    # A pair that is not two items, or a name that is not bytes, is not a header it keeps.
    log.hit(b"GET", b"/", [(b"user-agent",), (b"user-agent", b"a", b"b"), ("user-agent", b"str name")],
            GUID, None, None)  # type: ignore[list-item]
    assert usage_import.read_hits(log.take())[0][6] is None


def test_a_hit_log_of_another_format_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_hitlog, "FORMAT", hitlog.FORMAT + 1)
    with caplog.at_level(logging.WARNING, logger="podium.hitlog"):
        assert hitlog._compiled() is None
    assert "rebuild it (make install" in caplog.text
    monkeypatch.undo()
    assert hitlog._compiled() is _hitlog.HitLog
