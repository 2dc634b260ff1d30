"""Discovering interpreters and fingerprinting environments (choosing one: test_environments.py)."""

from __future__ import annotations

from podium.build.fingerprint import fingerprint, normalise_requirements
from podium.environments.python import discover_pythons


def test_discover_pythons_finds_this_interpreter() -> None:
    import sys

    found = discover_pythons([sys.executable])
    assert [str(i.version) for i in found] == [".".join(map(str, sys.version_info[:3]))]
    assert discover_pythons(["/nonexistent/python"]) == []


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
