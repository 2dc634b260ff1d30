"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real server.

Each test signs in as the role it exercises. The main pages are photographed;
with PODIUM_UPDATE_SCREENSHOTS=1 the pictures replace those in docs/screenshots/
(the README shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, fastapi_bundle, static_bundle, tar_gz

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("PODIUM_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
LAPTOP = {"width": 1366, "height": 768}
MIB = 1024 * 1024

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (make system-deps installs Chromium)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _missing("playwright")
    if not shutil.which(CHROMIUM):
        _missing(f"Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with resource maxima, so the Resources pane has something to refuse."""
    running = start_server(
        tmp_path_factory.mktemp("podium") / "data",
        extra_env={
            "PODIUM_MAX_CPU_LIMIT_CORES": "2",
            "PODIUM_CPU_LIMIT_CORES": "1",
            "PODIUM_MAX_MEMORY_LIMIT_BYTES": str(2048 * MIB),
            "PODIUM_MEMORY_LIMIT_BYTES": str(512 * MIB),
        },
    )
    yield running
    running.stop()


def api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def make_user(server: RunningServer, username: str, role: str) -> str:
    """The user's API key; the password is ``<username>-pass-1``."""
    return server.user_key(username, role)


def new_content(server: RunningServer, key: str, name: str, **fields: Any) -> dict[str, Any]:
    made = server.api(key).post(api(server, "v1/content"), json={"name": name, **fields})
    assert made.status_code == 200, made.text
    return made.json()  # type: ignore[no-any-return]


@pytest.fixture
def signed_in(browser: Browser, server: RunningServer, screenshots: Path) -> Iterator[Any]:
    """``signed_in(username)`` opens a signed-in page for that user (in its own context)."""
    contexts: list[BrowserContext] = []

    def open_as(username: str) -> Page:
        context = browser.new_context(viewport=LAPTOP)
        context.podium_screenshots = screenshots  # type: ignore[attr-defined]
        contexts.append(context)
        page = context.new_page()
        page.goto(f"{server.url}/__login__?next=/connect/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(f"{username}-pass-1")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{server.url}/connect/")
        return page

    yield open_as
    for context in contexts:
        context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/screenshots/ with PODIUM_UPDATE_SCREENSHOTS=1, else a temporary folder
    (so an ordinary test run leaves the work tree clean)."""
    if os.environ.get("PODIUM_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


def shot(page: Page, name: str, full_page: bool = False) -> None:
    folder = page.context.podium_screenshots  # type: ignore[attr-defined]
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


def content_page(server: RunningServer, guid: str, pane: str = "") -> str:
    return f"{server.url}/connect/apps/{guid}" + (f"/{pane}" if pane else "")


# --- sign-in, the content list and what each role sees -----------------------------------


def test_dashboard_sign_in_refuses_wrong_password(
    browser: Browser, server: RunningServer, screenshots: Path
) -> None:
    make_user(server, "vera", "viewer")
    context = browser.new_context(viewport=LAPTOP)
    context.podium_screenshots = screenshots  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"{server.url}/connect/")
    page.wait_for_url(re.compile(r".*/__login__.*"))
    page.get_by_label("Username").fill("vera")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value("vera")
    shot(page, "sign-in")
    context.close()


def test_dashboard_content_list_shows_only_what_the_viewer_may_see(
    server: RunningServer, signed_in: Any
) -> None:
    key = make_user(server, "paula", "publisher")
    make_user(server, "vera", "viewer")
    public = new_content(server, key, "public-report", title="Quarterly report", access_type="logged_in")
    deploy(server, key, public["guid"], static_bundle())
    new_content(server, key, "secret-app", title="Secret dashboard", access_type="acl")

    page = signed_in("vera")
    expect(page.get_by_role("link", name="Quarterly report")).to_be_visible()
    expect(page.get_by_role("link", name="Secret dashboard")).to_have_count(0)
    expect(page.get_by_role("link", name="Publish")).to_have_count(0)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    # A viewer sees the content and its Info pane only.
    page.get_by_role("link", name="Quarterly report").click()
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Hello from Podium")
    expect(page.get_by_role("navigation", name="Content settings").get_by_role("link")).to_have_count(1)
    page.goto(content_page(server, public["guid"], "runtime"))
    expect(page.get_by_role("heading", name="No access")).to_be_visible()

    publisher = signed_in("paula")
    publisher.get_by_label("Search").fill("secret")
    publisher.get_by_role("button", name="Filter").click()
    expect(publisher.get_by_role("link", name="Secret dashboard")).to_be_visible()
    expect(publisher.get_by_role("link", name="Quarterly report")).to_have_count(0)
    publisher.get_by_role("link", name="Clear").click()
    publisher.get_by_label("Type").select_option("static")
    publisher.get_by_role("button", name="Filter").click()
    expect(publisher.get_by_role("link", name="Quarterly report")).to_be_visible()
    expect(publisher.get_by_role("link", name="Secret dashboard")).to_have_count(0)
    publisher.goto(f"{server.url}/connect/")
    shot(publisher, "content-list")


def test_dashboard_connect_links_reach_the_content_page(
    browser: Browser, server: RunningServer, signed_in: Any
) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "linked", title="Linked content")
    bundle_id, _ = deploy(server, key, item["guid"], static_bundle())
    assert item["dashboard_url"].endswith(f"/connect/#/apps/{item['guid']}")

    page = signed_in("paula")
    page.goto(f"{server.url}/connect/#/apps/{item['guid']}/logs")
    page.wait_for_url(content_page(server, item["guid"], "logs"))
    page.goto(f"{server.url}/connect/#/apps/{item['guid']}/draft/{bundle_id}")
    page.wait_for_url(f"{content_page(server, item['guid'])}?draft={bundle_id}")
    expect(page.get_by_role("note")).to_contain_text(f"bundle {bundle_id} as a draft")

    # Not signed in: the link leads through the sign-in form to the same page.
    context = browser.new_context(viewport=LAPTOP)
    anonymous = context.new_page()
    anonymous.goto(f"{server.url}/connect/#/apps/{item['guid']}")
    anonymous.wait_for_url(re.compile(r".*/__login__\?next=.*"))
    anonymous.get_by_label("Username").fill("paula")
    anonymous.get_by_label("Password").fill("paula-pass-1")
    anonymous.get_by_role("button", name="Sign in").click()
    anonymous.wait_for_url(content_page(server, item["guid"]))
    context.close()


# --- publishing, settings, rollback ------------------------------------------------------


def test_dashboard_publish_by_upload_streams_the_deploy(
    server: RunningServer, signed_in: Any, tmp_path: Path
) -> None:
    make_user(server, "paula", "publisher")
    archive = tmp_path / "site.tar.gz"
    archive.write_bytes(static_bundle({"index.html": "<h1>Uploaded from a browser</h1>"}))
    page = signed_in("paula")
    page.get_by_role("link", name="Publish", exact=True).first.click()
    page.get_by_label("Name", exact=False).first.fill("browser-upload")
    page.get_by_label("Title").fill("Uploaded site")
    page.get_by_label("Bundle archive").set_input_files(str(archive))
    page.get_by_role("button", name="Upload and deploy").click()
    expect(page.locator("#publish-status")).to_contain_text("is active", timeout=60_000)
    expect(page.get_by_role("log")).to_contain_text("Activat")
    shot(page, "publish")

    page.get_by_role("link", name="Open the content page").click()
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Uploaded from a browser")
    shot(page, "content-page")

    # A second upload under the same name is refused with the API's words, and leaves nothing.
    page.goto(f"{server.url}/connect/publish")
    page.get_by_label("Name", exact=False).first.fill("browser-upload")
    page.get_by_label("Bundle archive").set_input_files(str(archive))
    page.get_by_role("button", name="Upload and deploy").click()
    expect(page.get_by_role("alert")).to_contain_text("already own content named 'browser-upload'")

    # A new version of existing content, picked from the list; then delete it from its Info pane.
    archive.write_bytes(static_bundle({"index.html": "<h1>Second version</h1>"}))
    page.goto(f"{server.url}/connect/publish")
    page.get_by_label("Publish to").select_option(label="Uploaded site (Static site)")
    expect(page.get_by_label("Title")).to_be_hidden()
    page.get_by_label("Bundle archive").set_input_files(str(archive))
    page.get_by_role("button", name="Upload and deploy").click()
    expect(page.locator("#publish-status")).to_contain_text("is active", timeout=60_000)
    page.get_by_role("link", name="Open the content page").click()
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Second version")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete content").click()
    page.wait_for_url(f"{server.url}/connect/")
    expect(page.get_by_role("link", name="Uploaded site")).to_have_count(0)


def test_dashboard_runtime_and_resource_settings(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "tunable", title="Tunable app")
    page = signed_in("paula")

    page.goto(content_page(server, item["guid"], "runtime"))
    expect(page.get_by_label("Maximum processes")).to_have_attribute("placeholder", "default: 3")
    page.get_by_label("Maximum processes").fill("2")
    page.get_by_label("Idle timeout").fill("600")
    page.get_by_role("button", name="Save runtime settings").click()
    expect(page.get_by_role("status")).to_have_text("Runtime settings saved.")
    record = server.api(key).get(api(server, f"v1/content/{item['guid']}")).json()
    assert (record["max_processes"], record["idle_timeout"]) == (2, 600)

    page.goto(content_page(server, item["guid"], "resources"))
    expect(page.locator("#h-cpu_limit")).to_contain_text("Server default: 1; maximum: 2")
    page.get_by_label("CPU limit").fill("8")
    page.get_by_role("button", name="Save resource settings").click()
    expect(page.get_by_role("alert")).to_contain_text("cpu_limit 8 cores exceeds this server's maximum of 2 cores")
    shot(page, "content-resources")
    page.get_by_label("CPU limit").fill("1.5")
    page.get_by_label("Memory limit").fill("1024")
    page.get_by_role("button", name="Save resource settings").click()
    expect(page.get_by_role("status")).to_have_text("Resource settings saved.")
    record = server.api(key).get(api(server, f"v1/content/{item['guid']}")).json()
    assert (record["cpu_limit"], record["memory_limit"]) == (1.5, 1024 * MIB)
    page.reload()
    expect(page.get_by_label("Memory limit")).to_have_value("1024")


def test_dashboard_service_account_set_by_admin_read_only_for_publisher(
    server: RunningServer, signed_in: Any
) -> None:
    key = make_user(server, "paula", "publisher")
    make_user(server, "ada", "administrator")
    item = new_content(server, key, "needs-sa", title="Needs a service account")

    admin = signed_in("ada")
    admin.goto(content_page(server, item["guid"], "service-account"))
    admin.get_by_label("Service account name").fill("Not_Valid")
    admin.get_by_role("button", name="Save service account").click()
    expect(admin.get_by_role("alert")).to_contain_text("not a valid DNS-1123 subdomain")
    admin.get_by_label("Service account name").fill("reports-reader")
    admin.get_by_role("button", name="Save service account").click()
    expect(admin.get_by_role("status")).to_have_text("Service account saved.")

    publisher = signed_in("paula")
    publisher.goto(content_page(server, item["guid"], "service-account"))
    field = publisher.get_by_label("Service account name")
    expect(field).to_have_value("reports-reader")
    expect(field).to_have_attribute("readonly", "")
    expect(publisher.get_by_role("button", name="Save service account")).to_have_count(0)
    expect(publisher.get_by_text("Read-only: ask an administrator")).to_be_visible()
    shot(publisher, "content-service-account")


def test_dashboard_rollback_to_an_older_bundle(
    server: RunningServer, signed_in: Any, tmp_path: Path
) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "versions", title="Versioned site", access_type="logged_in")
    first, _ = deploy(server, key, item["guid"], static_bundle({"index.html": "<h1>Version one</h1>"}))
    deploy(server, key, item["guid"], static_bundle({"index.html": "<h1>Version two</h1>"}))

    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "bundles"))
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Version two")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#bundle-{first}").get_by_role("button", name="Activate").click()
    expect(page.locator("#deploy-status")).to_contain_text(f"Bundle {first} is deployed and active", timeout=60_000)
    expect(page.locator("#deploy-log")).to_contain_text("Activat")
    page.wait_for_load_state("load")
    expect(page.locator(f"#bundle-{first}")).to_contain_text("Active", timeout=10_000)
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Version one")
    shot(page, "content-bundles")
    served = server.api(key).get(f"{server.url}/content/{item['guid']}/")
    assert "Version one" in served.text

    # A new version uploaded from the same pane is deployed and becomes active.
    archive = tmp_path / "three.tar.gz"
    archive.write_bytes(static_bundle({"index.html": "<h1>Version three</h1>"}))
    page.get_by_label("New bundle").set_input_files(str(archive))
    page.get_by_role("button", name="Upload and deploy").click()
    expect(page.locator("#deploy-status")).to_contain_text("is deployed and active", timeout=60_000)
    expect(page.frame_locator("iframe").get_by_role("heading")).to_have_text("Version three", timeout=10_000)


def test_dashboard_environment_variables_are_write_only(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "with-vars", title="Has variables")
    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "variables"))
    page.get_by_label("Name").fill("DATABASE_URL")
    page.get_by_label("Value").fill("postgres://secret")
    page.get_by_role("button", name="Set variable").click()
    expect(page.get_by_role("cell", name="DATABASE_URL", exact=True)).to_be_visible()
    assert "postgres://secret" not in page.content()
    page.get_by_label("Name").fill("PATH")
    page.get_by_label("Value").fill("x")
    page.get_by_role("button", name="Set variable").click()
    expect(page.get_by_role("alert")).to_contain_text("PATH is set by Podium")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove DATABASE_URL").click()
    expect(page.get_by_text("No environment variables.")).to_be_visible()


def test_dashboard_access_collaborators_and_viewers(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    make_user(server, "vera", "viewer")
    item = new_content(server, key, "shared", title="Shared report")
    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "access"))
    page.get_by_label("All signed-in users").check()
    page.get_by_role("button", name="Save access").click()
    expect(page.get_by_role("status")).to_have_text("Access saved.")
    page.get_by_label("User", exact=True).select_option(label="vera (viewer)")
    page.get_by_label("Role").select_option("owner")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("alert")).to_contain_text("vera is a viewer; only publishers and administrators can collaborate")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("button", name="Remove vera")).to_be_visible()
    shot(page, "content-access")
    assert server.api(key).get(api(server, f"v1/content/{item['guid']}")).json()["access_type"] == "logged_in"


# --- a running app: its log, live, and the admin's processes view -------------------------

CHATTY_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.get("/")
def root(who: str = "nobody"):
    print(f"handled a request from {who}", flush=True)
    return {"ok": True}
"""


def test_dashboard_follow_a_running_apps_log_and_stop_it(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    make_user(server, "ada", "administrator")
    item = new_content(server, key, "chatty", title="Chatty API", access_type="logged_in")
    _, task = deploy(server, key, item["guid"], fastapi_bundle(CHATTY_APP))
    assert task["code"] == 0, task["all_output"]
    client = server.api(key)
    assert client.get(f"{server.url}/content/{item['guid']}/", params={"who": "first"}).json() == {"ok": True}

    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "logs"))
    log = page.get_by_role("log")
    expect(page.locator("#job-log-status")).to_contain_text("Following run-", timeout=10_000)
    expect(log).to_contain_text("handled a request from first", timeout=15_000)
    # Lines written while the page is open arrive live over the event stream.
    client.get(f"{server.url}/content/{item['guid']}/", params={"who": "second"})
    expect(log).to_contain_text("handled a request from second", timeout=15_000)
    shot(page, "content-logs")

    # The build's log is one click away.
    page.locator("tr[data-kind=build]").first.get_by_role("button").click()
    expect(page.locator("#job-log-status")).to_contain_text("has ended", timeout=15_000)

    # The Execution environment pane says what the build chose, and why.
    page.get_by_role("link", name="Execution environment").click()
    expect(page.locator("ul.explanation")).to_contain_text("Chose environment image 'Local'")
    expect(page.locator("dl.facts")).to_contain_text("3.11")
    shot(page, "content-environment")

    admin = signed_in("ada")
    admin.goto(f"{server.url}/connect/admin/processes")
    row = admin.locator("tr", has_text="Chatty API")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("1 core")  # the server default limit, resolved
    expect(row).to_contain_text("512 MiB")
    shot(admin, "admin-processes")
    admin.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=re.compile("^Stop")).click()
    expect(admin.get_by_text("No processes are running.")).to_be_visible(timeout=20_000)
    page.goto(content_page(server, item["guid"], "logs"))
    expect(page.locator("tr[data-kind=run]").first).to_contain_text("stopped")


# --- rendered documents -------------------------------------------------------------------


def notebook_bundle() -> bytes:
    cells = [("import uuid\nprint('run', uuid.uuid4().hex[:8])", [])]
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {"tags": tags},
             "outputs": [], "source": [source]}
            for i, (source, tags) in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    manifest = {
        "version": 1,
        "locale": "en_US.UTF-8",
        "metadata": {"appmode": "jupyter-static", "entrypoint": "report.ipynb"},
        "python": {
            "version": "3.11.7",
            "package_manager": {"name": "pip", "version": "23.2.1", "package_file": "requirements.txt"},
        },
        "files": {"report.ipynb": {}, "requirements.txt": {}},
    }
    return tar_gz({"manifest.json": json.dumps(manifest), "requirements.txt": "\n",
                   "report.ipynb": json.dumps(notebook)})


