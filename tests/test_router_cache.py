"""The content router's record cache: one database read however many requests want the
record at once, and an expired record answers while it is read again (podium.proxy.router)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event

from podium import auth
from podium.handoff import Handoff
from podium.proxy import router as router_module
from podium.proxy.router import ContentRouter
from podium.store import Store
from podium.store.models import Content
from podium.urls import Urls


def _router(store: Store) -> ContentRouter:
    return ContentRouter(
        store, 3600, lambda *_: None, None,  # type: ignore[arg-type]
        Urls("http://127.0.0.1:1/", "http://localhost:2"), Handoff(b"k" * 32, 60),
    )


def _content_reads(store: Store) -> list[str]:
    """The statements that read content records, as ``store`` runs them from now on."""
    reads: list[str] = []
    event.listen(
        store.engine, "before_cursor_execute",
        lambda *a: reads.append(a[2]) if "FROM content" in a[2] and "permission" not in a[2] else None,
    )
    return reads


def test_router_cache_reads_a_record_once_for_many_requests_and_refreshes_in_the_background(
    store: Store,
) -> None:
    with store.session() as session:
        owner = auth.create_user(session, "owner", "publisher", email="owner@example.org")
        content = Content(name="report", owner_id=owner.id, access_type="all")
        session.add(content)
        session.flush()
        guid = content.guid
    router = _router(store)
    reads = _content_reads(store)

    async def scenario() -> None:
        infos = await asyncio.gather(*(router._info(guid) for _ in range(200)))
        assert len(reads) == 1 and all(info is infos[0] and info is not None for info in infos)
        # Past its lifetime the record still answers at once, and one read refreshes it.
        old = infos[0]
        assert old is not None
        old.fetched -= 3.0
        again = await asyncio.gather(*(router._info(guid) for _ in range(50)))
        assert all(info is old for info in again)
        await asyncio.sleep(0)
        for _ in range(200):
            if router._content[guid] is not old:
                break
            await asyncio.sleep(0.01)
        assert router._content[guid] is not old and len(reads) == 2
        # A change on this node is never answered from the old record.
        with store.session() as session:
            session.get(Content, old.id).access_type = "acl"  # type: ignore[union-attr]
        reads.clear()
        router.invalidate(guid)
        fresh = await router._info(guid)
        assert fresh is not None and fresh.access_type == "acl" and len(reads) == 1

    asyncio.run(scenario())


def test_router_cache_reads_many_records_together_and_refreshes_them_together(store: Store) -> None:
    with store.session() as session:
        owner = auth.create_user(session, "owner", "publisher", email="owner@example.org")
        items = [Content(name=f"report-{n}", owner_id=owner.id, access_type="all") for n in range(30)]
        session.add_all(items)
        session.flush()
        guids = [item.guid for item in items]
    router = _router(store)
    reads = _content_reads(store)

    async def scenario() -> None:
        infos = await asyncio.gather(*(router._info(guid) for guid in guids))
        assert [info.guid for info in infos if info is not None] == guids
        assert len(reads) == 1
        # All expired at once: they answer at once, and one read refreshes them all.
        for info in infos:
            assert info is not None
            info.fetched -= 3.0
        again = await asyncio.gather(*(router._info(guid) for guid in guids))
        assert again == infos
        for _ in range(200):
            if all(router._content[guid] is not old for guid, old in zip(guids, infos, strict=True)):
                break
            await asyncio.sleep(0.01)
        assert all(router._content[guid] is not old for guid, old in zip(guids, infos, strict=True))
        assert len(reads) == 2
        # Unknown guids are answered too (None), in the same batch as known ones.
        missing = "00000000-0000-0000-0000-000000000000"
        router.invalidate()
        both = await asyncio.gather(router._info(missing), router._info(guids[0]))
        assert both[0] is None and both[1] is not None and both[1].guid == guids[0]

    asyncio.run(scenario())


def test_router_cache_forgetting_everything_before_a_queued_read_still_answers(store: Store) -> None:
    with store.session() as session:
        owner = auth.create_user(session, "owner", "publisher", email="owner@example.org")
        content = Content(name="report", owner_id=owner.id, access_type="all")
        session.add(content)
        session.flush()
        guid = content.guid
    router = _router(store)

    async def scenario() -> None:
        first = asyncio.ensure_future(router._info(guid))
        await asyncio.sleep(0)  # the read is queued, not started
        with store.session() as session:
            session.get(Content, content.id).access_type = "acl"  # type: ignore[union-attr]
        router.invalidate()
        second = await router._info(guid)
        assert (await first) is not None
        assert second is not None and second.access_type == "acl"

    asyncio.run(scenario())


def test_router_cache_of_callers_stays_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "_USERS_MAX", 10)
    router = _router(store)

    async def scenario() -> None:
        for n in range(25):  # wrong keys: each remembered as nobody
            assert await router._viewer([(b"authorization", f"Key wrong-{n}".encode())], None) is False
            assert len(router._users) <= 10
        # Full again: a sweep drops what has expired, and keeps what is fresh.
        n = 0
        while len(router._users) < 10:
            n += 1
            await router._viewer([(b"authorization", f"Key more-{n}".encode())], None)
        for entry in list(router._users)[:9]:
            stamp, viewer = router._users[entry]
            router._users[entry] = (stamp - 10.0, viewer)
        assert await router._viewer([(b"authorization", b"Key another")], None) is False
        assert list(router._users) == [f"k:more-{n}", "k:another"]

    asyncio.run(scenario())


def test_router_cache_failed_batch_read_fails_its_waiters_once_and_is_tried_again(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    with store.session() as session:
        owner = auth.create_user(session, "owner", "publisher", email="owner@example.org")
        items = [Content(name=f"report-{n}", owner_id=owner.id, access_type="all") for n in range(3)]
        session.add_all(items)
        session.flush()
        guids = [item.guid for item in items]
    router = _router(store)
    real = router._load_many

    def broken(_guids: list[str]) -> dict[str, object]:
        raise RuntimeError("the database is away")

    async def scenario() -> None:
        router._load_many = broken  # type: ignore[method-assign,assignment]
        answers = await asyncio.gather(*(router._info(guid) for guid in guids), return_exceptions=True)
        assert all(isinstance(answer, RuntimeError) for answer in answers)
        assert not router._loading and not router._content
        router._load_many = real  # type: ignore[method-assign]
        again = await asyncio.gather(*(router._info(guid) for guid in guids))
        assert [info.guid for info in again if info is not None] == guids

    with caplog.at_level("ERROR", logger="podium.proxy.router"):
        asyncio.run(scenario())
    assert [record.getMessage() for record in caplog.records] == ["cannot read 3 content records"]
