"""Shared fixtures: settings, stores on both databases, and a real Podium server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from podium.settings import Settings, load_settings
from podium.store import Store

POSTGRES_URL = os.environ.get(
    "PODIUM_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
PODIUM = [sys.executable, "-m", "podium"]


CHROMIUM = os.environ.get("PODIUM_TEST_CHROMIUM", "/usr/bin/chromium")


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (never a downloaded browser); skipped locally
    without it, a failure in CI."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extras install it
        sync_playwright = None  # type: ignore[assignment]
    if sync_playwright is None or not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Playwright and Chromium at {CHROMIUM} are required in CI (make system-deps)")
        pytest.skip(f"Playwright or Chromium at {CHROMIUM} is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def require_postgres() -> None:
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI and is not reachable")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on each database."""
    if request.param == "postgres":
        require_postgres()
        reset_postgres(POSTGRES_URL)
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{tmp_path / 'db' / 'podium.sqlite'}"
    store = Store(url)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path / "data", listen=f"127.0.0.1:{free_port()}")


@dataclass
class RunningServer:
    """A ``podium serve`` subprocess on a loopback port, with an admin key. Content is
    served on its own origin, ``content_url`` (http://localhost:<another port>)."""

    url: str
    content_url: str
    data_dir: Path
    admin_key: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log_path: Path
    _keys: dict[str, str] = field(default_factory=dict)

    def api(self, key: str | None = None) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Key {key or self.admin_key}"
        return session

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PODIUM, *args, "--data-dir", str(self.data_dir)],
            env=self.env, capture_output=True, text=True, check=check, timeout=60,
        )

    def user_key(self, username: str, role: str = "publisher") -> str:
        """An API key for a user, created through the API (and cached)."""
        if username not in self._keys:
            admin = self.api()
            made = admin.post(
                f"{self.url}/__api__/v1/users",
                json={"username": username, "user_role": role, "password": f"{username}-pass-1"},
            )
            assert made.status_code == 200, made.text
            self._keys[username] = self.cli("admin", "create-api-key", username).stdout.strip()
        return self._keys[username]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def ports(self) -> tuple[int, int]:
        """The dashboard's and the content's port: ``start_server(..., ports=...)`` starts
        this server again as the same node."""
        return int(self.url.rpartition(":")[2]), int(self.content_url.rpartition(":")[2])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    data_dir: Path, extra_env: dict[str, str] | None = None, bootstrap: bool = True,
    ports: tuple[int, int] | None = None,
) -> RunningServer:
    """``ports``: the dashboard's and content's (a server started again on its own); free
    ones by default."""
    port, content_port = ports or (free_port(), free_port())
    env = dict(os.environ)
    env.pop("PODIUM_CONFIG", None)
    env.update({
        "PODIUM_BOOTSTRAP_ADMIN_ON_FIRST_START": "false",
        "PODIUM_CONTENT_LISTEN": f"127.0.0.1:{content_port}",
        **(extra_env or {}),
    })
    admin_key = ""
    if bootstrap:
        done = subprocess.run(
            [*PODIUM, "admin", "bootstrap", "--data-dir", str(data_dir)],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        admin_key = done.stdout.strip()
    log_path = data_dir.parent / f"server-{port}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [*PODIUM, "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = RunningServer(
        f"http://127.0.0.1:{port}", f"http://localhost:{content_port}", data_dir, admin_key, process, env,
        log_path,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"podium serve exited early:\n{server.log()}")
        try:
            if requests.get(f"{server.url}/__api__/server_settings", timeout=1).ok:
                return server
        except requests.RequestException:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"podium serve did not answer within 30 s:\n{server.log()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server per test module (SQLite)."""
    running = start_server(tmp_path_factory.mktemp("podium") / "data")
    yield running
    running.stop()
