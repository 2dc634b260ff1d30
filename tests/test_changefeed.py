"""The change feed between nodes over PostgreSQL LISTEN/NOTIFY (podium.changefeed)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import create_engine, text
from tests.conftest import POSTGRES_URL, require_postgres

from podium.changefeed import ChangeFeed, conninfo
from podium.changes import Changes

pytestmark = pytest.mark.postgres


def test_changefeed_only_for_postgresql() -> None:
    assert conninfo("sqlite:////tmp/x.sqlite") is None
    assert conninfo("postgresql+psycopg://root:pw@db:5432/podium") == "postgresql://root:pw@db:5432/podium"
    feed = ChangeFeed("sqlite:////tmp/x.sqlite", "a", lambda kind, guid: None)
    assert not feed.enabled
    feed.publish("content", "g")  # nothing to send to; never raises


def test_changefeed_carries_changes_to_the_other_nodes_and_back_after_a_cut() -> None:
    require_postgres()

    async def scenario() -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]], list[str | None]]:
        heard_a: list[tuple[str, str | None]] = []
        heard_b: list[tuple[str, str | None]] = []
        changes_b = Changes()
        forgotten: list[str | None] = []
        changes_b.on_content(forgotten.append)
        a = ChangeFeed(POSTGRES_URL, "node-a", lambda k, g: heard_a.append((k, g)))
        b = ChangeFeed(POSTGRES_URL, "node-b", lambda k, g: (heard_b.append((k, g)), changes_b.apply(k, g)))
        changes_a = Changes()
        changes_a.publish_to(a.publish)
        a.start()
        b.start()
        try:
            await asyncio.wait_for(asyncio.gather(a.connected.wait(), b.connected.wait()), 10)
            heard_a.clear()
            heard_b.clear()
            forgotten.clear()
            changes_a.content("guid-1")  # a change on A, from the event loop
            await asyncio.to_thread(changes_a.users)  # and one from a worker thread
            await _until(lambda: len(heard_b) == 2)
            # Every listening connection is cut (PostgreSQL restarted): the feeds listen
            # again and, having missed what happened meanwhile, forget everything once.
            await asyncio.to_thread(_terminate_listeners)
            await _until(lambda: ("content", None) in heard_b[2:] and a.connected.is_set())
            changes_a.content("guid-2")
            await _until(lambda: ("content", "guid-2") in heard_b)
        finally:
            await a.close()
            await b.close()
        return heard_a, heard_b, forgotten

    heard_a, heard_b, forgotten = asyncio.run(scenario())
    assert heard_b[:2] == [("content", "guid-1"), ("users", None)]
    assert all(notice[1] is None for notice in heard_a)  # A never hears its own notices back
    assert forgotten[0] == "guid-1" and None in forgotten


async def _until(predicate: object, seconds: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


def _terminate_listeners() -> None:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            cut = conn.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN podium_changes%' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ))
        assert cut
    finally:
        engine.dispose()
