"""Group permissions where access is decided outside the HTTP tests: the domain rules
(podium.auth) and the mail recipients of schedules (podium.render.mail), on both databases."""

from __future__ import annotations

from podium import auth, vanity
from podium.render.mail import recipients
from podium.store import Store
from podium.store.models import Content, Group, GroupMember, Permission, User


def _user(session: object, name: str, role: str = "viewer") -> User:
    user = auth.create_user(session, name, role, email=f"{name}@example.org")  # type: ignore[arg-type]
    return user


def test_group_roles_reach_app_role_can_view_and_mail_recipients(store: Store) -> None:
    with store.session() as session:
        owner = _user(session, "owner", "publisher")
        member, editor, outsider, locked = (_user(session, n) for n in ("member", "editor", "outsider", "locked"))
        editor.user_role = "publisher"
        locked.locked = True
        content = Content(name="report", owner_id=owner.id, access_type="acl")
        readers, writers = Group(name="Readers", owner_id=owner.id), Group(name="Writers", owner_id=owner.id)
        session.add_all([content, readers, writers])
        session.flush()
        session.add_all([
            GroupMember(group_id=readers.id, user_id=member.id),
            GroupMember(group_id=readers.id, user_id=locked.id),
            GroupMember(group_id=writers.id, user_id=editor.id),
            GroupMember(group_id=readers.id, user_id=editor.id),
            Permission(content_id=content.id, principal_guid=readers.guid, principal_type="group", role="viewer"),
            Permission(content_id=content.id, principal_guid=writers.guid, principal_type="group", role="owner"),
        ])
        session.flush()
        assert auth.app_role(session, member, content) == "viewer"
        assert auth.app_role(session, editor, content) == "editor"  # the strongest of its groups
        assert auth.app_role(session, outsider, content) == "none"
        assert auth.can_view(session, member, content) and not auth.can_view(session, outsider, content)
        assert auth.can_manage(session, editor, content) and not auth.can_manage(session, member, content)
        assert not auth.can_view(session, locked, content)
        # Schedules mail the owner, then the members of the groups, never a locked account.
        assert recipients(session, content, "collaborators", None) == ["owner@example.org", "editor@example.org"]
        assert recipients(session, content, "collaborators_viewers", None) == [
            "owner@example.org", "member@example.org", "editor@example.org",
        ]



def test_app_roles_of_a_list_match_app_role_with_one_permission_query(store: Store) -> None:
    from sqlalchemy import event

    with store.session() as session:
        owner, reader = _user(session, "owner", "publisher"), _user(session, "reader", "publisher")
        items = [Content(name=f"item-{n}", owner_id=owner.id, access_type="acl") for n in range(4)]
        mine = Content(name="mine", owner_id=reader.id, access_type="acl")
        group = Group(name="Readers", owner_id=owner.id)
        session.add_all([*items, mine, group])
        session.flush()
        session.add_all([
            GroupMember(group_id=group.id, user_id=reader.id),
            Permission(content_id=items[0].id, principal_guid=reader.guid, principal_type="user", role="viewer"),
            Permission(content_id=items[1].id, principal_guid=group.guid, principal_type="group", role="owner"),
            Permission(content_id=items[2].id, principal_guid=group.guid, principal_type="group", role="viewer"),
            Permission(content_id=items[2].id, principal_guid=reader.guid, principal_type="user", role="owner"),
        ])
        session.flush()
        everything = [*items, mine]
        queries: list[str] = []
        event.listen(store.engine, "before_cursor_execute",
                     lambda *a: queries.append(a[2]) if "FROM permission" in a[2] else None)
        roles = auth.app_roles(session, reader, everything)
        assert len(queries) == 1
        assert roles == {items[0].id: "viewer", items[1].id: "editor", items[2].id: "editor",
                         items[3].id: "none", mine.id: "owner"}
        assert roles == {item.id: auth.app_role(session, reader, item) for item in everything}
        assert auth.app_roles(session, None, everything) == {item.id: "none" for item in everything}

def test_vanity_match_finds_the_one_vanity_a_path_is_under() -> None:
    paths = {"/sales/": "g1", "/team/reports/": "g2"}
    assert vanity.match(paths, "/sales/") == ("/sales/", "g1")
    assert vanity.match(paths, "/sales/q3/x.html") == ("/sales/", "g1")
    assert vanity.match(paths, "/sales") == ("/sales/", "g1")
    assert vanity.match(paths, "/team/reports/a") == ("/team/reports/", "g2")
    assert vanity.match(paths, "/team/") is None and vanity.match(paths, "/salesman/") is None
    assert vanity.normalise("a//b") == "/a/b/"


def test_router_decides_group_access_from_its_cache_and_forgets_on_membership_change(store: Store) -> None:
    """The content proxy's decision for a viewer let in by a group asks the database once,
    then never again until a change (Changes.users / Changes.content) says so."""
    import asyncio

    from sqlalchemy import event

    from podium.changes import Changes
    from podium.handoff import Handoff
    from podium.proxy.router import ContentRouter
    from podium.urls import Urls

    with store.session() as session:
        owner = _user(session, "owner2", "publisher")
        member = _user(session, "member2")
        content = Content(name="private", owner_id=owner.id, access_type="acl")
        group = Group(name="Team2", owner_id=owner.id)
        session.add_all([content, group])
        session.flush()
        session.add(Permission(content_id=content.id, principal_guid=group.guid, principal_type="group", role="viewer"))
        _, key = auth.create_api_key(session, member, "bench")
        guid, group_id, member_id = content.guid, group.id, member.id
    changes = Changes()
    router = ContentRouter(
        store, 3600, lambda *_: None, None,  # type: ignore[arg-type]
        Urls("http://127.0.0.1:1/", "http://localhost:2"), Handoff(b"k" * 32, 60),
    )
    changes.on_content(router.invalidate)
    changes.on_users(router.forget_users)
    headers = [(b"authorization", f"Key {key}".encode())]
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    async def decide() -> bool:
        info = await router._info(guid)
        viewer = await router._viewer(headers, guid)
        assert info is not None and viewer is not True
        return router._may_view(info, viewer or None)

    async def scenario() -> None:
        assert not await decide()  # not a member yet
        with store.session() as session:
            session.add(GroupMember(group_id=group_id, user_id=member_id))
        changes.users()
        assert await decide()
        statements.clear()
        for _ in range(1000):
            assert await decide()
        assert statements == []
        with store.session() as session:
            session.query(GroupMember).filter_by(group_id=group_id).delete()
        changes.users()
        assert not await decide()

    asyncio.run(scenario())
