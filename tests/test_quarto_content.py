"""Quarto content: rendered with the execution environment's ``quarto render``.

No Quarto can be installed on these machines, so most tests use a stand-in
``quarto`` written here: it answers ``--version`` and ``inspect`` (for the rsconnect
client) and, for ``render``, checks the arguments Podium passes and writes the HTML
where Quarto would. The last test uses a real Quarto and runs only when ``quarto`` is
on the PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import RunningServer, start_server
from tests.test_clients import rsconnect

pytestmark = pytest.mark.integration

STAND_IN = """#!{python}
import html, json, os, pathlib, sys
args = sys.argv[1:]
if args == ["--version"]:
    print("1.4.550")
    sys.exit(0)
if args[:1] == ["inspect"]:
    target = pathlib.Path(args[1])
    docs = [target] if target.is_file() else list(target.glob("*.qmd"))
    engine = "jupyter" if any("jupyter: python3" in d.read_text() for d in docs) else "markdown"
    found = {{"quarto": {{"version": "1.4.550"}}, "engines": [engine]}}
    if (target / "_quarto.yml").is_file():
        found["files"] = {{"input": sorted(str(d) for d in docs)}}
    print(json.dumps(found))
    sys.exit(0)
# A project (_quarto.yml) is rendered whole: render --output-dir <absolute dir>
if len(args) == 3 and args[:2] == ["render", "--output-dir"] and os.path.isabs(args[2]):
    if not pathlib.Path("_quarto.yml").is_file():
        print("stand-in quarto: no _quarto.yml in", os.getcwd(), file=sys.stderr)
        sys.exit(2)
    out = pathlib.Path(args[2])
    out.mkdir(parents=True, exist_ok=True)
    for page in sorted(pathlib.Path(".").glob("*.qmd")):
        (out / (page.stem + ".html")).write_text(
            "<html><body><pre id='args'>" + html.escape(json.dumps(args)) + "</pre>"
            + html.escape(page.read_text()) + "</body></html>"
        )
    sys.exit(0)
# Podium renders a single document as: render <document> --output-dir <absolute dir>
if len(args) != 4 or args[0] != "render" or args[2] != "--output-dir" or not os.path.isabs(args[3]):
    print("stand-in quarto: unexpected arguments", args, file=sys.stderr)
    sys.exit(2)
source = pathlib.Path(args[1])
if not source.is_file():
    print("stand-in quarto: no", source, "in", os.getcwd(), file=sys.stderr)
    sys.exit(2)
if "FAIL" in source.read_text():
    print("ERROR: stand-in quarto was asked to fail", file=sys.stderr)
    sys.exit(1)
kernel = "no QUARTO_PYTHON"
if os.environ.get("QUARTO_PYTHON"):
    import subprocess
    probe = [os.environ["QUARTO_PYTHON"], "-c", "import nbclient, ipykernel; print('kernel ready')"]
    kernel = subprocess.run(probe, capture_output=True, text=True).stdout.strip() or "kernel missing"
