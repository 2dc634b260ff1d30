"""Content on its own origin: published pages cannot act with their viewers' sessions.

The attacks of a hostile publisher are driven against a real server: a published page
whose script reads cookies and calls the API (creating an administrator, minting a key
for its viewer, reading the dashboard's CSRF token), opened in a real Chromium by a
viewer and by an administrator, directly and inside the dashboard's content page. Each
attack must fail while the page still shows to its legitimate viewer. Plain-HTTP tests
check the rules behind it: the origin split, the hand-off, the API's refusal of
cookie-authenticated requests from other origins.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, static_bundle

from podium.handoff import Handoff
from podium.settings import load_settings
from podium.urls import Urls

pytestmark = pytest.mark.integration

HOSTILE_SCRIPT = """
(async () => {
  const out = {cookies: document.cookie};
  async function attempt(name, url, init) {
    try {
      const answer = await fetch(url, init);
      out[name] = answer.status;
      try { out[name + "_body"] = (await answer.text()).slice(0, 300); } catch (e) {}
    } catch (e) { out[name] = "blocked"; }
  }
  const post = (body) => ({method: "POST", credentials: "include", mode: "no-cors",
                           headers: {"Content-Type": "text/plain"}, body: JSON.stringify(body)});
  await attempt("own_api", "/__api__/v1/users", {credentials: "include"});
  await attempt("dashboard_users", DASHBOARD + "/__api__/v1/users", {credentials: "include"});
  await attempt("dashboard_page", DASHBOARD + "/connect/", {credentials: "include"});
  await attempt("create_admin", DASHBOARD + "/__api__/v1/users",
                post({username: "mallory", user_role: "administrator", password: "mallory-pass-1"}));
  await attempt("mint_key", DASHBOARD + "/__api__/v1/users/" + VICTIM + "/keys", post({name: "stolen"}));
  // The attack of old: read the CSRF token from a dashboard page, then call the API with it.
  const token = ((out.dashboard_page_body || "").match(/name="csrf-token" content="([^"]+)"/) || [])[1] || "";
  out.token_found = token !== "";
  await attempt("create_admin_with_token", DASHBOARD + "/__api__/v1/users", {
    method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
    body: JSON.stringify({username: "mallory3", user_role: "administrator", password: "mallory-pass-1"})});
  // A plain form post needs no CORS at all: aimed at a hidden frame, the page stays.
  const sink = document.createElement("iframe");
  sink.name = "sink"; sink.style.display = "none"; document.body.appendChild(sink);
  const form = document.createElement("form");
  form.method = "POST"; form.enctype = "text/plain"; form.target = "sink";
  form.action = DASHBOARD + "/__api__/v1/users";
  const field = document.createElement("input");
  field.name = '{"username":"mallory2","user_role":"administrator","password":"mallory-pass-1","x":"';
  field.value = '"}';
  form.appendChild(field); document.body.appendChild(form); form.submit();
  await new Promise((done) => setTimeout(done, 500));
  document.body.dataset.done = JSON.stringify(out);
})();
"""


def _api(server: RunningServer, path: str) -> str:
    return f"{server.url}/__api__/{path}"


def _hostile_site(dashboard: str, victim_guid: str) -> bytes:
    script = HOSTILE_SCRIPT.replace("DASHBOARD", json.dumps(dashboard)).replace("VICTIM", json.dumps(victim_guid))
    page = f"<!doctype html><html><body><h1>Quarterly numbers</h1><script>{script}</script></body></html>"
    return static_bundle({"index.html": page})


def _sign_in(server: RunningServer, username: str, password: str) -> requests.Session:
    """A browser-like session signed in through the sign-in form."""
    browser = requests.Session()
    form = browser.get(f"{server.url}/__login__")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    signed = browser.post(
        f"{server.url}/__login__",
        data={"username": username, "password": password, "next": "/connect/", "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    return browser


@pytest.fixture(scope="module")
def site(server: RunningServer) -> dict[str, Any]:
    """A hostile page published by a publisher, shared with the viewer ``victim``."""
    publisher = server.user_key("mal_publisher", "publisher")
    victim = server.api().post(
        _api(server, "v1/users"), json={"username": "victim", "user_role": "viewer", "password": "victim-pass-1"}
    ).json()
    boss = server.api().post(
        _api(server, "v1/users"), json={"username": "boss", "user_role": "administrator", "password": "boss-pass-1"}
    )
    assert boss.status_code == 200, boss.text
    made = server.api(publisher).post(_api(server, "v1/content"), json={"name": "quarterly"}).json()
    server.api(publisher).post(
        _api(server, f"v1/content/{made['guid']}/permissions"),
        json={"principal_guid": victim["guid"], "principal_type": "user", "role": "viewer"},
    )
    _, task = deploy(server, publisher, made["guid"], _hostile_site(server.url, victim["guid"]))
    assert task["code"] == 0, task
    return {"content": made, "victim": victim}


def _no_damage(server: RunningServer, victim_guid: str) -> None:
    admin = server.api()
    names = {u["username"] for u in admin.get(_api(server, "v1/users")).json()["results"]}
    assert not names & {"mallory", "mallory2", "mallory3"}, names
    keys = admin.get(_api(server, f"v1/users/{victim_guid}/keys"))
    assert keys.status_code == 200 and not [k for k in keys.json() if k["name"] == "stolen"], keys.text


def _check_attack(out: dict[str, Any]) -> None:
    assert "podium" not in out["cookies"], out  # no Podium cookie is readable by page script
    assert out["own_api"] == 404, out  # the content origin serves no API
    # Cross-origin reads are blocked by the browser or answered without the session.
    assert out["dashboard_users"] in ("blocked", 401), out
    assert out["dashboard_page"] == "blocked" or "csrf" not in out.get("dashboard_page_body", ""), out
    assert out["token_found"] is False, out
    assert out["create_admin_with_token"] in ("blocked", 403), out


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from tests.conftest import launch_chromium

    with launch_chromium() as browser:
        yield browser


@pytest.mark.parametrize("who", ["victim", "admin"])
@pytest.mark.parametrize("where", ["direct", "dashboard"])
def test_content_isolation_hostile_page_cannot_act_as_its_viewer(
    server: RunningServer, site: dict[str, Any], chromium: Any, who: str, where: str, tmp_path: Any
) -> None:
    username, password = ("boss", "boss-pass-1") if who == "admin" else ("victim", "victim-pass-1")
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/__login__?next=/connect/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/connect/.*"))
        guid = site["content"]["guid"]
        if where == "direct":
            page.goto(site["content"]["content_url"])
            frame = page.main_frame
        else:
            page.goto(f"{server.url}/connect/apps/{guid}")
            deadline = time.monotonic() + 20
            while not [f for f in page.frames if f.url.startswith(server.content_url)]:
                assert time.monotonic() < deadline, [f.url for f in page.frames]
                page.wait_for_timeout(100)
            frame = next(f for f in page.frames if f.url.startswith(server.content_url))
        frame.wait_for_selector("body[data-done]", timeout=20000)
        # The legitimate viewer sees the page, on the content origin.
        assert frame.url.startswith(server.content_url)
        assert frame.inner_text("h1") == "Quarterly numbers"
        out = json.loads(frame.get_attribute("body", "data-done") or "{}")
        page.screenshot(path=str(tmp_path / f"{who}-{where}.png"))
    finally:
        context.close()
    _check_attack(out)
    _no_damage(server, site["victim"]["guid"])


# --- the rules, over plain HTTP ------------------------------------------------------------


def test_content_isolation_dashboard_origin_serves_content_only_to_api_keys(
    server: RunningServer, site: dict[str, Any]
) -> None:
    guid = site["content"]["guid"]
    anonymous = requests.get(f"{server.url}/content/{guid}/?x=1", allow_redirects=False)
    assert anonymous.status_code == 307
    assert anonymous.headers["location"] == f"{server.content_url}/content/{guid}/?x=1"
    # A browser's session cookie does not make it content on the dashboard's origin.
    browser = _sign_in(server, "victim", "victim-pass-1")
    assert browser.get(f"{server.url}/content/{guid}/", allow_redirects=False).status_code == 307
    # Clients with a key (rsconnect checks a deploy there) are served, sandboxed for browsers.
    keyed = server.api().get(f"{server.url}/content/{guid}/")
    assert keyed.status_code == 200 and "Quarterly numbers" in keyed.text
    assert keyed.headers["content-security-policy"] == "sandbox"
    # The content origin serves content and nothing else.
    assert server.api().get(f"{server.content_url}/__api__/v1/users").status_code == 404
    assert requests.get(f"{server.content_url}/connect/").status_code == 404
    assert requests.get(f"{server.content_url}/__login__").status_code == 404


def test_content_isolation_dashboard_session_is_useless_on_the_content_origin(
    server: RunningServer, site: dict[str, Any]
) -> None:
    guid = site["content"]["guid"]
    browser = _sign_in(server, "victim", "victim-pass-1")
    session_cookie = browser.cookies.get("podium_session")
    assert session_cookie
    assert "podium_csrf" not in browser.cookies  # no readable CSRF cookie any more
    answer = requests.get(
        f"{server.content_url}/content/{guid}/", cookies={"podium_session": session_cookie},
        headers={"Accept": "text/html"}, allow_redirects=False,
    )
    assert answer.status_code == 303  # treated as nobody: sent through the hand-off
    assert answer.headers["location"].startswith(f"{server.url}/__handoff__?content={guid}")


def test_content_isolation_handoff_gives_a_cookie_for_one_content_only(
    server: RunningServer, site: dict[str, Any]
) -> None:
    guid = site["content"]["guid"]
    publisher = server.user_key("mal_publisher", "publisher")
    other = server.api(publisher).post(_api(server, "v1/content"), json={"name": "other-report"}).json()
    deploy(server, publisher, other["guid"], static_bundle())
    server.api(publisher).post(
        _api(server, f"v1/content/{other['guid']}/permissions"),
        json={"principal_guid": site["victim"]["guid"], "principal_type": "user", "role": "viewer"},
    )
    browser = _sign_in(server, "victim", "victim-pass-1")
    handoff = browser.get(
        f"{server.url}/__handoff__", params={"content": guid, "next": f"/content/{guid}/"},
        allow_redirects=False,
    )
    assert handoff.status_code == 303
    back = handoff.headers["location"]
    assert back.startswith(f"{server.content_url}/__podium_content_auth__?code=")
    redeemed = requests.get(back, allow_redirects=False)
    assert redeemed.status_code == 303 and redeemed.headers["location"] == f"/content/{guid}/"
    cookie = redeemed.headers["set-cookie"]
    assert f"Path=/content/{guid}/" in cookie and "HttpOnly" in cookie and "Partitioned" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    # The code works once.
    assert requests.get(back, allow_redirects=False).status_code == 400
    # The cookie opens this content ...
    page = requests.get(f"{server.content_url}/content/{guid}/", cookies={"podium_content": value})
    assert page.status_code == 200 and "Quarterly numbers" in page.text
    # ... and no other, even one its viewer may see, nor the API.
    elsewhere = requests.get(
        f"{server.content_url}/content/{other['guid']}/", cookies={"podium_content": value},
        allow_redirects=False,
    )
    assert elsewhere.status_code == 401
    assert requests.get(_api(server, "v1/users"), cookies={"podium_content": value}).status_code == 401
    # Signing out of the dashboard ends it (the router caches callers for seconds).
    logout_page = browser.get(f"{server.url}/connect/profile")
    token = re.search(r'name="csrf-token" content="([^"]+)"', logout_page.text)
    assert token is not None
    browser.post(f"{server.url}/__logout__", data={"csrf_token": token.group(1)}, allow_redirects=False)
    time.sleep(5.5)
    gone = requests.get(
        f"{server.content_url}/content/{guid}/", cookies={"podium_content": value}, allow_redirects=False
    )
    assert gone.status_code == 401


def test_content_isolation_api_refuses_cookie_requests_from_other_origins(server: RunningServer) -> None:
    browser = _sign_in(server, "victim", "victim-pass-1")
    page = browser.get(f"{server.url}/connect/profile")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token is not None
    me = browser.get(_api(server, "v1/user")).json()
    body = {"name": "mine"}
    own = {"X-CSRF-Token": token.group(1), "Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    made = browser.post(_api(server, f"v1/users/{me['guid']}/keys"), json=body, headers=own)
    assert made.status_code == 200, made.text
    for foreign in ({"Origin": server.content_url}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        refused = browser.post(
            _api(server, f"v1/users/{me['guid']}/keys"), json=body,
            headers={"X-CSRF-Token": token.group(1), **foreign},
        )
        assert refused.status_code == 403 and "another origin" in refused.json()["error"], foreign
        # Reads from another origin see nobody, except a followed link (a navigation).
        read = browser.get(_api(server, "v1/user"), headers={**foreign, "Sec-Fetch-Mode": "cors"})
        assert read.status_code == 401, foreign
    navigated = browser.get(
        f"{server.url}/connect/profile", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}
    )
    assert navigated.status_code == 200 and "victim" in navigated.text
    # Without the page's token, even the dashboard's own origin is refused.
    assert browser.post(
        _api(server, f"v1/users/{me['guid']}/keys"), json=body, headers={"Origin": server.url}
    ).status_code == 403


def test_content_isolation_per_content_hosts(tmp_path: Any) -> None:
    """With ``{guid}`` in content_origin, each content item has an origin of its own; a host
    serves only the content it names."""
    from tests.conftest import free_port

    port = free_port()
    server = start_server(
        tmp_path / "data",
        extra_env={"PODIUM_CONTENT_ORIGIN": f"http://{{guid}}.localhost:{port}",
                   "PODIUM_CONTENT_LISTEN": f"127.0.0.1:{port}"},
    )
    try:
        key = server.admin_key
        first = server.api(key).post(_api(server, "v1/content"), json={"name": "first", "access_type": "all"}).json()
        second = server.api(key).post(_api(server, "v1/content"), json={"name": "second", "access_type": "all"}).json()
        for item in (first, second):
            deploy(server, key, item["guid"], static_bundle())
        assert first["content_url"] == f"http://{first['guid']}.localhost:{port}/content/{first['guid']}/"
        base = f"http://127.0.0.1:{port}"
        own = requests.get(f"{base}/content/{first['guid']}/", headers={"Host": f"{first['guid']}.localhost:{port}"})
        assert own.status_code == 200 and "Hello from Podium" in own.text
        crossed = requests.get(
            f"{base}/content/{second['guid']}/", headers={"Host": f"{first['guid']}.localhost:{port}"}
        )
        assert crossed.status_code == 404 and "published content only" in crossed.text
    finally:
        server.stop()


# --- units ---------------------------------------------------------------------------------


def test_handoff_passes_are_signed_scoped_and_expire() -> None:
    now = [1000.0]
    passes = Handoff(b"k" * 32, cookie_seconds=60, clock=lambda: now[0])
    code = passes.code("g1", 7)
    assert passes.redeem(code) == ("g1", 7)
    assert passes.redeem(code) is None  # single use
    cookie = passes.cookie("g1", 7)
    assert passes.check(cookie, "g1") == 7
    assert passes.check(cookie, "g2") is None  # another content item
    assert passes.check(code, "g1") is None  # a code is not a cookie
    assert Handoff(b"x" * 32, 60, clock=lambda: now[0]).check(cookie, "g1") is None  # another key
    tampered = cookie.replace(cookie[3], "A" if cookie[3] != "A" else "B", 1)
    assert passes.check(tampered, "g1") is None
    now[0] += 61
    assert passes.check(cookie, "g1") is None  # expired
    assert passes.redeem(passes.code("g1", 7)) == ("g1", 7)
    later = passes.code("g1", 7)
    now[0] += 61
    assert passes.redeem(later) is None


def test_content_origin_defaults_to_the_other_loopback_name(tmp_path: Any) -> None:
    settings = load_settings(None, data_dir=tmp_path, listen="127.0.0.1:3939")
    assert (settings.effective_content_listen, settings.effective_content_origin) == (
        "127.0.0.1:3940", "http://localhost:3940")
    other = load_settings(None, data_dir=tmp_path, listen="127.0.0.1:3939", public_url="http://localhost:3939")
    assert other.effective_content_origin == "http://127.0.0.1:3940"
    hosted = load_settings(None, data_dir=tmp_path, public_url="https://podium.example.org",
                           content_origin="https://{guid}.content.example.org")
    assert hosted.effective_content_listen is None
    urls = Urls.from_settings(hosted)
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert urls.content(guid) == f"https://{guid}.content.example.org/content/{guid}/"
    assert urls.content_host().guid(f"{guid}.content.example.org".encode()) == guid
    assert not urls.content_host().match(b"podium.example.org")
    from podium.settings import SettingsError

    for bad in ("http://127.0.0.1:3939", "https://example.org/{guid}", "ftp://x.org", "https://x.org/path"):
        with pytest.raises(SettingsError):
            load_settings(None, data_dir=tmp_path, listen="127.0.0.1:3939", content_origin=bad)
