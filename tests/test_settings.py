"""Settings: declared once, from file and environment, documented."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from podium.settings import Settings, SettingsError, defaults_toml, load_settings


def test_settings_defaults_toml_lists_every_setting_with_help() -> None:
    text = defaults_toml()
    import re

    setting_line = re.compile(r"^# [a-z_]+ = ")
    uncommented = "\n".join(line[2:] if setting_line.match(line) else line for line in text.splitlines())
    parsed = tomllib.loads(uncommented)
    names = {key for table in parsed.values() for key in table}
    assert names == set(Settings.model_fields)
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no help text"


def test_settings_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "podium.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:4000"\ndata_dir = "/srv/podium"\n'
                      "[bundles]\nbundle_max_files = 10\n")
    settings = load_settings(config)
    assert (settings.listen, settings.data_dir, settings.bundle_max_files) == ("127.0.0.1:4000", Path("/srv/podium"), 10)
    monkeypatch.setenv("PODIUM_LISTEN", "127.0.0.1:5000")
    assert load_settings(config).listen == "127.0.0.1:5000"
    assert load_settings(config, listen="127.0.0.1:6000").listen == "127.0.0.1:6000"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server]\nlisten = 1\n", "listen"),
        ("[server]\nlisten = \"nohostport\"\n", "HOST:PORT"),
        ("[server]\nlisen = \"x\"\n", "unknown setting 'lisen'"),
        ("[nope]\na = 1\n", "unknown section [nope]"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_settings_file_errors_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    config = tmp_path / "podium.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=needle.replace("[", r"\[")):
        load_settings(config)


def test_settings_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_settings_derived_values(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, listen="127.0.0.1:3939")
    assert settings.effective_database_url.endswith("/db/podium.sqlite")
    assert settings.effective_public_url == "http://127.0.0.1:3939/"
    assert (settings.host, settings.port) == ("127.0.0.1", 3939)


def test_settings_session_cookie_secure_follows_an_https_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).session_cookie_secure is False
    assert load_settings(None, public_url="https://podium.example.com/").session_cookie_secure is True
    assert load_settings(None, public_url="https://podium.example.com/", session_cookie_secure=False).session_cookie_secure is False
    monkeypatch.setenv("PODIUM_SESSION_COOKIE_SECURE", "true")
    assert load_settings(None, public_url="http://127.0.0.1:3939/").session_cookie_secure is True


def test_settings_node_id_and_runtime_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    one = load_settings(None, data_dir=tmp_path / "data", listen="127.0.0.1:4000")
    other_port = load_settings(None, data_dir=tmp_path / "data", listen="127.0.0.1:4002")
    other_dir = load_settings(None, data_dir=tmp_path / "elsewhere", listen="127.0.0.1:4000")
    ids = {one.effective_node_id, other_port.effective_node_id, other_dir.effective_node_id}
    assert len(ids) == 3  # two nodes on one host differ by port or data dir
    assert one.effective_node_id == load_settings(None, data_dir=tmp_path / "data", listen="127.0.0.1:4000").effective_node_id
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,61}[A-Za-z0-9]", one.effective_node_id)
    assert one.effective_node_id.endswith("-4000")
    # runtime dirs: one per node, in the runtime dir, never in the data dir
    assert one.effective_runtime_dir.parent == tmp_path / "xdg" / "podium"
    assert one.effective_runtime_dir != other_port.effective_runtime_dir
    assert not one.effective_runtime_dir.is_relative_to(tmp_path / "data")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert not one.effective_runtime_dir.is_relative_to(tmp_path / "data")
    assert len(str(one.effective_runtime_dir / "sockets" / "run-0123456789abcdef" / "app.sock")) < 108
    given = load_settings(None, node_id="web-1", runtime_dir=tmp_path / "rt")
    assert (given.effective_node_id, given.effective_runtime_dir) == ("web-1", tmp_path / "rt")


@pytest.mark.parametrize("values", [{"node_id": "has space"}, {"node_id": "x" * 64},
                                    {"node_heartbeat_seconds": 5, "node_timeout_seconds": 6}])
def test_settings_node_values_are_checked(values: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        load_settings(None, **values)


def test_settings_runtime_dir_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "podium", "serve", "--data-dir", str(tmp_path / "data")],
        env={"PATH": "/usr/bin:/bin", "PODIUM_RUNTIME_DIR": str(tmp_path / "data" / "run")},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "runtime_dir" in done.stderr and "inside data_dir" in done.stderr


def test_node_dirs_are_private_and_refused_where_others_could_swap_them(tmp_path: Path) -> None:
    import os
    import stat

    from podium.layout import NodeDirs

    dirs = NodeDirs(tmp_path / "node").create()
    assert stat.S_IMODE(os.stat(dirs.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dirs.sockets).st_mode) == 0o700
    assert dirs.app_socket.parent == dirs.root
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename what is in it
    with pytest.raises(RuntimeError, match="set runtime_dir"):
        NodeDirs(shared / "node").create()
    shared.chmod(0o1777)  # sticky, as /tmp: only the owner may
    assert NodeDirs(shared / "node").create().root.is_dir()
    (tmp_path / "link").symlink_to(tmp_path / "node")
    with pytest.raises(RuntimeError, match="not a directory owned by this user"):
        NodeDirs(tmp_path / "link").create()
