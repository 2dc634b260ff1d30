"""``v1/audit_logs``: the audit log for administrators, with Connect's keyset paging.

``limit`` (1-500, default 20), ``ascOrder`` (default true: oldest first), and at
most one of ``next`` / ``previous``: an entry id from ``paging.cursors``, giving
the page after or before it in that order. ``paging`` also carries full URLs of
the ``first``, ``previous``, ``next`` and ``last`` pages, null where there is no
such page. Podium adds two filters, ``action`` and ``user_guid``, which the
paging URLs keep. ``v1/audit/actions`` lists the action names.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from podium import audit, errors
from podium.api import deps
from podium.api.serialize import iso
from podium.store.models import AuditEntry, User
from podium.urls import Urls

router = APIRouter()
MAX_LIMIT = 500


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "time": iso(entry.time),
        "user_id": str(entry.user_id) if entry.user_id is not None else None,
        "user_guid": entry.user_guid,
        "user_description": entry.user_description,
        "action": entry.action,
        "event_description": entry.event_description,
    }


def parse_cursor(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise errors.bad_request(f"{name} must be an audit log entry id from paging.cursors; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class AuditPage:
    """One page of entries, oldest or newest first, and the cursors around it."""

    entries: list[AuditEntry]
    previous: int | None  # cursor of the page before (its first entry's id), None on the first page
    next: int | None  # cursor of the page after, None on the last page
    last: int | None  # a ``previous`` cursor reaching the last page, None on the last page


def audit_page(
    session: Session,
    limit: int,
    ascending: bool,
    after: int | None = None,
    before: int | None = None,
    action: str | None = None,
    user_guid: str | None = None,
) -> AuditPage:
    """Entries after (``next``) or before (``previous``) a cursor, in the order asked for."""
    if after is not None and before is not None:
        raise errors.bad_request("Give next or previous, not both.")
    limit = max(1, min(limit, MAX_LIMIT))
    filters: list[ColumnElement[bool]] = []
    if action:
        filters.append(AuditEntry.action == action)
    if user_guid:
        filters.append(AuditEntry.user_guid == user_guid)

    def later(ident: int) -> ColumnElement[bool]:  # after ``ident`` in the order asked for
        return AuditEntry.id > ident if ascending else AuditEntry.id < ident

    def earlier(ident: int) -> ColumnElement[bool]:
        return AuditEntry.id < ident if ascending else AuditEntry.id > ident

    forward = AuditEntry.id.asc() if ascending else AuditEntry.id.desc()
    backward = AuditEntry.id.desc() if ascending else AuditEntry.id.asc()
    query = select(AuditEntry).where(*filters)
    if before is not None:
        entries = list(session.scalars(query.where(earlier(before)).order_by(backward).limit(limit)))
        entries.reverse()
    else:
        if after is not None:
            query = query.where(later(after))
        entries = list(session.scalars(query.order_by(forward).limit(limit)))
    if not entries:
        return AuditPage([], None, None, None)

    def any_where(condition: ColumnElement[bool]) -> bool:
        return bool(session.scalar(select(exists().where(*filters, condition))))

    has_before = any_where(earlier(entries[0].id))
    has_after = any_where(later(entries[-1].id))
    last = None
    if has_after:
        edge = session.scalar(select(func.max(AuditEntry.id) if ascending else func.min(AuditEntry.id)))
        last = (edge or 0) + 1 if ascending else (edge or 0) - 1
    return AuditPage(
        entries, entries[0].id if has_before else None, entries[-1].id if has_after else None, last
    )


@router.get("/v1/audit_logs")
def list_audit_logs(
    limit: int = 20,
    previous: str | None = None,
    next: str | None = None,
    asc_order: bool = Query(True, alias="ascOrder"),
    action: str | None = None,
    user_guid: str | None = None,
    urls: Urls = Depends(deps.urls),
    session: Session = Depends(deps.db),
    _admin: User = Depends(deps.administrator),
) -> dict[str, Any]:
    page = audit_page(
        session, limit, asc_order, parse_cursor("next", next), parse_cursor("previous", previous), action, user_guid
    )
    kept: dict[str, str] = {"limit": str(max(1, min(limit, MAX_LIMIT))), "ascOrder": str(asc_order).lower()}
    kept.update({k: v for k, v in (("action", action), ("user_guid", user_guid)) if v})
    base = f"{urls.public}__api__/v1/audit_logs?"

    def link(**cursor: int) -> str:
        return base + urllib.parse.urlencode({**kept, **{k: str(v) for k, v in cursor.items()}})

    return {
        "results": [entry_json(entry) for entry in page.entries],
        "paging": {
            "cursors": {
                "previous": str(page.previous) if page.previous is not None else None,
                "next": str(page.next) if page.next is not None else None,
            },
            "first": link() if page.previous is not None else None,
            "previous": link(previous=page.previous) if page.previous is not None else None,
            "next": link(next=page.next) if page.next is not None else None,
            "last": link(previous=page.last) if page.last is not None else None,
        },
    }


@router.get("/v1/audit/actions")
def list_audit_actions(_admin: User = Depends(deps.administrator)) -> list[dict[str, str]]:
    """The action names entries may carry, each with what it means."""
    return [{"action": name, "description": text} for name, text in audit.ACTIONS.items()]
