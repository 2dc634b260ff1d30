"""Sign-in protection against a real server: brute force slowed, logged and audited.

Each attack comes from its own loopback address (127.0.0.x: Linux routes the whole
127/8 to lo), so the per-address counts of one test do not touch another's, and
"another address" is simply another source address. The delays are small (settings
through PODIUM_* variables) so the right password can be shown to work again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, static_bundle

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "Tr0ub4dor&3-not-it"
SETTINGS = {
    "PODIUM_SIGNIN_FREE_FAILURES_PER_ACCOUNT": "3",
    "PODIUM_SIGNIN_FREE_FAILURES_PER_ADDRESS": "10",
    "PODIUM_API_KEY_FREE_FAILURES_PER_ADDRESS": "5",
    "PODIUM_AUTH_FAILURE_BASE_DELAY_SECONDS": "0.5",
    "PODIUM_AUTH_FAILURE_MAX_DELAY_SECONDS": "2",
    "PODIUM_AUTH_FAILURE_WINDOW_SECONDS": "120",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("podium") / "data", extra_env=SETTINGS)
    yield running
    running.stop()


class _FromAddress(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def from_address(source: str) -> requests.Session:
    """An HTTP client whose connections come from ``source`` (a 127.0.0.x address)."""
    session = requests.Session()
    session.mount("http://", _FromAddress(source))
    return session


def sign_in(http: requests.Session, server: RunningServer, username: str, password: str) -> requests.Response:
    # The form's double-submit token is any value sent both as cookie and field.
    return http.post(
        f"{server.url}/__login__",
        data={"username": username, "password": password, "next": "/connect/", "csrf_token": "t"},
        cookies={"podium_login_csrf": "t"}, allow_redirects=False, timeout=60,
    )


def audit_entries(server: RunningServer, **params: str) -> list[dict[str, Any]]:
    got = server.api().get(f"{server.url}/__api__/v1/audit_logs", params={"limit": "500", **params})
    assert got.status_code == 200, got.text
    return got.json()["results"]  # type: ignore[no-any-return]


@dataclass
class Tally:
    """Answers to an attack: how many were checked (401) and refused unchecked (429)."""

    checked: list[float] = field(default_factory=list)  # seconds each answer took
    refused: list[float] = field(default_factory=list)
    retry_after: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, response: requests.Response, seconds: float) -> None:
        with self.lock:
            if response.status_code == 429:
                self.refused.append(seconds)
                self.retry_after.append(int(response.headers["Retry-After"]))
            else:
                assert response.status_code == 401, response.text
                self.checked.append(seconds)

    def summary(self, elapsed: float) -> str:
        mean = lambda xs: 1000 * sum(xs) / len(xs) if xs else 0.0  # noqa: E731
        return (f"{len(self.checked) + len(self.refused)} attempts in {elapsed:.1f} s: "
                f"{len(self.checked)} checked ({mean(self.checked):.0f} ms each), {len(self.refused)} "
                f"refused with 429 ({mean(self.refused):.0f} ms each)")


def attempt(tally: Tally, http: requests.Session, server: RunningServer, username: str) -> requests.Response:
    started = time.monotonic()
    response = sign_in(http, server, username, WRONG_PASSWORD)
    tally.add(response, time.monotonic() - started)
    return response


def failed_sign_in_lines(server: RunningServer, username: str) -> int:
    return len(re.findall(rf"failed sign-in as '{username}' from", server.log()))


def test_signin_brute_force_is_slowed_logged_and_audited(server: RunningServer) -> None:
    server.user_key("victim", "viewer")
    server.user_key("bystander", "viewer")
    attacker = from_address("127.0.0.2")
    tally = Tally()
    started = time.monotonic()
    for _ in range(200):
        last = attempt(tally, attacker, server, "victim")
    elapsed = time.monotonic() - started
    print(f"\nsequential brute force: {tally.summary(elapsed)}")

    # Most attempts were refused without a password check, and fast.
    assert len(tally.refused) >= 180, tally.summary(elapsed)
    assert sum(tally.refused) / len(tally.refused) < sum(tally.checked) / len(tally.checked) / 3
    assert all(1 <= seconds <= 2 for seconds in tally.retry_after)
    if last.status_code == 429:
        assert "Too many failed sign-ins" in last.text and 'name="password"' in last.text

    # Each checked failure is in the server log and the audit log; the password is in neither.
    assert failed_sign_in_lines(server, "victim") == len(tally.checked)
    failures = [e for e in audit_entries(server, action="user_login_failed") if "'victim'" in e["event_description"]]
    assert len(failures) == len(tally.checked)
    assert failures[0]["user_guid"] is None and "127.0.0.2" in failures[0]["event_description"]
    assert WRONG_PASSWORD not in server.log()
    assert all(WRONG_PASSWORD not in e["event_description"] for e in audit_entries(server))

    # Another account from another address is not affected.
    assert sign_in(from_address("127.0.0.1"), server, "bystander", "bystander-pass-1").status_code == 303

    # The right password works again once the wait has passed, from anywhere; no lockout by default.
    time.sleep(int(last.headers.get("Retry-After", "0")) + 0.1)
    elsewhere = from_address("127.0.0.3")
    welcome = sign_in(elsewhere, server, "victim", "victim-pass-1")
    assert welcome.status_code == 303, welcome.text
    assert elsewhere.get(f"{server.url}/__api__/v1/user", timeout=10).json()["username"] == "victim"
    assert any(e["user_description"] == "victim" for e in audit_entries(server, action="user_login"))
    # ... and the success started the account's count again: the next wrong one is checked.
    assert sign_in(elsewhere, server, "victim", WRONG_PASSWORD).status_code == 401


def test_signin_parallel_brute_force_is_checked_one_attempt_at_a_time(server: RunningServer) -> None:
    server.user_key("victim2", "viewer")
    tally = Tally()

    def worker() -> None:
        attacker = from_address("127.0.0.4")
        for _ in range(25):
            attempt(tally, attacker, server, "victim2")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    print(f"\nparallel brute force, 8 threads: {tally.summary(elapsed)}")
    assert len(tally.checked) + len(tally.refused) == 200
    assert len(tally.refused) >= 150, tally.summary(elapsed)
    assert failed_sign_in_lines(server, "victim2") == len(tally.checked)


def test_signin_throttles_an_address_trying_many_accounts(server: RunningServer) -> None:
    server.user_key("carol", "viewer")
    scanner = from_address("127.0.0.5")
    for n in range(11):  # 10 free failures per address, each on a new account
        assert sign_in(scanner, server, f"nobody{n}", WRONG_PASSWORD).status_code == 401
    refused = sign_in(scanner, server, "carol", "carol-pass-1")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert sign_in(from_address("127.0.0.1"), server, "carol", "carol-pass-1").status_code == 303


def test_signin_wrong_api_keys_are_throttled_on_the_api(server: RunningServer) -> None:
    me = f"{server.url}/__api__/v1/user"
    guesser = from_address("127.0.0.6")
    wrong_key = "guessed-key-0123456789abcdefghijklmnopqrstuvw"
    tally = Tally()
    for _ in range(60):
        started = time.monotonic()
        tally.add(guesser.get(me, headers={"Authorization": f"Key {wrong_key}"}, timeout=10),
                  time.monotonic() - started)
    print(f"\nwrong API keys on the API: {tally.summary(0)}")
    assert len(tally.checked) < 10 and len(tally.refused) > 50
    answer = guesser.get(me, headers={"X-RSC-Authorization": wrong_key}, timeout=10)
    assert answer.status_code == 429 and answer.json()["code"] == 30 and "Retry-After" in answer.headers

    # A good key from another address is unaffected; from the throttled one it waits too.
    assert from_address("127.0.0.1").get(me, headers={"Authorization": f"Key {server.admin_key}"}).status_code == 200
    assert guesser.get(me, headers={"Authorization": f"Key {server.admin_key}"}).status_code == 429
    time.sleep(int(answer.headers["Retry-After"]) + 0.1)
    assert guesser.get(me, headers={"Authorization": f"Key {server.admin_key}"}).status_code == 200

    # Logged and audited with a short hash prefix, never the key.
    assert wrong_key not in server.log()
    assert "wrong API key (sha256 " in server.log()
    rejected = [e for e in audit_entries(server, action="api_key_rejected") if "127.0.0.6" in e["event_description"]]
    assert len(rejected) == len(tally.checked)
    assert all(wrong_key not in e["event_description"] for e in rejected)


def test_signin_wrong_api_keys_are_throttled_on_content(server: RunningServer) -> None:
    key = server.user_key("paula", "publisher")
    item = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": "guarded", "access_type": "acl"}).json()
    deploy(server, key, item["guid"], static_bundle())
    page = f"{server.url}/content/{item['guid']}/"
    guesser = from_address("127.0.0.7")
    tally = Tally()
    for n in range(40):
        started = time.monotonic()
        tally.add(guesser.get(page, headers={"Authorization": f"Key wrong-{n}"}, timeout=10),
                  time.monotonic() - started)
    print(f"\nwrong API keys on a content URL: {tally.summary(0)}")
    assert len(tally.checked) < 10 and len(tally.refused) > 30
    refused = guesser.get(page, headers={"Authorization": "Key wrong", "Accept": "application/json"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert refused.json()["error"].startswith("Too many requests with wrong API keys")
    # Viewers from other addresses, and anonymous requests from this one, are unaffected.
    assert from_address("127.0.0.1").get(page, headers={"Authorization": f"Key {key}"}).status_code == 200
    assert guesser.get(page).status_code == 401
    assert "wrong-3" not in server.log()


def test_signin_lockout_after_failures_and_admin_unlocks(tmp_path: Path) -> None:
    running = start_server(tmp_path / "data", extra_env={**SETTINGS, "PODIUM_SIGNIN_LOCKOUT_FAILURES": "4"})
    try:
        running.user_key("dave", "viewer")
        http = from_address("127.0.0.8")
        for _ in range(4):
            assert sign_in(http, running, "dave", WRONG_PASSWORD).status_code == 401
        dave = running.api().get(f"{running.url}/__api__/v1/users", params={"prefix": "dave"}).json()["results"][0]
        assert dave["locked"] is True
        locks = audit_entries(running, action="lock_user")
        assert locks[-1]["user_description"] == "Podium" and "after 4 failed sign-ins" in locks[-1]["event_description"]
        assert "locked user dave after 4 failed sign-ins" in running.log()
        time.sleep(0.6)  # past the delay: the right password is checked, and refused
        assert sign_in(http, running, "dave", "dave-pass-1").status_code == 401

        unlocked = running.api().post(f"{running.url}/__api__/v1/users/{dave['guid']}/lock", json={"locked": False})
        assert unlocked.status_code == 200
        assert sign_in(http, running, "dave", "dave-pass-1").status_code == 303  # at once: count reset
        assert audit_entries(running, action="unlock_user")[-1]["event_description"] == "Unlocked dave."
    finally:
        running.stop()
