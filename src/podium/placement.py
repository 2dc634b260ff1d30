"""Where content runs on Kubernetes: placement records of execution environments and
content, checked and turned into :class:`~podium.runtime.base.Placement`.

A placement record is what an administrator writes (``placement`` of an execution
environment, ``kubernetes_placement`` of a content item; Podium's own fields, Connect
has none per content): ``node_selector`` (labels), ``tolerations`` and ``affinity``
as Kubernetes spells them, ``image_pull_secrets`` (Secret names),
``priority_class_name`` and ``runtime_class_name`` (for example ``gvisor``). A job's
placement is the server's (settings), then its environment's, then its content's:
each later one adds tolerations and pull secrets and wins for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from podium.runtime.base import Placement

FIELDS = ("node_selector", "tolerations", "affinity", "image_pull_secrets", "priority_class_name",
          "runtime_class_name")
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
_AFFINITY_KEYS = {"nodeAffinity", "podAffinity", "podAntiAffinity"}


class PlacementError(ValueError):
    """A placement record that cannot be used; the message names the field."""


def check_placement(value: Any) -> dict[str, Any] | None:
    """``value`` as a stored placement record (None or {} clears it); PlacementError
    says what is wrong."""
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping):
        raise PlacementError("a placement is an object with " + ", ".join(FIELDS))
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise PlacementError(f"unknown placement field {unknown[0]!r}; known: {', '.join(FIELDS)}")
    record: dict[str, Any] = {}
    selector = value.get("node_selector") or {}
    if not isinstance(selector, Mapping) or not all(
        isinstance(k, str) and _LABEL_KEY.fullmatch(k) and isinstance(v, str) and _LABEL_VALUE.fullmatch(v)
        for k, v in selector.items()
    ):
        raise PlacementError("node_selector must map label names to label values (strings)")
    tolerations = value.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(
        isinstance(t, Mapping) and t and set(t) <= _TOLERATION_KEYS for t in tolerations
    ):
        raise PlacementError("tolerations must be a list of {key, operator, value, effect, tolerationSeconds}")
    affinity = value.get("affinity") or {}
    if not isinstance(affinity, Mapping) or not set(affinity) <= _AFFINITY_KEYS:
        raise PlacementError("affinity must be an object with nodeAffinity, podAffinity or podAntiAffinity")
    secrets = value.get("image_pull_secrets") or []
    if not isinstance(secrets, list) or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in secrets):
        raise PlacementError("image_pull_secrets must be a list of Secret names")
    for name in ("priority_class_name", "runtime_class_name"):
        text = value.get(name)
        if text is not None and text != "" and not (isinstance(text, str) and _NAME.fullmatch(text)):
            raise PlacementError(f"{name} must be a Kubernetes object name")
        if text:
            record[name] = text
    if selector:
        record["node_selector"] = dict(selector)
    if tolerations:
        record["tolerations"] = [dict(t) for t in tolerations]
    if affinity:
        record["affinity"] = dict(affinity)
    if secrets:
        record["image_pull_secrets"] = list(secrets)
    return record or None


def to_placement(record: Mapping[str, Any] | None) -> Placement | None:
    """A stored record as a Placement (None for none; an invalid old record is None)."""
    try:
        checked = check_placement(record)
    except PlacementError:
        return None
    if checked is None:
        return None
    return Placement(
        node_selector=dict(checked.get("node_selector") or {}),
        tolerations=tuple(checked.get("tolerations") or ()),
        affinity=dict(checked.get("affinity") or {}),
        image_pull_secrets=tuple(checked.get("image_pull_secrets") or ()),
        priority_class_name=checked.get("priority_class_name"),
        runtime_class_name=checked.get("runtime_class_name"),
    )
