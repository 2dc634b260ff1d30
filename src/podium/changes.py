"""Change notices for the caches on the request path.

Whatever changes a content item's routing facts (its access list, active
bundle, settings) or a user's credentials says so here; the caches that
answer requests without the database (the content router's) listen and
forget what they hold. The API and the services call :meth:`Changes.content`
and :meth:`Changes.users` and never learn who listens.
"""

from __future__ import annotations

from collections.abc import Callable

ContentListener = Callable[[str | None], None]
UsersListener = Callable[[], None]


class Changes:
    def __init__(self) -> None:
        self._content: list[ContentListener] = []
        self._users: list[UsersListener] = []

    def on_content(self, listener: ContentListener) -> None:
        """Call ``listener(guid)`` when a content item changes (``None``: every item)."""
        self._content.append(listener)

    def on_users(self, listener: UsersListener) -> None:
        """Call ``listener()`` when users, their roles or their credentials change."""
        self._users.append(listener)

    def content(self, guid: str | None = None) -> None:
        for listener in self._content:
            listener(guid)

    def users(self) -> None:
        for listener in self._users:
            listener()
