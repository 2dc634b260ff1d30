"""SQLAlchemy models: the tables Podium keeps. Changes need an Alembic migration."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_guid() -> str:
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(256), default="")
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    user_role: Mapped[str] = mapped_column(String(16), default="viewer")
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    active_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    # The key itself is never stored: only its SHA-256 (keys are 256-bit random, so a fast
    # hash is safe here, unlike passwords) and a short prefix shown to the user to tell
    # keys apart.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship()


class LoginSession(Base):
    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_time: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class Content(Base):
    __tablename__ = "content"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_content_owner_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    access_type: Mapped[str] = mapped_column(String(16), default="acl")
    app_mode: Mapped[str] = mapped_column(String(32), default="unknown")
    content_category: Mapped[str] = mapped_column(String(32), default="")
    bundle_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_message: Mapped[str] = mapped_column(Text, default="")
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_deployed_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Runtime settings; None means the server default.
    min_processes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_processes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_conns_per_process: Mapped[int | None] = mapped_column(Integer, nullable=True)
    load_factor: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    init_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    connection_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    read_timeout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Resource settings; None means the server default.
    cpu_request: Mapped[float | None] = mapped_column(Float, nullable=True)
    cpu_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    memory_request: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    memory_limit: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    service_account_name: Mapped[str | None] = mapped_column(String(253), nullable=True)
    # Whole GPUs (None: the server default) and where its pods run (podium.placement).
    nvidia_gpu_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amd_gpu_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kubernetes_placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    default_image_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # What the active bundle runs with, set on activation.
    cluster_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    environment_guid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    py_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    r_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quarto_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    py_environment_management: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    r_environment_management: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    owner: Mapped[User] = relationship()


class Bundle(Base):
    __tablename__ = "bundles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    size: Mapped[int] = mapped_column(BigInteger)
    archive_md5: Mapped[str] = mapped_column(String(32))
    archive_sha1: Mapped[str] = mapped_column(String(40))
    app_mode: Mapped[str] = mapped_column(String(32))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    bundle_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # What this bundle was built with, recorded by its first build.
    cluster_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    environment_guid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    py_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    r_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    quarto_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    py_environment_management: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    r_environment_management: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # The package environment (envs/<fingerprint>) this bundle runs with, set by its build.
    env_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    python_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # The R executable and the R package library (envs/r-<fingerprint>/library; None: the
    # execution environment's own library) a bundle needing R runs with, set by its build.
    r_path: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    r_library: Mapped[str | None] = mapped_column(String(1024), nullable=True)

    content: Mapped[Content] = relationship()
    created_by: Mapped[User | None] = relationship()


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_guid)
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    content_id: Mapped[int | None] = mapped_column(
        ForeignKey("content.id", ondelete="CASCADE"), nullable=True, index=True
    )
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    code: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the server node running it (settings.node_id); None: from before nodes were recorded
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)


class TaskLine(Base):
    __tablename__ = "task_lines"

    task_id: Mapped[str] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[str] = mapped_column(Text)


class EnvVar(Base):
    __tablename__ = "env_vars"
    __table_args__ = (UniqueConstraint("content_id", "name", name="uq_env_var_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    value_encrypted: Mapped[bytes] = mapped_column(LargeBinary)


class Permission(Base):
    __tablename__ = "permissions"
    __table_args__ = (
        UniqueConstraint("content_id", "principal_guid", name="uq_permission_principal"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    principal_guid: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(String(8), default="user")
    role: Mapped[str] = mapped_column(String(8))


class Job(Base):
    """One process launched through an execution backend: a build, render or run."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    bundle_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str] = mapped_column(String(32))
    # Connect's job status: 0 active, 1 finished, 2 finalized.
    status: Mapped[int] = mapped_column(Integer, default=0, index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    hostname: Mapped[str] = mapped_column(String(256), default="")
    # the server node that launched it and alone stops, adopts or deletes it (settings.node_id);
    # None: from before nodes were recorded (the first node to start claims it)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    backend: Mapped[str] = mapped_column(String(32))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queued_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_heartbeat_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # What the scheduler needs to adopt a run job after a restart (its public path, ...).
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    content: Mapped[Content] = relationship()


class ExecutionEnvironment(Base):
    """An execution environment: an image and the Python, R and Quarto installations in it.

    ``managed_by`` is set for records kept from the settings file ("settings") or
    derived from this host ("host"); the API refuses to change those.
    """

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    title: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    cluster_name: Mapped[str] = mapped_column(String(64))
    environment_type: Mapped[str] = mapped_column(String(64))
    matching: Mapped[str] = mapped_column(String(8), default="any")
    supervisor: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Installations as [{"version": ..., "path": ...}].
    python: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    r: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    quarto: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    tensorflow: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    volume_mounts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # podium.placement
    managed_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class EnvironmentPermission(Base):
    """A user allowed to deploy with an execution environment. An environment with no
    permissions may be used by everyone; with some, only by those users (and
    administrators)."""

    __tablename__ = "environment_permissions"
    __table_args__ = (UniqueConstraint("environment_id", "user_guid", name="uq_environment_permission_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    user_guid: Mapped[str] = mapped_column(String(36))


class Rendering(Base):
    """One render of a document bundle (a notebook, a Quarto or R Markdown document).

    Its output lives in ``outputs/<content_id>/<id>/``; ``primary_file`` is the page
    served at the output's root. Viewers see the newest successful rendering of the
    active bundle, so a failed render keeps the previous output served.
    """

    __tablename__ = "renderings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    bundle_id: Mapped[int] = mapped_column(Integer)
    job_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # "running", "succeeded" or "failed".
    status: Mapped[str] = mapped_column(String(16), default="running")
    # What asked for it: "deploy", "api" (on demand) or "schedule".
    reason: Mapped[str] = mapped_column(String(16), default="deploy")
    # False for the output of a schedule with ``activate: false``: kept and viewable in the
    # history, never what /content/<guid>/ serves.
    activated: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    error: Mapped[str] = mapped_column(Text, default="")
    primary_file: Mapped[str] = mapped_column(String(1024), default="index.html")
    start_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the node rendering it


class Schedule(Base):
    """When rendered content renders again: Connect's schedule fields, one per content.

    ``schedule`` is the rule as Connect keeps it, a JSON string such as ``{"N": 2}``;
    ``next_run`` is claimed by the node that runs it (``podium.render.schedules``).
    """

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(
        ForeignKey("content.id", ondelete="CASCADE"), unique=True
    )
    type: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[str] = mapped_column(Text, default="{}")
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    next_run: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    email: Mapped[bool] = mapped_column(Boolean, default=False)
    activate: Mapped[bool] = mapped_column(Boolean, default=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """One line of the audit log (:mod:`podium.audit`): who did what, and when.

    Written in the transaction of the change it describes and never updated. The
    actor is copied (id, guid, description), not referenced, so an entry keeps
    saying who acted after the account is renamed. Descriptions name what changed,
    never a secret value.
    """

    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # None: anonymous (a failed sign-in) or the system (podium admin, a lockout).
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_guid: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    user_description: Mapped[str] = mapped_column(String(512), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    event_description: Mapped[str] = mapped_column(Text, default="")


class AuthFailure(Base):
    """Recent failed sign-ins or API keys of one account or client address
    (:mod:`podium.throttle`); ``key`` is ``account:<name>``, ``address:<ip>`` or
    ``key-address:<ip>``. Nodes re-read the rows changed since they last looked."""

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Group(Base):
    """A named set of users; content permissions may name a group (``principal_type``
    ``"group"``), and its members get that role through it."""

    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Who may manage it besides administrators (its creator, unless changed).
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User | None] = relationship()


class GroupMember(Base):
    """One user in one group; ``id`` keeps the order members were added in."""

    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "user_id", name="uq_group_member"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship()


class Tag(Base):
    """A tag; top-level tags (no parent) are categories, which content cannot carry.
    Deleting a tag deletes its descendants and their content links (cascades)."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ContentTag(Base):
    __tablename__ = "content_tags"

    content_id: Mapped[int] = mapped_column(
        ForeignKey("content.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Vanity(Base):
    """A content item's vanity path (``/sales/report/``), normalised; at most one per item."""

    __tablename__ = "vanities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(
        ForeignKey("content.id", ondelete="CASCADE"), unique=True
    )
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    content: Mapped[Content] = relationship()


class PackageEnvironment(Base):
    """A built package environment (``envs/<fingerprint>``, a venv or an R library) and
    the runtime cache it belongs to: Connect names a cache by language, version and
    image. ``retired`` environments were deleted as caches while a process still ran
    from them: hidden, kept on disk until nothing runs from them (:mod:`podium.caches`)."""

    __tablename__ = "package_environments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    language: Mapped[str] = mapped_column(String(16))  # "Python" or "R", as Connect spells them
    language_version: Mapped[str] = mapped_column(String(32))
    image_name: Mapped[str] = mapped_column(String(512))
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EnvironmentPackage(Base):
    """One package installed in a package environment, as its build left it."""

    __tablename__ = "environment_packages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("package_environments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[str] = mapped_column(String(128))
    hash: Mapped[str | None] = mapped_column(String(256), nullable=True)


class BundleEnvironment(Base):
    """A bundle built with a package environment (a Python venv, an R library, or both)."""

    __tablename__ = "bundle_environments"

    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id", ondelete="CASCADE"), primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("package_environments.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class OAuthIntegration(Base):
    """An OAuth integration (Connect's ``v1/oauth/integrations``). ``config`` never holds
    the client secret: that is kept encrypted (:class:`podium.secrets.SecretBox`) apart."""

    __tablename__ = "oauth_integrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True, default=new_guid)
    name: Mapped[str] = mapped_column(String(256))
    description: Mapped[str] = mapped_column(Text, default="")
    template: Mapped[str] = mapped_column(String(64))
    auth_type: Mapped[str] = mapped_column(String(64), default="Viewer")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    client_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OAuthAssociation(Base):
    """Content allowed to use an integration; ``id`` keeps the order they were made in."""

    __tablename__ = "oauth_associations"
    __table_args__ = (UniqueConstraint("content_id", "integration_id", name="uq_oauth_association"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), index=True)
    integration_id: Mapped[int] = mapped_column(
        ForeignKey("oauth_integrations.id", ondelete="CASCADE"), index=True
    )
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    content: Mapped[Content] = relationship()
    integration: Mapped[OAuthIntegration] = relationship()


class OAuthToken(Base):
    """A viewer's tokens from a Viewer integration's provider (sign-in at
    ``/__oauth__/connect/``), encrypted with the server key; one row per (user, integration)."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (UniqueConstraint("user_id", "integration_id", name="uq_oauth_token"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    integration_id: Mapped[int] = mapped_column(ForeignKey("oauth_integrations.id", ondelete="CASCADE"))
    access_token_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    refresh_token_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    token_type: Mapped[str] = mapped_column(String(64), default="Bearer")
    expires_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GitRepository(Base):
    """Where git-backed content comes from (Connect's GitLocation), what the last fetch
    found, the push-webhook secret, and the poll lease: a node holds ``lease_node`` until
    ``lease_expires`` while it checks the item, so several nodes never poll it twice."""

    __tablename__ = "git_repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("content.id", ondelete="CASCADE"), unique=True)
    repository: Mapped[str] = mapped_column(String(2048))
    branch: Mapped[str] = mapped_column(String(255), default="main")
    directory: Mapped[str] = mapped_column(String(1024), default=".")
    polling: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    last_known_commit: Mapped[str] = mapped_column(String(64), default="")
    last_fetched_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    webhook_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    lease_node: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GitCredential(Base):
    """An administrator's credentials for one git host (HTTPS token or password),
    encrypted with the server's key; never returned by the API."""

    __tablename__ = "git_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    username: Mapped[str] = mapped_column(String(255), default="")
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerNode(Base):
    """A server node's heartbeat (:mod:`podium.nodes`): written every
    ``node_heartbeat_seconds``; older than ``node_timeout_seconds``, the node is dead and
    the first live node to set ``claimed_by`` cleans up after it."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256), default="")
    started_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LeaseRow(Base):
    """A duty only one node may do at a time (:mod:`podium.leases`): held by ``holder``
    until ``expires_time`` unless renewed."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_time: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# The condition of a partial index of the visits among the hits (ContentHit, below).
_VISITS_ONLY: dict[str, Any] = {"sqlite_where": text("visit = 1"), "postgresql_where": text("visit = true")}


class ContentHit(Base):
    """One request served by content (:mod:`podium.usage`); ``visit`` marks a page load
    (a browser document), the rows of ``v1/instrumentation/content/visits``."""

    __tablename__ = "content_hits"
    # The visits among the hits, in id order (all, and by content): a page of visits
    # reads its rows from these, where the hits of an API read by scripts hold one visit
    # in thousands of hits. (The visits query says ``visit = true`` as these do: a
    # partial index serves a query whose terms include its own.)
    __table_args__ = (
        Index("ix_content_hits_visits", "id", **_VISITS_ONLY),
        Index("ix_content_hits_content_visits", "content_guid", "id", **_VISITS_ONLY),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    content_guid: Mapped[str] = mapped_column(String(36), index=True)
    user_guid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    bundle_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    path: Mapped[str] = mapped_column(Text)
    query: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_agent: Mapped[str] = mapped_column(Text, default="")
    sec_fetch_dest: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sec_fetch_site: Mapped[str | None] = mapped_column(String(32), nullable=True)
    visit: Mapped[bool] = mapped_column(Boolean, default=False)


class UsageDay(Base):
    """Hits of one content item by one viewer on one UTC day (``user_guid`` empty for
    anonymous), kept up to date by the importer with the hits themselves: the
    dashboard's usage charts read these rows, a few per viewer and day, instead of
    scanning every hit of the last 30 days (millions on a busy server)."""

    __tablename__ = "usage_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    content_guid: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_guid: Mapped[str] = mapped_column(String(36), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    last: Mapped[datetime] = mapped_column(UTCDateTime)


class UsageImport(Base):
    """A chunk of a usage spool file already imported (:mod:`podium.usage_import`), so a
    file imported again after a crash adds nothing twice; pruned after a few days."""

    __tablename__ = "usage_imports"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    imported: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AppSession(Base):
    """One WebSocket session of an interactive app (``v1/instrumentation/shiny/usage``):
    ``ended`` None while it lasts. ``key`` is made by the recorder so the end can be
    written in a later batch than the start."""

    __tablename__ = "app_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(36), unique=True)
    content_guid: Mapped[str] = mapped_column(String(36), index=True)
    user_guid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    bundle_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
