"""Recorded usage (hits, visits, app sessions) through posit-sdk against a real server:
every request content serves is recorded off the request path, in batches."""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from posit import connect
from posit.connect.errors import ClientError
from sqlalchemy import func, insert, select
from tests.conftest import RunningServer, start_server
from tests.helpers import alive, deploy, static_bundle, tar_gz

from podium import hitlog, usage, usage_import
from podium.api import instrumentation
from podium.store import Store
from podium.store.models import AppSession, ContentHit, UsageDay, UsageImport
from podium.usage import UsageRecorder
from podium.web import usage_view

_WS_APP = (
    "from fastapi import FastAPI, WebSocket\napp = FastAPI()\n"
    "@app.get('/')\ndef root():\n    return {'ok': True}\n"
    "@app.websocket('/ws')\nasync def ws(socket: WebSocket):\n    await socket.accept()\n"
    "    text = await socket.receive_text()\n    await socket.send_text(text.upper())\n    await socket.close()\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data",
                           extra_env={"PODIUM_USAGE_FLUSH_SECONDS": "0.2"})
    yield running
    running.stop()


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def _ws_bundle() -> bytes:
    manifest = {"version": 1, "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
                "python": {"version": "3.11.7", "package_manager": {"name": "pip", "package_file": "requirements.txt"}},
                "files": {"requirements.txt": {}, "app.py": {}}}
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": "fastapi\n", "app.py": _WS_APP})


def _eventually(check: Any, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_hits_visits_and_sessions_recorded_and_read_through_posit_sdk(server: RunningServer) -> None:
    key = server.user_key("use_pub", "publisher")
    viewer_key = server.user_key("use_viewer", "viewer")
    owner = connect.Client(server.url, key)
    site = owner.content.create(name="usage-site", access_type="logged_in")
    deploy(server, key, site["guid"], static_bundle())
    app = owner.content.create(name="usage-app", access_type="logged_in")
    _, task = deploy(server, key, app["guid"], _ws_bundle())
    assert task["code"] == 0, task["all_output"]
    base = f"{server.content_url}/content/{site['guid']}/"
    as_viewer = {"Authorization": f"Key {viewer_key}", "User-Agent": "usage-test/1"}
    assert requests.get(base, headers={**as_viewer, "Sec-Fetch-Dest": "document"}).status_code == 200
    assert requests.get(base + "style.css?v=2", headers={**as_viewer, "Sec-Fetch-Dest": "style"}).status_code == 200
    assert requests.get(base + "missing.html", headers=as_viewer).status_code == 404  # not served: no hit
    assert requests.get(f"{server.content_url}/content/{app['guid']}/", headers=as_viewer).status_code == 200

    async def talk() -> str:
        import websockets

        url = f"{server.content_url}/content/{app['guid']}/ws".replace("http://", "ws://")
        async with websockets.connect(url, additional_headers={"Authorization": f"Key {viewer_key}"}) as ws:
            await ws.send("hi")
            return str(await ws.recv())

    assert asyncio.run(talk()) == "HI"
    viewer_guid = connect.Client(server.url, viewer_key).me["guid"]
    admin = connect.Client(server.url, server.admin_key)

    def site_hits() -> list[Any]:
        found = list(admin.metrics.hits.fetch(content_guid=site["guid"]))
        assert len(found) == 2, found
        return found

    hits = _eventually(site_hits)
    assert [h["data"]["path"] for h in hits] == [f"/content/{site['guid']}/", f"/content/{site['guid']}/style.css"]
    assert hits[1]["data"]["query"] == "v=2" and hits[0]["data"]["user_agent"] == "usage-test/1"
    assert {h["user_guid"] for h in hits} == {viewer_guid} and hits[0]["timestamp"].endswith("Z")
    def both() -> None:  # the app's page and its websocket too
        found = list(owner.metrics.hits.fetch(content_guid=[site["guid"], app["guid"]]))
        assert [h["data"]["path"] for h in found if h["content_guid"] == app["guid"]] == [
            f"/content/{app['guid']}/", f"/content/{app['guid']}/ws"], found

    _eventually(both)
    # Visits are page loads; the app's WebSocket is one session with a start and an end.
    # (posit-sdk's metrics.usage merges visits and shiny usage: visits carry a path.)
    visits = admin.metrics.usage.find(content_guid=site["guid"])
    assert [v["path"] for v in visits] == [f"/content/{site['guid']}/"]
    assert visits[0]["user_guid"] == viewer_guid and visits[0]["data_version"] == 1

    def sessions() -> list[Any]:
        found = [u for u in owner.metrics.usage.find(content_guid=app["guid"]) if u["path"] is None]
        assert len(found) == 1 and found[0]["ended"] is not None, found
        return found

    session = _eventually(sessions)[0]
    assert session["user_guid"] == viewer_guid and session["started"] <= session["ended"]
    raw = server.api().get(_api(server, "v1/instrumentation/shiny/usage"), params={"content_guid": app["guid"]})
    assert [(u["started"], u["ended"]) for u in raw.json()["results"]] == [(session["started"], session["ended"])]
    # from/to bound by time.
    later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert list(admin.metrics.hits.fetch(content_guid=site["guid"], start=later)) == []
    assert len(list(admin.metrics.hits.fetch(content_guid=site["guid"], end=later))) == 2


def test_visits_cursor_pages_follow_to_the_end(server: RunningServer) -> None:
    key = server.user_key("page_pub", "publisher")
    owner = connect.Client(server.url, key)
    site = owner.content.create(name="paged-site")
    deploy(server, key, site["guid"], static_bundle())
    for n in range(5):
        page = requests.get(f"{server.content_url}/content/{site['guid']}/?n={n}",
                            headers={"Authorization": f"Key {key}", "Sec-Fetch-Dest": "document"})
        assert page.status_code == 200
    _eventually(lambda: _assert_count(owner, site["guid"], 5))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"content_guid": site["guid"], "limit": "2", **({"next": cursor} if cursor else {})}
        body = server.api(key).get(_api(server, "v1/instrumentation/content/visits"), params=params).json()
        assert set(body) == {"paging", "results"} and set(body["paging"]) == {"cursors", "first", "previous", "next", "last"}
        seen += [v["time"] for v in body["results"]]
        pages += 1
        cursor = body["paging"]["cursors"]["next"]
        if not cursor:
            break
    assert pages == 3 and len(seen) == 5 and seen == sorted(seen)
    newest_first = server.api(key).get(_api(server, "v1/instrumentation/content/visits"),
                                       params={"content_guid": site["guid"], "asc_order": "false"}).json()
    assert [v["time"] for v in newest_first["results"]] == seen[::-1]


