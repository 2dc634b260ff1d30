"""Duty leases: a duty that must run on one server node at a time holds a lease row.

A lease is a row of ``leases`` (name, holder, expiry). :meth:`Leases.acquire` takes a
free or expired lease, or renews this node's own, in one conditional ``UPDATE`` (or an
``INSERT`` for a lease never taken), so two nodes asking at once never both get it, on
PostgreSQL as on SQLite. A holder renews well within the lease's ``ttl_seconds``;
one that stops renewing (killed, cut off from the database) loses it when it expires,
and another node takes it at its next try. :meth:`Leases.held` answers from memory
and errs on the safe side: this node believes it holds a lease only until
``ttl_seconds`` after it *asked* for the last renewal, so it stops acting before the
row expires for the others. Expiry times are the nodes' wall clocks, so nodes' clocks
must agree to well within ``ttl_seconds`` (NTP).

Typical use, a duty that runs in rounds (:class:`podium.nodes.NodeHeartbeat` renews
every wanted lease each heartbeat)::

    leases.want("render-schedules")
    ...
    if leases.held("render-schedules"):
        run_one_round()
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from podium.store import Store
from podium.store.models import LeaseRow, utcnow

log = logging.getLogger(__name__)


class Leases:
    """The leases of one holder (a node id) in one database."""

    def __init__(self, store: Store, holder: str, ttl_seconds: float) -> None:
        self.store = store
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self._until: dict[str, float] = {}  # lease name -> monotonic time it is surely ours until
        self._wanted: set[str] = set()

    def want(self, name: str) -> None:
        """Ask for ``name`` at every :meth:`renew` from now on."""
        self._wanted.add(name)

    def held(self, name: str) -> bool:
        """Whether this holder surely holds ``name`` now (no database round trip)."""
        return time.monotonic() < self._until.get(name, 0.0)

    def acquire(self, name: str) -> bool:
        """Take ``name`` if it is free or expired, or renew it if ours; whether it is
        ours now. Database errors propagate (the lease is then not believed held)."""
        asked = time.monotonic()
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl_seconds)
        got = self._update(
            update(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == self.holder)
            .values(expires_time=expires)
        ) or self._update(
            update(LeaseRow).where(LeaseRow.name == name, LeaseRow.expires_time < now)
            .values(holder=self.holder, expires_time=expires, acquired_time=now)
        )
        if not got:
            try:
                with self.store.session() as session:
                    session.add(LeaseRow(name=name, holder=self.holder, expires_time=expires, acquired_time=now))
                got = True
            except IntegrityError:  # another holder has it
                got = False
        if got:
            if not self.held(name):
                log.info("lease %s taken by node %s", name, self.holder)
            self._until[name] = asked + self.ttl_seconds
        elif self._until.pop(name, None) is not None:
            log.warning("lease %s lost by node %s", name, self.holder)
        return got

    def renew(self) -> set[str]:
        """Try every wanted lease once; the names held afterwards. A database error
        ends the round (held leases lapse on their own if it lasts)."""
        held = set()
        for name in sorted(self._wanted):
            if self.acquire(name):
                held.add(name)
        return held

    def release(self, name: str) -> None:
        """Give ``name`` up at once (a clean stop), so another node takes it at its next try."""
        self._until.pop(name, None)
        with self.store.session() as session:
            session.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == self.holder))

    def release_all(self) -> None:
        for name in sorted({*self._wanted, *self._until}):
            self.release(name)

    def holder_of(self, name: str) -> str | None:
        """Who holds ``name`` in the database now (expired or not), or None."""
        with self.store.session() as session:
            row = session.scalar(select(LeaseRow).where(LeaseRow.name == name))
            return row.holder if row is not None and row.expires_time > utcnow() else None

    def _update(self, statement: object) -> bool:
        with self.store.session() as session:
            result = session.execute(statement)  # type: ignore[call-overload]
            return bool(getattr(result, "rowcount", 0))
