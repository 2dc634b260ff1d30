"""``v1/user`` and ``v1/users``: the caller, and user administration."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from podium import audit, auth, errors, throttle
from podium.api import deps
from podium.api.body import json_object
from podium.api.credentials import failure_throttle
from podium.api.lookup import found
from podium.api.paging import like_prefix, page
from podium.api.serialize import user_json
from podium.changes import Changes
from podium.store.models import User
from podium.throttle import Throttle

router = APIRouter()
USERNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


def check_username(value: Any) -> str:
    if not isinstance(value, str) or not USERNAME_RE.match(value):
        raise errors.bad_request(
            f"The username {value!r} is not valid: start with a letter, then letters, digits, "
            "'.', '_' or '-', at most 64 characters.", code=7,
        )
    return value


def check_role(value: Any) -> auth.Role:
    if value not in auth.ROLES:
        raise errors.bad_request(
            f"user_role must be one of {', '.join(auth.ROLES)}; got {value!r}."
        )
    return value  # type: ignore[no-any-return]


def _load(session: Session, guid: str) -> User:
    return found(session.scalar(select(User).where(User.guid == guid)), "user", guid)


@router.get("/v1/user")
def me(user: User = Depends(deps.user)) -> dict[str, Any]:
    return user_json(user)


ACCOUNT_STATUSES = ("locked", "licensed", "inactive")


@router.get("/v1/users")
def list_users(
    prefix: str | None = None,
    user_role: str | None = None,
    account_status: str | None = None,
    page_number: int = 1,
    page_size: int = 20,
    session: Session = Depends(deps.db),
    _: User = Depends(deps.publisher),
    asc_order: bool = True,
) -> dict[str, Any]:
    """Users in creation order. ``prefix`` matches the start of the user name, first or last
    name or email, ignoring case; ``user_role`` and ``account_status`` take ``|``-separated
    lists (``locked``; ``licensed``: not locked; ``inactive``: never signed in or used a key)."""
    query = select(User)
    if prefix:
        like = like_prefix(prefix)
        query = query.where(
            User.username.ilike(like, escape="\\") | User.email.ilike(like, escape="\\")
            | User.first_name.ilike(like, escape="\\") | User.last_name.ilike(like, escape="\\")
        )
    if user_role:
        roles = user_role.split("|")
        for role in roles:
            check_role(role)
        query = query.where(User.user_role.in_(roles))
    if account_status:
        statuses = account_status.split("|")
        unknown = [s for s in statuses if s not in ACCOUNT_STATUSES]
        if unknown:
            raise errors.bad_request(
                f"account_status takes {', '.join(ACCOUNT_STATUSES)} separated by '|'; got {unknown[0]!r}.",
                code=25,
            )
        wanted = []
        if "locked" in statuses:
            wanted.append(User.locked.is_(True))
        if "licensed" in statuses:
            wanted.append(User.locked.is_(False))
        if "inactive" in statuses:
            wanted.append(User.active_time.is_(None))
        query = query.where(or_(*wanted))
    order = User.id.asc() if asc_order else User.id.desc()
    return page(session, query.order_by(order), page_number, page_size, user_json)


@router.get("/v1/users/{guid}")
def get_user(
    guid: str, session: Session = Depends(deps.db), current: User = Depends(deps.user)
) -> dict[str, Any]:
    if guid != current.guid and not auth.at_least(current, "publisher"):
        raise errors.forbidden("Viewers can only look up their own account.")
    return user_json(_load(session, guid))


@router.post("/v1/users")
async def create_user(
    request: Request,
    session: Session = Depends(deps.db),
    current: User = Depends(deps.administrator),
) -> dict[str, Any]:
    body = await json_object(request)
    username = check_username(body.get("username"))
    role = check_role(body.get("user_role", "viewer"))
    password = body.get("password")
    if body.get("user_must_set_password") is True:
        password = None  # they choose one when an administrator gives them a reset
    elif password is not None and (not isinstance(password, str) or len(password) < 8):
        raise errors.bad_request(
            "The password is too weak: use at least 8 characters (or leave it out and set "
            "user_must_set_password).", code=6,
        )
    try:
        user = auth.create_user(
            session, username, role, password,
            email=str(body.get("email") or ""),
            first_name=str(body.get("first_name") or ""),
            last_name=str(body.get("last_name") or ""),
        )
        audit.record(session, current, "add_user", f"Created user {audit.describe(user)} with role {role}.")
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.ApiError(409, 8, f"A user named {username!r} already exists; choose another user name.") from None
    return user_json(user)


@router.put("/v1/users/{guid}")
async def update_user(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    current: User = Depends(deps.user),
    changes: Changes = Depends(deps.changes),
) -> dict[str, Any]:
    is_admin = auth.at_least(current, "administrator")
    if guid != current.guid and not is_admin:
        raise errors.forbidden("Only administrators can change other users.")
    user = _load(session, guid)
    body = await json_object(request)
    changed: list[str] = []
    for field in ("email", "first_name", "last_name"):
        if field in body and str(body[field] or "") != getattr(user, field):
            setattr(user, field, str(body[field] or ""))
            changed.append(field)
    if "username" in body and body["username"] != user.username:
        if not is_admin:
            raise errors.forbidden("Only administrators can rename users.")
        changed.append(f"username (was {user.username})")
        user.username = check_username(body["username"])
    if changed:
        audit.record(session, current, "update_user", f"Changed {', '.join(changed)} of {audit.describe(user)}.")
    if "user_role" in body and body["user_role"] != user.user_role:
        if not is_admin:
            raise errors.forbidden("Only administrators can change roles.")
        if user.id == current.id:
            raise errors.forbidden("Administrators cannot change their own role.")
        before = user.user_role
        user.user_role = check_role(body["user_role"])
        audit.record(
            session, current, "change_user_role",
            f"Changed the role of {audit.describe(user)} from {before} to {user.user_role}.",
        )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise errors.ApiError(409, 8, "That user name is taken; choose another.") from None
    changes.users()
    return user_json(user)


@router.post("/v1/users/{guid}/lock")
async def lock_user(
    guid: str,
    request: Request,
    session: Session = Depends(deps.db),
    current: User = Depends(deps.administrator),
    changes: Changes = Depends(deps.changes),
    failures: Throttle = Depends(failure_throttle),
) -> dict[str, Any]:
    """Lock or unlock a user. Unlocking also clears the account's failed sign-ins, so a
    user locked after too many (``signin_lockout_failures``) may sign in at once."""
    user = _load(session, guid)
    locked = (await json_object(request)).get("locked")
    if not isinstance(locked, bool):
        raise errors.bad_request('The body must be {"locked": true} or {"locked": false}.')
    if user.id == current.id:
        raise errors.forbidden("You cannot lock your own account.")
    if locked != user.locked:
        verb, action = ("Locked", "lock_user") if locked else ("Unlocked", "unlock_user")
        audit.record(session, current, action, f"{verb} {audit.describe(user)}.")
    if not locked:
        failures.reset(session, throttle.account(user.username))
    user.locked = locked
    session.commit()
    changes.users()
    return {}
