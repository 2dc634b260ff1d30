"""R package environments: what a bundle asks for, and the library built for it.

A bundle needing R lists its packages in ``renv.lock`` (used when the bundle has
one) or in the manifest's ``packages`` (as rsconnect for R writes them, with the R
version in ``platform``). The list, normalised, and the R installation make the
fingerprint of an R library ``envs/r-<fingerprint>/library``, restored once by a
build job that runs :file:`restore.R` with the environment's R (it installs only
what the environment's own library lacks, from the ``r_repository_url`` setting)
and shared by every bundle with the same fingerprint. Content then runs with
``R_LIBS`` naming that library, ahead of the environment's.

``environment.environment_management.r: false`` in the manifest (or the
``r_environment_management`` setting, when the manifest does not say) skips the
restore: content runs with the environment's library as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from podium.environments.model import Installation
from podium.runtime import Placement, Resources

__all__ = [
    "RBuildRequest",
    "RLibrary",
    "RPackage",
    "r_fingerprint",
    "r_managed",
    "restore_script",
    "wanted_packages",
]

# R's rules for package names and versions (Writing R Extensions, "The DESCRIPTION file").
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9.]*[A-Za-z0-9]")
_VERSION = re.compile(r"\d+([.-]\d+)+")
RENV_LOCK = "renv.lock"


class PackageListError(ValueError):
    """A package list that cannot be restored as written; the message names the field."""


@dataclass(frozen=True, order=True)
class RPackage:
    name: str
    version: str
    source: str = ""

    def dcf(self) -> str:
        """The package as a record of the restore script's input (a DCF file)."""
        source = " ".join(self.source.split()) or "unknown"
        return f"Package: {self.name}\nVersion: {self.version}\nSource: {source}\n"


@dataclass(frozen=True)
class RBuildRequest:
    content_id: int
    content_guid: str
    bundle_id: int
    bundle_dir: Path
    manifest: dict[str, Any]
    r: Installation  # chosen by environment selection (podium.environments)
    managed: bool  # restore packages (environment_management.r)
    image: str | None = None
    resources: Resources = Resources()
    service_account: str | None = None
    placement: Placement | None = None


@dataclass(frozen=True)
class RLibrary:
    """What content needing R runs with."""

    fingerprint: str | None  # None when nothing was restored
    r: str  # the R executable
    r_version: str
    library: str | None  # put first on R_LIBS; None: the environment's library alone
    managed: bool
    reused: bool


def restore_script() -> str:
    """The text of :file:`restore.R`, written beside each library it builds."""
    return resources.files(__package__).joinpath("restore.R").read_text(encoding="utf-8")


def r_managed(manifest: Mapping[str, Any], default: bool) -> bool:
    """Whether to restore packages: the manifest's environment_management.r, else ``default``."""
    environment = manifest.get("environment")
    management = environment.get("environment_management") if isinstance(environment, Mapping) else None
    value = management.get("r") if isinstance(management, Mapping) else None
    return default if value is None else value is not False


def _package(name: Any, version: Any, source: Any, where: str) -> RPackage:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PackageListError(f"{where}: {name!r} is not an R package name.")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise PackageListError(f"{where}: version {version!r} of {name} is not an R package version.")
    return RPackage(name, version, source if isinstance(source, str) else "")


def packages_from_manifest(manifest: Mapping[str, Any]) -> list[RPackage]:
    """``packages`` as rsconnect for R writes it: ``{name: {Source, Repository, description}}``."""
    packages = manifest.get("packages") or {}
    if not isinstance(packages, Mapping):
        raise PackageListError("manifest packages must be an object of packages by name.")
    found = []
    for name, entry in packages.items():
        entry = entry if isinstance(entry, Mapping) else {}
        description = entry.get("description")
        description = description if isinstance(description, Mapping) else {}
        version = description.get("Version") or entry.get("Version")
        found.append(_package(name, version, entry.get("Source"), f"manifest packages.{name}"))
    return sorted(found)


def packages_from_renv_lock(text: str) -> list[RPackage]:
    """``Packages`` of an renv lockfile: ``{name: {Package, Version, Source, Repository}}``."""
    try:
        lock = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PackageListError(f"renv.lock is not valid JSON: {exc}.") from None
    packages = lock.get("Packages") if isinstance(lock, Mapping) else None
    if not isinstance(packages, Mapping):
        raise PackageListError("renv.lock has no Packages object.")
    found = []
    for name, entry in packages.items():
        entry = entry if isinstance(entry, Mapping) else {}
        found.append(
            _package(entry.get("Package", name), entry.get("Version"), entry.get("Source"),
                     f"renv.lock Packages.{name}")
        )
    return sorted(found)


def wanted_packages(bundle_dir: Path, manifest: Mapping[str, Any]) -> tuple[list[RPackage], str]:
    """The packages a bundle asks for and where the list came from (renv.lock first)."""
    lock = bundle_dir / RENV_LOCK
    if lock.is_file():
        return packages_from_renv_lock(lock.read_text(errors="replace")), RENV_LOCK
    return packages_from_manifest(manifest), "manifest packages"


def r_fingerprint(
    r: Installation, packages: list[RPackage], repository: str, image: str | None
) -> str:
    """Same R installation, image, package list and repository: the same library."""
    payload = json.dumps(
        {"r": r.version_text, "interpreter": r.path, "image": image or "", "repository": repository,
         "packages": [[p.name, p.version, p.source] for p in sorted(packages)], "format": 1},
        sort_keys=True,
    )
    return "r-" + hashlib.sha256(payload.encode()).hexdigest()[:32]