def _assert_count(client: connect.Client, guid: str, n: int) -> None:
    assert len(client.metrics.usage.find(content_guid=guid)) == n


def test_usage_refusals(server: RunningServer) -> None:
    key = server.user_key("use_pub", "publisher")
    other = server.api(server.user_key("use_other", "publisher"))
    mine = server.api(key).post(_api(server, "v1/content"), json={"name": "refusals-usage"}).json()
    for path in ("content/hits", "content/visits", "shiny/usage"):
        url = _api(server, f"v1/instrumentation/{path}")
        assert other.get(url, params={"content_guid": mine["guid"]}).status_code == 403
        for bad in ({"from": "yesterday"}, {"to": "2026-13-01T00:00:00Z"}, {"content_guid": "abc"},
                    {"content_guid": f"{mine['guid']}|nope"}):
            answer = server.api().get(url, params=bad)
            assert answer.status_code == 400, (path, bad, answer.text)
            assert set(answer.json()) == {"code", "error", "payload"}
        assert server.api(server.user_key("use_viewer", "viewer")).get(url).status_code == 403
    # A publisher without a filter sees only their own content's hits.
    assert all(h["content_guid"] != mine["guid"] for h in other.get(_api(server, "v1/instrumentation/content/hits")).json())
    sdk = connect.Client(server.url, server.user_key("use_other", "publisher"))
    with pytest.raises(ClientError) as refused:
        sdk.metrics.hits.fetch(content_guid=mine["guid"])
    assert refused.value.http_status == 403