def test_dashboard_render_a_notebook_again(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "notebook", title="Notebook report")
    _, task = deploy(server, key, item["guid"], notebook_bundle())
    assert task["code"] == 0, task["all_output"]
    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "renderings"))
    rows = page.locator("table.renderings tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("shown to viewers")
    first = page.frame_locator("iframe").get_by_text(re.compile(r"run [0-9a-f]{8}")).inner_text()
    page.get_by_role("button", name="Render again").click()
    expect(page.locator("#deploy-status")).to_contain_text("Rendered", timeout=120_000)
    expect(rows).to_have_count(2, timeout=10_000)
    expect(rows.first).to_contain_text("shown to viewers")
    expect(page.frame_locator("iframe").get_by_text(re.compile(r"run [0-9a-f]{8}"))).not_to_have_text(first)
    shot(page, "content-renderings")
    # An earlier rendering stays viewable.
    rows.nth(1).get_by_role("link", name=re.compile("View rendering")).click()
    expect(page.get_by_role("note")).to_contain_text("You are looking at rendering")
    expect(page.frame_locator("iframe").get_by_text(re.compile(r"run [0-9a-f]{8}"))).to_have_text(first)


def test_dashboard_schedule_a_notebook(server: RunningServer, signed_in: Any) -> None:
    key = make_user(server, "paula", "publisher")
    item = new_content(server, key, "scheduled", title="Scheduled report")
    deploy(server, key, item["guid"], notebook_bundle())
    page = signed_in("paula")
    page.goto(content_page(server, item["guid"], "renderings"))
    expect(page.locator("#schedule-summary")).to_contain_text("Not scheduled")
    page.get_by_label("Repeat").select_option("dayofweek")
    page.get_by_role("button", name="Schedule", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("needs Days")
    page.get_by_label("Repeat").select_option("day")
    page.get_by_label("N", exact=True).fill("2")
    page.get_by_label("Time zone").select_option("UTC")
    page.get_by_label("First run at").fill("2031-05-04T06:30")
    page.get_by_role("button", name="Schedule", exact=True).click()
    summary = page.locator("#schedule-summary")
    expect(summary).to_contain_text("Renders every 2 days, starting 2031-05-04 06:30 UTC.")
    expect(summary).to_contain_text("Next run: 2031-05-04 06:30 UTC")
    shot(page, "content-schedule", full_page=True)
    record = server.api(key).get(api(server, f"variants/{item['id']}/schedules")).json()
    assert (record[0]["type"], record[0]["schedule"]) == ("day", '{"N":2}')

    page.get_by_label("Repeat").select_option("dayofweek")
    page.get_by_label("Monday").check()
    page.get_by_label("Thursday").check()
    page.get_by_role("button", name="Save schedule").click()
    expect(summary).to_contain_text("Renders every Monday, Thursday")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove schedule").click()
    expect(summary).to_contain_text("Not scheduled")


# --- profile and administration ----------------------------------------------------------


def test_dashboard_api_key_shown_once_then_revoked(server: RunningServer, signed_in: Any) -> None:
    make_user(server, "paula", "publisher")
    page = signed_in("paula")
    page.get_by_role("link", name="paula").click()
    page.get_by_label("New key name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    value = page.get_by_role("textbox", name="API key", exact=True)
    expect(value).not_to_have_value("")
    key = value.input_value()
    me = requests.get(api(server, "v1/user"), headers={"Authorization": f"Key {key}"}, timeout=10)
    assert me.json()["username"] == "paula"
    shot(page, "profile")
    page.reload()
    assert key not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke laptop").click()
    expect(page.get_by_role("cell", name="laptop", exact=True)).to_have_count(0)
    assert requests.get(api(server, "v1/user"), headers={"Authorization": f"Key {key}"}, timeout=10).status_code == 401


def test_dashboard_admin_manages_users(server: RunningServer, signed_in: Any) -> None:
    make_user(server, "ada", "administrator")
    make_user(server, "paula", "publisher")
    page = signed_in("ada")
    page.get_by_role("link", name="Admin").click()
    page.get_by_label("Username").fill("newbie")
    page.get_by_label("Password").fill("short")
    page.get_by_label("Password").evaluate("el => el.removeAttribute('minlength')")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 8 characters")
    page.get_by_label("Password").fill("newbie-pass-1")
    page.get_by_role("button", name="Create user").click()
    row = page.locator("tr[data-user=newbie]")
    expect(row).to_contain_text("active")
    row.get_by_label("Role of newbie").select_option("publisher")
    expect(row.get_by_role("status")).to_have_text("Role changed to publisher.")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Lock").click()
    expect(page.locator("tr[data-user=newbie]")).to_contain_text("locked")
    shot(page, "admin-users")
    users = server.api().get(api(server, "v1/users"), params={"prefix": "newbie"}).json()["results"]
    assert (users[0]["user_role"], users[0]["locked"]) == ("publisher", True)

    publisher = signed_in("paula")
    publisher.goto(f"{server.url}/connect/admin/users")
    expect(publisher.get_by_role("heading", name="No access")).to_be_visible()


def test_dashboard_admin_reads_the_audit_log(server: RunningServer, signed_in: Any) -> None:
    make_user(server, "ada", "administrator")
    make_user(server, "paula", "publisher")
    key = make_user(server, "pagina", "publisher")
    for n in range(52):
        new_content(server, key, f"audited-{n}", title=f"Audited {n}")
    page = signed_in("ada")
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    rows = page.locator("tbody tr")
    expect(rows.first).to_contain_text("user_login")  # newest first: this sign-in
    expect(rows.first).to_contain_text("ada")

    page.get_by_label("Action").select_option("add_content")
    page.get_by_label("User", exact=True).select_option(label="pagina")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(50)
    expect(rows.filter(has_not_text="add_content")).to_have_count(0)
    expect(rows.first).to_contain_text("'audited-51'")
    shot(page, "admin-audit")
    page.get_by_role("link", name="Older").click()
    expect(rows).to_have_count(2)
    expect(rows.last).to_contain_text("'audited-0'")
    page.get_by_role("link", name="Newer").click()
    expect(rows).to_have_count(50)
    expect(page.get_by_role("link", name="Newer")).to_have_count(0)

    publisher = signed_in("paula")
    publisher.goto(f"{server.url}/connect/admin/audit")
    expect(publisher.get_by_role("heading", name="No access")).to_be_visible()


def test_dashboard_admin_creates_an_execution_environment(server: RunningServer, signed_in: Any) -> None:
    make_user(server, "ada", "administrator")
    page = signed_in("ada")
    page.goto(f"{server.url}/connect/admin/environments")
    form = page.locator("form[data-api='POST v1/environments']")
    form.get_by_label("Title").fill("Python 3.12 image")
    form.get_by_label("Image name").fill("ghcr.io/acme/python:3.12")
    form.get_by_label("Python installations").fill("3.12 /usr/bin/python3")
    form.get_by_role("button", name="Add environment").click()
    expect(form.get_by_role("alert")).to_contain_text("not a semantic version")
    form.get_by_label("Python installations").fill("3.12.4 /opt/python/3.12.4/bin/python3")
    form.get_by_label("Matching").select_option("exact")
    form.get_by_role("button", name="Add environment").click()
    row = page.locator("tr[data-env='ghcr.io/acme/python:3.12']")
    expect(row).to_contain_text("3.12.4")
    expect(row).to_contain_text("exact")
    shot(page, "admin-environments")
    environments = server.api().get(api(server, "v1/environments")).json()
    created = next(e for e in environments if e["name"] == "ghcr.io/acme/python:3.12")
    assert created["python"]["installations"] == [{"version": "3.12.4", "path": "/opt/python/3.12.4/bin/python3"}]

    row.get_by_text("Edit").click()
    row.get_by_label("Matching").select_option("any")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("tr[data-env='ghcr.io/acme/python:3.12']")).to_contain_text("any")
    page.locator("tr[data-env='ghcr.io/acme/python:3.12']").get_by_text("Edit").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove environment").click()
    expect(page.locator("tr[data-env='ghcr.io/acme/python:3.12']")).to_have_count(0)
