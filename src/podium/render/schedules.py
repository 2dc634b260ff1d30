"""Render schedules: when rendered content renders again, and who runs each run.

A schedule (Connect's fields: ``type``, ``schedule`` as a JSON string, ``start_time``,
``timezone``) gives occurrences; :func:`next_run` is the pure function that finds
the first one after a moment. Supported types: ``minute``, ``hour``, ``day``,
``week``, ``year`` (every ``N``; days, weeks and years keep the wall-clock time in
the schedule's timezone), ``weekday`` (Monday to Friday) and ``dayofweek``
(``Days``, 0 = Sunday), ``semimonth`` (``First`` true: the 1st and 15th, false:
the 14th and the last day), ``dayofmonth`` (day ``Day`` of every ``N`` months,
the month's last day when shorter), all at ``start_time``'s time of day.
``dayweekofmonth`` is refused for now.

:class:`ScheduleRunner` is the loop every server node runs. A due run is claimed in
the database by moving ``next_run`` forward with ``UPDATE ... WHERE next_run = <the
value read>``: only one node's update matches, so concurrent nodes never run it
twice. After a restart (or any pause) a missed run fires once, and the schedule
carries on from the next occurrence after now: no burst of missed runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update

from podium.store import Store
from podium.store.models import Schedule

log = logging.getLogger(__name__)
INTERVALS = ("minute", "hour", "day", "week", "year")
SUPPORTED_TYPES = (*INTERVALS, "weekday", "dayofweek", "semimonth", "dayofmonth")


class InvalidSchedule(ValueError):
    """A schedule that cannot be used; the message names the field."""


def parse_rule(type_: str, rule: str) -> dict[str, Any]:
    """The schedule's parameters, checked for its type."""
    if type_ not in SUPPORTED_TYPES:
        raise InvalidSchedule(
            f"Schedule type {type_!r} is not supported; use one of {', '.join(SUPPORTED_TYPES)}."
        )
    try:
        value = json.loads(rule or "{}")
    except json.JSONDecodeError:
        raise InvalidSchedule(f"schedule must be a JSON object string; got {rule!r}.") from None
    if not isinstance(value, dict):
        raise InvalidSchedule(f"schedule must be a JSON object string; got {rule!r}.")
    if type_ in INTERVALS:
        n = value.get("N")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidSchedule(f"A {type_!r} schedule needs N, a whole number of at least 1.")
    if type_ == "dayofweek":
        days = value.get("Days")
        if not isinstance(days, list) or not days or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6 for d in days
        ):
            raise InvalidSchedule("A 'dayofweek' schedule needs Days, weekdays from 0 (Sunday) to 6.")
    if type_ == "semimonth" and not isinstance(value.get("First", True), bool):
        raise InvalidSchedule("A 'semimonth' schedule's First must be true or false.")
    if type_ == "dayofmonth":
        n, day = value.get("N", 1), value.get("Day")
        if not (isinstance(n, int) and isinstance(day, int)) or isinstance(n, bool) or isinstance(day, bool) \
                or n < 1 or not 1 <= day <= 31:
            raise InvalidSchedule("A 'dayofmonth' schedule needs N (at least 1) and Day (1 to 31).")
    return value


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"timezone {name!r} is not an IANA timezone (such as 'Europe/Paris').") from None


def _add_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a year without one
        return moment.replace(year=moment.year + years, day=28)