def test_a_history_longer_than_a_chunk_reads_whole_and_in_order(server: RunningServer) -> None:
    # The hits array is streamed instrumentation.HITS_PER_CHUNK hits at a time: more hits than two chunks,
    # of two content items interleaved, come back through posit-sdk each once, in order,
    # filtered by content and by time across the chunks' edges.
    guids = [server.api().post(_api(server, "v1/content"), json={"name": f"long-history-{n}"}).json()["guid"]
             for n in range(2)]
    each = instrumentation.HITS_PER_CHUNK + instrumentation.HITS_PER_CHUNK // 2 + 7
    start = datetime(2026, 3, 1, tzinfo=UTC)
    store = Store(f"sqlite:///{server.data_dir / 'db' / 'podium.sqlite'}")
    try:
        with store.session() as session:
            session.execute(insert(ContentHit), [
                {"content_guid": guids[n % 2], "user_guid": None, "bundle_id": 1,
                 "time": start + timedelta(seconds=n // 2), "path": f"/content/{guids[n % 2]}/p{n}",
                 "query": "q=1" if n == 3 else None, "user_agent": "long/1", "visit": False}
                for n in range(2 * each)])
            session.commit()
    finally:
        store.dispose()
    sdk = connect.Client(server.url, server.admin_key)
    hits = list(sdk.metrics.hits.fetch(content_guid=guids[1]))
    assert [h["data"]["path"] for h in hits] == [f"/content/{guids[1]}/p{n}" for n in range(1, 2 * each, 2)]
    assert [h["id"] for h in hits] == sorted({h["id"] for h in hits})
    assert hits[1] == {"id": hits[1]["id"], "content_guid": guids[1], "user_guid": None,
                       "timestamp": "2026-03-01T00:00:01Z", "data": {"path": f"/content/{guids[1]}/p3",
                                                                     "user_agent": "long/1", "query": "q=1"}}
    window = list(sdk.metrics.hits.fetch(content_guid=[guids[0], guids[1]], start=start + timedelta(seconds=100),
                                         end=start + timedelta(seconds=instrumentation.HITS_PER_CHUNK + 100)))
    assert len(window) == 2 * instrumentation.HITS_PER_CHUNK
    everything = requests.get(_api(server, "v1/instrumentation/content/hits"),
                              headers={"Authorization": f"Key {server.admin_key}"})
    assert everything.headers["content-type"] == "application/json"
    assert sum(h["content_guid"] in guids for h in everything.json()) == 2 * each


def test_the_hits_array_is_whole_for_dense_sparse_and_several_items(store: Store) -> None:
    # The array's queries keep to a window of ids that grows while hits are sparse and
    # shrinks while chunks fill: whatever the mix, every matching hit comes once, in order.
    common, rare, rarest = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    start = datetime(2026, 3, 1, tzinfo=UTC)
    owners = [rarest if n in (5, 17_000, 29_999) else rare if n % 997 == 0 else common for n in range(30_000)]
    with store.session() as session:
        session.execute(insert(ContentHit), [
            {"content_guid": guid, "user_guid": None, "time": start + timedelta(seconds=n), "path": f"/{n}",
             "user_agent": "", "visit": False} for n, guid in enumerate(owners)])
    with store.session() as session:
        ids = list(session.scalars(select(ContentHit.id).order_by(ContentHit.id)))

    def read(guids: list[str] | None, since: datetime | None = None) -> list[int]:
        filters: list[Any] = [ContentHit.content_guid.in_(guids)] if guids is not None else []
        if since is not None:
            filters.append(ContentHit.time >= since)
        with store.session() as session:
            array = instrumentation.hits_array(session, store, filters)
        body = b"".join(array)
        return [hit["id"] for hit in json.loads(body)]

    def expected(*guids: str, since: int = 0) -> list[int]:
        return [i for i, guid, n in zip(ids, owners, range(30_000), strict=True) if guid in guids and n >= since]

    assert read([rarest]) == expected(rarest)
    assert read([rare, rarest]) == expected(rare, rarest)
    assert read([common, rare]) == expected(common, rare)
    assert read(None) == ids
    assert read([rare], start + timedelta(seconds=12_345)) == expected(rare, since=12_345)
    assert read([str(uuid.UUID(int=4))]) == []


def test_the_database_encodes_each_hit_as_the_api_shows_it(store: Store) -> None:
    # The hits array's JSON is made by the database (SQLite's json_object, PostgreSQL's
    # json_build_object): every field as posit-sdk reads it, nulls kept at the top and
    # left out of data, text of any kind escaped, the time cut (not rounded) to the
    # second in UTC, for hits written by the importer and by the ORM alike.
    guid, viewer = str(uuid.UUID(int=7)), str(uuid.UUID(int=8))
    odd = 'caf\u00e9 "quoted" back\\slash \u2603 tab\t new\nline \x01 </script>'
    at = datetime(2026, 3, 1, 12, 34, 59, 999_999, tzinfo=UTC).timestamp()
    recorded: list[usage_import.Hit] = [
        (at, guid, viewer, 1, "/content/x/caf\u00e9?a=1&b=%22".encode(), b"GET", odd.encode(),
         b"document", b"same-origin"),
        (at + 0.5, guid, None, None, b"/content/x/", b"POST", b"\xe9t\xe9 (not UTF-8)", None, None),
    ]
    data = usage_import.dump_hits(recorded)
    usage_import.write(store, (usage_import.FRAME.pack(len(data)) + data, [], []))
    with store.session() as session:
        session.execute(insert(ContentHit), [
            {"content_guid": guid, "user_guid": viewer, "time": datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
             "path": odd, "query": None, "user_agent": odd, "sec_fetch_dest": None, "sec_fetch_site": "none",
             "visit": False},
            {"content_guid": guid, "user_guid": None, "time": datetime(2027, 1, 1, tzinfo=UTC), "path": "/",
             "query": "", "user_agent": "", "visit": True},
        ])
        session.commit()
    with store.session() as session:
        array = b"".join(instrumentation.hits_array(session, store, [ContentHit.content_guid.in_([guid])]))
        ids = list(session.scalars(select(ContentHit.id).order_by(ContentHit.id)))
    assert json.loads(array) == [
        {"id": ids[0], "content_guid": guid, "user_guid": viewer, "timestamp": "2026-03-01T12:34:59Z",
         "data": {"path": "/content/x/caf\u00e9", "user_agent": odd, "query": "a=1&b=%22",
                  "sec_fetch_dest": "document", "sec_fetch_site": "same-origin"}},
        {"id": ids[1], "content_guid": guid, "user_guid": None, "timestamp": "2026-03-01T12:35:00Z",
         "data": {"path": "/content/x/", "user_agent": "\u00e9t\u00e9 (not UTF-8)"}},
        {"id": ids[2], "content_guid": guid, "user_guid": viewer, "timestamp": "2026-12-31T23:59:59Z",
         "data": {"path": odd, "user_agent": odd, "sec_fetch_site": "none"}},
        {"id": ids[3], "content_guid": guid, "user_guid": None, "timestamp": "2027-01-01T00:00:00Z",
         "data": {"path": "/", "user_agent": "", "query": ""}},
    ]


def test_a_page_of_visits_reads_the_visits_index(store: Store) -> None:
    # Hits of an API read by scripts hold one visit in thousands: a page of visits, of
    # every item or of one, reads the partial indexes of visits (SQLite's plan), not
    # every hit since the cursor; and the pages hold the visits, newest or oldest first.
    from sqlalchemy import event, text
    from starlette.requests import Request

    from podium import auth

    guids = [str(uuid.UUID(int=n)) for n in (1, 2)]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with store.session() as session:
        session.execute(insert(ContentHit), [
            {"content_guid": guids[n % 2], "time": start + timedelta(seconds=n), "path": f"/{n}", "user_agent": "",
             "visit": n % 100 == 0} for n in range(3000)])
        admin = auth.create_user(session, "usage-admin", "administrator")
        session.commit()
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FROM content_hits" in statement:
            statements.append((statement, parameters))

    def page(query: str) -> list[str]:
        request = Request({"type": "http", "method": "GET", "scheme": "http", "server": ("podium", 80),
                           "path": "/__api__/v1/instrumentation/content/visits", "root_path": "",
                           "query_string": query.encode(), "headers": []})
        statements.clear()
        with store.session() as session:
            answer = instrumentation.cursor_page(request, session, session.get(type(admin), admin.id), ContentHit,
                                                 ContentHit.time, instrumentation.visit_json)
        (statement, parameters), = statements
        if store.is_sqlite:
            with store.session() as session:
                plan = " ".join(row[-1] for row in session.connection().exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters))
            assert "ix_content_hits_visits" in plan or "ix_content_hits_content_visits" in plan, plan
        return [result["path"] for result in answer["results"]]

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert page("limit=5") == ["/0", "/100", "/200", "/300", "/400"]
        assert page(f"limit=3&content_guid={guids[0]}&asc_order=false") == ["/2900", "/2800", "/2700"]
        assert page(f"limit=500&content_guid={guids[1]}") == []  # odd hits: none is a visit
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    with store.session() as session:
        assert session.scalar(text("SELECT count(*) FROM content_hits WHERE visit = true")) == 30