out = pathlib.Path(args[3])
out.mkdir(parents=True, exist_ok=True)
print("pandoc: writing", out / (source.stem + ".html"))
(out / (source.stem + ".html")).write_text(
    "<html><body><pre id='args'>" + html.escape(json.dumps(args)) + "</pre>"
    + "<p id='kernel'>" + kernel + "</p>"
    + html.escape(source.read_text()) + "</body></html>"
)
"""


def write_stand_in(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "quarto"
    # The system's Python where there is one: sandboxed renders see the system directories,
    # as a real Quarto carries its own runtime in its installation folder.
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else os.path.realpath(sys.executable)
    path.write_text(STAND_IN.format(python=python))
    path.chmod(0o755)
    return path


def write_document(root: Path, body: str) -> Path:
    directory = root / "doc"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.qmd").write_text(f"---\ntitle: Report\n---\n\n{body}\n")
    return directory


def deploy_quarto(home: Path, quarto: str, directory: Path, *extra: str) -> tuple[int, str]:
    done = rsconnect(home, "deploy", "quarto", "-n", "podium", "--quarto", quarto, *extra, str(directory))
    return done.returncode, done.stdout + done.stderr


def guid_in(output: str) -> str:
    found = re.search(r"/content/([0-9a-f-]{36})/", output)
    assert found, output
    return found.group(1)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("quarto-bin")
    folder.chmod(0o755)  # readable by sandboxed renders, as a real installation is
    return write_stand_in(folder)


@pytest.fixture(scope="module")
def quarto_server(tmp_path_factory: pytest.TempPathFactory, stand_in: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("podium-quarto") / "data",
        {"PODIUM_QUARTO_INSTALLATIONS": json.dumps([str(stand_in)])},
    )
    yield running
    running.stop()


def client_home(server: RunningServer, root: Path, user: str) -> Path:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    added = rsconnect(home, "add", "-n", "podium", "-s", server.url, "-k", server.user_key(user))
    assert added.returncode == 0, added.stdout + added.stderr
    return home


def test_quarto_document_renders_with_the_environments_quarto(
    quarto_server: RunningServer, stand_in: Path, tmp_path: Path
) -> None:
    server = quarto_server
    home = client_home(server, tmp_path, "quarto_publisher")
    code, output = deploy_quarto(home, str(stand_in), write_document(tmp_path, "Hello from Quarto"))
    assert code == 0, output
    guid = guid_in(output)
    api = server.api(server.user_key("quarto_publisher"))
    page = api.get(f"{server.url}/content/{guid}/")
    assert page.status_code == 200, page.text
    assert "Hello from Quarto" in page.text and "no QUARTO_PYTHON" in page.text
    args = json.loads(re.search(r"<pre id='args'>(.*?)</pre>", page.text).group(1).replace("&quot;", '"'))
    assert args[:3] == ["render", "report.qmd", "--output-dir"]
    content = api.get(f"{server.url}/__api__/v1/content/{guid}").json()
    assert content["app_mode"] == "quarto-static" and content["quarto_version"] == "1.4.550"
    rendering = api.get(f"{server.url}/__api__/v1/content/{guid}/renderings").json()[0]
    assert args[3].endswith(f"/outputs/{content['id']}/{rendering['id']}")
    jobs = api.get(f"{server.url}/__api__/v1/content/{guid}/jobs").json()
    assert [job["tag"] for job in jobs if job["tag"].startswith("build_")] == ["build_report"]


def test_quarto_jupyter_engine_renders_with_the_contents_python(
    quarto_server: RunningServer, stand_in: Path, tmp_path: Path
) -> None:
    server = quarto_server
    home = client_home(server, tmp_path, "quarto_publisher")
    directory = write_document(tmp_path, "```{python}\nprint(1)\n```")
    source = directory / "report.qmd"
    source.write_text(source.read_text().replace("title: Report", "title: Report\njupyter: python3"))
    (directory / "requirements.txt").write_text("\n")
    code, output = deploy_quarto(home, str(stand_in), directory)
    assert code == 0, output
    assert "Building package environment" in output or "Reusing package environment" in output
    page = server.api(server.user_key("quarto_publisher")).get(f"{server.url}/content/{guid_in(output)}/")
    assert page.status_code == 200 and "<p id='kernel'>kernel ready</p>" in page.text, page.text


def test_quarto_project_renders_whole_and_serves_its_index(
    quarto_server: RunningServer, stand_in: Path, tmp_path: Path
) -> None:
    server = quarto_server
    home = client_home(server, tmp_path, "quarto_publisher")
    site = tmp_path / "site"
    site.mkdir()
    (site / "_quarto.yml").write_text("project:\n  type: website\n")
    (site / "index.qmd").write_text("---\ntitle: Home\n---\n\nWelcome to the site\n")
    (site / "about.qmd").write_text("---\ntitle: About\n---\n\nAbout this site\n")
    code, output = deploy_quarto(home, str(stand_in), site)
    assert code == 0, output
    guid = guid_in(output)
    api = server.api(server.user_key("quarto_publisher"))
    assert api.get(f"{server.url}/__api__/v1/content/{guid}").json()["content_category"] == "site"
    home_page = api.get(f"{server.url}/content/{guid}/")
    assert home_page.status_code == 200 and "Welcome to the site" in home_page.text
    assert "About this site" in api.get(f"{server.url}/content/{guid}/about.html").text


def test_quarto_render_failure_is_reported(quarto_server: RunningServer, stand_in: Path, tmp_path: Path) -> None:
    server = quarto_server
    home = client_home(server, tmp_path, "quarto_publisher")
    code, output = deploy_quarto(home, str(stand_in), write_document(tmp_path, "FAIL please"))
    assert code != 0
    assert "stand-in quarto was asked to fail" in output and "Rendering failed" in output


def test_quarto_refused_when_no_environment_provides_it(
    server: RunningServer, stand_in: Path, tmp_path: Path
) -> None:
    if shutil.which("quarto"):
        pytest.skip("a real quarto is on the PATH, so the server's Local environment provides it")
    home = client_home(server, tmp_path, "no_quarto_publisher")
    code, output = deploy_quarto(home, str(stand_in), write_document(tmp_path, "Never rendered"))
    assert code != 0
    assert "needs Quarto (Quarto 1.4.550" in output, output
    assert "no execution environment provides it" in output


@pytest.mark.skipif(shutil.which("quarto") is None, reason="needs a real quarto on the PATH")
def test_quarto_document_renders_with_real_quarto(server: RunningServer, tmp_path: Path) -> None:
    home = client_home(server, tmp_path, "real_quarto_publisher")
    quarto = shutil.which("quarto")
    assert quarto is not None
    code, output = deploy_quarto(home, quarto, write_document(tmp_path, "Rendered by real Quarto"))
    assert code == 0, output
    page = server.api(server.user_key("real_quarto_publisher")).get(f"{server.url}/content/{guid_in(output)}/")
    assert page.status_code == 200 and "Rendered by real Quarto" in page.text
