"""The package inventory: what each package environment holds, read from the
environment itself after its build, and recorded once per environment.

A Python environment is read from its ``site-packages`` (each installed
distribution's metadata, as ``uv pip list`` reads it); its hash is the archive hash uv
or pip left in ``direct_url.json`` where there is one, else None. An R library is read
from each package's ``DESCRIPTION`` (``RemoteSha`` or ``MD5sum`` as the hash where
present). Bundles point at their environment (``Bundle.python_path``, ``r_library``),
so "which content uses package X version Y" joins through them.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from sqlalchemy import select
from sqlalchemy.orm import Session

from podium.store.models import BundleEnvironment, EnvironmentPackage, PackageEnvironment

PYTHON, R = "Python", "R"


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str
    hash: str | None = None


def python_packages(env_dir: Path) -> list[InstalledPackage]:
    """The distributions installed in the venv at ``env_dir``, sorted by name."""
    found: dict[str, InstalledPackage] = {}
    for site in sorted(env_dir.glob("lib/python*/site-packages")):
        for dist in importlib.metadata.distributions(path=[str(site)]):
            name = dist.metadata["Name"]
            if not name:
                continue
            name = canonicalize_name(name)  # as uv pip list and freeze print it
            found[name] = InstalledPackage(name, dist.version, _archive_hash(dist))
    return sorted(found.values(), key=lambda p: p.name.lower())


def _archive_hash(dist: importlib.metadata.Distribution) -> str | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        info = json.loads(text).get("archive_info") or {}
    except (ValueError, AttributeError):
        return None
    hashes = info.get("hashes") or {}
    if hashes:
        algorithm, value = sorted(hashes.items())[0]
        return f"{algorithm}:{value}"
    value = info.get("hash")
    return str(value).replace("=", ":", 1) if value else None


def r_packages(library: Path) -> list[InstalledPackage]:
    """The packages installed in the R library at ``library``, sorted by name."""
    found = []
    for description in sorted(library.glob("*/DESCRIPTION")):
        fields = email.parser.Parser().parsestr(description.read_text(errors="replace"), headersonly=True)
        name, version = fields.get("Package"), fields.get("Version")
        if name and version:
            found.append(InstalledPackage(name.strip(), version.strip(),
                                          (fields.get("RemoteSha") or fields.get("MD5sum") or "").strip() or None))
    return sorted(found, key=lambda p: p.name.lower())


def record(
    session: Session, fingerprint: str, path: Path, language: str, language_version: str,
    image_name: str, packages: Callable[[], list[InstalledPackage]],
) -> PackageEnvironment:
    """Record the environment at ``path`` and its packages (read by ``packages``), once:
    a reused environment keeps its first record."""
    environment = session.scalar(select(PackageEnvironment).where(PackageEnvironment.path == str(path)))
    if environment is not None:
        return environment
    environment = PackageEnvironment(
        fingerprint=fingerprint, path=str(path), language=language,
        language_version=language_version, image_name=image_name,
    )
    session.add(environment)
    session.flush()
    session.add_all(
        EnvironmentPackage(environment_id=environment.id, name=p.name, version=p.version, hash=p.hash)
        for p in packages()
    )
    return environment


def link(session: Session, bundle_id: int, environment: PackageEnvironment) -> None:
    """Note that ``bundle_id`` runs with ``environment`` (once)."""
    if session.get(BundleEnvironment, (bundle_id, environment.id)) is None:
        session.add(BundleEnvironment(bundle_id=bundle_id, environment_id=environment.id))


def requirements_lock(packages: list[InstalledPackage]) -> str:
    """The exact requirements (``name==version``, one a line) that recreate an environment."""
    return "".join(f"{p.name}=={p.version}\n" for p in sorted(packages, key=lambda p: p.name.lower()))
