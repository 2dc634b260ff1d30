"""Secrets: the encryption key, and content environment variables encrypted at rest.

The key lives in a file beside the data (mode 0600), created on first start.
Losing it makes stored values unreadable, so back it up with the database.

Environment variable values are write-only: :class:`EnvVars` stores them
encrypted, answers their names, and decrypts them only for launching the
content's own processes (:meth:`EnvVars.decrypted`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import errors
from podium.store.models import EnvVar

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by Podium for every content process; content cannot override them.
RESERVED = frozenset(
    {"CONNECT_SERVER", "CONNECT_API_KEY", "CONNECT_CONTENT_GUID", "RSTUDIO_PRODUCT",
     "POSIT_PRODUCT", "CONNECT_CONTENT_SESSION_TOKEN", "CONNECT_CONTENT_SESSION_TOKEN_FILE",
     "PORT", "HOME", "PATH"}
)


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (signing, say), derived from the stored key, so
        one key file serves every use and a key for one purpose reveals nothing of another."""
        return hmac.new(self._key, f"podium:{purpose}".encode(), hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        return cls(path.read_bytes().strip())

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise ValueError("stored secret cannot be decrypted with the current key") from None


def parse_env_vars(items: list[Any]) -> dict[str, str | None]:
    """``[{"name": ..., "value": ... | null}, ...]`` as names to values (None: delete),
    validated with Connect's error codes."""
    wanted: dict[str, str | None] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise errors.bad_request('Each item must be {"name": "...", "value": "..." | null}.')
        name, value = item["name"], item.get("value")
        if not NAME_RE.match(name):
            raise errors.bad_request(
                f"{name!r} is not a valid environment variable name: use letters, digits and '_', "
                "not starting with a digit."
            )
        if name in RESERVED:
            raise errors.bad_request(
                f"{name} is set by Podium for every content process and cannot be changed.",
                code=108,
            )
        if name in wanted:
            raise errors.bad_request(f"{name} is given twice.", code=149)
        if value is not None and not isinstance(value, str):
            raise errors.bad_request(f"The value of {name} must be a string or null.")
        wanted[name] = value
    return wanted


class EnvVars:
    """The environment variables of content, encrypted with one :class:`SecretBox`."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    @staticmethod
    def names(session: Session, content_id: int) -> list[str]:
        return sorted(session.scalars(select(EnvVar.name).where(EnvVar.content_id == content_id)).all())

    def apply(self, session: Session, content_id: int, wanted: Mapping[str, str | None]) -> None:
        """Set each named variable (``None`` deletes it); the caller commits."""
        existing = {
            var.name: var for var in session.scalars(select(EnvVar).where(EnvVar.content_id == content_id))
        }
        for name, value in wanted.items():
            if value is None:
                if name in existing:
                    session.delete(existing[name])
            elif name in existing:
                existing[name].value_encrypted = self._box.encrypt(value)
            else:
                session.add(EnvVar(content_id=content_id, name=name, value_encrypted=self._box.encrypt(value)))

    def decrypted(self, session: Session, content_id: int) -> dict[str, str]:
        """The content's variables in clear, for launching its processes only."""
        return {
            var.name: self._box.decrypt(var.value_encrypted)
            for var in session.scalars(select(EnvVar).where(EnvVar.content_id == content_id))
        }
