"""Duty leases and node heartbeats on both databases (podium.leases, podium.nodes)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from sqlalchemy import select, update

from podium.leases import Leases
from podium.nodes import DeadNode, NodeHeartbeat
from podium.store import Store
from podium.store.models import Content, Job, LeaseRow, Rendering, ServerNode, Task, User, utcnow


def test_leases_one_holder_at_a_time_until_expiry(store: Store) -> None:
    a, b = Leases(store, "node-a", 0.6), Leases(store, "node-b", 0.6)
    assert a.acquire("duty") and a.held("duty")
    assert not b.acquire("duty") and not b.held("duty")
    assert a.acquire("duty")  # a renewal
    assert a.holder_of("duty") == "node-a"
    time.sleep(0.7)
    assert not a.held("duty")  # believed lost no later than the row expires
    assert b.acquire("duty") and b.held("duty")
    assert not a.acquire("duty")
    assert a.holder_of("duty") == "node-b"


def test_leases_release_hands_over_at_once(store: Store) -> None:
    a, b = Leases(store, "node-a", 60), Leases(store, "node-b", 60)
    a.want("one")
    a.want("two")
    assert a.renew() == {"one", "two"}
    assert not b.acquire("one")
    a.release_all()
    assert not a.held("one")
    assert b.acquire("one") and b.acquire("two")


def test_leases_concurrent_takers_one_wins(store: Store) -> None:
    winners: list[str] = []
    start = threading.Barrier(6)

    def take(name: str) -> None:
        start.wait()
        if Leases(store, name, 60).acquire("contended"):
            winners.append(name)

    threads = [threading.Thread(target=take, args=(f"node-{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    with store.session() as session:
        assert session.scalar(select(LeaseRow.holder).where(LeaseRow.name == "contended")) == winners[0]


def _content_with_work(store: Store, node_id: str) -> int:
    with store.session() as session:
        owner = User(username="owner")
        session.add(owner)
        session.flush()
        content = Content(name="ha", title="ha", owner_id=owner.id)
        session.add(content)
        session.flush()
        session.add_all([
            Job(key="run-alive", content_id=content.id, kind="run", tag="run_app", backend="local", node_id=node_id),
            Job(key="run-ended", content_id=content.id, kind="run", tag="run_app", backend="local", node_id=node_id,
                status=1),
            Task(kind="deploy", content_id=content.id, node_id=node_id),
            Rendering(content_id=content.id, bundle_id=1, node_id=node_id),
        ])
        return content.id


def test_nodes_dead_node_is_claimed_once_and_its_work_taken_over(store: Store) -> None:
    dead = NodeHeartbeat(store, "node-dead", Leases(store, "node-dead", 1.0), 0.1, 1.0)
    dead.register()
    _content_with_work(store, "node-dead")
    live = [NodeHeartbeat(store, f"node-{i}", Leases(store, f"node-{i}", 1.0), 0.1, 1.0) for i in range(3)]
    for node in live:
        node.register()
    assert all(node.claim_dead() == [] for node in live)  # not dead yet
    with store.session() as session:  # its last heartbeat was long ago
        session.execute(update(ServerNode).where(ServerNode.node_id == "node-dead")
                        .values(heartbeat_time=utcnow() - timedelta(seconds=5)))
    claims = [node.claim_dead() for node in live]
    assert sorted(len(c) for c in claims) == [0, 0, 1]
    claimer = next(node for node, c in zip(live, claims, strict=True) if c)
    assert claims[live.index(claimer)] == [DeadNode("node-dead", claimer.hostname, ("run-alive",))]
    with store.session() as session:
        assert session.scalar(select(Job.node_id).where(Job.key == "run-alive")) == claimer.node_id
        assert session.scalar(select(Job.node_id).where(Job.key == "run-ended")) == "node-dead"
        task = session.scalars(select(Task)).one()
        assert task.finished and task.code == 1 and "node-dead" in task.error
        assert session.scalars(select(Rendering.status)).one() == "failed"
    assert all(node.claim_dead() == [] for node in live)  # once
    dead.register()  # it comes back under its id: its row is its own again, unclaimed
    with store.session() as session:
        assert session.get(ServerNode, "node-dead").claimed_by is None  # type: ignore[union-attr]


def test_nodes_a_node_that_leaves_is_claimed_at_once_and_once(store: Store) -> None:
    """A clean stop that leaves its jobs running (Kubernetes): no waiting for the timeout."""
    leaving = NodeHeartbeat(store, "node-leaving", Leases(store, "node-leaving", 60.0), 0.1, 60.0)
    leaving.register()
    _content_with_work(store, "node-leaving")
    live = [NodeHeartbeat(store, f"node-{i}", Leases(store, f"node-{i}", 60.0), 0.1, 60.0) for i in range(3)]
    for node in live:
        node.register()
    assert all(node.claim_dead() == [] for node in live)  # beating (60 s timeout)
    leaving.leave()
    claims = [node.claim_dead() for node in live]
    assert sorted(len(c) for c in claims) == [0, 0, 1]  # at once, by one node
    claimer = next(node for node, c in zip(live, claims, strict=True) if c)
    with store.session() as session:
        assert session.scalar(select(Job.node_id).where(Job.key == "run-alive")) == claimer.node_id
    assert all(node.claim_dead() == [] for node in live)
    leaving.register()  # started again under its id: its row, unclaimed and beating
    assert all(node.claim_dead() == [] for node in live)


def test_nodes_wake_beats_before_the_interval(store: Store) -> None:
    async def scenario() -> None:
        heartbeat = NodeHeartbeat(store, "node-a", Leases(store, "node-a", 120.0), 60.0, 120.0)
        heartbeat.register()
        heartbeat.start()
        await asyncio.sleep(0.3)  # its first round
        with store.session() as session:
            session.execute(update(ServerNode).where(ServerNode.node_id == "node-a")
                            .values(heartbeat_time=utcnow() - timedelta(seconds=30)))
        heartbeat.wake()
        await asyncio.sleep(0.3)
        with store.session() as session:
            beat = session.scalar(select(ServerNode.heartbeat_time).where(ServerNode.node_id == "node-a"))
        assert beat is not None and beat > utcnow() - timedelta(seconds=5)  # not 60 s later
        await heartbeat.close()

    asyncio.run(scenario())


def test_nodes_register_takes_rows_without_a_node(store: Store) -> None:
    _content_with_work(store, None)  # type: ignore[arg-type]
    NodeHeartbeat(store, "node-a", Leases(store, "node-a", 1.0), 0.1, 1.0).register()
    NodeHeartbeat(store, "node-b", Leases(store, "node-b", 1.0), 0.1, 1.0).register()
    with store.session() as session:
        for model in (Job, Task, Rendering):
            assert set(session.scalars(select(model.node_id))) == {"node-a"}


def test_nodes_heartbeat_renews_leases_and_a_clean_stop_releases_them(store: Store) -> None:
    async def scenario() -> None:
        leases = Leases(store, "node-a", 1.0)
        leases.want("duty")
        heartbeat = NodeHeartbeat(store, "node-a", leases, 0.1, 1.0)
        heartbeat.register()
        heartbeat.start()
        await asyncio.sleep(1.5)  # longer than the lease: renewed all along
        assert leases.held("duty")
        assert Leases(store, "node-b", 1.0).holder_of("duty") == "node-a"
        await heartbeat.close()
        assert Leases(store, "node-b", 1.0).acquire("duty")

    asyncio.run(scenario())


def test_store_nodes_migrating_at_once_on_postgresql() -> None:
    """Several nodes starting together on an empty PostgreSQL database: one migrates, the
    others wait for it and find nothing left to do."""
    from tests.conftest import POSTGRES_URL, require_postgres, reset_postgres

    require_postgres()
    reset_postgres(POSTGRES_URL)
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def migrate() -> None:
        store = Store(POSTGRES_URL)
        try:
            start.wait()
            store.migrate()
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=migrate, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "the migrations deadlocked"
    assert errors == []
    store = Store(POSTGRES_URL)
    try:
        with store.session() as session:
            assert session.scalars(select(ServerNode)).all() == []  # the schema is whole
    finally:
        store.dispose()
