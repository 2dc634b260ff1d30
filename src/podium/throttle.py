"""Throttling failed sign-ins and API keys: growing delays per account and per client address.

A *key* names what is counted: ``account:<user name>`` and ``address:<ip>`` for
sign-ins, ``key-address:<ip>`` for API keys. The first ``free_failures``
failures of a key, each within ``window_seconds`` of the one before, cost
nothing; every further failure makes the key wait ``base_delay_seconds * 2**k``
(k = 0, 1, 2 ...), at most ``max_delay_seconds``, before another attempt is even
checked. An attempt refused while waiting is not counted, writes nothing and
checks nothing.

Where the state lives: decisions are taken from memory, so a refused attempt and
a request with good credentials cost no database query (the content proxy's path
stays database-free). Each failure is counted in the ``auth_failures`` row of its
key, in the caller's transaction (so failures on several nodes add up), and the
result is kept in memory; every node re-reads the rows changed since it last
looked every :data:`SYNC_SECONDS`, so nodes sharing one PostgreSQL agree within
that interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from podium.settings import Settings
from podium.store import Store, upsert
from podium.store.models import AuthFailure, utcnow

log = logging.getLogger(__name__)

SYNC_SECONDS = 2.0
# Rows untouched for longer than every window and delay are deleted this often (a write).
PRUNE_SECONDS = 60.0
# Keys stay bounded in size whatever a client sends as a user name.
_MAX_VALUE_CHARS = 200


def account(username: str) -> str:
    return "account:" + username[:_MAX_VALUE_CHARS]


def address(ip: str) -> str:
    return "address:" + ip[:_MAX_VALUE_CHARS]


def key_address(ip: str) -> str:
    return "key-address:" + ip[:_MAX_VALUE_CHARS]


@dataclass(frozen=True)
class Policy:
    """How many failures of one kind of key are free, and how the delay grows after."""

    free_failures: int
    base_delay_seconds: float
    max_delay_seconds: float
    window_seconds: float

    def delay_seconds(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row."""
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        return min(self.base_delay_seconds * 2.0 ** min(extra - 1, 62), self.max_delay_seconds)


def policies_from_settings(settings: Settings) -> dict[str, Policy]:
    """The policy of each kind of key, from the ``[auth]`` settings."""

    def policy(free: int) -> Policy:
        return Policy(
            free, settings.auth_failure_base_delay_seconds, settings.auth_failure_max_delay_seconds,
            settings.auth_failure_window_seconds,
        )

    return {
        "account": policy(settings.signin_free_failures_per_account),
        "address": policy(settings.signin_free_failures_per_address),
        "key-address": policy(settings.api_key_free_failures_per_address),
    }


@dataclass
class _State:
    failures: int
    last_failure: float  # epoch seconds
    blocked_until: float  # epoch seconds; 0 when not blocked
    updated: float  # epoch seconds of the row's last change


