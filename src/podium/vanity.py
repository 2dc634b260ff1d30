"""Vanity paths: the rules a content item's custom path follows, and finding one in a path.

A vanity path is normalised to start and end with ``/`` with no repeated slashes
(``"sales//q3"`` -> ``"/sales/q3/"``), holds only ``[A-Za-z0-9_-/]``, and may not be ``/``
nor start with a path Connect or Podium keep for themselves (:data:`RESERVED`). No vanity
may be an ancestor or a descendant of another (``/a/`` and ``/a/b/``), so at most one
matches any request path: :func:`match` finds it by looking up each ``/``-ended prefix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import errors
from podium.store.models import Content, Vanity

_ALLOWED = re.compile(r"^[A-Za-z0-9_\-/]+$")
MAX_LENGTH = 1024
# Connect's reserved prefixes (its API reference), and the roots of Podium's own pages.
RESERVED = (
    "/__", "/favicon.ico", "/connect", "/apps", "/users", "/groups", "/setpassword",
    "/user-completion", "/confirm", "/recent", "/reports", "/plots", "/unpublished",
    "/settings", "/metrics", "/tokens", "/help", "/login", "/welcome", "/register",
    "/resetpassword", "/content",
    "/logout", "/static", "/admin", "/profile", "/publish",
)


def normalise(path: object) -> str:
    """The canonical form of a requested vanity path; 400 (code 52) for one that may not
    be used, naming the rule it breaks."""
    if not isinstance(path, str) or not path.strip("/"):
        raise errors.bad_request(
            f"The vanity path {path!r} is not valid: give a path such as '/sales/report/'; "
            "'/' itself cannot be one.", code=52,
        )
    if not _ALLOWED.match(path):
        raise errors.bad_request(
            f"The vanity path {path!r} is not valid: use only letters, digits, '-', '_' and '/'.",
            code=52,
        )
    canonical = "/" + "/".join(part for part in path.split("/") if part) + "/"
    if len(canonical) > MAX_LENGTH:
        raise errors.bad_request(f"The vanity path is longer than {MAX_LENGTH} characters.", code=52)
    lowered = canonical.lower()
    for prefix in RESERVED:
        if lowered.startswith(prefix):
            raise errors.bad_request(
                f"The vanity path {canonical!r} is reserved: paths starting with {prefix!r} belong "
                "to the server. Choose another.", code=52,
            )
    return canonical


def overlaps(a: str, b: str) -> bool:
    """Whether two normalised paths are the same, or one is an ancestor of the other."""
    return a.startswith(b) or b.startswith(a)


def match(paths: Mapping[str, str], path: str) -> tuple[str, str] | None:
    """``(vanity path, guid)`` of the vanity ``path`` is under (``path`` may lack the
    vanity's final ``/``), from ``paths`` (vanity path -> content guid)."""
    if not paths:
        return None
    end = path.find("/", 1)
    while end != -1:
        guid = paths.get(path[: end + 1])
        if guid is not None:
            return path[: end + 1], guid
        end = path.find("/", end + 1)
    guid = paths.get(path + "/")
    return (path + "/", guid) if guid is not None else None


def public_prefix(session: Session, guid: str, target: str) -> str | None:
    """The address prefix ``target`` reaches content ``guid`` by: ``/content/{guid}/`` or the
    item's vanity path; None when it is under neither (or tries to escape with ``\\``)."""
    if "\\" in target:
        return None
    prefix = f"/content/{guid}/"
    if target.startswith(prefix):
        return prefix
    path = session.scalar(
        select(Vanity.path).join(Content, Content.id == Vanity.content_id).where(Content.guid == guid)
    )
    return path if path is not None and target.startswith(path) else None
