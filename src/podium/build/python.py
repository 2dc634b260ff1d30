"""Python installations on the host, and choosing one for a bundle.

``choose_python`` is pure: given what the manifest asks and what exists, it
returns the interpreter or raises :class:`NoCompatiblePython` naming both.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version


@dataclass(frozen=True, order=True)
class PythonInstallation:
    version: Version
    path: str

    @property
    def version_text(self) -> str:
        return str(self.version)


class NoCompatiblePython(Exception):
    """No installation satisfies the bundle; the message says what was asked and what exists."""


def _probe(path: str) -> Version | None:
    try:
        done = subprocess.run(
            [path, "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return Version(done.stdout.strip())
    except (OSError, subprocess.SubprocessError, InvalidVersion):
        return None


def _candidates() -> Iterable[str]:
    for minor in range(8, 20):
        found = shutil.which(f"python3.{minor}")
        if found:
            yield found
    yield from sorted(glob.glob("/usr/bin/python3.[0-9]*"))
    yield from sorted(glob.glob("/usr/local/bin/python3.[0-9]*"))
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    yield from sorted(glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3")))


def discover_pythons(configured: list[str]) -> list[PythonInstallation]:
    """The configured interpreters, or those found on this host; one per version."""
    paths = configured or list(_candidates())
    found: dict[Version, PythonInstallation] = {}
    for path in paths:
        if path.endswith("-config") or not os.access(path, os.X_OK):
            continue
        real = os.path.realpath(path)
        version = _probe(real)
        if version is not None and version.release[:1] == (3,) and version not in found:
            found[version] = PythonInstallation(version, real)
    return sorted(found.values())


def choose_python(
    installations: list[PythonInstallation],
    requires: str | None,
    version: str | None,
    matching: str = "major-minor",
) -> tuple[PythonInstallation, str]:
    """The interpreter for a bundle, and a sentence saying why.

    Rules: ``environment.python.requires`` (a PEP 440 specifier) when given, newest
    satisfying version; else the same major.minor as ``python.version`` (newest patch),
    or exactly that version when ``matching`` is ``exact``; with neither, the newest.
    """
    available = ", ".join(i.version_text for i in installations) or "none"
    if not installations:
        raise NoCompatiblePython("No Python installation is configured or found on this server.")
    if requires:
        try:
            spec = SpecifierSet(requires)
        except InvalidSpecifier:
            raise NoCompatiblePython(f"environment.python.requires {requires!r} is not valid.") from None
        fits = [i for i in installations if i.version in spec]
        if not fits:
            raise NoCompatiblePython(
                f"The bundle requires Python {requires}; this server has Python {available}."
            )
        chosen = max(fits)
        return chosen, f"Python {chosen.version_text} is the newest satisfying {requires!r}"
    if version:
        try:
            wanted = Version(version)
        except InvalidVersion:
            raise NoCompatiblePython(f"python.version {version!r} is not a version.") from None
        if matching == "exact":
            fits = [i for i in installations if i.version == wanted]
            rule = "exactly"
        else:
            fits = [i for i in installations if i.version.release[:2] == wanted.release[:2]]
            rule = f"the same {wanted.major}.{wanted.minor} as"
        if not fits:
            raise NoCompatiblePython(
                f"The bundle was made with Python {version} and needs {rule} it; this server has "
                f"Python {available}. Deploy from a matching Python, or declare a range with "
                "requires-python in pyproject.toml or a .python-version file."
            )
        chosen = max(fits)
        return chosen, f"Python {chosen.version_text} matches {rule} the bundle's {version}"
    chosen = max(installations)
    return chosen, f"the bundle names no Python version; using the newest, {chosen.version_text}"
