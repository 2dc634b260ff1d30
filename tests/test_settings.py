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
