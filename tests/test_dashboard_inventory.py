"""The dashboard's Packages pane and admin package search, the Runtime caches page and
the OAuth integration pages in a real browser (Playwright driving Debian's Chromium
against a real server that builds real environments); screenshots as in
tests/test_dashboard.py."""

from __future__ import annotations

from tests.conftest import RunningServer
from tests.helpers import deploy
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
from tests.test_packages import fastapi_bundle

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the test extras install it
    pass


def test_dashboard_packages_pane_and_admin_package_search(server: RunningServer, signed_in) -> None:  # noqa: F811
    key = make_user(server, "pia", "publisher")
    make_user(server, "ada", "administrator")
    item = new_content(server, key, "dash-inventory", title="Inventory app")
    _, task = deploy(server, key, item["guid"], fastapi_bundle())
    assert task["code"] == 0, task["all_output"]
    packages = server.api(key).get(api(server, f"v1/content/{item['guid']}/packages")).json()
    fastapi = next(p for p in packages if p["name"] == "fastapi")
    page = signed_in("pia")
    page.goto(content_page(server, item["guid"], "packages"))
    expect(page.locator("tr[data-package]")).to_have_count(len(packages))
    expect(page.locator("tr[data-package=fastapi]")).to_contain_text(fastapi["version"])
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the lockfile").click()
    assert f"fastapi=={fastapi['version']}" in download.value.path().read_text()
    shot(page, "content-packages")
    admin = signed_in("ada")
    admin.goto(f"{server.url}/connect/admin/packages")
    search = admin.get_by_role("search", name="Package search")
    search.get_by_label("Package").fill("fastapi")
    search.get_by_label("Version").fill(fastapi["version"])
    search.get_by_role("button", name="Search").click()
    expect(admin.locator("tr[data-content='Inventory app']")).to_have_count(1)
    shot(admin, "admin-packages")
    search = admin.get_by_role("search", name="Package search")
    search.get_by_label("Version").fill("0.0.0")
    search.get_by_role("button", name="Search").click()
    expect(admin.get_by_text("No content's active bundle uses")).to_be_visible()


def test_dashboard_runtime_caches_page_deletes_a_cache(server: RunningServer, signed_in) -> None:  # noqa: F811
    key = make_user(server, "pia", "publisher")
    make_user(server, "ada", "administrator")
    item = new_content(server, key, "dash-cache")
    _, task = deploy(server, key, item["guid"], fastapi_bundle("3.12.1", "fastapi\nitsdangerous\n"))
    assert task["code"] == 0, task["all_output"]
    _, task = deploy(server, key, item["guid"], fastapi_bundle("3.11.7", "fastapi\n"))  # 3.12 now unused
    page = signed_in("ada")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Runtime caches").click()
    row = page.locator("tr[data-cache='Python 3.12.1']")
    expect(row).to_contain_text("Local")
    shot(page, "admin-caches")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete the Python 3.12.1 cache").click()
    expect(page.get_by_label("Deletion output")).to_contain_text("Deleted the Python 3.12.1 runtime cache")
    expect(page.locator("tr[data-cache='Python 3.12.1']")).to_have_count(0, timeout=15000)
    caches = server.api().get(api(server, "v1/system/caches/runtime")).json()["caches"]
    assert "3.12.1" not in {c["version"] for c in caches}
    # Publishers do not see the page.
    publisher = signed_in("pia")
    publisher.goto(f"{server.url}/connect/admin/caches")
    expect(publisher.get_by_text("This page is for administrators.")).to_be_visible()


def test_dashboard_oauth_integrations_created_and_associated(server: RunningServer, signed_in) -> None:  # noqa: F811
    key = make_user(server, "pia", "publisher")
    make_user(server, "ada", "administrator")
    item = new_content(server, key, "dash-oauth", title="OAuth app")
    admin = signed_in("ada")
    admin.goto(f"{server.url}/connect/admin/oauth")
    form = admin.get_by_role("form", name="Create an integration")
    form.get_by_label("Name").fill("Warehouse")
    form.get_by_label("Description").fill("The data warehouse")
    form.get_by_label("Template").select_option(label="Custom")
    form.get_by_label("Client ID").fill("podium-dash")
    form.get_by_label("Client secret").fill("dash-secret-42")
    form.get_by_label("Authorization URL").fill("https://idp.example.org/authorize")
    form.get_by_label("Token URL").fill("https://idp.example.org/token")
    form.get_by_role("button", name="Create integration").click()
    row = admin.locator("tr[data-integration=Warehouse]")
    expect(row).to_contain_text("podium-dash")
    expect(row).to_contain_text("secret set")
    assert "dash-secret-42" not in admin.content()
    made = server.api().get(api(server, "v1/oauth/integrations")).json()
    assert [(i["name"], i["config"]["client_id"]) for i in made] == [("Warehouse", "podium-dash")]
    assert "client_secret" not in made[0]["config"]
    # A bad integration says why.
    form.get_by_label("Name").fill("Broken")
    form.get_by_label("Client ID").fill("")
    form.get_by_role("button", name="Create integration").click()
    expect(form.get_by_role("alert")).to_contain_text("client_id")
    shot(admin, "admin-oauth")
    # The owner associates it with the content, then removes it.
    page = signed_in("pia")
    page.goto(content_page(server, item["guid"], "integrations"))
    page.get_by_role("button", name="Associate Warehouse").click()
    expect(page.locator("tr[data-association=Warehouse]")).to_be_visible()
    shot(page, "content-integrations")
    path = api(server, f"v1/content/{item['guid']}/oauth/integrations/associations")
    assert [a["oauth_integration_name"] for a in server.api(key).get(path).json()] == ["Warehouse"]
    admin.goto(f"{server.url}/connect/admin/oauth")
    expect(admin.locator("tr[data-integration=Warehouse]")).to_contain_text(item["guid"][:8])
    page.get_by_role("button", name="Remove Warehouse").click()
    expect(page.locator("tr[data-association]")).to_have_count(0)
    assert server.api(key).get(path).json() == []
