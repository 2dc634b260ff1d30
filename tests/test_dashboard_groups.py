"""The dashboard's groups, tags and vanity URLs in a real browser (Playwright driving
Debian's Chromium against a real server); screenshots as in tests/test_dashboard.py."""

from __future__ import annotations

import requests
from tests.conftest import RunningServer
from tests.helpers import deploy, static_bundle
from tests.test_dashboard import (  # noqa: F401 - fixtures
    api,
    browser,
    content_page,
    make_user,
    new_content,
    screenshots,
    server,
    shot,
    signed_in,
)

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the test extras install it
    pass


def _guid(server: RunningServer, key: str) -> str:  # noqa: F811
    return str(server.api(key).get(api(server, "v1/user")).json()["guid"])


def test_dashboard_groups_page_creates_renames_and_changes_members(server: RunningServer, signed_in) -> None:  # noqa: F811
    make_user(server, "gina", "publisher")
    make_user(server, "hugo", "viewer")
    make_user(server, "ines", "viewer")
    page = signed_in("gina")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Groups").click()
    page.get_by_role("textbox", name="Name").fill("Analysts")
    page.get_by_role("button", name="Create group").click()
    expect(page.locator("tr[data-group=Analysts]")).to_be_visible()
    page.get_by_role("link", name="Analysts").click()
    for who in ("hugo", "ines"):
        page.get_by_label("User").select_option(label=f"{who} (viewer)")
        page.get_by_role("button", name="Add member").click()
        expect(page.locator(f"tr[data-member={who}]")).to_be_visible()
    page.get_by_role("textbox", name="Name").fill("Analytics")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", name="Analytics", level=2)).to_be_visible()
    shot(page, "group")
    page.get_by_role("button", name="Remove ines from Analytics").click()
    expect(page.locator("tr[data-member=ines]")).to_have_count(0)
    # What the page did is what the API holds.
    groups = server.api().get(api(server, "v1/groups"), params={"prefix": "Analytics"}).json()["results"]
    assert [g["name"] for g in groups] == ["Analytics"]
    members = server.api().get(api(server, f"v1/groups/{groups[0]['guid']}/members")).json()["results"]
    assert [m["username"] for m in members] == ["hugo"]
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Groups").click()
    expect(page.locator("tr[data-group=Analytics]")).to_contain_text("1")
    shot(page, "groups")
    # A viewer reads groups but is offered no changes.
    viewer = signed_in("hugo")
    viewer.goto(f"{server.url}/connect/groups/{groups[0]['guid']}")
    expect(viewer.locator("tr[data-member=hugo]")).to_be_visible()
    expect(viewer.get_by_role("button", name="Add member")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Rename")).to_have_count(0)


def test_dashboard_access_pane_shares_with_a_group_and_info_sets_tags_and_vanity(
    server: RunningServer, signed_in  # noqa: F811
) -> None:
    key = make_user(server, "paula", "publisher")
    viewer_key = make_user(server, "quentin", "viewer")
    item = new_content(server, key, "team-report", title="Team report", access_type="acl")
    deploy(server, key, item["guid"], static_bundle({"index.html": "<h1>For the team</h1>"}))
    admin = server.api()
    category = admin.post(api(server, "v1/tags"), json={"name": "Department"}).json()
    sales = admin.post(api(server, "v1/tags"), json={"name": "Sales", "parent_id": category["id"]}).json()
    admin.post(api(server, "v1/tags"), json={"name": "EMEA", "parent_id": sales["id"]})
    team = server.api(key).post(api(server, "v1/groups"), json={"name": "Sales team"}).json()
    server.api(key).post(api(server, f"v1/groups/{team['guid']}/members"), json={"user_guid": _guid(server, viewer_key)})

    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "access"))
    page.get_by_label("Group", exact=True).select_option(label="Sales team")
    page.get_by_label("Group's role").select_option(label="Viewer")
    page.get_by_role("button", name="Add group").click()
    expect(page.locator('tr[data-principal="Sales team"]')).to_contain_text("group")
    shot(page, "content-access-groups")
    # The member now opens it on the content origin, and finds it in the list.
    assert server.api(viewer_key).get(item["content_url"]).text == "<h1>For the team</h1>"
    member = signed_in("quentin")
    expect(member.get_by_role("link", name="Team report")).to_be_visible()

    page.goto(content_page(server, item["guid"], "info"))
    page.get_by_role("textbox", name="Vanity path").fill("team/reports")
    page.get_by_role("button", name="Save vanity path").click()
    expect(page.get_by_role("link", name=f"{server.content_url}/team/reports/")).to_be_visible()
    assert requests.get(f"{server.content_url}/team/reports/", headers={"Authorization": f"Key {viewer_key}"}).status_code == 200
    page.get_by_role("textbox", name="Vanity path").fill("/connect/mine")
    page.get_by_role("button", name="Save vanity path").click()
    expect(page.get_by_role("alert")).to_contain_text("reserved")
    page.goto(content_page(server, item["guid"], "info"))
    page.get_by_label("Tag", exact=True).select_option(label="Department / Sales / EMEA")
    page.get_by_role("button", name="Add tag").click()
    expect(page.locator("tr[data-tag=EMEA]")).to_be_visible()
    expect(page.locator("tr[data-tag=Sales]")).to_be_visible()  # its parent came along
    shot(page, "content-info-tags-vanity", full_page=True)
    tags = server.api(key).get(api(server, f"v1/content/{item['guid']}/tags")).json()
    assert sorted(t["name"] for t in tags) == ["EMEA", "Sales"]

    # The content list filters by tag.
    other = new_content(server, key, "untagged-report", title="Untagged report")
    page.goto(f"{server.url}/connect/")
    expect(page.get_by_role("link", name="Untagged report")).to_be_visible()
    page.get_by_label("Tag").select_option(label="Department / Sales")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name="Team report")).to_be_visible()
    expect(page.get_by_role("link", name="Untagged report")).to_have_count(0)
    shot(page, "content-list-tags")
    assert other["guid"]
    page.goto(content_page(server, item["guid"], "info"))
    page.get_by_role("button", name="Remove tag Sales").click()
    expect(page.locator("tr[data-tag]")).to_have_count(0)  # EMEA went with its parent