def test_buffered_hits_written_on_a_normal_stop(tmp_path: Any) -> None:
    data = tmp_path / "data"
    first = start_server(data, extra_env={"PODIUM_USAGE_FLUSH_SECONDS": "3600"})
    try:
        site = first.api().post(_api(first, "v1/content"), json={"name": "stop-site"}).json()
        deploy(first, first.admin_key, site["guid"], static_bundle())
        for _ in range(3):
            served = requests.get(f"{first.content_url}/content/{site['guid']}/",
                                  headers={"Authorization": f"Key {first.admin_key}"})
            assert served.status_code == 200
        assert first.api().get(_api(first, "v1/instrumentation/content/hits")).json() == []  # still buffered
    finally:
        first.stop()  # SIGTERM: a normal stop
    second = start_server(data, bootstrap=False)
    try:
        hits = second.api(first.admin_key).get(_api(second, "v1/instrumentation/content/hits")).json()
        assert len(hits) == 3 and {h["content_guid"] for h in hits} == {site["guid"]}
    finally:
        second.stop()


def test_hits_counted_by_content_viewer_and_day_for_the_charts(store: Store) -> None:
    # The importer keeps usage_days with the hits, batch after batch (an upsert), and the
    # dashboard's charts read those counts: the same figures the hits themselves give.
    recorder = UsageRecorder(store, 1.0, retention_days=30)
    mine, other = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10", "5c3e1a4e-8d8f-4a57-9a55-9e1f3d6f2f11"
    alice, bob = "a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002"
    if (to_midnight := 86400 - time.time() % 86400) < 10:  # the hits and the check on one UTC day
        time.sleep(to_midnight + 0.1)
    for viewers in ([alice, alice, None], [alice, bob, None, None]):
        for viewer in viewers:
            recorder.hit(b"GET", b"/content/x/", [(b"user-agent", b"t")], mine, viewer, None)
        recorder.hit(b"GET", b"/content/y/", [], other, bob, None)
        recorder.flush()
    with store.session() as session:
        last = session.scalar(select(func.max(ContentHit.time)).where(ContentHit.content_guid == mine))
        days = {(d.content_guid, d.user_guid): (d.requests, d.last) for d in session.scalars(select(UsageDay))}
        today = datetime.now(UTC).date().isoformat()
        assert usage_view.daily_counts(session, mine) == {today: (7, 2)}
        assert usage_view.daily_counts(session, None) == {today: (9, 2)}
        assert [(v["username"], v["requests"]) for v in usage_view.top_viewers(session, mine)] == [
            (alice, 3), (bob, 1), ("anonymous", 3)]
    assert {key: n for key, (n, _) in days.items()} == {(mine, alice): 3, (mine, bob): 1, (mine, ""): 3, (other, bob): 2}
    assert max(when for (guid, _), (_, when) in days.items() if guid == mine) == last


