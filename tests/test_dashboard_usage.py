"""The Usage pane and Admin → Usage in a real browser (Playwright driving Debian's
Chromium against a real server): usage recorded from real requests, drawn as charts."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

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

from podium.web.usage_view import HEIGHT, chart

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the test extras install it
    pass


def test_usage_chart_bars_are_days_scaled_to_the_busiest() -> None:
    drawn = chart({"2026-12-06": (10, 2), "2026-12-04": (5, 5)}, date(2026, 12, 6), days=30)
    bars = drawn["bars"]
    assert len(bars) == 30 and bars[0].day == "2026-11-07" and bars[-1].day == "2026-12-06"
    assert [b.requests for b in bars[-3:]] == [5, 0, 10]
    assert bars[-1].height == 2 * bars[-3].height > 0 and bars[-2].height == 0
    assert drawn["peak"] == 10 and drawn["total_requests"] == 15
    # 5 viewers draw the line higher (smaller y) than 2, both above the baseline.
    assert bars[-3].viewers_y < bars[-1].viewers_y < drawn["baseline"] == bars[-2].viewers_y < HEIGHT
    empty = chart({}, date(2026, 12, 6))
    assert empty["total_requests"] == 0 and all(b.height == 0 for b in empty["bars"])


def test_dashboard_usage_pane_and_admin_overview_draw_recorded_usage(server: RunningServer, signed_in) -> None:  # noqa: F811
    key = make_user(server, "uma", "publisher")
    make_user(server, "ada", "administrator")
    reader = make_user(server, "rex", "viewer")
    item = new_content(server, key, "dash-usage", title="Usage report", access_type="logged_in")
    deploy(server, key, item["guid"], static_bundle())
    page_url = f"{server.content_url}/content/{item['guid']}/"
    for who, times in ((reader, 3), (key, 1)):
        for _ in range(times):
            assert requests.get(page_url, headers={"Authorization": f"Key {who}"}).status_code == 200
    deadline = time.monotonic() + 15
    while len(server.api().get(api(server, "v1/instrumentation/content/hits"),
                               params={"content_guid": item["guid"]}).json()) < 4:
        assert time.monotonic() < deadline, "hits were not written"
        time.sleep(0.2)
    today = datetime.now(UTC).date().isoformat()
    page = signed_in("uma")
    page.goto(content_page(server, item["guid"], "usage"))
    chart_image = page.get_by_role("img", name="Requests and distinct viewers per day, last 30 days")
    expect(chart_image).to_be_visible()
    # (The page shows the content in a frame too: those requests are hits as well.)
    assert int(page.locator(f"rect.bar[data-day='{today}']").get_attribute("data-requests") or 0) >= 4
    expect(page.locator("rect.bar")).to_have_count(30)
    expect(page.locator("tr[data-viewer=rex] td").nth(1)).to_have_text("3")
    expect(page.locator("tr[data-viewer=uma]")).to_be_visible()
    shot(page, "content-usage")
    admin = signed_in("ada")
    admin.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    admin.get_by_role("navigation", name="Administration").get_by_role("link", name="Usage").click()
    recorded = len(server.api().get(api(server, "v1/instrumentation/content/hits"),
                                    params={"content_guid": item["guid"]}).json())
    assert 4 <= int(admin.locator("tr[data-content='Usage report'] td").nth(1).inner_text()) <= recorded
    expect(admin.locator("tr[data-viewer=rex]")).to_be_visible()
    expect(admin.get_by_role("img", name="Requests and distinct viewers per day, last 30 days")).to_be_visible()
    shot(admin, "admin-usage")
    # A viewer of the content is not shown its usage.
    viewer = signed_in("rex")
    viewer.goto(content_page(server, item["guid"], "usage"))
    expect(viewer.get_by_text("Only the owner, collaborators and administrators can see this pane.")).to_be_visible()