def test_dashboard_admin_tags_tab_and_user_lock(server: RunningServer, signed_in) -> None:  # noqa: F811
    make_user(server, "tagadmin", "administrator")
    locked_key = make_user(server, "lockme", "publisher")
    page = signed_in("tagadmin")
    page.goto(f"{server.url}/connect/admin/tags")
    page.get_by_role("textbox", name="Name", exact=True).fill("Topic")
    page.get_by_role("button", name="Create tag").click()
    expect(page.locator('tr[data-tag="Topic"]')).to_be_visible()
    page.get_by_role("textbox", name="Name", exact=True).fill("Forecasts")
    page.get_by_label("Under").select_option(label="Topic")
    page.get_by_role("button", name="Create tag").click()
    expect(page.locator('tr[data-tag="Topic / Forecasts"]')).to_be_visible()
    page.get_by_label("New name of Topic / Forecasts").fill("Forecasting")
    page.locator('tr[data-tag="Topic / Forecasts"]').get_by_role("button", name="Rename").click()
    expect(page.locator('tr[data-tag="Topic / Forecasting"]')).to_be_visible()
    page.get_by_role("textbox", name="Name", exact=True).fill("Forecasting")
    page.get_by_label("Under").select_option(label="Topic")
    page.get_by_role("button", name="Create tag").click()
    expect(page.get_by_role("alert")).to_contain_text("already exists")
    shot(page, "admin-tags")
    names = [t["name"] for t in server.api().get(api(server, "v1/tags")).json()]
    assert "Forecasting" in names and "Forecasts" not in names
    # Locking on the users page takes effect at once; unlocking gives the key back.
    page.goto(f"{server.url}/connect/admin/users")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-user=lockme]").get_by_role("button", name="Lock").click()
    expect(page.locator("tr[data-user=lockme]")).to_contain_text("locked")
    assert server.api(locked_key).get(api(server, "v1/user")).status_code == 401
    page.locator("tr[data-user=lockme]").get_by_role("button", name="Unlock").click()
    expect(page.locator("tr[data-user=lockme]")).to_contain_text("active")
    assert server.api(locked_key).get(api(server, "v1/user")).status_code == 200
