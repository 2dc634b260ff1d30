"""The environment every process of a content item starts with (run and render jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

_SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


def process_env(
    *,
    public_url: str,
    content_guid: str,
    home: Path,
    interpreter: str | None,
    r_library: str | None,
    content_vars: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Podium's variables over the content's own (``content_vars``, which cannot override
    them): ``PATH`` leads with the interpreter's directory, ``R_LIBS`` names the bundle's
    restored R library ahead of the environment's, and ``extra`` adds the job's own."""
    path = [str(Path(interpreter).parent)] if interpreter else []
    env = {
        "PATH": ":".join([*path, *_SYSTEM_PATH]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "CONNECT_SERVER": public_url,
        "CONNECT_CONTENT_GUID": content_guid,
        "RSTUDIO_PRODUCT": "CONNECT",
        "POSIT_PRODUCT": "CONNECT",
        **(extra or {}),
    }
    if r_library:
        env["R_LIBS"] = r_library
    return {**content_vars, **env}


def split_secret(env: Mapping[str, str], content_vars: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` as (plain, secret): the content's own variables, where they were not
    overridden, are secret (a backend keeps their values out of stored objects)."""
    secret = {name: value for name, value in env.items() if content_vars.get(name) == value}
    return {name: value for name, value in env.items() if name not in secret}, secret
