"""Creating the first administrator, and offline user administration.

These write to the database directly: they are how a new server gets its
first account, and how an operator recovers access. Everything else goes
through the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from podium import audit, auth
from podium.store import Store
from podium.store.models import User


class AdminError(Exception):
    """A refused admin command; the message says why and what to do."""


@dataclass(frozen=True)
class NewAccount:
    username: str
    guid: str
    password: str | None
    api_key: str | None


def has_users(store: Store) -> bool:
    with store.session() as session:
        return bool(session.scalar(select(func.count()).select_from(User)))


def bootstrap_admin(store: Store, username: str = "admin") -> NewAccount:
    """The first administrator, with a new password and API key (shown once)."""
    with store.session() as session:
        admins = session.scalar(
            select(func.count()).select_from(User).where(User.user_role == "administrator")
        )
        if admins:
            raise AdminError(
                "An administrator already exists; bootstrap only sets up a new server. "
                "Use `podium admin create-api-key <admin username>` for another key."
            )
        password = auth.new_password()
        user = auth.create_user(session, username, "administrator", password)
        _, key = auth.create_api_key(session, user, "bootstrap")
        audit.record(session, audit.SYSTEM, "add_user", f"Created the first administrator {username} (podium admin bootstrap).")
        return NewAccount(user.username, user.guid, password, key)


def create_user(
    store: Store, username: str, role: auth.Role, password: str | None = None
) -> NewAccount:
    with store.session() as session:
        if session.scalar(select(User).where(User.username == username)) is not None:
            raise AdminError(f"A user named {username!r} already exists.")
        password = password or auth.new_password()
        user = auth.create_user(session, username, role, password)
        audit.record(session, audit.SYSTEM, "add_user", f"Created user {username} ({role}) with podium admin.")
        return NewAccount(user.username, user.guid, password, None)


def create_api_key(store: Store, username: str, name: str) -> str:
    with store.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            raise AdminError(f"There is no user named {username!r}.")
        if user.locked:
            raise AdminError(f"{username} is locked; unlock the account first.")
        record, key = auth.create_api_key(session, user, name)
        audit.record(
            session, audit.SYSTEM, "add_api_key",
            f"Created API key {name!r} ({record.guid}) for {audit.describe(user)} with podium admin.",
        )
        return key
