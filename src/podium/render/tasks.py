"""Render tasks: re-rendering on demand or on schedule, and mailing a rendering.

:class:`RenderTasks` starts a client-visible task that renders a content item's
active bundle (holding the content's deploy lock, so renders and deploys of one
content never overlap), mails the result when the content's schedule asks for
it, and sends a rendering to an audience on request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select

from podium import errors
from podium.layout import DataLayout
from podium.render import SUPPORTED_RENDER_MODES, Renderer
from podium.render.mail import MailError, build_message, recipients, send
from podium.settings import Settings
from podium.store import Store
from podium.store.models import Content, Rendering, Schedule, User
from podium.tasks import ContentLocks, TaskFailed, TaskManager, TaskOutput
from podium.urls import Urls

log = logging.getLogger(__name__)


class RenderTasks:
    def __init__(
        self, store: Store, settings: Settings, layout: DataLayout, renderer: Renderer,
        tasks: TaskManager, locks: ContentLocks, urls: Urls,
    ) -> None:
        self.store = store
        self.settings = settings
        self.layout = layout
        self.renderer = renderer
        self.tasks = tasks
        self.locks = locks
        self.urls = urls

    def start(self, content: Content, user_id: int | None, reason: str) -> str:
        """Start a task rendering the content's active bundle; return the task id."""
        if content.app_mode not in SUPPORTED_RENDER_MODES:
            raise errors.bad_request(
                f"Only rendered content ({', '.join(sorted(SUPPORTED_RENDER_MODES))}) can be rendered; "
                f"this content is {content.app_mode!r}."
            )
        if content.bundle_id is None:
            raise errors.bad_request("This content has no active bundle to render; deploy one first.")
        task_id = self.tasks.create("render", user_id, content.id)
        content_id = content.id

        async def body(out: TaskOutput) -> dict[str, Any]:
            async with self.locks(content_id):
                with self.store.session() as session:
                    current = session.get(Content, content_id)
                    if current is None or current.bundle_id is None:
                        raise TaskFailed("The content was deleted or has no active bundle.")
                    bundle_id = current.bundle_id
                    schedule = (
                        session.scalar(select(Schedule).where(Schedule.content_id == content_id))
                        if reason == "schedule" else None
                    )
                    activate = schedule is None or schedule.activate
                    wanted = schedule is not None and schedule.email
                if not activate:
                    out.line("The schedule has activate: false: this rendering is kept but not served.")
                rendering_id = await self.renderer.render_bundle(content_id, bundle_id, out, reason, activate)
            if wanted:  # a schedule with email on
                try:
                    sent = await self.mail(content_id, rendering_id, "collaborators_viewers", None)
                    out.line(f"Mailed rendering {rendering_id} to {sent} recipients.")
                except MailError as exc:  # the render itself succeeded
                    out.line(f"Warning: {exc}")
            return {"rendering_id": str(rendering_id)}

        self.tasks.start(task_id, body)
        return task_id

    async def mail(self, content_id: int, rendering_id: int, audience: str, me_id: int | None) -> int:
        """Mail a successful rendering to ``audience``; returns how many addresses were sent to."""
        if not self.settings.smtp_host:
            raise MailError("Email is not configured on this server (setting smtp_host).")
        with self.store.session() as session:
            content = session.get(Content, content_id)
            rendering = session.get(Rendering, rendering_id)
            if (content is None or rendering is None or rendering.content_id != content_id
                    or rendering.status != "succeeded"):
                raise MailError(f"Rendering {rendering_id} is not a successful rendering of this content.")
            me = session.get(User, me_id) if me_id is not None else None
            to = recipients(session, content, audience, me)
            title = content.title or content.name
            page = self.layout.output_dir(content_id, rendering_id) / rendering.primary_file
            url = f"{self.urls.content(content.guid)}_rendering{rendering_id}/"
        if not to:
            return 0
        message = build_message(self.settings.smtp_from, to, title, url, page)
        await asyncio.to_thread(send, self.settings, message)
        return len(to)

    def run_scheduled(self, content_id: int) -> None:
        """Start the render a schedule claimed (called by the schedule runner, in the event loop)."""
        with self.store.session() as session:
            content = session.get(Content, content_id)
            if content is None:
                return
            try:
                task_id = self.start(content, None, "schedule")
            except errors.ApiError as exc:
                log.warning("content %s: scheduled render skipped: %s", content.guid, exc.message)
                return
            log.info("content %s: scheduled render started (task %s)", content.guid, task_id)
