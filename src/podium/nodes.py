"""Server nodes on one database: heartbeats, dead-node hand-over, duty lease renewal.

Every node writes its row in ``nodes`` each ``heartbeat_seconds``
(:class:`NodeHeartbeat`). A node whose heartbeat is older than ``timeout_seconds`` is
dead. Each live node, at each heartbeat, tries to claim the dead ones with one
conditional ``UPDATE`` (``claimed_by`` still empty and the heartbeat still old), so
exactly one node claims each death; in the same transaction the claimer takes over the
dead node's active job rows (they become its own, so a claimer that dies in turn hands
them on), fails its unfinished tasks and renderings, and is then told which jobs to
adopt or end (:attr:`NodeHeartbeat.on_dead`). A node that starts again under its id takes its
row back (the claim is cleared) and adopts what is still its own.

The heartbeat also renews this node's wanted duty leases (:class:`podium.leases.Leases`)
and, on a clean stop, releases them so another node takes its duties at its next beat.

A node that stops cleanly but leaves its content running (Kubernetes Jobs, which every
node reaches) hands them over at once: :meth:`NodeHeartbeat.leave` sets its heartbeat
to :data:`LEFT`, long past any timeout, so the next claim of a live node (woken by
:meth:`NodeHeartbeat.wake` when the change feed says so) takes them over, by the same
conditional ``UPDATE``, so exactly once, without waiting for the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from podium.leases import Leases
from podium.store import Store
from podium.store.models import Job, Rendering, ServerNode, Task, utcnow

log = logging.getLogger(__name__)
# The heartbeat of a node that stopped cleanly and left its jobs to the others.
LEFT = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeadNode:
    """A dead node this node claimed, and the keys of the active jobs it took over."""

    node_id: str
    hostname: str
    job_keys: tuple[str, ...]


class NodeHeartbeat:
    """This node's row in ``nodes``, its leases' renewal, and the claim of dead nodes."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        leases: Leases,
        heartbeat_seconds: float,
        timeout_seconds: float,
        on_dead: Callable[[DeadNode], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.hostname = socket.gethostname()
        self.leases = leases
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout_seconds = timeout_seconds
        self.on_dead = on_dead
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def register(self) -> None:
        """Write this node's row (taking it back after a restart) and claim the job,
        task and rendering rows recorded before nodes were (no node id)."""
        now = utcnow()
        with self.store.session() as session:
            row = session.get(ServerNode, self.node_id)
            if row is None:
                session.add(ServerNode(node_id=self.node_id, hostname=self.hostname, started_time=now,
                                       heartbeat_time=now))
            else:
                row.hostname, row.started_time, row.heartbeat_time = self.hostname, now, now
                row.claimed_by, row.claimed_time = None, None
        with self.store.session() as session:
            for model in (Job, Task, Rendering):
                session.execute(update(model).where(model.node_id.is_(None)).values(node_id=self.node_id))

    def beat(self) -> None:
        with self.store.session() as session:
            taken_by = session.scalar(select(ServerNode.claimed_by).where(ServerNode.node_id == self.node_id))
            if taken_by:  # this node stalled past the timeout: its jobs are the claimer's now
                log.error("node %s was taken for dead by node %s (no heartbeat for %g s), which took "
                          "over its jobs; restart this node if its content misbehaves",
                          self.node_id, taken_by, self.timeout_seconds)
            done = session.execute(
                update(ServerNode).where(ServerNode.node_id == self.node_id)
                .values(heartbeat_time=utcnow(), claimed_by=None, claimed_time=None)
            )
        if not getattr(done, "rowcount", 1):  # the row was removed: write it again
            try:
                self.register()
            except IntegrityError:
                pass

    def claim_dead(self) -> list[DeadNode]:
        """Claim every node dead for ``timeout_seconds`` that no node claimed yet (once
        each, whichever node asks first) and take over its rows."""
        cutoff = utcnow() - timedelta(seconds=self.timeout_seconds)
        with self.store.session() as session:
            candidates = list(session.scalars(select(ServerNode.node_id).where(
                ServerNode.heartbeat_time < cutoff, ServerNode.claimed_by.is_(None),
                ServerNode.node_id != self.node_id,
            )))
        claimed = []
        for dead in candidates:
            with self.store.session() as session:
                won = session.execute(
                    update(ServerNode)
                    .where(ServerNode.node_id == dead, ServerNode.claimed_by.is_(None),
                           ServerNode.heartbeat_time < cutoff)
                    .values(claimed_by=self.node_id, claimed_time=utcnow())
                )
                if not getattr(won, "rowcount", 0):
                    continue  # another node was first, or the node came back
                hostname, beat = session.execute(
                    select(ServerNode.hostname, ServerNode.heartbeat_time).where(ServerNode.node_id == dead)
                ).one()
                keys = tuple(session.scalars(select(Job.key).where(Job.node_id == dead, Job.status == 0)))
                session.execute(update(Job).where(Job.node_id == dead, Job.status == 0)
                                .values(node_id=self.node_id))
                why = f"The server node {dead} stopped responding while this ran."
                session.execute(
                    update(Task).where(Task.node_id == dead, Task.finished.is_(False))
                    .values(finished=True, code=1, error=why + " Deploy again.", finished_time=utcnow())
                )
                session.execute(
                    update(Rendering).where(Rendering.node_id == dead, Rendering.status == "running")
                    .values(status="failed", error=why, end_time=utcnow())
                )
            if beat is not None and beat <= LEFT:
                log.info("node %s claimed node %s, which stopped and left its %d active jobs to the "
                         "others; taking them over", self.node_id, dead, len(keys))
            else:
                log.warning("node %s claimed dead node %s (no heartbeat for %g s); taking over its %d "
                            "active jobs", self.node_id, dead, self.timeout_seconds, len(keys))
            claimed.append(DeadNode(dead, hostname or "", keys))
        return claimed

    async def round(self) -> None:
        """One heartbeat: write the row, claim and take over dead nodes, renew leases.

        Claims come before leases: a dead node's leases expire just after its heartbeat
        does (it renews them after beating), so its jobs are this node's (its processes
        adopted) before this node may take its duties, and, for one, keeping
        ``min_processes`` warm counts the adopted processes instead of starting more."""
        await asyncio.to_thread(self.beat)
        for dead in await asyncio.to_thread(self.claim_dead):
            if self.on_dead is not None:
                await self.on_dead(dead)
        await asyncio.to_thread(self.leases.renew)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        """Beat now rather than at the next interval (another node left: claim it at once).
        Call from the event loop's thread."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.round()
            except Exception:  # the database may be away for a while: keep beating
                log.exception("node %s: heartbeat failed; retrying", self.node_id)
            try:
                await asyncio.wait_for(self._wake.wait(), self.heartbeat_seconds)
            except TimeoutError:
                pass

    def leave(self) -> None:
        """After a clean stop that leaves this node's jobs running: give them to the live
        nodes now (the first to claim this node takes them), not after the timeout. This
        node's row is taken back if it starts again under the same id."""
        with self.store.session() as session:
            session.execute(update(ServerNode).where(ServerNode.node_id == self.node_id)
                            .values(heartbeat_time=LEFT, claimed_by=None, claimed_time=None))
        log.info("node %s: left its active jobs to the other nodes", self.node_id)

    async def close(self) -> None:
        """Stop beating and give up this node's leases (a clean stop)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.to_thread(self.leases.release_all)
        except Exception:
            log.exception("node %s: could not release its leases (they expire on their own)", self.node_id)
