"""Connect's offset pagination: ``page_number`` (from 1) and ``page_size``, answered as
exactly ``{"results", "current_page", "total"}`` (posit-sdk builds ``Page(**body)``, so
any other key breaks it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from podium import errors

# posit-sdk asks for 500 a page, and client.packages for 1,000,000.
MAX_PAGE_SIZE = 1_000_000


def page(
    session: Session,
    query: Select[Any],
    page_number: int,
    page_size: int,
    render: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """One page of ``query`` (already ordered), each row rendered."""
    if page_number < 1 or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise errors.bad_request(
            f"page_number must be 1 or more and page_size from 1 to {MAX_PAGE_SIZE}; "
            f"got {page_number} and {page_size}.", code=25,
        )
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = session.scalars(query.offset((page_number - 1) * page_size).limit(page_size))
    return {"results": [render(row) for row in rows], "current_page": page_number, "total": total}


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching values that start with ``prefix`` (escape ``\\``)."""
    return prefix.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
