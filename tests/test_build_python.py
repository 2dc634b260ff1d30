"""Choosing an interpreter and fingerprinting environments (pure functions)."""

from __future__ import annotations

import pytest
from packaging.version import Version

from podium.build.fingerprint import fingerprint, normalise_requirements
from podium.build.python import (
    NoCompatiblePython,
    PythonInstallation,
    choose_python,
    discover_pythons,
)

INSTALLED = [
    PythonInstallation(Version("3.10.13"), "/py/3.10.13"),
    PythonInstallation(Version("3.11.2"), "/py/3.11.2"),
    PythonInstallation(Version("3.11.7"), "/py/3.11.7"),
    PythonInstallation(Version("3.12.1"), "/py/3.12.1"),
]


@pytest.mark.parametrize(
    ("requires", "version", "matching", "expected"),
    [
        (None, "3.11.4", "major-minor", "3.11.7"),  # same major.minor, newest patch
        (None, "3.11.2", "exact", "3.11.2"),
        (None, "3.10.1", "major-minor", "3.10.13"),
        ("~=3.11.0", "3.12.1", "major-minor", "3.11.7"),  # requires wins over version
        (">=3.10", None, "major-minor", "3.12.1"),  # newest satisfying
        ("<3.11", "3.11.7", "exact", "3.10.13"),
        (None, None, "major-minor", "3.12.1"),  # nothing asked: newest
    ],
)
def test_choose_python_rules(requires: str | None, version: str | None, matching: str, expected: str) -> None:
    chosen, why = choose_python(INSTALLED, requires, version, matching)
    assert chosen.version_text == expected
    assert expected in why


@pytest.mark.parametrize(
    ("requires", "version", "matching", "needle"),
    [
        (None, "3.9.1", "major-minor", "Python 3.9.1"),
        (None, "3.11.5", "exact", "exactly"),
        (">=3.13", None, "major-minor", "requires Python >=3.13"),
        ("not a spec", None, "major-minor", "not valid"),
        (None, "three", "major-minor", "not a version"),
    ],
)
def test_choose_python_errors_name_request_and_available(
    requires: str | None, version: str | None, matching: str, needle: str
) -> None:
    with pytest.raises(NoCompatiblePython) as caught:
        choose_python(INSTALLED, requires, version, matching)
    assert needle in str(caught.value)
    if "not" not in needle:
        assert "3.10.13, 3.11.2, 3.11.7, 3.12.1" in str(caught.value)


def test_choose_python_without_installations() -> None:
    with pytest.raises(NoCompatiblePython, match="No Python installation"):
        choose_python([], None, "3.11.7")


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
