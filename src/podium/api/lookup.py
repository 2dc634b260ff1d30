"""Load-or-404: finding the record a request names, with Connect's error for each miss.

- :func:`found`: the value, or 404 (code 4) naming what was looked for;
- :func:`by_guid`: a row by its guid, 400 (code 3) for a malformed guid first;
- :func:`by_number`: a row by a numeric id given as text (None for anything else);
- :func:`variant_content`: the content behind a v0 variant id, 404 unless the caller
  may see it.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import auth, errors
from podium.store.models import Content, User

T = TypeVar("T")


def found(value: T | None, what: str, ident: str) -> T:
    if value is None:
        raise errors.not_found(what, ident)
    return value


def by_guid(session: Session, model: type[T], guid: str, what: str) -> T:
    try:
        uuid.UUID(guid)
    except ValueError:
        raise errors.invalid_id(what, guid) from None
    return found(session.scalar(select(model).filter_by(guid=guid)), what, guid)


def by_number(session: Session, model: type[T], ident: str) -> T | None:
    return session.get(model, int(ident)) if ident.isdigit() else None


def variant_content(session: Session, user: User | None, variant_id: str) -> Content:
    """Connect's variant ids are content ids here (one default variant per content)."""
    content = by_number(session, Content, variant_id)
    if content is None or not auth.can_see_settings(session, user, content):
        raise errors.not_found("variant", variant_id)
    return content
