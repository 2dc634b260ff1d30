"""Users, roles, passwords, API keys, login sessions and content permissions.

Passwords are hashed with argon2. API keys and session tokens are 256-bit
random strings; only their SHA-256 is stored (a slow hash adds nothing for
secrets with that much entropy and would cost ~50 ms on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.store.models import (
    ApiKey,
    Content,
    Group,
    GroupMember,
    LoginSession,
    Permission,
    User,
    utcnow,
)

Role = Literal["viewer", "publisher", "administrator"]
ROLES: tuple[Role, ...] = ("viewer", "publisher", "administrator")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
SESSION_COOKIE = "podium_session"
CSRF_COOKIE = "podium_csrf"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(15)


def at_least(user: User | None, role: Role) -> bool:
    return user is not None and not user.locked and _RANK[user.user_role] >= _RANK[role]  # type: ignore[index]


def create_user(
    session: Session,
    username: str,
    role: Role,
    password: str | None = None,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
) -> User:
    user = User(
        username=username,
        user_role=role,
        email=email,
        first_name=first_name,
        last_name=last_name,
        password_hash=hash_password(password) if password else None,
    )
    session.add(user)
    session.flush()
    return user


def create_api_key(session: Session, user: User, name: str) -> tuple[ApiKey, str]:
    """A new key for ``user``; the key itself is returned once and never stored."""
    key = secrets.token_urlsafe(32)
    record = ApiKey(user_id=user.id, name=name, key_hash=hash_token(key), key_prefix=key[:6])
    session.add(record)
    session.flush()
    return record, key


def user_for_api_key(session: Session, key: str) -> User | None:
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_token(key)))
    if record is None or record.user.locked:
        return None
    now = utcnow()
    # Touch at most once a minute: a write per request would serialise SQLite.
    if record.last_used_time is None or now - record.last_used_time > timedelta(minutes=1):
        record.last_used_time = now
        record.user.active_time = now
    return record.user


def parse_authorization(header: str | None) -> str | None:
    """The key from ``Authorization: Key <key>``; the scheme is case-insensitive."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "key" or not value.strip():
        return None
    return value.strip()


def start_session(session: Session, user: User, lifetime_seconds: int) -> tuple[str, str]:
    """A new login session; returns (session token, CSRF token)."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.add(
        LoginSession(
            token_hash=hash_token(token),
            csrf_token=csrf,
            user_id=user.id,
            expires_time=utcnow() + timedelta(seconds=lifetime_seconds),
        )
    )
    user.active_time = utcnow()
    return token, csrf


@dataclass(frozen=True)
class SessionInfo:
    id: int  # the login session's row id (content passes name it, see podium.handoff)
    user: User
    csrf_token: str


def user_for_session(session: Session, token: str, lifetime_seconds: int) -> SessionInfo | None:
    record = session.scalar(select(LoginSession).where(LoginSession.token_hash == hash_token(token)))
    now = utcnow()
    if record is None or record.expires_time < now or record.user.locked:
        return None
    # Sliding expiry, refreshed at most once a minute.
    expires = now + timedelta(seconds=lifetime_seconds)
    if expires - record.expires_time > timedelta(minutes=1):
        record.expires_time = expires
    return SessionInfo(record.id, record.user, record.csrf_token)


def user_for_session_id(session: Session, session_id: int) -> User | None:
    """The user of login session ``session_id`` while it lasts (content passes, which
    do not extend it)."""
    record = session.get(LoginSession, session_id)
    if record is None or record.expires_time < utcnow() or record.user.locked:
        return None
    return record.user


def end_session(session: Session, token: str) -> None:
    record = session.scalar(select(LoginSession).where(LoginSession.token_hash == hash_token(token)))
    if record is not None:
        session.delete(record)


def csrf_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected, given)


# --- content permissions -------------------------------------------------------------------

AppRole = Literal["owner", "editor", "viewer", "none"]


def group_guids(session: Session, user: User) -> list[str]:
    """The guids of the groups ``user`` is a member of."""
    return list(
        session.scalars(
            select(Group.guid)
            .join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.user_id == user.id)
        )
    )


def principal_guids(session: Session, user: User) -> list[str]:
    """Every principal a permission may name to reach ``user``: the user and its groups."""
    return [user.guid, *group_guids(session, user)]


def app_role(
    session: Session, user: User | None, content: Content, principals: list[str] | None = None
) -> AppRole:
    """The caller's relationship to ``content``: Connect's ``app_role``. A permission of one
    of the user's groups counts as the user's own; the strongest role wins. ``principals``
    (from :func:`principal_guids`) saves looking the groups up again for each item."""
    return app_roles(session, user, [content], principals)[content.id]


def app_roles(
    session: Session, user: User | None, items: Sequence[Content], principals: list[str] | None = None
) -> dict[int, AppRole]:
    """:func:`app_role` of each of ``items``, by content id, with one query for them all."""
    if user is None:
        return {item.id: "none" for item in items}
    granted: dict[int, set[str]] = {}
    others = [item.id for item in items if item.owner_id != user.id]
    if others:
        rows = session.execute(
            select(Permission.content_id, Permission.role).where(
                Permission.content_id.in_(others),
                Permission.principal_guid.in_(
                    principals if principals is not None else principal_guids(session, user)
                ),
            )
        )
        for content_id, role in rows:
            granted.setdefault(content_id, set()).add(role)
    return {item.id: "owner" if item.owner_id == user.id else _strongest(granted.get(item.id)) for item in items}


def _strongest(roles: set[str] | None) -> AppRole:
    if not roles:
        return "none"
    # A permission role "owner" makes a collaborator, which Connect reports as "editor".
    return "editor" if "owner" in roles else "viewer"


def environment_user(user: User) -> str | None:
    """Whose execution environment permissions a deploy by ``user`` is checked against:
    the user's guid, or None for administrators, who may use every environment."""
    return None if user.user_role == "administrator" else user.guid


def can_manage(session: Session, user: User | None, content: Content) -> bool:
    """Change settings, upload and deploy: owner, collaborators (publishers) and admins."""
    if user is None or user.locked:
        return False
    if user.user_role == "administrator":
        return True
    if user.user_role != "publisher":
        return False
    return app_role(session, user, content) in ("owner", "editor")


def can_view(session: Session, user: User | None, content: Content) -> bool:
    """Open the content itself, following its ``access_type``."""
    if user is not None and user.locked:
        return False
    if content.access_type == "all":
        return True
    if user is None:
        return False
    if content.access_type == "logged_in" or user.user_role == "administrator":
        return True
    return app_role(session, user, content) != "none"


def can_see_settings(session: Session, user: User | None, content: Content) -> bool:
    """Read the content's record: anyone who may view it, and administrators."""
    return at_least(user, "administrator") or can_view(session, user, content)
