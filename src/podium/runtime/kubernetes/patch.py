"""The administrator's job template patch, merged like ``kubectl patch --type strategic``.

Rules (a simplified strategic merge patch, enough for pod templates):

- dicts merge key by key; ``None`` removes a key (as in a JSON merge patch);
- lists of objects that all have a ``name`` (``containers``, ``initContainers``,
  ``volumes``, ``env``, ``volumeMounts``, ``ports``, ``imagePullSecrets``) merge by
  name: an item whose name exists is merged into it, a new name is appended, and
  ``{"name": X, "$patch": "delete"}`` removes item X;
- other lists of objects (``tolerations``) are appended;
- lists of scalars (``command``, ``args``, ``capabilities.drop``) and scalars replace.

So ``{"spec": {"template": {"spec": {"containers": [{"name": "job", "securityContext":
{"runAsUser": 2000}}]}}}}`` changes the job container's user and adds no container.
https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DELETE = "$patch"


def merge_patch(base: Any, patch: Any) -> Any:
    """``base`` with ``patch`` merged in; neither input is changed."""
    if isinstance(base, dict) and isinstance(patch, Mapping):
        merged = dict(base)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge_patch(merged[name], value)
            else:
                merged[name] = _strip(_copy(value))
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        if _named(base) and _named(patch):
            return _merge_named(base, patch)
        if patch and all(isinstance(item, Mapping) for item in patch):
            return [*base, *(_copy(item) for item in patch)]
    return _strip(_copy(patch))


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in items)


def _merge_named(base: list[Any], patch: list[Any]) -> list[Any]:
    merged = [dict(item) for item in base]
    for item in patch:
        position = next((i for i, old in enumerate(merged) if old["name"] == item["name"]), None)
        if item.get(DELETE) == "delete":
            if position is not None:
                del merged[position]
        elif position is None:
            merged.append(_strip(_copy(item)))
        else:
            merged[position] = merge_patch(merged[position], item)
    return merged


def _strip(value: Any) -> Any:
    """Drop ``$patch`` directives left in new items (they mean nothing there)."""
    if isinstance(value, dict):
        return {name: _strip(item) for name, item in value.items() if name != DELETE}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: _copy(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
