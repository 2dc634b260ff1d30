"""The failure throttle on both databases: free failures, growing delays, resets, nodes agreeing."""

from __future__ import annotations

import time

import pytest

from podium import throttle
from podium.store import Store
from podium.throttle import Policy, Throttle

POLICY = Policy(free_failures=3, base_delay_seconds=0.4, max_delay_seconds=1.6, window_seconds=60)


def make(store: Store, policy: Policy = POLICY) -> Throttle:
    return Throttle(store, {"account": policy, "address": policy, "key-address": policy})


def fail(store: Store, guard: Throttle, key: str, times: int = 1) -> int:
    count = 0
    for _ in range(times):
        with store.session() as session:
            count = guard.failure(session, key)
    return count


def test_throttle_policy_doubles_the_delay_up_to_the_cap() -> None:
    delays = [POLICY.delay_seconds(n) for n in range(1, 9)]
    assert delays == [0.0, 0.0, 0.0, 0.4, 0.8, 1.6, 1.6, 1.6]
    assert Policy(0, 1.0, 300.0, 60).delay_seconds(10_000) == 300.0  # no overflow


def test_throttle_free_failures_then_a_wait(store: Store) -> None:
    guard = make(store)
    key = throttle.account("alice")
    assert fail(store, guard, key, 3) == 3
    assert not guard.blocking and guard.wait_seconds([key]) == 0
    assert fail(store, guard, key) == 4
    assert guard.blocking
    assert 0.3 < guard.wait_seconds([key, throttle.address("10.0.0.1")]) <= 0.4
    assert guard.wait_seconds([throttle.account("bob")]) == 0  # other keys are unaffected
    time.sleep(0.45)
    assert guard.wait_seconds([key]) == 0
    assert fail(store, guard, key) == 5
    assert 0.7 < guard.wait_seconds([key]) <= 0.8


def test_throttle_reset_forgets_the_failures(store: Store) -> None:
    guard = make(store)
    key = throttle.account("alice")
    fail(store, guard, key, 5)
    with store.session() as session:
        guard.reset(session, key)
    assert guard.wait_seconds([key]) == 0 and not guard.blocking
    assert fail(store, guard, key) == 1


def test_throttle_window_lets_old_failures_expire(store: Store) -> None:
    guard = make(store, Policy(1, 0.05, 0.05, window_seconds=0.3))
    key = throttle.key_address("10.0.0.9")
    assert fail(store, guard, key, 2) == 2
    time.sleep(0.35)
    assert fail(store, guard, key) == 1


def test_throttle_admits_one_attempt_at_a_time_past_the_free_failures(store: Store) -> None:
    guard = make(store)
    key = throttle.account("alice")
    fresh = [throttle.account("new")]
    assert guard.admit(fresh) == 0 and guard.admit(fresh) == 0  # free attempts run in parallel
    guard.release(fresh)
    fail(store, guard, key, 3)
    assert guard.admit([key]) == 0
    assert guard.admit([key]) == 1.0  # a parallel attempt waits while one is checked
    guard.release([key])
    assert guard.admit([key]) == 0
    guard.release([key])


def test_throttle_nodes_agree_through_the_database(store: Store) -> None:
    """Two nodes on one database: failures add up, blocks and resets reach the other node."""
    one, two = make(store), make(store)
    key = throttle.address("192.0.2.7")
    fail(store, one, key, 2)
    assert fail(store, two, key, 2) == 4  # counted from the row, not from node two's memory
    assert two.wait_seconds([key]) > 0
    assert one.wait_seconds([key]) == 0  # node one has not looked yet
    one.sync()
    assert 0.3 < one.wait_seconds([key]) <= 0.4
    with store.session() as session:
        two.reset(session, key)
    one.sync()
    assert one.wait_seconds([key]) == 0


@pytest.mark.parametrize("name", ["x" * 5000, "名前", "a:b"])
def test_throttle_keys_stay_bounded(store: Store, name: str) -> None:
    guard = make(store)
    key = throttle.account(name)
    assert len(key) <= 220
    assert fail(store, guard, key) == 1
