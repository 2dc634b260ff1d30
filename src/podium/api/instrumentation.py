"""``v1/instrumentation``: recorded usage (:mod:`podium.usage`) as Connect serves it.

- ``content/hits?content_guid=&from=&to=``: a plain array of hits (posit-sdk
  ``client.metrics.hits``); ``content_guid`` may list several guids joined by ``|``.
- ``content/visits`` and ``shiny/usage``: cursor pages (``next``, ``previous``,
  ``limit``, ``asc_order``, ``from``, ``to``, ``content_guid``, ``min_data_version``)
  shaped exactly ``{"paging": ..., "results": [...]}``.

Administrators see all content's usage; publishers the usage of content they own or
collaborate on, and asking for anyone else's is refused (403); viewers are refused.
Malformed times or guids are a 400.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, Text, cast, false, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.api import deps
from podium.api.serialize import iso
from podium.store import Store
from podium.store.models import AppSession, Content, ContentHit, Permission, User

router = APIRouter()
MAX_LIMIT = 500
DATA_VERSION = 1


def parse_time(name: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise errors.bad_request(f"{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z; got {value!r}.",
                                 code=25) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_guids(value: str | None) -> list[str] | None:
    if value is None or value == "":
        return None
    guids = []
    for part in value.split("|"):
        try:
            guids.append(str(uuid.UUID(part.strip())))
        except ValueError:
            raise errors.bad_request(
                f"content_guid must be content guids joined by '|'; {part!r} is not a guid.", code=25
            ) from None
    return guids


def allowed_guids(session: Session, user: User, wanted: list[str] | None) -> list[str] | None:
    """The content guids the caller may read usage of, narrowed to ``wanted`` (None: all,
    for administrators); 403 when ``wanted`` names content that is not theirs."""
    if auth.at_least(user, "administrator"):
        return wanted
    if not auth.at_least(user, "publisher"):
        raise errors.forbidden("Usage is for publishers (of their content) and administrators.")
    managed = select(Permission.content_id).where(
        Permission.principal_guid.in_(auth.principal_guids(session, user)), Permission.role == "owner"
    )
    mine = set(session.scalars(select(Content.guid).where(or_(Content.owner_id == user.id, Content.id.in_(managed)))))
    if wanted is None:
        return sorted(mine)
    others = [g for g in wanted if g not in mine]
    if others:
        raise errors.forbidden(f"You may read the usage of your own content only; not of {others[0]}.")
    return wanted


HITS_PER_CHUNK = 2000  # rows read, encoded and sent at a time by the hits array
_MAX_ID_WINDOW = 1 << 20  # ids one query of the hits array may span (see _hits_array)


def _hit_json_sql(dialect: str) -> ColumnElement[str]:
    """A hit as the API shows it, as JSON text made by the database itself::

        {"id": 7, "content_guid": "...", "user_guid": null, "timestamp": "2026-03-01T12:00:00Z",
         "data": {"path": "/content/.../", "user_agent": "...", "query": "a=1",
                  "sec_fetch_dest": "document", "sec_fetch_site": "none"}}

    (``data`` without the keys whose value is null; the time to the second, UTC). The
    encoding then runs in the database's C code, outside the GIL, instead of a dict and a
    ``json.dumps`` a hit in the server: a long history reads two to three times as fast,
    and requests served meanwhile wait less (bench/README.md, ``hits.py``)."""
    hit = ContentHit
    data = ("path", hit.path, "user_agent", hit.user_agent, "query", hit.query,
            "sec_fetch_dest", hit.sec_fetch_dest, "sec_fetch_site", hit.sec_fetch_site)
    if dialect == "sqlite":  # time is text there, as the ORM writes it: 2026-03-01 12:00:00.123456
        timestamp = func.substr(hit.time, 1, 10, type_=Text).concat("T").concat(
            func.substr(hit.time, 12, 8, type_=Text)).concat("Z")
        # A merge patch onto {} keeps the keys in order and drops those whose value is null.
        return func.json_object("id", hit.id, "content_guid", hit.content_guid, "user_guid", hit.user_guid,
                                "timestamp", timestamp, "data", func.json_patch("{}", func.json_object(*data)),
                                type_=Text)
    timestamp = func.to_char(func.timezone("UTC", hit.time), 'YYYY-MM-DD"T"HH24:MI:SS"Z"', type_=Text)
    return cast(func.json_build_object("id", hit.id, "content_guid", hit.content_guid, "user_guid", hit.user_guid,
                                       "timestamp", timestamp, "data", func.json_strip_nulls(
                                           func.json_build_object(*data))), Text)


def _hits_array(store: Store, filters: list[Any], first: int, last: int) -> Iterator[bytes]:
    """The JSON array of the hits matching ``filters`` with ids from ``first`` to
    ``last``, in id order, at most :data:`HITS_PER_CHUNK` at a time, each chunk read in a
    short transaction of its own: the server holds one chunk in memory, however long the
    history, and no read transaction stays open while a slow client reads (SQLite's log
    could not be checkpointed meanwhile). The database encodes each chunk whole
    (:func:`_hit_json_sql`, joined by commas in id order): one row a chunk reaches Python.

    Each query also keeps to a window of ids, which doubles while the hits matching are
    sparse and halves while a chunk fills: the database then never gathers and sorts
    more than a few chunks' worth of rows for one (as it would for several content guids
    through their index, every matching hit up to ``last`` for each chunk), and a rare
    item in a long history costs a few hundred queries, not one per chunk of ids."""
    dialect = store.engine.dialect.name
    encoded = _hit_json_sql(dialect).label("hit")
    yield b"["
    after, window, comma = first - 1, HITS_PER_CHUNK, b""
    while after < last:
        upto = min(after + window, last)
        chunk = (select(ContentHit.id, encoded).where(*filters, ContentHit.id > after, ContentHit.id <= upto)
                 .order_by(ContentHit.id).limit(HITS_PER_CHUNK).subquery())
        if dialect == "sqlite":  # the rows of the ordered subquery, in the order they come
            joined = func.group_concat(chunk.c.hit, ",", type_=Text)
        else:
            joined = func.string_agg(chunk.c.hit, aggregate_order_by(literal(","), chunk.c.id), type_=Text)
        with store.session() as session:
            count, top, text = session.execute(select(func.count(), func.max(chunk.c.id), joined)).one()
        if count == HITS_PER_CHUNK:  # the window may hold more: go on after this chunk
            after, window = top, max(HITS_PER_CHUNK, window // 2)
        else:
            after, window = upto, min(2 * window, _MAX_ID_WINDOW)
        if count:
            yield comma + text.encode()
            comma = b","
    yield b"]"


def hits_array(session: Session, store: Store, filters: list[Any]) -> Iterator[bytes]:
    """The JSON array of the hits matching ``filters`` recorded so far (their ids read in
    ``session``, whose read then ends), streamed by :func:`_hits_array`."""
    # The first and the last through the id (or content and id) index, not min() and
    # max() together, which read every matching hit (0.15 s a million on SQLite) before
    # the first byte.
    matching = select(ContentHit.id).where(*filters).limit(1)
    first = session.scalar(matching.order_by(ContentHit.id))
    last = session.scalar(matching.order_by(ContentHit.id.desc()))
    session.rollback()  # this request's read ends here; the array is read in chunks of its own
    return _hits_array(store, filters, first or 1, last or 0)


@router.get("/v1/instrumentation/content/hits", response_model=None)
def list_hits(
    request: Request,
    content_guid: str | None = None,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
    store: Store = Depends(deps.store),
) -> StreamingResponse:
    """Every hit matching the filters, as one plain array (posit-sdk reads no pages),
    streamed: the hits recorded up to the request, not those imported while it is read."""
    start = parse_time("from", request.query_params.get("from"))
    end = parse_time("to", request.query_params.get("to"))
    guids = allowed_guids(session, user, parse_guids(content_guid))
    filters: list[Any] = []
    if guids is not None:
        filters.append(ContentHit.content_guid.in_(guids))
    if start is not None:
        filters.append(ContentHit.time >= start)
    if end is not None:
        filters.append(ContentHit.time < end)
    return StreamingResponse(hits_array(session, store, filters), media_type="application/json")


def _cursor(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def _uncursor(name: str, value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode())
    except ValueError:
        raise errors.bad_request(f"{name} is not a cursor this server gave out.", code=25) from None


def cursor_page(
    request: Request, session: Session, user: User, model: Any, time_column: Any,
    render: Any,
) -> dict[str, Any]:
    params = request.query_params
    start, end = parse_time("from", params.get("from")), parse_time("to", params.get("to"))
    guids = allowed_guids(session, user, parse_guids(params.get("content_guid")))
    raw_limit = params.get("limit") or str(MAX_LIMIT)
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise errors.bad_request(f"limit must be from 1 to {MAX_LIMIT}; got {raw_limit!r}.", code=25)
    minimum = params.get("min_data_version") or "0"
    if not minimum.isdigit():
        raise errors.bad_request(f"min_data_version must be a number; got {minimum!r}.", code=25)
    ascending = (params.get("asc_order") or "true").lower() != "false"
    after, before = _uncursor("next", params.get("next")), _uncursor("previous", params.get("previous"))
    limit = int(raw_limit)
    query = select(model)
    if model is ContentHit:
        query = query.where(ContentHit.visit == true())  # as the partial indexes of visits say it
    if guids is not None:
        query = query.where(model.content_guid.in_(guids))
    if start is not None:
        query = query.where(time_column >= start)
    if end is not None:
        query = query.where(time_column < end)
    if int(minimum) > DATA_VERSION:
        query = query.where(false())
    forward = before is None
    if after is not None:
        query = query.where(model.id > after if ascending else model.id < after)
    if before is not None:
        query = query.where(model.id < before if ascending else model.id > before)
    newest_first = ascending != forward
    rows = list(session.scalars(
        query.order_by(model.id.desc() if newest_first else model.id).limit(limit + 1)
    ))
    more = len(rows) > limit
    rows = rows[:limit]
    if not forward:
        rows.reverse()
    next_cursor = _cursor(rows[-1].id) if rows and (more or not forward) else None
    previous_cursor = _cursor(rows[0].id) if rows and (after is not None or (not forward and more)) else None
    base = str(request.url.remove_query_params(["next", "previous"]))
    return {
        "paging": {
            "cursors": {"previous": previous_cursor, "next": next_cursor},
            "first": base,
            "previous": f"{base}&previous={previous_cursor}" if previous_cursor else None,
            "next": f"{base}&next={next_cursor}" if next_cursor else None,
            "last": str(request.url.include_query_params(asc_order=str(not ascending).lower())
                        .remove_query_params(["next", "previous"])),
        },
        "results": [render(row) for row in rows],
    }


def visit_json(hit: ContentHit) -> dict[str, Any]:
    return {"content_guid": hit.content_guid, "user_guid": hit.user_guid, "variant_key": None,
            "rendering_id": None, "bundle_id": hit.bundle_id, "time": iso(hit.time),
            "data_version": DATA_VERSION, "path": hit.path}


def usage_json(row: AppSession) -> dict[str, Any]:
    return {"content_guid": row.content_guid, "user_guid": row.user_guid, "started": iso(row.started),
            "ended": iso(row.ended), "data_version": DATA_VERSION}


@router.get("/v1/instrumentation/content/visits")
def list_visits(request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.user)) -> dict[str, Any]:
    return cursor_page(request, session, user, ContentHit, ContentHit.time, visit_json)


@router.get("/v1/instrumentation/shiny/usage")
def list_shiny_usage(
    request: Request, session: Session = Depends(deps.db), user: User = Depends(deps.user)
) -> dict[str, Any]:
    return cursor_page(request, session, user, AppSession, AppSession.started, usage_json)
