"""The audit log: who did what, recorded in the transaction of the change itself.

The API modules call :func:`record` with their own session just before they
commit, so an entry exists exactly when its change does. Descriptions say what
changed (which fields, which variable names), never a value that could be a
secret. Each entry is also written to the server log (logger ``podium.audit``).
``GET v1/audit_logs`` and the dashboard's Audit log tab read them back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from podium.store import Store
from podium.store.models import AuditEntry, User

log = logging.getLogger(__name__)

# Every action name, with what it means (the dashboard's filter lists them).
ACTIONS: dict[str, str] = {
    "user_login": "signed in with a password",
    "user_login_failed": "a sign-in was refused (wrong user name or password, or a locked account)",
    "user_logout": "signed out",
    "api_key_rejected": "a request carried an API key that is not valid",
    "add_api_key": "created an API key",
    "remove_api_key": "deleted an API key",
    "add_user": "created a user",
    "update_user": "changed a user's name, email or user name",
    "change_user_role": "changed a user's role",
    "lock_user": "locked a user (an administrator, or Podium after failed sign-ins)",
    "unlock_user": "unlocked a user",
    "add_content": "created content",
    "update_content": "changed content settings",
    "remove_content": "deleted content",
    "upload_bundle": "uploaded a bundle",
    "deploy_content": "started a deploy",
    "deploy_content_succeeded": "a deploy finished",
    "deploy_content_failed": "a deploy failed",
    "add_permission": "gave a user or group access to content",
    "update_permission": "changed a user's or group's access to content",
    "remove_permission": "removed a user's or group's access to content",
    "add_group": "created a group",
    "update_group": "renamed a group or changed its owner",
    "remove_group": "deleted a group (and its content permissions)",
    "add_group_member": "added a user to a group",
    "remove_group_member": "removed a user from a group",
    "add_tag": "created a tag",
    "update_tag": "renamed or moved a tag",
    "remove_tag": "deleted a tag and its descendants",
    "tag_content": "put a tag on content",
    "untag_content": "took a tag off content",
    "set_vanity": "set the vanity path of content",
    "remove_vanity": "removed the vanity path of content",
    "update_environment_variables": "set or removed environment variables of content (names only)",
    "add_environment": "created an execution environment",
    "update_environment": "changed an execution environment",
    "remove_environment": "deleted an execution environment",
    "add_environment_permission": "allowed a user to deploy with an execution environment",
    "remove_environment_permission": "removed a user's permission on an execution environment",
    "remove_runtime_cache": "deleted a runtime cache (package environments by language, version and image)",
    "add_oauth_integration": "created an OAuth integration",
    "update_oauth_integration": "changed an OAuth integration",
    "remove_oauth_integration": "deleted an OAuth integration",
    "update_oauth_associations": "set which OAuth integrations content may use",
    "oauth_sign_in": "signed in with an OAuth integration's provider",
    "oauth_sign_out": "disconnected from an OAuth integration's provider",
    "set_repository": "pointed content at a git repository, or changed where it follows",
    "remove_repository": "stopped content following a git repository",
    "set_repository_webhook": "made a new push-webhook secret for git-backed content",
    "set_git_credential": "stored credentials for a git host",
    "remove_git_credential": "deleted the credentials of a git host",
}


@dataclass(frozen=True)
class Actor:
    """Who acted, as an entry records it; ``id``/``guid`` are None for nobody in particular."""

    id: int | None
    guid: str | None
    description: str


ANONYMOUS = Actor(None, None, "anonymous")
SYSTEM = Actor(None, None, "Podium")


def describe(user: User) -> str:
    """``First Last (username)``, or the user name alone, as Connect describes actors."""
    name = f"{user.first_name} {user.last_name}".strip()
    return f"{name} ({user.username})" if name else user.username


def actor(user: User) -> Actor:
    """A user as an :class:`Actor`, usable after its session has closed."""
    return Actor(user.id, user.guid, describe(user))


def record(session: Session, who: User | Actor, action: str, description: str) -> AuditEntry:
    """Add an entry to ``session``; the caller's commit makes it durable with its change."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; add it to podium.audit.ACTIONS")
    acting = actor(who) if isinstance(who, User) else who
    entry = AuditEntry(
        user_id=acting.id,
        user_guid=acting.guid,
        user_description=acting.description,
        action=action,
        event_description=description,
    )
    session.add(entry)
    log.info("audit %s by %s: %s", action, acting.description, description)
    return entry


def record_now(store: Store, who: Actor, action: str, description: str) -> None:
    """An entry in its own transaction, for what happens after the request (a deploy's end)."""
    with store.session() as session:
        record(session, who, action, description)
