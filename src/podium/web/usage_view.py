"""Usage in the dashboard: a content's Usage pane and Admin → Usage, drawn as SVG charts
from recorded usage (:mod:`podium.usage`): requests and distinct viewers per day over
the last :data:`DAYS` days, top viewers, top content and active users. They read the
hits counted per content, viewer and day (``usage_days``, kept by the importer), not
the hits themselves: a page costs the same with a hundred hits a day or a million."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import case, distinct, func, select
from sqlalchemy.orm import Session

from podium.api import deps
from podium.store.models import Content, UsageDay, User
from podium.web.admin import TABS
from podium.web.pages import administrator
from podium.web.templating import render

router = APIRouter()
DAYS = 30
TOP = 10
# The chart's drawing area, in SVG user units.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP_MARGIN = 720, 220, 44, 28, 12


@dataclass(frozen=True)
class Bar:
    day: str
    requests: int
    viewers: int
    x: float
    width: float
    height: float  # of the requests bar
    viewers_y: float  # where the distinct viewers line passes


def chart(counts: dict[str, tuple[int, int]], today: date, days: int = DAYS) -> dict[str, Any]:
    """The bars and line of a per-day chart: ``counts`` maps ``YYYY-MM-DD`` to (requests,
    distinct viewers); days without usage are zero. Pure, so it is tested as values."""
    first = today - timedelta(days=days - 1)
    series = [(first + timedelta(days=n)).isoformat() for n in range(days)]
    peak = max([1, *(counts.get(d, (0, 0))[0] for d in series)])
    step = (WIDTH - LEFT - 18) / days  # room on the right for the last day's label
    plot = HEIGHT - BOTTOM - TOP_MARGIN
    bars = []
    for n, day in enumerate(series):
        requests, viewers = counts.get(day, (0, 0))
        bars.append(Bar(day, requests, viewers, LEFT + n * step + step * 0.15, step * 0.7,
                        plot * requests / peak, HEIGHT - BOTTOM - plot * viewers / peak))
    ticks = sorted({0, peak // 2, peak})
    return {
        "bars": bars, "peak": peak, "width": WIDTH, "height": HEIGHT, "left": LEFT,
        "baseline": HEIGHT - BOTTOM, "top": TOP_MARGIN,
        "ticks": [(t, HEIGHT - BOTTOM - plot * t / peak) for t in ticks],
        "line": " ".join(f"{b.x + b.width / 2:.1f},{b.viewers_y:.1f}" for b in bars),
        "labels": [(b.x + b.width / 2, b.day[5:]) for n, b in enumerate(bars) if n % 5 == 0 or n == days - 1],
        "total_requests": sum(b.requests for b in bars),
    }


def _recent(guid: str | None = None) -> list[Any]:
    """The filter of the day counts of the last :data:`DAYS` days (of ``guid`` alone)."""
    since = datetime.now(UTC).date() - timedelta(days=DAYS - 1)
    return [UsageDay.day >= since, *([UsageDay.content_guid == guid] if guid is not None else [])]


# A viewer's guid, None for anonymous rows (which count as requests, not as viewers).
_VIEWER = case((UsageDay.user_guid != "", UsageDay.user_guid))


def daily_counts(session: Session, guid: str | None) -> dict[str, tuple[int, int]]:
    query = select(UsageDay.day, func.sum(UsageDay.requests), func.count(distinct(_VIEWER))).where(*_recent(guid))
    return {day.isoformat(): (int(r), int(v)) for day, r, v in session.execute(query.group_by(UsageDay.day))}


def top_viewers(session: Session, guid: str | None) -> list[dict[str, Any]]:
    only = _recent(guid)
    requests = func.sum(UsageDay.requests)
    rows = session.execute(
        select(UsageDay.user_guid, requests, func.max(UsageDay.last)).where(*only, UsageDay.user_guid != "")
        .group_by(UsageDay.user_guid).order_by(requests.desc()).limit(TOP)
    ).all()
    names = dict(session.execute(select(User.guid, User.username).where(User.guid.in_([r[0] for r in rows]))).all())
    anonymous = session.scalar(select(requests).where(*only, UsageDay.user_guid == "")) or 0
    return [{"username": names.get(str(g), str(g)), "requests": int(n), "last": last} for g, n, last in rows] + (
        [{"username": "anonymous", "requests": int(anonymous), "last": None}] if anonymous else []
    )


def usage_context(session: Session, guid: str | None) -> dict[str, Any]:
    return {"chart": chart(daily_counts(session, guid), datetime.now(UTC).date()),
            "viewers": top_viewers(session, guid), "days": DAYS}


@router.get("/connect/admin/usage")
def usage_page(request: Request, session: Session = Depends(deps.db), user: User = Depends(administrator)) -> Response:
    requests = func.sum(UsageDay.requests)
    rows = session.execute(
        select(UsageDay.content_guid, requests, func.count(distinct(_VIEWER)))
        .where(*_recent()).group_by(UsageDay.content_guid)
        .order_by(requests.desc()).limit(TOP)
    ).all()
    titles = {c.guid: c.title or c.name for c in session.scalars(select(Content).where(Content.guid.in_([r[0] for r in rows])))}
    top_content = [{"guid": g, "title": titles.get(g, g), "requests": int(n), "viewers": v} for g, n, v in rows]
    return render(request, "admin_usage.html", user=user, tabs=TABS, tab="usage", top_content=top_content,
                  **usage_context(session, None))