def _epoch(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class Throttle:
    """Failure counts per key (see the module docstring). Thread-safe: the sign-in and API
    endpoints run in worker threads, the proxy front on the event loop.

    Lifecycle: usable at once (decisions from memory); :meth:`start` begins re-reading
    the database every :data:`SYNC_SECONDS` on the running loop, :meth:`close` stops it.
    """

    def __init__(self, store: Store, policies: Mapping[str, Policy]) -> None:
        self.store = store
        self.policies = dict(policies)
        self._states: dict[str, _State] = {}
        self._blocked: dict[str, float] = {}  # key -> blocked_until, for the fast path
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._synced = 0.0
        self._pruned = 0.0
        self._task: asyncio.Task[None] | None = None

    def policy(self, key: str) -> Policy:
        return self.policies[key.partition(":")[0]]

    # --- decisions, from memory ------------------------------------------------------------

    @property
    def blocking(self) -> bool:
        """Whether any key may be waiting now: False lets callers skip every other check."""
        return bool(self._blocked)

    def wait_seconds(self, keys: Iterable[str]) -> float:
        """How long the caller must wait before an attempt on ``keys``; 0 when it may try."""
        if not self._blocked:
            return 0.0
        now = time.time()
        wait = 0.0
        for key in keys:
            until = self._blocked.get(key)
            if until is None:
                continue
            if until <= now:
                with self._lock:
                    if self._blocked.get(key, 0.0) <= now:
                        self._blocked.pop(key, None)
                continue
            wait = max(wait, until - now)
        return wait

    def admit(self, keys: Iterable[str]) -> float:
        """0 when an attempt on ``keys`` may go ahead now, else the seconds to wait.

        Once a key is past its free failures, one attempt at a time is checked (a
        parallel one waits a second): otherwise N parallel requests would get N
        guesses each time a delay ends. After an admitted attempt call :meth:`release`.
        """
        keys = list(keys)
        wait = self.wait_seconds(keys)
        if wait > 0:
            return wait
        with self._lock:
            watched = [k for k in keys if self._past_free(k)]
            if any(k in self._in_flight for k in watched):
                return 1.0
            self._in_flight.update(watched)
        return 0.0

    def release(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._in_flight.difference_update(keys)

    def _past_free(self, key: str) -> bool:
        state = self._states.get(key)
        return state is not None and state.failures >= self.policy(key).free_failures

    # --- changes, written through ----------------------------------------------------------

    def failure(self, session: Session, key: str) -> int:
        """Count a failure of ``key`` in ``session`` (the caller commits); returns how many
        failures in a row the key now has. Counted from the database row, so failures on
        other nodes add up."""
        policy = self.policy(key)
        now = utcnow()
        session.execute(
            upsert(session.get_bind().dialect, AuthFailure)
            .values(key=key, failures=0, updated_time=now)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        row = session.get(AuthFailure, key, with_for_update=True, populate_existing=True)
        assert row is not None
        last = row.last_failure_time
        if last is None or now - last > timedelta(seconds=policy.window_seconds):
            row.failures = 0
        row.failures += 1
        delay = policy.delay_seconds(row.failures)
        row.last_failure_time = now
        row.blocked_until = now + timedelta(seconds=delay) if delay else None
        row.updated_time = now
        session.flush()
        self._remember(key, row)
        return row.failures

    def reset(self, session: Session, key: str) -> None:
        """Forget the failures of ``key`` (a successful sign-in, an administrator's unlock)."""
        now = utcnow()
        session.execute(
            update(AuthFailure)
            .where(AuthFailure.key == key)
            .values(failures=0, blocked_until=None, updated_time=now)
        )
        with self._lock:
            self._states.pop(key, None)
            self._blocked.pop(key, None)

    def _remember(self, key: str, row: AuthFailure) -> None:
        state = _State(row.failures, _epoch(row.last_failure_time), _epoch(row.blocked_until),
                       _epoch(row.updated_time))
        with self._lock:
            known = self._states.get(key)
            if known is not None and known.updated > state.updated:
                return  # memory already holds a newer change (this node's own)
            if state.failures == 0:
                self._states.pop(key, None)
            else:
                self._states[key] = state
            if state.blocked_until > time.time():
                self._blocked[key] = state.blocked_until
            else:
                self._blocked.pop(key, None)

    # --- agreeing with other nodes ---------------------------------------------------------

    def sync(self) -> None:
        """Re-read the rows changed since the last look (with a margin for transactions
        that committed late); every PRUNE_SECONDS, delete rows too old to matter."""
        started = time.time()
        since = datetime.fromtimestamp(max(0.0, self._synced - 3 * SYNC_SECONDS), UTC)
        keep = max(max(p.window_seconds, p.max_delay_seconds) for p in self.policies.values())
        with self.store.session() as session:
            for row in session.scalars(select(AuthFailure).where(AuthFailure.updated_time >= since)):
                self._remember(row.key, row)
            if started - self._pruned > PRUNE_SECONDS:
                session.execute(
                    delete(AuthFailure).where(AuthFailure.updated_time < utcnow() - timedelta(seconds=keep))
                )
                self._pruned = started
        with self._lock:
            for key, state in list(self._states.items()):
                if started - state.updated > keep:
                    del self._states[key]
        self._synced = started

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sync)
            except Exception:
                log.exception("could not re-read the failed sign-in counts; trying again")
            await asyncio.sleep(SYNC_SECONDS)


def retry_after(seconds: float) -> int:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait."""
    return max(1, math.ceil(seconds))
