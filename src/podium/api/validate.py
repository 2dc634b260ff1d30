"""Validation of content settings written through ``PATCH v1/content/{guid}``.

Each rule answers with Connect's error code and a message that names the field
and the allowed range (reference/connect-semantics.md §1.4, §1.5). The resource
and service-account rules live in :mod:`podium.resources`.
"""

from __future__ import annotations

import re
from typing import Any

from podium import auth, errors, resources
from podium.placement import PlacementError, check_placement
from podium.settings import Settings
from podium.store.models import Content, User

MAX_TIMEOUT_SECONDS = 2_592_000
ACCESS_TYPES = ("all", "logged_in", "acl")


def _int(field: str, value: Any, code: int, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise errors.bad_request(
            f"{field} must be a whole number from {low} to {high}, or null for the server "
            f"default; got {value!r}.",
            code=code,
        )
    return value


def _float(field: str, value: Any, code: int, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise errors.bad_request(
            f"{field} must be a number from {low} to {high}, or null for the server default; "
            f"got {value!r}.",
            code=code,
        )
    return float(value)


def validate_content_patch(
    settings: Settings,
    user: User,
    content: Content,
    body: dict[str, Any],
    creating: bool,
) -> dict[str, Any]:
    """The attribute changes ``body`` asks for, validated; unknown keys are ignored."""
    changes: dict[str, Any] = {}
    if "title" in body:
        title = body["title"]
        if title is not None and (not isinstance(title, str) or not 3 <= len(title) <= 1024):
            raise errors.bad_request("The title must be 3 to 1024 characters long.", code=122)
        changes["title"] = title
    if "description" in body:
        description = body["description"] or ""
        if not isinstance(description, str) or len(description) > 4096:
            raise errors.bad_request("The description must be text of at most 4096 characters.")
        changes["description"] = description
    if "access_type" in body:
        if body["access_type"] not in ACCESS_TYPES:
            raise errors.bad_request(
                f"access_type must be one of {', '.join(ACCESS_TYPES)}; got {body['access_type']!r}."
            )
        changes["access_type"] = body["access_type"]
    if "locked" in body:
        if not isinstance(body["locked"], bool):
            raise errors.bad_request("locked must be true or false.")
        changes["locked"] = body["locked"]
    if "locked_message" in body:
        changes["locked_message"] = str(body["locked_message"] or "")

    changes.update(_runtime_changes(body))
    changes.update(
        resources.check_resource_patch(body, resources.content_values(content), settings.resource_policy)
    )

    if "default_image_name" in body:
        image = body["default_image_name"]
        if image is not None and (not isinstance(image, str) or not image or re.search(r"\s", image)):
            raise errors.bad_request(
                "default_image_name must be a non-empty image name without whitespace, or null.",
                code=193,
            )
        changes["default_image_name"] = image
    changes.update(resources.check_gpu_patch(body, settings.job_policy.gpus))
    if "kubernetes_placement" in body:
        try:
            placement = check_placement(body["kubernetes_placement"])
        except PlacementError as exc:
            raise errors.bad_request(f"kubernetes_placement: {exc}.") from None
        if placement != content.kubernetes_placement:
            if not auth.at_least(user, "administrator"):
                raise errors.forbidden("Only administrators can set where content runs (kubernetes_placement).")
            changes["kubernetes_placement"] = placement
    if "service_account_name" in body:
        name = None if body["service_account_name"] == "" else body["service_account_name"]
        if name != content.service_account_name:
            if not auth.at_least(user, "administrator"):
                raise errors.forbidden("Only administrators can set the service account of content.")
            changes["service_account_name"] = resources.check_service_account(
                name, settings.content_service_account_selection, settings.kubernetes_denied_service_accounts
            )

    merged = {f: changes.get(f, getattr(content, f, None)) for f in ("min_processes", "max_processes")}
    if (
        merged["min_processes"] is not None
        and merged["max_processes"] is not None
        and merged["min_processes"] > merged["max_processes"]
    ):
        raise errors.bad_request(
            f"min_processes ({merged['min_processes']}) cannot exceed max_processes "
            f"({merged['max_processes']}).",
            code=114,
        )
    return changes


def _runtime_changes(body: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "min_processes" in body:
        changes["min_processes"] = _int("min_processes", body["min_processes"], 45, 0, 1000)
    if "max_processes" in body:
        changes["max_processes"] = _int("max_processes", body["max_processes"], 113, 1, 1000)
    if "max_conns_per_process" in body:
        changes["max_conns_per_process"] = _int(
            "max_conns_per_process", body["max_conns_per_process"], 191, 1, 100_000
        )
    if "load_factor" in body:
        changes["load_factor"] = _float("load_factor", body["load_factor"], 150, 0.0, 1.0)
    for field in ("idle_timeout", "init_timeout", "connection_timeout", "read_timeout"):
        if field in body:
            changes[field] = _int(field, body[field], 151, 0, MAX_TIMEOUT_SECONDS)
    return changes
