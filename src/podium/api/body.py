"""Reading request bodies, with Connect's error for bad JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from podium import errors


async def json_value(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.invalid_json(str(exc)) from None


async def json_object(request: Request) -> dict[str, Any]:
    value = await json_value(request)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.invalid_json("expected a JSON object")
    return value


async def json_array(request: Request) -> list[Any]:
    value = await json_value(request)
    if not isinstance(value, list):
        raise errors.invalid_json("expected a JSON array")
    return value