def next_run(type_: str, rule: str, start_time: datetime, timezone: str, after: datetime) -> datetime:
    """The first occurrence at or after ``start_time`` and strictly after ``after`` (UTC)."""
    params = parse_rule(type_, rule)
    tz = zone(timezone)
    start = start_time.astimezone(UTC)
    if type_ in ("minute", "hour"):
        step = timedelta(minutes=params["N"]) if type_ == "minute" else timedelta(hours=params["N"])
        if start > after:
            return start
        return start + step * ((after - start) // step + 1)
    local_start = start.astimezone(tz)
    if type_ in ("day", "week", "year"):
        n = params["N"]

        def occurrence(k: int) -> datetime:
            if type_ == "year":
                local = _add_years(local_start.replace(tzinfo=None), k * n)
            else:
                local = local_start.replace(tzinfo=None) + timedelta(days=k * n * (7 if type_ == "week" else 1))
            return local.replace(tzinfo=tz).astimezone(UTC)

        k = 0
        if after >= start:  # jump close, then step (wall-clock steps vary with DST)
            span = (after - start).days
            k = max(0, span // (n * (365 if type_ == "year" else 7 if type_ == "week" else 1)) - 1)
        while occurrence(k) <= after:
            k += 1
        return occurrence(k)
    if type_ in ("semimonth", "dayofmonth"):
        return _monthly(type_, params, local_start, tz, start, after)
    days = {1, 2, 3, 4, 5} if type_ == "weekday" else set(params["Days"])
    first: date = max(local_start.date(), after.astimezone(tz).date())
    for offset in range(8):
        day = first + timedelta(days=offset)
        candidate = datetime.combine(day, local_start.timetz().replace(tzinfo=None)).replace(tzinfo=tz)
        moment = candidate.astimezone(UTC)
        if (day.weekday() + 1) % 7 in days and moment >= start and moment > after:
            return moment
    raise AssertionError("a weekly rule always has an occurrence within 8 days")


def _monthly(
    type_: str, params: dict[str, Any], local_start: datetime, tz: ZoneInfo, start: datetime, after: datetime
) -> datetime:
    import calendar

    every = int(params.get("N", 1)) if type_ == "dayofmonth" else 1
    local_after = after.astimezone(tz)
    base = local_start.year * 12 + local_start.month - 1
    first = max(base, local_after.year * 12 + local_after.month - 1)
    first += (base - first) % every  # the first month on the schedule's rhythm
    for month_index in range(first, first + 24 * every + 1, every):
        year, month = divmod(month_index, 12)
        last = calendar.monthrange(year, month + 1)[1]
        if type_ == "dayofmonth":
            days = [min(int(params["Day"]), last)]
        else:
            days = [1, 15] if params.get("First", True) else [14, last]
        for day in days:
            local = datetime(year, month + 1, day, local_start.hour, local_start.minute, local_start.second)
            moment = local.replace(tzinfo=tz).astimezone(UTC)
            if moment >= start and moment > after:
                return moment
    raise AssertionError("a monthly rule always has an occurrence within two years")


def claim(store: Store, schedule_id: int, expected: datetime, following: datetime) -> bool:
    """Move a due schedule's ``next_run`` from ``expected`` to ``following``; True when this
    call did it (and so must run it), False when another node (or an edit) got there first."""
    with store.session() as session:
        done = session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.next_run == expected)
            .values(next_run=following)
        )
        return bool(getattr(done, "rowcount", 0) == 1)


class ScheduleRunner:
    """Every ``poll_seconds``, claims due schedules and starts their renders.

    ``on_duty`` says whether this node runs schedules now (the node holding the
    ``render-schedules`` lease, :mod:`podium.leases`); None: always. Each due run is
    claimed in the database besides, so it runs once even when two nodes look."""

    def __init__(
        self, store: Store, poll_seconds: float, run: Callable[[int], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_duty: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.run = run  # starts a render of a content id
        self.clock = clock
        self.on_duty = on_duty
        self._task: asyncio.Task[None] | None = None

    def due(self) -> list[int]:
        """Claim every due schedule; return the content ids this node must render."""
        now = self.clock()
        with self.store.session() as session:
            rows = list(session.scalars(select(Schedule).where(Schedule.next_run <= now)))
        claimed = []
        for row in rows:
            assert row.next_run is not None
            try:
                following = next_run(row.type, row.schedule, row.start_time, row.timezone, now)
            except InvalidSchedule as exc:
                log.warning("schedule %s of content %s is unusable: %s", row.id, row.content_id, exc)
                continue
            if claim(self.store, row.id, row.next_run, following):
                claimed.append(row.content_id)
        return claimed

    async def _loop(self) -> None:
        while True:
            try:
                if self.on_duty is None or self.on_duty():
                    for content_id in await asyncio.to_thread(self.due):
                        self.run(content_id)
            except Exception:
                log.exception("render schedules: a pass failed; trying again")
            await asyncio.sleep(self.poll_seconds)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
