"""Python installations on the host.

They make up the ``Local`` execution environment (:mod:`podium.environments.host`);
which one a bundle gets is decided by :mod:`podium.environments.select`.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class PythonInstallation:
    version: Version
    path: str

    @property
    def version_text(self) -> str:
        return str(self.version)


class _Unusable(Exception):
    """Why a path is not a Python installation content can use."""


def why_not_runnable(path: str) -> str | None:
    """Why ``path`` cannot be run as an interpreter (None: it is an executable file)."""
    if os.access(path, os.X_OK) and not os.path.isdir(path):
        return None
    return "not an executable file" if os.path.exists(path) else "no such file"


def _probe(path: str) -> tuple[Version, str]:
    """The version and real executable behind ``path`` (shims such as pyenv's resolve
    to the interpreter they run, so content never depends on a shim's own rules)."""
    not_runnable = why_not_runnable(path)
    if not_runnable is not None:
        raise _Unusable(not_runnable)
    try:
        done = subprocess.run(
            [path, "-c", "import platform, sys; print(platform.python_version()); print(sys.executable)"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        version, executable = done.stdout.split("\n")[:2]
        return Version(version.strip()), os.path.realpath(executable.strip())
    except OSError as exc:
        raise _Unusable(f"it does not run: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise _Unusable("it did not answer within 20 s") from None
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:]
        raise _Unusable(f"it exited with status {exc.returncode}{': ' + last[0] if last else ''}") from None
    except (InvalidVersion, ValueError):
        raise _Unusable("it printed no Python version") from None


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
    """The configured interpreters, or those found on this host; one per version. A
    configured one that cannot be used is logged with the reason (a candidate found by
    discovery is only skipped)."""
    paths = configured or list(_candidates())
    found: dict[Version, PythonInstallation] = {}
    for path in paths:
        if path.endswith("-config"):
            continue
        try:
            version, real = _probe(path)
            if version.release[:1] != (3,):
                raise _Unusable(f"it is Python {version}; content needs Python 3")
        except _Unusable as exc:
            if configured:
                log.warning("python_installations: %s is skipped: %s", path, exc)
            continue
        found.setdefault(version, PythonInstallation(version, real))
    return sorted(found.values())
