"""Checking a password sign-in: throttled, logged, audited, optionally locking the account.

Failures are counted per account and per client address (:mod:`podium.throttle`).
While either must wait, the attempt is answered 429 with ``Retry-After`` and the
password is not checked; nothing is written and no thread sleeps. Every checked
failure is logged (user name tried, client address) and audited; the password
never is. A success resets the account's count (not the address's: an attacker
could sign in to an account of their own to clear it). With
``signin_lockout_failures`` set, the account is locked at that many failures in a
row, which is audited; an administrator unlocks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium import audit, auth, throttle
from podium.api import deps
from podium.api.credentials import failure_throttle
from podium.changes import Changes
from podium.settings import Settings
from podium.store.models import User
from podium.throttle import Throttle

log = logging.getLogger(__name__)
WRONG = "Wrong username or password."


@dataclass(frozen=True)
class Outcome:
    """The signed-in user, or why not: the message, status and headers of the form page."""

    user: User | None
    message: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


@cache
def _decoy_hash() -> str:
    # Checked for unknown user names, so they take as long as known ones.
    return auth.hash_password("podium decoy password")


@dataclass(frozen=True)
class SignIn:
    throttle: Throttle
    lockout_failures: int
    changes: Changes

    def attempt(self, session: Session, username: str, password: str, ip: str) -> Outcome:
        keys = (throttle.account(username), throttle.address(ip))
        wait = self.throttle.admit(keys)
        if wait > 0:
            seconds = throttle.retry_after(wait)
            log.debug("sign-in as %r from %s refused unchecked for %d s more", username, ip, seconds)
            return Outcome(
                None,
                f"Too many failed sign-ins for this account or from your address. Try again in "
                f"{seconds} second{'s' if seconds != 1 else ''}.",
                429, {"Retry-After": str(seconds)},
            )
        try:
            return self._check(session, username, password, ip, keys)
        finally:
            self.throttle.release(keys)

    def _check(
        self, session: Session, username: str, password: str, ip: str, keys: tuple[str, str]
    ) -> Outcome:
        user = session.scalar(select(User).where(User.username == username))
        hashed = user.password_hash if user is not None else _decoy_hash()
        if auth.verify_password(hashed, password) and user is not None and not user.locked:
            self.throttle.reset(session, keys[0])
            audit.record(session, user, "user_login", f"Signed in from {ip}.")
            log.info("user %s signed in from %s", user.username, ip)
            return Outcome(user)
        account_failures = self.throttle.failure(session, keys[0])
        address_failures = self.throttle.failure(session, keys[1])
        audit.record(
            session, audit.ANONYMOUS, "user_login_failed", f"Failed sign-in as {username!r} from {ip}."
        )
        delay = max(self.throttle.policy(k).delay_seconds(n)
                    for k, n in zip(keys, (account_failures, address_failures), strict=True))
        log.warning(
            "failed sign-in as %r from %s: %d in a row for the account, %d from the address%s",
            username, ip, account_failures, address_failures,
            f"; the next attempt waits {delay:g} s" if delay else "",
        )
        locking = (
            self.lockout_failures > 0 and user is not None and not user.locked
            and account_failures >= self.lockout_failures
        )
        if locking and user is not None:
            user.locked = True
            audit.record(
                session, audit.SYSTEM, "lock_user",
                f"Locked {audit.describe(user)} after {account_failures} failed sign-ins in a row "
                f"(the last from {ip}).",
            )
            log.warning("locked user %s after %d failed sign-ins", user.username, account_failures)
        session.commit()
        if locking:
            self.changes.users()
        return Outcome(None, WRONG, 401)


def sign_in(
    request: Request,
    settings: Settings = Depends(deps.settings),
    changes: Changes = Depends(deps.changes),
) -> SignIn:
    return SignIn(failure_throttle(request), settings.signin_lockout_failures, changes)

