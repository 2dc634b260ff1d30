"""Execution environments and bundle requests as plain values.

Selection (:mod:`podium.environments.select`) works only on these frozen
values, never on database rows, so it can be tested exhaustively as a pure
function. :func:`request_from_manifest` reads what a bundle asks for from its
``manifest.json`` (reference/connect-api.md §6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

MATCHING = ("any", "exact", "none")
RUNTIMES = ("python", "r", "quarto")
LABELS = {"python": "Python", "r": "R", "quarto": "Quarto"}
PYTHON_MATCHING = ("major-minor", "exact")
R_MATCHING = ("nearest", "major-minor", "exact")
# Semantic versions as Connect requires them for installations (MAJOR.MINOR.PATCH,
# optional pre-release and build parts), https://semver.org.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_R_MODES = frozenset({"shiny", "rmd-shiny", "rmd-static", "api"})


class InvalidRequest(ValueError):
    """A manifest whose runtime request cannot be read; the message names the field."""


def parse_semver(text: str) -> Version | None:
    """``text`` as a comparable version when it is a semantic version, else None."""
    if not isinstance(text, str) or not SEMVER.match(text):
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


@dataclass(frozen=True, order=True)
class Installation:
    """One interpreter in an environment: its version and executable path."""

    version: Version
    path: str
    text: str = ""  # the version as the administrator wrote it

    @property
    def version_text(self) -> str:
        return self.text or str(self.version)


@dataclass(frozen=True)
class Environment:
    """An execution environment: an image and the installations inside it."""

    id: int
    guid: str
    name: str  # the image
    title: str = ""
    cluster_name: str = "Kubernetes"
    matching: str = "any"
    python: tuple[Installation, ...] = ()
    r: tuple[Installation, ...] = ()
    quarto: tuple[Installation, ...] = ()
    managed_by: str | None = None
    # users (guids) allowed to deploy with it; empty: everyone (v1/environments/{guid}/permissions)
    allowed_users: frozenset[str] = frozenset()

    def installations(self, runtime: str) -> tuple[Installation, ...]:
        return tuple(getattr(self, runtime))

    @property
    def label(self) -> str:
        if self.title and self.title != self.name:
            return f"{self.title!r} (image {self.name})"
        return f"image {self.name!r}"


@dataclass(frozen=True)
class RuntimeRequest:
    """What a bundle asks of one runtime: the version it was made with and/or a range."""

    version: Version | None = None
    requires: SpecifierSet | None = None
    version_text: str = ""

    def describe(self, runtime: str) -> str:
        label = LABELS[runtime]
        if self.requires is not None:
            return f"{label} {self.requires}"
        if self.version is not None:
            return f"{label} {self.version_text or self.version}"
        return f"any {label}"


@dataclass(frozen=True)
class BundleRequest:
    """What a bundle asks for; a runtime left None is one the bundle does not need."""

    image: str | None = None
    identifier: str | None = None
    python: RuntimeRequest | None = None
    r: RuntimeRequest | None = None
    quarto: RuntimeRequest | None = None

    def runtime(self, name: str) -> RuntimeRequest | None:
        value: RuntimeRequest | None = getattr(self, name)
        return value

    @property
    def needed(self) -> tuple[str, ...]:
        return tuple(name for name in RUNTIMES if self.runtime(name) is not None)

    def describe(self) -> str:
        parts = [f"image {self.image!r}"] if self.image else []
        if self.identifier:
            parts.append(f"environment {self.identifier}")
        for name in self.needed:
            request = self.runtime(name)
            assert request is not None
            parts.append(request.describe(name))
        return ", ".join(parts) or "no runtime"


def _section(manifest: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    value: Any = manifest
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _runtime(version: Any, requires: Any, version_field: str, runtime: str) -> RuntimeRequest:
    parsed_version = None
    if version not in (None, ""):
        try:
            parsed_version = Version(str(version))
        except InvalidVersion:
            raise InvalidRequest(f"{version_field} {version!r} is not a version.") from None
    spec = None
    if requires not in (None, ""):
        try:
            spec = SpecifierSet(str(requires))
        except InvalidSpecifier:
            raise InvalidRequest(
                f"environment.{runtime}.requires {requires!r} is not a PEP 440 "
                "version specifier (for example '>=3.10' or '~=3.11.0')."
            ) from None
    return RuntimeRequest(parsed_version, spec, str(version) if version not in (None, "") else "")


def request_from_manifest(manifest: Mapping[str, Any]) -> BundleRequest:
    """The runtimes, image and environment a manifest asks for.

    Python is needed by ``python-*`` and ``jupyter-*`` content and by any
    non-static content whose manifest has a ``python`` section; R by R app
    modes and manifests with ``platform`` (the R version rsconnect writes with
    ``renv.lock``); Quarto by ``quarto-*`` content and manifests with a
    ``quarto`` section. Static content needs none.
    """
    mode = str(_section(manifest, "metadata").get("appmode") or "")
    environment = _section(manifest, "environment")
    static = mode == "static"
    python = _section(manifest, "python")
    python_requires = _section(environment, "python").get("requires")
    r_requires = _section(environment, "r").get("requires")
    quarto = _section(manifest, "quarto")
    wants_python = mode.startswith(("python-", "jupyter-")) or (not static and "python" in manifest)
    wants_r = mode in _R_MODES or (not static and bool(manifest.get("platform")))
    wants_quarto = mode.startswith("quarto-") or (not static and "quarto" in manifest)
    image = environment.get("image")
    identifier = environment.get("identifier")
    for key, value in (("image", image), ("identifier", identifier)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidRequest(f"environment.{key} must be a non-empty string; got {value!r}.")
    return BundleRequest(
        image=image or None,
        identifier=identifier or None,
        python=_runtime(python.get("version"), python_requires, "python.version", "python") if wants_python else None,
        r=_runtime(manifest.get("platform"), r_requires, "platform", "r") if wants_r else None,
        quarto=_runtime(quarto.get("version"), None, "quarto.version", "quarto") if wants_quarto else None,
    )
