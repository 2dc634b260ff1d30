"""Validation of execution environment records, from the API and from the settings file.

Each rule answers with Connect's error code (reference/connect-semantics.md §1.2)
and a message naming the field. The same function checks ``POST``/``PUT
v1/environments`` bodies and the ``declared_environments`` setting, so an
environment declared in the settings file obeys exactly the API's rules.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from podium import errors
from podium.environments.model import MATCHING, SEMVER
from podium.placement import PlacementError, check_placement
from podium.runtime.base import VolumeMount

TITLE_INVALID = 168
DESCRIPTION_INVALID = 169
CLUSTER_INVALID = 170
NAME_INVALID = 171
MATCHING_INVALID = 172
PATH_INVALID = 173
VERSION_INVALID = 174
NAME_EXISTS = 175
SUPERVISOR_INVALID = 177

# "Kubernetes" is what rsconnect and posit-sdk send; "Local" describes host interpreters.
CLUSTERS = ("Kubernetes", "Local")
INSTALLATION_FIELDS = ("python", "r", "quarto", "tensorflow")
UPDATABLE = ("title", "description", "matching", "supervisor", *INSTALLATION_FIELDS, "volume_mounts", "placement")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")


def _bad(code: int, message: str) -> errors.ApiError:
    return errors.bad_request(message, code=code)


def _installations(field: str, value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    items = value.get("installations") if isinstance(value, Mapping) else None
    if items is None:
        items = [] if isinstance(value, Mapping) else value
    if not isinstance(items, list):
        raise errors.bad_request(
            f"{field} must be an object {{\"installations\": [{{\"version\": ..., \"path\": ...}}]}}."
        )
    result = []
    for item in items:
        if not isinstance(item, Mapping):
            raise errors.bad_request(f"each {field} installation must be an object with version and path.")
        version, path = item.get("version"), item.get("path")
        if not isinstance(version, str) or not SEMVER.match(version):
            raise _bad(
                VERSION_INVALID,
                f"{field} installation version {version!r} is not a semantic version "
                "(MAJOR.MINOR.PATCH, for example 3.11.6).",
            )
        if not isinstance(path, str) or not path.startswith("/") or _CONTROL.search(path):
            raise _bad(PATH_INVALID, f"{field} installation path {path!r} must be an absolute path.")
        result.append({"version": version, "path": path})
    return result


def _title(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise _bad(TITLE_INVALID, f"title must be 1 to 64 characters; got {value!r}.")
    return value


def validate_environment(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """The record fields ``body`` sets, validated.

    Creating needs ``name`` (the image) and takes ``cluster_name`` (default
    ``Kubernetes``); updating ignores both, as Connect's ``PUT`` does. Keys absent
    from an update keep their values; ``null`` clears an optional field.
    """
    fields: dict[str, Any] = {}
    if creating:
        name = body.get("name")
        if not isinstance(name, str) or not name or len(name) > 512 or _WHITESPACE.search(name):
            raise _bad(
                NAME_INVALID,
                f"name (the image) must be 1 to 512 characters without whitespace; got {name!r}.",
            )
        fields["name"] = name
        cluster = body.get("cluster_name", "Kubernetes")
        if cluster not in CLUSTERS:
            raise _bad(
                CLUSTER_INVALID, f"cluster_name must be one of {', '.join(CLUSTERS)}; got {cluster!r}."
            )
        fields["cluster_name"] = cluster
        fields["environment_type"] = cluster
        fields["title"] = _title(body["title"]) if body.get("title") is not None else name[:64]
        fields["matching"] = "any"
    elif "title" in body:
        fields["title"] = _title(body["title"])
    if "description" in body:
        description = body["description"] or ""
        if not isinstance(description, str) or len(description) > 4096:
            raise _bad(DESCRIPTION_INVALID, "description must be text of at most 4096 characters.")
        fields["description"] = description
    if body.get("matching") is not None:
        if body["matching"] not in MATCHING:
            raise _bad(
                MATCHING_INVALID,
                f"matching must be one of {', '.join(MATCHING)}; got {body['matching']!r}.",
            )
        fields["matching"] = body["matching"]
    if "supervisor" in body:
        supervisor = body["supervisor"] or None
        if supervisor is not None and (
            not isinstance(supervisor, str) or _CONTROL.search(supervisor) or not _words(supervisor)
        ):
            raise _bad(
                SUPERVISOR_INVALID,
                "supervisor must be a command without control characters (tabs, newlines ...), "
                "quoted as a shell would split it; every job in the environment runs under it "
                "as `<supervisor> <command...>`.",
            )
        fields["supervisor"] = supervisor
    for field in INSTALLATION_FIELDS:
        if field in body or creating:
            fields[field] = _installations(field, body.get(field))
    if "volume_mounts" in body or creating:
        mounts = body.get("volume_mounts") or []
        if not isinstance(mounts, list) or not all(isinstance(m, Mapping) for m in mounts):
            raise errors.bad_request("volume_mounts must be a list of objects {source, target}.")
        for index, mount in enumerate(mounts):
            try:
                VolumeMount.from_record(mount)
            except ValueError as exc:
                raise errors.bad_request(f"volume_mounts[{index}]: {exc}.") from None
        fields["volume_mounts"] = [dict(m) for m in mounts]
    if "placement" in body:
        try:
            fields["placement"] = check_placement(body["placement"])
        except PlacementError as exc:
            raise errors.bad_request(f"placement: {exc}.") from None
    return fields


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # unbalanced quotes
        return []


def validate_declarations(items: list[Any]) -> list[dict[str, Any]]:
    """The ``declared_environments`` setting, each entry validated as an API ``POST`` body.

    Raises ValueError naming the entry and the problem (the settings loader
    reports it); image names must be unique.
    """
    seen: set[str] = set()
    result = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"declared_environments[{index}] must be a table")
        try:
            fields = validate_environment(item, creating=True)
        except errors.ApiError as exc:
            raise ValueError(f"declared_environments[{index}]: {exc.message}") from None
        if fields["name"] in seen:
            raise ValueError(f"declared_environments[{index}]: image {fields['name']!r} is declared twice")
        seen.add(fields["name"])
        result.append(dict(item))
    return result
