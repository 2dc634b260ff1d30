"""The bundle manifest (``manifest.json``): its model, parsing, and the bundle error.

The manifest is untrusted input. :func:`parse_manifest` turns its bytes into a
:class:`Manifest` or raises :class:`BundleError` with code 38 and a sentence that names
the offending field. Unknown fields are allowed and preserved (rsconnect adds sections
over time, e.g. ``node``), so a stored manifest round-trips.

The schema is the one rsconnect writes; see section 6 of ``reference/connect-api.md``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from podium.appmodes import APP_MODE_ORDINALS

# Connect error codes used for refused bundles (the API renders them as
# {"code": ..., "error": message, "payload": null}).
MANIFEST_INVALID = 38
UNSAFE_ARCHIVE = 39
LIMIT_EXCEEDED = 40
CHECKSUM_MISMATCH = 104

# Every app mode a bundle may declare ("unknown" is only a content state).
APP_MODES: tuple[str, ...] = tuple(mode for mode in APP_MODE_ORDINALS if mode != "unknown")

_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")


class BundleError(Exception):
    """A refused bundle.

    ``code`` is the Connect error code (38 manifest missing or invalid, 39 unsafe or
    unreadable archive, 40 a size, file-count or compression-ratio cap exceeded, 104
    checksum mismatch); ``message`` is a sentence safe to show the publisher, naming the
    offending member or manifest field; ``status`` is the HTTP status (413 for caps,
    else 400).
    """

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else (413 if code == LIMIT_EXCEEDED else 400)

    def __str__(self) -> str:
        return self.message


def bundle_path(name: str) -> str:
    """A manifest path as it is looked up among bundle members (``./`` and ``\\`` forgiven)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManifestMetadata(_Section):
    appmode: str
    entrypoint: str | None = None
    primary_html: str | None = None
    primary_rmd: str | None = None
    content_category: str | None = None
    has_parameters: bool | None = None

    @field_validator("appmode")
    @classmethod
    def _known_appmode(cls, value: str) -> str:
        if value not in APP_MODES:
            raise ValueError(f"{value!r} is not a known app mode; known: {', '.join(APP_MODES)}")
        return value


class PackageManager(_Section):
    name: str | None = None
    version: str | None = None
    package_file: str | None = None
    allow_uv: bool | None = None


class PythonSection(_Section):
    version: str | None = None
    package_manager: PackageManager | None = None


class QuartoSection(_Section):
    version: str | None = None
    engines: list[str] = Field(default_factory=list)


class JupyterSection(_Section):
    hide_all_input: bool | None = None
    hide_tagged_input: bool | None = None


class EnvironmentManagement(_Section):
    python: bool | None = None
    r: bool | None = None
    node: bool | None = None


class PythonRequirement(_Section):
    requires: str | None = None

    @field_validator("requires")
    @classmethod
    def _pep440(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(
                    f"{value!r} is not a PEP 440 version specifier (for example '>=3.10' "
                    "or '~=3.11.0')"
                ) from None
        return value


class RRequirement(_Section):
    requires: str | None = None


class EnvironmentSection(_Section):
    image: str | None = None
    identifier: str | None = None
    environment_management: EnvironmentManagement | None = None
    python: PythonRequirement | None = None
    r: RRequirement | None = None


class ManifestFile(_Section):
    checksum: str | None = None

    @field_validator("checksum")
    @classmethod
    def _md5(cls, value: str | None) -> str | None:
        if value is not None:
            if not _MD5_HEX.fullmatch(value):
                raise ValueError(f"{value!r} is not an MD5 checksum (32 hexadecimal digits)")
            return value.lower()
        return value


class Manifest(_Section):
    version: int = 1
    locale: str | None = None
    metadata: ManifestMetadata
    python: PythonSection | None = None
    quarto: QuartoSection | None = None
    jupyter: JupyterSection | None = None
    environment: EnvironmentSection | None = None
    platform: str | None = None
    packages: dict[str, Any] | None = None
    files: dict[str, ManifestFile] = Field(default_factory=dict)

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, value: dict[str, ManifestFile]) -> dict[str, ManifestFile]:
        for name in value:
            parts = bundle_path(name).split("/")
            if name.startswith(("/", "\\")) or "\x00" in name or ".." in parts or parts == [""]:
                raise ValueError(f"key {name!r} is not a relative path inside the bundle")
        return value

    @property
    def appmode(self) -> str:
        return self.metadata.appmode

    @property
    def entrypoint(self) -> str | None:
        return self.metadata.entrypoint

    @property
    def python_requires(self) -> str | None:
        """``environment.python.requires``, a PEP 440 specifier, if the bundle gives one."""
        env = self.environment
        return env.python.requires if env and env.python else None


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate ``manifest.json`` bytes; raise BundleError(38) naming the problem."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BundleError(
            MANIFEST_INVALID, f"manifest.json is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            MANIFEST_INVALID,
            f"manifest.json is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
        ) from None
    if not isinstance(raw, dict):
        raise BundleError(MANIFEST_INVALID, "manifest.json must hold a JSON object")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(MANIFEST_INVALID, _describe(exc)) from None


_TYPE_WORDS = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a JSON array",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _describe(exc: ValidationError) -> str:
    """One sentence for the first problem pydantic found, naming the manifest field."""
    errors = exc.errors()
    first = errors[0]
    field = _field_path(tuple(first["loc"]))
    kind = first["type"]
    if kind == "missing":
        what = "is required"
    elif kind == "value_error":
        what = str(first.get("ctx", {}).get("error", first["msg"]))
    else:
        got = json.dumps(first.get("input"), default=str)
        got = got if len(got) <= 60 else got[:57] + "..."
        what = f"{_TYPE_WORDS.get(kind, first['msg'].lower())} (got {got})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"manifest.json: {field} {what}{more}"
