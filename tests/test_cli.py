"""The podium command: bootstrap, admin commands, config, serve and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tests.conftest import PODIUM, free_port

pytestmark = pytest.mark.integration


def podium(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODIUM, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_cli_bootstrap_prints_key_alone_and_refuses_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = podium("admin", "bootstrap", "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert first.stdout == key + "\n" and len(key) >= 32
    assert "password" in first.stderr
    second = podium("admin", "bootstrap", "--data-dir", str(data))
    assert second.returncode == 1 and second.stdout == ""
    assert "already exists" in second.stderr
    # Only hashes are stored.
    db = b"".join(p.read_bytes() for p in (data / "db").glob("podium.sqlite*"))
    assert key.encode() not in db


def test_cli_create_user_and_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = podium("admin", "create-user", "alice", "--role", "publisher", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.strip()) >= 12 and "\n" not in made.stdout.strip()
    key = podium("admin", "create-api-key", "alice", "--data-dir", str(data))
    assert key.returncode == 0 and len(key.stdout.strip()) >= 32
    assert podium("admin", "create-user", "alice", "--data-dir", str(data)).returncode == 1
    assert podium("admin", "create-user", "bob", "--role", "king", "--data-dir", str(data)).returncode == 2
    missing = podium("admin", "create-api-key", "nobody", "--data-dir", str(data))
    assert missing.returncode == 1 and "no user named" in missing.stderr


def test_cli_config_defaults_and_bad_file(tmp_path: Path) -> None:
    shown = podium("config", "--defaults")
    assert shown.returncode == 0 and "# listen = \"127.0.0.1:3939\"" in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nlisen = 1\n")
    failed = podium("serve", "--config", str(bad))
    assert failed.returncode == 2 and "unknown setting 'lisen'" in failed.stderr


def test_cli_serve_first_start_bootstraps_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "podium.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nlisten = "127.0.0.1:{port}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
    process = subprocess.Popen([sys.executable, "-m", "podium", "serve", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/__api__/server_settings", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # uvicorn finishes the shutdown, then re-raises SIGTERM so the exit status says why.
    assert process.returncode in (0, -signal.SIGTERM), err
    assert "Application shutdown complete" in err
    key = next(line.split(":", 1)[1].strip() for line in err.splitlines() if "API key:" in line)
    password = next(line.split(":", 1)[1].strip() for line in err.splitlines() if "password:" in line)
    assert key and password
    assert (tmp_path / "data" / "db" / "podium.sqlite").exists()


def test_a_database_out_of_reach_is_one_clear_error_with_its_password_hidden(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = {"PODIUM_DATABASE_URL": f"postgresql+psycopg://podium:s3cret@127.0.0.1:{port}/podium"}
    for args in (("serve", "--listen", f"127.0.0.1:{free_port()}"), ("admin", "bootstrap")):
        done = podium(*args, "--data-dir", str(tmp_path / "data"), env=env)
        assert done.returncode == 2, done.stderr[-3000:]
        error = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
        assert error.startswith(f"error: cannot reach the database postgresql+psycopg://podium:***@127.0.0.1:{port}"
                                "/podium: "), error
        assert error.endswith("Connection refused. Check that it runs and takes connections from here, or point "
                              "the setting database_url (PODIUM_DATABASE_URL) elsewhere"), error
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_a_data_dir_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    for args, data in ((("serve", "--listen", f"127.0.0.1:{free_port()}"), taken), (("admin", "bootstrap"), taken / "x")):
        done = podium(*args, "--data-dir", str(data))
        assert done.returncode == 2, done.stderr[-3000:]
        reason = "File exists" if data == taken else "Not a directory"
        assert (f"error: the data dir {data} cannot be made or used: {reason}. Choose a directory this user may "
                "write (setting data_dir, or --data-dir)") in done.stderr, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
