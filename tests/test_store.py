"""The store on SQLite and PostgreSQL: migrations, constraints, times, big numbers."""

from __future__ import annotations

from datetime import UTC

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from podium import auth
from podium.store import Store
from podium.store.models import Content, EnvVar, Permission, User


def test_store_migrate_creates_every_table_and_is_repeatable(store: Store) -> None:
    store.migrate()  # a second run is a no-op
    tables = set(inspect(store.engine).get_table_names())
    assert {"users", "api_keys", "login_sessions", "content", "bundles", "tasks", "task_lines",
            "env_vars", "permissions", "audit_logs", "auth_failures", "alembic_version"} <= tables


def test_store_sqlite_uses_wal(store: Store) -> None:
    if not store.is_sqlite:
        pytest.skip("SQLite only")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_store_users_unique_and_times_are_utc(store: Store) -> None:
    with store.session() as session:
        user = auth.create_user(session, "alice", "publisher", "correct horse")
    with store.session() as session:
        loaded = session.scalar(select(User).where(User.username == "alice"))
        assert loaded is not None and loaded.created_time.tzinfo == UTC
        assert auth.verify_password(loaded.password_hash, "correct horse")
        assert not auth.verify_password(loaded.password_hash, "wrong")
        assert loaded.guid == user.guid
    with pytest.raises(IntegrityError), store.session() as session:
        auth.create_user(session, "alice", "viewer")


def test_store_content_name_unique_per_owner_and_big_memory(store: Store) -> None:
    with store.session() as session:
        alice = auth.create_user(session, "alice", "publisher")
        bob = auth.create_user(session, "bob", "publisher")
        session.add(Content(name="report", owner_id=alice.id, memory_limit=64 * 1024**3))
        session.add(Content(name="report", owner_id=bob.id))
    with store.session() as session:
        big = session.scalar(select(Content).where(Content.owner_id == alice.id))
        assert big is not None and big.memory_limit == 64 * 1024**3
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(Content(name="report", owner_id=alice.id))


def test_store_deleting_content_cascades(store: Store) -> None:
    with store.session() as session:
        alice = auth.create_user(session, "alice", "publisher")
        content = Content(name="report", owner_id=alice.id)
        session.add(content)
        session.flush()
        session.add(EnvVar(content_id=content.id, name="A", value_encrypted=b"x"))
        session.add(Permission(content_id=content.id, principal_guid=alice.guid, role="viewer"))
    with store.session() as session:
        session.delete(session.scalar(select(Content)))
    with store.session() as session:
        assert session.scalars(select(EnvVar)).all() == []
        assert session.scalars(select(Permission)).all() == []


def test_store_api_keys_hashed_and_revocable(store: Store) -> None:
    with store.session() as session:
        user = auth.create_user(session, "alice", "publisher")
        record, key = auth.create_api_key(session, user, "laptop")
        assert key not in (record.key_hash, record.key_prefix * 10)
    with store.session() as session:
        found = auth.user_for_api_key(session, key)
        assert found is not None and found.username == "alice"
        assert auth.user_for_api_key(session, key + "x") is None
        session.delete(session.scalar(select(type(record))))
    with store.session() as session:
        assert auth.user_for_api_key(session, key) is None
