"""Discovering interpreters and fingerprinting environments (choosing one: test_environments.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from podium.build.fingerprint import fingerprint, normalise_requirements
from podium.environments.python import discover_pythons


def test_discover_pythons_finds_this_interpreter() -> None:
    import sys

    found = discover_pythons([sys.executable])
    assert [str(i.version) for i in found] == [".".join(map(str, sys.version_info[:3]))]
    assert discover_pythons(["/nonexistent/python"]) == []


def test_a_configured_python_that_cannot_be_used_is_logged_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An administrator who lists an interpreter that is missing or broken learns why it
    is not offered to content, rather than seeing only 'Python installations: none'."""
    import sys

    def script(name: str, body: str, mode: int = 0o755) -> str:
        path = tmp_path / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(mode)
        return str(path)

    paths = [
        str(tmp_path / "missing"),
        script("not-executable", "exit 0", 0o644),
        script("fails", "echo 'error while loading shared libraries: libpython3.12.so' >&2; exit 127"),
        script("junk", "echo hello"),
        script("python2", "echo 2.7.18; echo /usr/bin/python2"),
        sys.executable,
    ]
    with caplog.at_level(logging.WARNING, logger="podium.environments.python"):
        found = discover_pythons(paths)
    assert [i.path for i in found] == [str(Path(sys.executable).resolve())]
    assert [record.getMessage() for record in caplog.records] == [
        f"python_installations: {paths[0]} is skipped: no such file",
        f"python_installations: {paths[1]} is skipped: not an executable file",
        f"python_installations: {paths[2]} is skipped: it exited with status 127: error while loading shared "
        "libraries: libpython3.12.so",
        f"python_installations: {paths[3]} is skipped: it printed no Python version",
        f"python_installations: {paths[4]} is skipped: it is Python 2.7.18; content needs Python 3",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="podium.environments.python"):
        discover_pythons([])  # discovery skips what it cannot use without a word
    assert caplog.records == []


def test_fingerprint_ignores_order_comments_and_spacing() -> None:
    a = normalise_requirements("fastapi==0.1\n# comment\nuvicorn  >= 1 # why\n\n")
    b = normalise_requirements("uvicorn >= 1\nfastapi==0.1\nfastapi==0.1\n")
    assert a == b == ["fastapi==0.1", "uvicorn >= 1"]
    assert fingerprint("3.11.7", a, ["uvicorn"], True) == fingerprint("3.11.7", b, ["uvicorn"], True)
    assert fingerprint("3.11.7", a, [], True) != fingerprint("3.11.2", a, [], True)
    assert fingerprint("3.11.7", a, [], True) != fingerprint("3.11.7", a, ["gunicorn"], True)


def test_fingerprint_separates_environments_and_interpreters() -> None:
    base = fingerprint("3.11.7", ["fastapi"], [], True, interpreter="/usr/bin/python3.11", image="Local")
    assert base != fingerprint("3.11.7", ["fastapi"], [], True, interpreter="/opt/py/bin/python", image="Local")
    assert base != fingerprint("3.11.7", ["fastapi"], [], True, interpreter="/usr/bin/python3.11", image="img/x")
