"""The ``Local`` environment: the interpreters installed on this host.

Without Kubernetes, content runs on the server's host, so the catalogue holds
one environment describing it: Python interpreters from ``python_installations``
(or discovered), R and Quarto from their settings or ``PATH``. It is kept up to
date at every start and selected by the same rules as any other environment.

R installations are recorded as their ``R`` executable, as Connect records them
(``/opt/R/4.2.2/bin/R``); an ``Rscript`` given in ``r_installations`` or found on
``PATH`` stands for the ``R`` beside it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from typing import Any

from podium.environments.model import SEMVER
from podium.environments.python import PythonInstallation, why_not_runnable

log = logging.getLogger(__name__)
LOCAL_NAME = "Local"
HOST = "host"
# "R version 4.2.2 Patched (...)" from R, "Rscript (R) version 4.2.2 (...)" from Rscript.
_R_VERSION = re.compile(r"^(?:R|Rscript \(R\)) version (\d+\.\d+\.\d+)", re.MULTILINE)


def _run(path: str, *args: str) -> str:
    try:
        done = subprocess.run(
            [path, *args], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def _probe_r(path: str) -> str | None:
    found = _R_VERSION.search(_run(path, "--version"))
    return found.group(1) if found else None


def _r_executable(path: str) -> str:
    """The ``R`` beside an ``Rscript`` (content is run as ``R --no-echo -e ...``)."""
    if os.path.basename(path) == "Rscript":
        sibling = os.path.join(os.path.dirname(path), "R")
        if os.access(sibling, os.X_OK):
            return sibling
    return path


def _probe_quarto(path: str) -> str | None:
    text = _run(path, "--version").strip()
    return text if SEMVER.match(text) else None


def _discover(
    setting: str, configured: list[str], commands: tuple[str, ...], probe: Any, executable: Any = os.path.realpath
) -> list[dict[str, str]]:
    """The installations listed in ``setting`` (``configured``), or the first of
    ``commands`` on PATH; a listed one that cannot be used is logged with the reason."""
    paths = configured or [p for p in [next(filter(None, map(shutil.which, commands)), None)] if p]
    found: dict[str, dict[str, str]] = {}
    for path in paths:
        reason = why_not_runnable(path)
        if reason is None:
            real = executable(os.path.realpath(path))
            version = probe(real)
            if version:
                found.setdefault(version, {"version": version, "path": real})
                continue
            reason = f"no version in what `{os.path.basename(real)} --version` printed"
        if configured:
            log.warning("%s: %s is skipped: %s", setting, path, reason)
    return sorted(found.values(), key=lambda i: [int(p) for p in re.findall(r"\d+", i["version"])[:3]])


def local_environment(
    pythons: list[PythonInstallation],
    r_installations: list[str],
    quarto_installations: list[str],
    matching: str,
) -> dict[str, Any]:
    """The ``Local`` environment's record fields (as a ``POST v1/environments`` body)."""
    python = [
        {"version": p.version_text, "path": p.path} for p in pythons if SEMVER.match(p.version_text)
    ]
    return {
        "name": LOCAL_NAME,
        "title": LOCAL_NAME,
        "cluster_name": "Local",
        "description": "The interpreters installed on this Podium host.",
        "matching": matching,
        "python": {"installations": python},
        "r": {"installations": _discover("r_installations", r_installations, ("R", "Rscript"), _probe_r, _r_executable)},
        "quarto": {"installations": _discover("quarto_installations", quarto_installations, ("quarto",), _probe_quarto)},
    }
