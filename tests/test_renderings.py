"""Rendering records: pruning old output, never the one served."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from podium.layout import DataLayout
from podium.render import prune_renderings
from podium.store import Store
from podium.store.models import Content, Rendering, User


def test_prune_keeps_newest_and_the_served_rendering(store: Store, tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    with store.session() as session:
        owner = User(username="owner")
        session.add(owner)
        session.flush()
        content = Content(name="report", owner_id=owner.id, app_mode="jupyter-static", bundle_id=1)
        session.add(content)
        session.flush()
        content_id = content.id
        # Bundle 1 is active; its only success is the oldest rendering. Bundle 2 was a draft.
        statuses = [(1, "succeeded"), (2, "succeeded"), (2, "failed"), (2, "succeeded"), (2, "running")]
        rows = [Rendering(content_id=content_id, bundle_id=b, status=s) for b, s in statuses]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    for rendering_id in ids:
        directory = layout.output_dir(content_id, rendering_id)
        directory.mkdir(parents=True)
        (directory / "index.html").write_text("x")
    prune_renderings(store, layout, content_id, 2)
    with store.session() as session:
        left = list(session.scalars(select(Rendering.id).order_by(Rendering.id)))
    # Kept: the served one (oldest), the two newest finished ones, and the running one.
    assert left == [ids[0], ids[2], ids[3], ids[4]]
    assert not layout.output_dir(content_id, ids[1]).exists()
    assert layout.output_dir(content_id, ids[0]).exists()
