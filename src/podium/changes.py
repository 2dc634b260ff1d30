"""Change notices for the caches on the request path.

Whatever changes a content item's routing facts (its access list, active
bundle, settings) or a user's credentials says so here; the caches that
answer requests without the database (the content router's) listen and
forget what they hold. The API and the services call :meth:`Changes.content`
and :meth:`Changes.users` and never learn who listens.

Other nodes hear of each change too when a publisher is set (:meth:`Changes.publish_to`,
the PostgreSQL change feed of :mod:`podium.changefeed`); their notices come back in
through :meth:`Changes.apply`, which tells this node's listeners only.
"""

from __future__ import annotations

from collections.abc import Callable

ContentListener = Callable[[str | None], None]
UsersListener = Callable[[], None]
Publisher = Callable[[str, str | None], None]  # (kind, guid): "content" or "users"


class Changes:
    def __init__(self) -> None:
        self._content: list[ContentListener] = []
        self._users: list[UsersListener] = []
        self._nodes: list[UsersListener] = []
        self._publish: Publisher | None = None

    def publish_to(self, publisher: Publisher) -> None:
        """Also send every change made on this node to ``publisher`` (the other nodes)."""
        self._publish = publisher

    def apply(self, kind: str, guid: str | None) -> None:
        """A change another node made: tell this node's listeners (and nobody else)."""
        if kind == "content":
            self._tell_content(guid)
        elif kind == "users":
            self._tell_users()
        elif kind == "nodes":  # a node left its jobs to the others (podium.nodes)
            for listener in self._nodes:
                listener()

    def on_content(self, listener: ContentListener) -> None:
        """Call ``listener(guid)`` when a content item changes (``None``: every item)."""
        self._content.append(listener)

    def on_users(self, listener: UsersListener) -> None:
        """Call ``listener()`` when users, their roles or their credentials change."""
        self._users.append(listener)

    def on_nodes(self, listener: UsersListener) -> None:
        """Call ``listener()`` when another node stops and leaves its jobs to the others."""
        self._nodes.append(listener)

    def content(self, guid: str | None = None) -> None:
        self._tell_content(guid)
        if self._publish is not None:
            self._publish("content", guid)

    def users(self) -> None:
        self._tell_users()
        if self._publish is not None:
            self._publish("users", None)

    def _tell_content(self, guid: str | None) -> None:
        for listener in self._content:
            listener(guid)

    def _tell_users(self) -> None:
        for listener in self._users:
            listener()
