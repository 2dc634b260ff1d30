"""Render schedules: the pure next-run rule, and claiming a run in the database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from podium.render.schedules import InvalidSchedule, ScheduleRunner, claim, next_run
from podium.store import Store
from podium.store.models import Content, Schedule, User

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday


def test_next_run_intervals() -> None:
    assert next_run("minute", '{"N": 5}', T0, "UTC", T0 - timedelta(hours=1)) == T0
    assert next_run("minute", '{"N": 5}', T0, "UTC", T0) == T0 + timedelta(minutes=5)
    assert next_run("hour", '{"N": 2}', T0, "UTC", T0 + timedelta(hours=3)) == T0 + timedelta(hours=4)
    assert next_run("day", '{"N": 1}', T0, "UTC", T0 + timedelta(days=10, minutes=1)) == T0 + timedelta(days=11)
    assert next_run("week", '{"N": 2}', T0, "UTC", T0 + timedelta(days=1)) == T0 + timedelta(days=14)
    assert next_run("year", '{"N": 1}', T0, "UTC", T0) == T0.replace(year=2027)


def test_next_run_days_keep_wall_clock_time_across_dst() -> None:
    # 09:30 in New York is 14:30 UTC before the 8 March 2026 change and 13:30 after it.
    start = datetime(2026, 3, 6, 14, 30, tzinfo=UTC)
    assert next_run("day", '{"N": 1}', start, "America/New_York", start + timedelta(days=2)) == datetime(
        2026, 3, 9, 13, 30, tzinfo=UTC
    )


def test_next_run_weekdays_and_days_of_week() -> None:
    friday = T0 + timedelta(days=4)
    assert next_run("weekday", "{}", T0, "UTC", friday) == T0 + timedelta(days=7)  # Monday
    assert next_run("dayofweek", '{"Days": [0, 3]}', T0, "UTC", T0) == T0 + timedelta(days=2)  # Wednesday
    assert next_run("dayofweek", '{"Days": [0]}', T0, "UTC", T0) == T0 + timedelta(days=6)  # Sunday


def test_next_run_monthly_rules() -> None:
    # T0 is 2 March 2026, 09:30 UTC.
    assert next_run("semimonth", '{"First": true}', T0, "UTC", T0) == datetime(2026, 3, 15, 9, 30, tzinfo=UTC)
    assert next_run("semimonth", '{"First": false}', T0, "UTC", T0 + timedelta(days=13)) == datetime(
        2026, 3, 31, 9, 30, tzinfo=UTC
    )
    assert next_run("dayofmonth", '{"N": 1, "Day": 31}', T0, "UTC", datetime(2026, 4, 1, tzinfo=UTC)) == datetime(
        2026, 4, 30, 9, 30, tzinfo=UTC
    )
    # Every 3 months from March: June, not April or May.
    assert next_run("dayofmonth", '{"N": 3, "Day": 1}', T0, "UTC", T0) == datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
    # 09:30 in Tokyo on the 5th of each month is 00:30 UTC.
    tokyo = datetime(2026, 3, 5, 0, 30, tzinfo=UTC)
    assert next_run("dayofmonth", '{"N": 1, "Day": 5}', tokyo, "Asia/Tokyo", tokyo) == datetime(
        2026, 4, 5, 0, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("type_", "rule", "message"),
    [("minute", "{}", "needs N"), ("dayweekofmonth", "{}", "not supported"), ("dayofweek", '{"Days": [9]}', "Days"),
     ("dayofmonth", '{"N": 1, "Day": 32}', "Day")],
)
def test_next_run_refuses_bad_rules(type_: str, rule: str, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message):
        next_run(type_, rule, T0, "UTC", T0)
    with pytest.raises(InvalidSchedule, match="IANA"):
        next_run("minute", '{"N": 1}', T0, "Mars/Olympus", T0)


def _scheduled(store: Store, due: datetime) -> int:
    with store.session() as session:
        owner = User(username="owner")
        session.add(owner)
        session.flush()
        content = Content(name="report", owner_id=owner.id, app_mode="jupyter-static")
        session.add(content)
        session.flush()
        session.add(Schedule(content_id=content.id, type="minute", schedule='{"N": 1}', start_time=T0, next_run=due))
        return content.id


def test_claim_runs_a_due_schedule_once_across_nodes(store: Store) -> None:
    content_id = _scheduled(store, T0)
    now = T0 + timedelta(seconds=30)
    other = Store(store.url)  # a second server node on the same database
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def node(s: Store) -> None:
        barrier.wait()
        results.append(ScheduleRunner(s, 1, lambda _c: None, clock=lambda: now).due())

    threads = [threading.Thread(target=node, args=(s,)) for s in (store, other, store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.dispose()
    assert sorted(results) == [[], [], [], [content_id]]
    with store.session() as session:
        assert session.scalars(select(Schedule.next_run).where(Schedule.content_id == content_id)).one() == T0 + timedelta(minutes=1)
    assert not claim(store, 1, T0, T0 + timedelta(minutes=1))


def test_missed_runs_fire_once_then_resume(store: Store) -> None:
    content_id = _scheduled(store, T0)
    later = T0 + timedelta(hours=5, seconds=10)  # the server was down for five hours
    runner = ScheduleRunner(store, 1, lambda _c: None, clock=lambda: later)
    assert runner.due() == [content_id]
    assert runner.due() == []
    with store.session() as session:
        assert session.scalars(select(Schedule.next_run).where(Schedule.content_id == content_id)).one() == T0 + timedelta(hours=5, minutes=1)


@pytest.mark.integration
def test_schedule_fires_and_again_after_restart_without_doubling(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import time
    import warnings

    from aiosmtpd.controller import Controller
    from posit import connect
    from tests.conftest import free_port, start_server
    from tests.test_clients import rsconnect
    from tests.test_rendered_content import TOKEN_CELLS, deploy_notebook, write_notebook

    class Inbox:
        def __init__(self) -> None:
            self.messages: list[tuple[list[str], str]] = []

        async def handle_DATA(self, _server, _session, envelope):  # type: ignore[no-untyped-def]  # noqa: N802
            self.messages.append((list(envelope.rcpt_tos), envelope.content.decode(errors="replace")))
            return "250 OK"

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    data_dir = tmp_path_factory.mktemp("podium-schedules") / "data"
    env = {"PODIUM_SCHEDULE_POLL_SECONDS": "0.3", "PODIUM_SMTP_HOST": "127.0.0.1",
           "PODIUM_SMTP_PORT": str(smtp.port), "PODIUM_SMTP_FROM": "reports@podium.test"}
    server = start_server(data_dir, env)
    try:
        key = server.user_key("schedule_publisher")
        me = server.api(key).get(f"{server.url}/__api__/v1/user").json()
        assert server.api().put(f"{server.url}/__api__/v1/users/{me['guid']}",
                                json={"email": "publisher@podium.test"}).status_code == 200
        home = tmp_path_factory.mktemp("home")
        assert rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", key).returncode == 0
        guid = deploy_notebook(home, write_notebook(tmp_path_factory.mktemp("nb"), "sched", TOKEN_CELLS))
        client = connect.Client(server.url, key)
        content = client.content.get(guid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            start = datetime.now(UTC) + timedelta(seconds=2)
            made = content.schedule.create(
                type="hour", n=1, start_time=start, timezone="Europe/Paris", email=True
            )
            assert made["type"] == "hour" and made["next_run"] is not None
            assert content.schedule.find_one()["id"] == made["id"]

        def scheduled() -> list[dict]:
            listed = server.api(key).get(f"{server.url}/__api__/v1/content/{guid}/renderings").json()
            return [r for r in listed if r["reason"] == "schedule"]

        def wait_for(count: int) -> list[dict]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                found = scheduled()
                if len(found) >= count and all(r["status"] != "running" for r in found):
                    return found
                time.sleep(0.3)
            raise AssertionError(f"expected {count} scheduled renderings, found {scheduled()}")

        first = wait_for(1)
        assert first[0]["status"] == "succeeded" and first[0]["active"]
        deadline = time.monotonic() + 10
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.2)
        assert inbox.messages and inbox.messages[0][0] == ["publisher@podium.test"]
        assert "token-" in inbox.messages[0][1] and "reports@podium.test" in inbox.messages[0][1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            variant = content._default_variant
            variant.send_mail("me")
        assert len(inbox.messages) == 2
        server.stop()
        # While the server is down the next run comes due (as if the downtime spanned it).
        store = Store(f"sqlite:///{data_dir / 'db' / 'podium.sqlite'}")
        with store.session() as session:
            row = session.scalars(select(Schedule)).one()
            row.next_run = datetime.now(UTC) - timedelta(minutes=5)
        store.dispose()
        server = start_server(data_dir, env, bootstrap=False)
        second = wait_for(2)
        time.sleep(1.5)  # several more polls: nothing more may run
        assert len(scheduled()) == 2 and second[0]["status"] == "succeeded"
        listed = server.api(key).get(f"{server.url}/__api__/variants/{content['id']}/schedules").json()
        assert datetime.fromisoformat(listed[0]["next_run"].replace("Z", "+00:00")) > datetime.now(UTC)
    finally:
        server.stop()
        smtp.stop()


def test_fail_interrupted_renderings_marks_running_ones_failed(store: Store) -> None:
    from podium.render import fail_interrupted_renderings
    from podium.store.models import Rendering

    content_id = _scheduled(store, T0)
    with store.session() as session:
        session.add_all([
            Rendering(content_id=content_id, bundle_id=1, status="running"),
            Rendering(content_id=content_id, bundle_id=1, status="succeeded"),
        ])
    assert fail_interrupted_renderings(store) == 1
    with store.session() as session:
        statuses = sorted(session.scalars(select(Rendering.status)))
    assert statuses == ["failed", "succeeded"]
