"""``server_settings`` and ``v1/server_settings/*``: what clients learn about the server."""

from __future__ import annotations

import platform
import socket
from typing import Any

from fastapi import APIRouter, Depends

from podium import CONNECT_COMPAT_VERSION, __version__
from podium.api import deps
from podium.runtime import ExecutionBackend
from podium.settings import Settings

router = APIRouter()


@router.get("/server_settings")
def server_settings(
    settings: Settings = Depends(deps.settings), backend: ExecutionBackend = Depends(deps.backend)
) -> dict[str, Any]:
    # Reachable without authentication; clients read `version` to pick features.
    # Podium's own keys: whether content may name a service account, and whether the
    # name has any effect (the local backend records it but runs every job as itself).
    return {
        "version": CONNECT_COMPAT_VERSION,
        "build": f"podium {__version__}",
        "hostname": socket.gethostname(),
        "product": "podium",
        "execution_type": "local",
        "enable_runtime_constraints": True,
        "enable_image_management": True,
        "git_enabled": False,
        "license": {"allow-apis": True, "shiny-servers": 0, "users": 0},
        "content_service_account_selection": settings.content_service_account_selection,
        "service_accounts_effective": backend.name != "local",
    }


@router.get("/v1/server_settings/python")
def python_settings() -> dict[str, Any]:
    return {
        "installations": [
            {
                "version": platform.python_version(),
                "cluster_name": "Local",
                "image_name": "Local",
                "publishable": True,
            }
        ],
        "api_enabled": True,
    }