def test_the_day_counts_of_hits_recorded_before_them_are_made_at_the_upgrade(store: Store) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "podium:migrations")

    def migrate(to: str) -> None:
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.upgrade if to == "heads" else command.downgrade)(config, to)

    migrate("0015_usage_imports")
    guid, alice = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10", "a11ce000-0000-4000-8000-000000000001"
    first = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)
    with store.session() as session:
        session.execute(insert(ContentHit), [
            {"content_guid": guid, "user_guid": user, "time": first + timedelta(seconds=n), "path": "/",
             "user_agent": "", "visit": False}
            for n, user in enumerate([alice, None, alice, alice])])
    migrate("heads")
    with store.session() as session:
        days = {(d.day.isoformat(), d.user_guid): (d.requests, d.last) for d in session.scalars(select(UsageDay))}
    assert days == {("2026-03-01", alice): (1, first), ("2026-03-02", ""): (1, first + timedelta(seconds=1)),
                    ("2026-03-02", alice): (2, first + timedelta(seconds=3))}


def test_usage_pruned_past_the_retention(store: Store) -> None:
    recorder = UsageRecorder(store, 1.0, retention_days=30)
    guid = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
    recorder.hit(b"GET", b"/content/x/", [(b"user-agent", b"t")], guid, None, None)
    assert recorder.flush() == 1
    assert recorder.prune(datetime.now(UTC) + timedelta(days=29)) == 0
    assert recorder.prune(datetime.now(UTC) + timedelta(days=31)) == 1
    with store.session() as session:
        assert session.query(ContentHit).count() == 0
        assert session.query(UsageDay).count() == 0  # the day counts go with the hits
    assert UsageRecorder(store, 1.0, retention_days=0).prune(datetime.now(UTC) + timedelta(days=9999)) == 0


def test_hits_by_vanity_path_and_bundle_preview(server: RunningServer) -> None:
    key = server.user_key("use_pub", "publisher")
    owner = server.api(key)
    site = owner.post(_api(server, "v1/content"), json={"name": "usage-vanity"}).json()
    bundle_id, _ = deploy(server, key, site["guid"], static_bundle())
    made = owner.put(_api(server, f"v1/content/{site['guid']}/vanity"), json={"path": "/usage-sales/"})
    assert made.status_code == 200, made.text
    for path in ("/usage-sales/", f"/content/{site['guid']}/_bundle{bundle_id}/"):
        served = owner.get(f"{server.content_url}{path}")
        assert served.status_code == 200, (path, served.text)

    def recorded() -> list[str]:
        paths = [h["data"]["path"] for h in owner.get(_api(server, "v1/instrumentation/content/hits"),
                                                      params={"content_guid": site["guid"]}).json()]
        assert len(paths) == 2, paths
        return paths

    paths = _eventually(recorded)
    assert paths[1] == f"/content/{site['guid']}/_bundle{bundle_id}/"
    assert paths[0] == "/usage-sales/"  # the address the viewer asked for


