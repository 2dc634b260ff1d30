"""Python installations on the host.

They make up the ``Local`` execution environment (:mod:`podium.environments.host`);
which one a bundle gets is decided by :mod:`podium.environments.select`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version


@dataclass(frozen=True, order=True)
class PythonInstallation:
    version: Version
    path: str

    @property
    def version_text(self) -> str:
        return str(self.version)


def _probe(path: str) -> tuple[Version, str] | None:
    """The version and real executable behind ``path`` (shims such as pyenv's resolve
    to the interpreter they run, so content never depends on a shim's own rules)."""
    try:
        done = subprocess.run(
            [path, "-c", "import platform, sys; print(platform.python_version()); print(sys.executable)"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        version, executable = done.stdout.split("\n")[:2]
        return Version(version.strip()), os.path.realpath(executable.strip())
    except (OSError, subprocess.SubprocessError, InvalidVersion, ValueError):
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
        probed = _probe(path)
        if probed is None:
            continue
        version, real = probed
        if version.release[:1] == (3,) and version not in found:
            found[version] = PythonInstallation(version, real)
    return sorted(found.values())
