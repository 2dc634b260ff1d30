"""``server_settings`` and ``v1/server_settings/*``: what clients learn about the server."""

from __future__ import annotations

import platform
import socket
from typing import Any

from fastapi import APIRouter

from podium import CONNECT_COMPAT_VERSION, __version__

router = APIRouter()


@router.get("/server_settings")
def server_settings() -> dict[str, Any]:
    # Reachable without authentication; clients read `version` to pick features.
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