def _spool_hits(recorder: UsageRecorder, n: int, guid: str, agent: bytes = b"t") -> None:
    for index in range(n):
        recorder.hit(b"GET", f"/content/{guid}/{index}".encode(), [(b"user-agent", agent)], guid, None, 7)


def _hit_count(store: Store) -> int:
    with store.session() as session:
        return session.query(ContentHit).count()


def test_spooled_usage_imported_once_in_chunks(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_import, "CHUNK", 2)
    spool = tmp_path / "usage"
    recorder = UsageRecorder(store, 1.0, 30, spool=spool, node="n1")
    guid = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
    _spool_hits(recorder, 5, guid)
    first = usage_import.spool_batch(spool, "n1", 1, recorder.take())
    kept = first.read_bytes()
    importer = usage_import.Importer(store, spool, "n1", 30)
    assert importer.run_once() == 5 and list(spool.iterdir()) == []
    with store.session() as session:
        paths = [h.path for h in session.query(ContentHit).order_by(ContentHit.id)]
    assert paths == [f"/content/{guid}/{n}" for n in range(5)]
    # Imported, then the importer died before removing the file: nothing twice.
    first.write_bytes(kept)
    assert importer.run_once() == 0 and _hit_count(store) == 5 and list(spool.iterdir()) == []
    # A file a dead importer of this host had claimed is claimed again; its chunks that
    # were committed are not imported twice.
    _spool_hits(recorder, 3, guid)
    second = usage_import.spool_batch(spool, "n1", 2, recorder.take())
    base = second.name
    with store.engine.begin() as connection:
        connection.execute(insert(UsageImport).values(name=f"{base}:0", imported=datetime.now(UTC)))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has
    second.rename(second.with_name(f"{base}.claimed-{importer.host}-{gone.pid}"))
    assert importer.run_once() == 1 and _hit_count(store) == 6 and list(spool.iterdir()) == []
    # An unreadable file is set aside, not retried forever: not marshal, or cut short
    # within a list's length.
    (spool / "n1.00000000000000000001.00000009.usage").write_bytes(b"not marshal")
    (spool / "n1.00000000000000000001.00000010.usage").write_bytes(marshal.dumps((3, [], [])) + b"\x01")
    assert importer.run_once() == 0
    assert sorted(p.name for p in spool.iterdir()) == [".n1.00000000000000000001.00000009.usage.bad",
                                                      ".n1.00000000000000000001.00000010.usage.bad"]


