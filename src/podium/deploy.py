"""Deploying a bundle: the task behind ``POST v1/content/{guid}/deploy``.

A deploy prepares the bundle to run (for static content there is nothing to
build) and, when asked to activate, makes it the content's active bundle in
one database write: viewers switch from the old bundle to the new one at once,
and a failed deploy leaves the previous bundle active and serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from podium.context import Podium
from podium.store.models import Bundle, Content, utcnow
from podium.tasks import TaskFailed, TaskOutput

log = logging.getLogger(__name__)
# App modes this server can serve; others are refused with a clear message.
SUPPORTED_APP_MODES = {"static"}


@dataclass(frozen=True)
class DeployRequest:
    content_id: int
    bundle_id: int
    activate: bool


async def run_deploy(ctx: Podium, request: DeployRequest, out: TaskOutput) -> dict[str, Any] | None:
    async with ctx.deploy_lock(request.content_id):
        with ctx.store.session() as session:
            content = session.get(Content, request.content_id)
            bundle = session.get(Bundle, request.bundle_id)
            if content is None or bundle is None:
                raise TaskFailed("The content or bundle was deleted during the deploy.")
            guid, app_mode = content.guid, bundle.app_mode
        out.line(f"Deploying bundle {request.bundle_id} ({app_mode}) to content {guid}")
        if app_mode not in SUPPORTED_APP_MODES:
            raise TaskFailed(
                f"This Podium server cannot run {app_mode!r} content yet; supported app modes: "
                f"{', '.join(sorted(SUPPORTED_APP_MODES))}."
            )
        out.line("Static content: nothing to build.")
        if not request.activate:
            out.line(
                f"Bundle {request.bundle_id} is ready as a draft at "
                f"{ctx.content_url(guid)}_bundle{request.bundle_id}/ (not activated)."
            )
            return None
        with ctx.store.session() as session:
            content = session.get(Content, request.content_id)
            if content is None:
                raise TaskFailed("The content was deleted during the deploy.")
            content.bundle_id = request.bundle_id
            content.app_mode = app_mode
            content.last_deployed_time = utcnow()
        log.info("content %s: activated bundle %s", guid, request.bundle_id)
        out.line(f"Activated bundle {request.bundle_id}; serving at {ctx.content_url(guid)}")
        return None
