"""Fingerprints of package environments: same inputs, same environment, built once."""

from __future__ import annotations

import hashlib
import json


def normalise_requirements(text: str) -> list[str]:
    """Requirement lines without comments, blanks and spacing, sorted and de-duplicated."""
    lines = set()
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        lines.add(" ".join(line.split()))
    return sorted(lines)


def fingerprint(
    python_version: str,
    requirements: list[str],
    extra: list[str],
    manage: bool,
    *,
    interpreter: str = "",
    image: str = "",
) -> str:
    """Same environment image, interpreter and requirements: same package environment."""
    payload = json.dumps(
        {"python": python_version, "requirements": requirements, "extra": sorted(extra),
         "managed": manage, "interpreter": interpreter, "image": image, "format": 2},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