def test_spooled_sessions_in_any_order_and_other_nodes_files(store: Store, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spool = tmp_path / "usage"
    recorder = UsageRecorder(store, 1.0, 30, spool=spool, node="n1")
    guid = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
    # A WebSocket is told apart; the caller opens its session (the router, when it
    # tunnels it to content: not for a file it serves itself).
    assert recorder.hit(b"GET", b"/content/x/f", [(b"upgrade", b"websocket")], guid, None, None) is True
    assert recorder.hit(b"GET", b"/content/x/ws", [(b"upgrade", b"WebSocket")], guid, None, None) is True
    end = recorder.session(guid, None, None)
    started = usage_import.spool_batch(spool, "n1", 1, recorder.take())
    end()
    ended = usage_import.spool_batch(spool, "n1", 2, recorder.take())
    mine = usage_import.Importer(store, spool, "n1", 30)
    # The end imported before the start (two importers sharing the spool): one session.
    assert mine.import_file(ended, ended.name) == 0
    assert mine.import_file(started, started.name) == 2
    with store.session() as session:
        (row,) = session.query(AppSession).all()
        assert row.ended is not None and row.started <= row.ended and row.content_guid == guid
    # Another node's file waits for that node's importer, unless it lies unclaimed.
    _spool_hits(recorder, 2, guid)
    usage_import.spool_batch(spool, "n2", 1, recorder.take())
    assert mine.run_once() == 0 and len(list(spool.iterdir())) == 1
    monkeypatch.setattr(usage_import, "ORPHAN_SECONDS", -1.0)
    assert mine.run_once() == 2 and list(spool.iterdir()) == []


def test_import_waits_while_the_server_is_busy(store: Store, tmp_path: Path) -> None:
    """A process that uses a core (a thread spinning beside the recorder's event loop)
    holds its usage in the spool, up to the import delay; a quiet one hands it on at the
    next flush. The importer, a real process, leaves a held file alone on its own polls."""
    spool = tmp_path / "usage"
    recorder = UsageRecorder(store, 0.1, 30, spool=spool, node="n1", import_delay_seconds=3.0)
    guid = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
    quiet = threading.Event()

    def spin() -> None:
        while not quiet.is_set():
            sum(range(1000))

    async def imported(n: int, seconds: float) -> float:
        started = time.monotonic()
        while _hit_count(store) < n:
            assert time.monotonic() - started < seconds, f"{_hit_count(store)} of {n} hits imported"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def scenario() -> None:
        recorder.start()
        spinner = threading.Thread(target=spin)
        spinner.start()
        try:
            await asyncio.sleep(0.3)  # a flush interval of the busy process first
            _spool_hits(recorder, 3, guid)
            await asyncio.sleep(1.5)
            assert _hit_count(store) == 0 and _spooled_hits(spool) == 3  # busy: held
            waited = await imported(3, 10)  # past the delay, though still busy
            assert waited > 0.8, waited
            quiet.set()
            spinner.join()
            await asyncio.sleep(0.3)
            _spool_hits(recorder, 2, guid)
            assert await imported(5, 1.5) < 1.5  # quiet: at the next flush
        finally:
            quiet.set()
            spinner.join()
            await recorder.close()

    asyncio.run(scenario())
    # On a poll of its own (not woken by the server), the importer leaves its node's
    # files younger than the delay for later.
    _spool_hits(recorder, 2, guid)
    usage_import.spool_batch(spool, "n1", 99, recorder.take())
    importer = usage_import.Importer(store, spool, "n1", 30, delay_seconds=60)
    assert importer.run_once(woken=False) == 0 and _spooled_hits(spool) == 2
    assert importer.run_once() == 2 and _hit_count(store) == 7


@pytest.mark.parametrize("in_python", [False, True], ids=["c-log", "python-log"])
def test_spooled_hits_fields_and_a_spool_file_of_an_earlier_version(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_python: bool) -> None:
    # Rows go in several statements of several rows each, and hits (recorded by the C
    # log, or by the Python one in several marshalled lists): each keeps its own fields.
    monkeypatch.setattr(usage_import, "_ROWS_PER_INSERT", 2)
    if in_python:
        monkeypatch.setattr(usage, "HitLog", hitlog.PyHitLog)
        monkeypatch.setattr(hitlog, "HITS_PER_LIST", 2)
    spool = tmp_path / "usage"
    recorder = UsageRecorder(store, 1.0, 30, spool=spool, node="n1")
    guid = "0b6b1a4e-8d8f-4a57-9a55-9e1f3d6f2f10"
    browser = [(b"host", b"x"), (b"User-Agent", b"ignored: names are lower case"), (b"user-agent", b"Firefox"),
               (b"sec-fetch-dest", b"document"), (b"sec-fetch-site", b"same-origin"),
               (b"authorization", b"Key sekrit-key"), (b"cookie", b"session=sekrit-cookie")]
    assert recorder.hit(b"GET", b"/content/x/page?a=1&b=%C3%A9", browser, guid, "u1", 3) is False
    recorder.hit(b"POST", b"/content/x/", [], guid, None, None)
    recorder.hit(b"GET", b"/content/x/report.html", [(b"user-agent", b"curl")], guid, None, 4)
    batch = recorder.take()
    assert len(usage_import.read_hits(batch[0])) == 3
    spooled = usage_import.spool_batch(spool, "n1", 1, batch)
    assert b"sekrit" not in spooled.read_bytes()  # the request's credentials are not kept
    assert recorder.take() == (b"", [], [])  # nothing buffered: nothing to spool
    # Files spooled by an earlier Podium, with every header of each hit, imported after
    # an upgrade: version 1 (hits one after another), version 2 (one list of them).
    old_hit = (time.time(), guid, None, None, b"/content/x/old/", [(b"sec-fetch-dest", b"image")], b"GET")
    (spool / "n1.00000000000000000001.00000001.usage").write_bytes(
        marshal.dumps((1, [], [])) + marshal.dumps(old_hit, 2) + marshal.dumps(old_hit, 2))
    two = (time.time(), guid, "u2", 5, b"/content/x/two?q", [(b"user-agent", b"Safari"), (b"cookie", b"c")], b"GET")
    (spool / "n1.00000000000000000002.00000001.usage").write_bytes(
        marshal.dumps((2, [], [])) + marshal.dumps([two], 2))
    assert usage_import.Importer(store, spool, "n1", 30).run_once() == 6
    with store.session() as session:
        rows = [(h.path, h.query, h.user_agent, h.user_guid, h.bundle_id, h.sec_fetch_dest, h.sec_fetch_site, h.visit)
                for h in session.query(ContentHit).order_by(ContentHit.id)]
    assert rows == [
        ("/content/x/old/", None, "", None, None, "image", None, False),
        ("/content/x/old/", None, "", None, None, "image", None, False),
        ("/content/x/two", "q", "Safari", "u2", 5, None, None, False),
        ("/content/x/page", "a=1&b=%C3%A9", "Firefox", "u1", 3, "document", "same-origin", True),
        ("/content/x/", None, "", None, None, None, None, False),
        ("/content/x/report.html", None, "curl", None, 4, None, None, True),
    ]


def _importer_pid(server: RunningServer) -> int:
    """The server's usage importer process."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                parent, command = int(stat.read().rpartition(")")[2].split()[1]), cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == server.process.pid and b"podium.usage_import" in command:
            return int(entry)
    raise AssertionError("no usage importer")


def _spooled_hits(spool: Path) -> int:
    return sum(len(usage_import.read_spool(p)[0]) for p in spool.glob("*.usage"))


def test_usage_spooled_before_a_kill_imported_at_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fast = {"PODIUM_USAGE_FLUSH_SECONDS": "0.2"}
    first = start_server(data, extra_env=fast)
    importer = 0
    try:
        site = first.api().post(_api(first, "v1/content"), json={"name": "kill-site"}).json()
        deploy(first, first.admin_key, site["guid"], static_bundle())
        page = f"{first.content_url}/content/{site['guid']}/"
        as_admin = {"Authorization": f"Key {first.admin_key}"}
        assert requests.get(page, headers=as_admin).status_code == 200
        hits_url = _api(first, "v1/instrumentation/content/hits")

        def imported(api: requests.Session, url: str, n: int) -> None:
            assert len(api.get(url).json()) == n

        _eventually(lambda: imported(first.api(), hits_url, 1))
        importer = _importer_pid(first)
        os.kill(importer, signal.SIGSTOP)  # paused: what the server spools now stays spooled
        for _ in range(3):
            assert requests.get(page, headers=as_admin).status_code == 200
        _eventually(lambda: _assert_equal(_spooled_hits(data / "usage"), 3))
        first.process.kill()  # the node dies, and its importer with it
        first.process.wait()
        os.kill(importer, signal.SIGKILL)
    finally:
        first.stop()
        if importer:
            try:
                os.kill(importer, signal.SIGKILL)
            except ProcessLookupError:
                pass
    second = start_server(data, bootstrap=False, extra_env=fast, ports=first.ports)
    try:
        api = second.api(first.admin_key)
        _eventually(lambda: imported(api, hits_url, 4))
        # An importer that dies is started again (at most every few seconds).
        os.kill(_importer_pid(second), signal.SIGKILL)
        assert requests.get(page, headers=as_admin).status_code == 200
        _eventually(lambda: imported(api, hits_url, 5), seconds=60)
        assert "the usage importer exited" in second.log()
    finally:
        second.stop()


def _assert_equal(got: Any, expected: Any) -> None:
    assert got == expected, got


def test_usage_that_cannot_be_spooled_at_a_stop_does_not_stop_the_stop(tmp_path: Path) -> None:
    # Hits stay buffered until the stop (a long flush interval); then the spool cannot be
    # written (its folder replaced by a file). The stop goes on: the content process is
    # stopped, not left running without its server, and the log says what was lost.
    data = tmp_path / "data"
    server = start_server(data, extra_env={"PODIUM_USAGE_FLUSH_SECONDS": "600"})
    pid = 0
    try:
        item = server.api().post(_api(server, "v1/content"), json={"name": "stop-app"}).json()
        deploy(server, server.admin_key, item["guid"], _ws_bundle())
        page = f"{server.content_url}/content/{item['guid']}/"
        assert requests.get(page, headers={"Authorization": f"Key {server.admin_key}"}).json() == {"ok": True}
        (run,) = [job for job in server.api().get(_api(server, f"v1/content/{item['guid']}/jobs")).json()
                  if job["kind"] == "run" and job["status"] == 0]
        pid = run["pid"]
        os.rmdir(data / "usage")
        (data / "usage").write_text("not a folder")
    finally:
        server.stop()
    try:
        _eventually(lambda: _assert_equal(alive(pid), False), seconds=15)
    finally:
        if alive(pid):  # left running by a stop that gave up: this test's to end
            os.kill(pid, signal.SIGKILL)
    assert "could not be spooled at the stop" in server.log() and "1 hit(s)" in server.log()
