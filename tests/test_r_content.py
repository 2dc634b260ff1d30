"""R content end to end: an R Markdown document, a Shiny app and a Plumber API.

Bundles are built from hand-written manifests in the format rsconnect for R writes
(``platform`` is the R version, ``packages`` the restored packages with their
DESCRIPTION) and deployed through the API as rsconnect does. The R package
repository is a real CRAN-like one made here: a tiny package built with
``R CMD build`` and indexed with ``tools::write_PACKAGES``, served from a
``file://`` URL (``r_repository_url``).

R itself comes from Debian (``make system-deps``): without ``Rscript`` these tests
skip locally and fail in CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import RunningServer, start_server
from tests.helpers import deploy, tar_gz, wait_task

pytestmark = pytest.mark.integration

PLATFORM = "4.2.2"
CRAN = "https://cran.rstudio.com"
TEST_PACKAGE = "podiumtestpkg"


def require_r() -> None:
    if shutil.which("Rscript") is None:
        if os.environ.get("CI"):
            pytest.fail("R (Rscript) is required in CI: make system-deps installs it from Debian")
        pytest.skip("R is not installed (make system-deps installs Debian's r-base-core)")


def r_description(name: str, version: str) -> dict[str, str]:
    return {"Package": name, "Version": version, "Title": f"The {name} package",
            "License": "MIT", "NeedsCompilation": "no", "Repository": "CRAN"}


def r_bundle(appmode: str, files: dict[str, str], packages: dict[str, str], **extra: Any) -> bytes:
    """A bundle as ``rsconnect::deployApp`` uploads it, manifest written by hand."""
    metadata = {"appmode": appmode, "primary_rmd": None, "primary_html": None,
                "content_category": None, "has_parameters": False}
    metadata.update(extra.pop("metadata", {}))
    manifest = {
        "version": 1,
        "locale": "en_US",
        "platform": PLATFORM,
        "metadata": metadata,
        "packages": {
            name: {"Source": "CRAN", "Repository": CRAN, "description": r_description(name, version)}
            for name, version in packages.items()
        },
        "files": {name: {"checksum": hashlib.md5(body.encode()).hexdigest()} for name, body in files.items()},
        "users": None,
        **extra,
    }
    return tar_gz({"manifest.json": json.dumps(manifest), **files})


@pytest.fixture(scope="module")
def r_repository(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CRAN-like repository holding one tiny package, as a file:// URL."""
    require_r()
    root = tmp_path_factory.mktemp("r-repo")
    source = root / TEST_PACKAGE
    (source / "R").mkdir(parents=True)
    (source / "DESCRIPTION").write_text(
        f"Package: {TEST_PACKAGE}\nVersion: 0.1.0\nTitle: Answers for Podium's Tests\n"
        "Description: Answers questions for the tests of Podium's R package restore.\n"
        'Authors@R: person("Podium", "Tests", email = "tests@example.com", role = c("aut", "cre"))\n'
        "License: MIT\nEncoding: UTF-8\n"
    )
    (source / "NAMESPACE").write_text("export(answer)\n")
    (source / "R" / "answer.R").write_text("answer <- function() 6L * 7L\n")
    contrib = root / "repo" / "src" / "contrib"
    contrib.mkdir(parents=True)
    subprocess.run(["R", "CMD", "build", "--no-build-vignettes", "--no-manual", str(source)],
                   cwd=contrib, check=True, capture_output=True, timeout=120)
    subprocess.run(["Rscript", "-e", f"tools::write_PACKAGES('{contrib}', type = 'source')"],
                   check=True, capture_output=True, timeout=120)
    assert (contrib / f"{TEST_PACKAGE}_0.1.0.tar.gz").is_file()
    root.chmod(0o755)  # readable by sandboxed builds, as a real repository is
    return (root / "repo").as_uri()


@pytest.fixture(scope="module")
def r_server(tmp_path_factory: pytest.TempPathFactory, r_repository: str) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("podium-r") / "data", {"PODIUM_R_REPOSITORY_URL": r_repository}
    )
    yield running
    running.stop()


def new_content(server: RunningServer, name: str) -> tuple[str, str]:
    key = server.user_key("r_publisher")
    made = server.api(key).post(f"{server.url}/__api__/v1/content", json={"name": name})
    assert made.status_code == 200, made.text
    return key, made.json()["guid"]


def output_of(task: dict[str, Any]) -> str:
    return "\n".join(task["all_output"]) + "\n" + (task.get("error") or "")


REPORT = """---
title: "R report"
output: html_document
---

```{r}
library(podiumtestpkg)
total <- sum(1:10)
```

The answer is `r answer()` and the total is `r total`.
"""

REPORT_PACKAGES = {"rmarkdown": "2.20", "knitr": "1.42", TEST_PACKAGE: "0.1.0"}


@pytest.fixture(scope="module")
def rmd_content(r_server: RunningServer) -> tuple[str, str, str]:
    """An R Markdown report deployed once; returns (key, guid, first deploy's output)."""
    key, guid = new_content(r_server, "r-report")
    archive = r_bundle("rmd-static", {"report.Rmd": REPORT}, REPORT_PACKAGES,
                       metadata={"primary_rmd": "report.Rmd"})
    _, task = deploy(r_server, key, guid, archive)
    assert task["code"] == 0, output_of(task)
    return key, guid, output_of(task)


def test_rmd_renders_with_a_package_restored_from_the_repository(
    r_server: RunningServer, rmd_content: tuple[str, str, str]
) -> None:
    key, guid, output = rmd_content
    # Only the package the environment lacks is installed; Debian's rmarkdown is used as is.
    assert f"{TEST_PACKAGE} 0.1.0: installing from file://" in output, output
    assert "rmarkdown 2.20: the environment has 2.20" in output, output
    assert "Installed 1 R package(s)" in output, output
    api = r_server.api(key)
    page = api.get(f"{r_server.url}/content/{guid}/")
    assert page.status_code == 200, page.text
    assert "The answer is 42 and the total is 55." in page.text
    content = api.get(f"{r_server.url}/__api__/v1/content/{guid}").json()
    assert content["app_mode"] == "rmd-static"
    assert content["r_version"] == PLATFORM and content["r_environment_management"] is True
    tags = [job["tag"] for job in api.get(f"{r_server.url}/__api__/v1/content/{guid}/jobs").json()]
    assert sorted(tags) == ["build_report", "packrat_restore"]


def test_rmd_unchanged_redeploy_installs_nothing_and_rerender_makes_a_new_rendering(
    r_server: RunningServer, rmd_content: tuple[str, str, str]
) -> None:
    key, guid, _ = rmd_content
    archive = r_bundle("rmd-static", {"report.Rmd": REPORT}, REPORT_PACKAGES,
                       metadata={"primary_rmd": "report.Rmd"})
    _, task = deploy(r_server, key, guid, archive)
    output = output_of(task)
    assert task["code"] == 0, output
    assert "Reusing R package library r-" in output and "installing from" not in output, output
    api = r_server.api(key)
    before = api.get(f"{r_server.url}/__api__/v1/content/{guid}/renderings").json()
    rendered = wait_task(r_server, key, api.post(f"{r_server.url}/__api__/v1/content/{guid}/render").json()["task_id"])
    assert rendered["code"] == 0, output_of(rendered)
    after = api.get(f"{r_server.url}/__api__/v1/content/{guid}/renderings").json()
    assert len(after) == len(before) + 1 and after[0]["status"] == "succeeded"
    assert "The answer is 42" in api.get(f"{r_server.url}/content/{guid}/").text


def test_rmd_failing_render_and_missing_package_keep_the_previous_output(
    r_server: RunningServer, rmd_content: tuple[str, str, str]
) -> None:
    key, guid, _ = rmd_content
    api = r_server.api(key)
    active = api.get(f"{r_server.url}/__api__/v1/content/{guid}").json()["bundle_id"]
    failing = REPORT.replace("total <- sum(1:10)", 'stop("this report was asked to fail")')
    _, task = deploy(r_server, key, guid, r_bundle("rmd-static", {"report.Rmd": failing}, REPORT_PACKAGES))
    assert task["code"] != 0
    assert "this report was asked to fail" in output_of(task) and "Rendering failed" in output_of(task)
    missing = r_bundle("rmd-static", {"report.Rmd": REPORT}, {**REPORT_PACKAGES, "podiumabsent": "1.0.0"})
    _, task = deploy(r_server, key, guid, missing)
    assert task["code"] != 0
    assert "podium: the R packages cannot be restored" in output_of(task)
    assert "podiumabsent 1.0.0 (Source: CRAN): the environment's library has no such package and the " \
        "repository file://" in output_of(task), output_of(task)
    assert "Restoring the R packages failed" in task["error"]
    assert api.get(f"{r_server.url}/__api__/v1/content/{guid}").json()["bundle_id"] == active
    assert "The answer is 42" in api.get(f"{r_server.url}/content/{guid}/").text


def test_rmd_without_environment_management_uses_the_environments_library(r_server: RunningServer) -> None:
    key, guid = new_content(r_server, "r-unmanaged")
    report = REPORT.replace("library(podiumtestpkg)", "answer <- function() 7L").replace(
        "total <- sum(1:10)", f"total <- requireNamespace('{TEST_PACKAGE}', quietly = TRUE)"
    )
    archive = r_bundle("rmd-static", {"report.Rmd": report}, REPORT_PACKAGES,
                       environment={"environment_management": {"r": False}})
    _, task = deploy(r_server, key, guid, archive)
    assert task["code"] == 0, output_of(task)
    assert "environment_management.r is off" in output_of(task) and "installing" not in output_of(task)
    page = r_server.api(key).get(f"{r_server.url}/content/{guid}/")
    # The package restored for other content is not in the environment's library.
    assert "The answer is 7 and the total is FALSE." in page.text, page.text
    content = r_server.api(key).get(f"{r_server.url}/__api__/v1/content/{guid}").json()
    assert content["r_environment_management"] is False


SHINY_APP = """library(shiny)
library(podiumtestpkg)
ui <- fluidPage(numericInput("n", "n", 1), textOutput("product"))
server <- function(input, output, session) {
  output$product <- renderText(paste("product is", input$n * answer()))
}
shinyApp(ui, server)
"""


def test_shiny_app_through_the_proxy_with_its_websocket(r_server: RunningServer) -> None:
    from websockets.asyncio.client import connect

    key, guid = new_content(r_server, "r-shiny")
    archive = r_bundle("shiny", {"app.R": SHINY_APP}, {"shiny": "1.7.4", TEST_PACKAGE: "0.1.0"})
    _, task = deploy(r_server, key, guid, archive)
    assert task["code"] == 0, output_of(task)
    page = r_server.api(key).get(f"{r_server.url}/content/{guid}/")
    assert page.status_code == 200, page.text
    assert "shiny-javascript-1.7.4/shiny.min.js" in page.text
    script = r_server.api(key).get(f"{r_server.url}/content/{guid}/shiny-javascript-1.7.4/shiny.min.js")
    assert script.status_code == 200
    url = r_server.url.replace("http://", "ws://") + f"/content/{guid}/websocket/"

    async def session() -> list[str]:
        async with connect(url, additional_headers={"Authorization": f"Key {key}"}) as ws:
            config = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert "sessionId" in config["config"], config
            # As shiny.js does: the output is visible (hidden outputs are not computed).
            await ws.send(json.dumps(
                {"method": "init", "data": {"n": 3, ".clientdata_output_product_hidden": False}}
            ))
            products = []
            while len(products) < 2:
                message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if "product" in message.get("values", {}):
                    products.append(str(message["values"]["product"]))
                    # A changed input is computed again, both ways through the proxy.
                    await ws.send(json.dumps({"method": "update", "data": {"n": 5}}))
            return products

    assert asyncio.run(session()) == ["product is 126", "product is 210"]
    jobs = r_server.api(key).get(f"{r_server.url}/__api__/v1/content/{guid}/jobs").json()
    assert "run_app" in [job["tag"] for job in jobs]


PLUMBER_API = """library(podiumtestpkg)

#* The answer plus a number
#* @param plus a number
#* @serializer unboxedJSON
#* @get /answer
function(plus = 0) {
  list(answer = answer() + as.numeric(plus), r = paste(R.version$major, R.version$minor, sep = "."))
}
"""


def renv_lock(**versions: str) -> str:
    return json.dumps({
        "R": {"Version": PLATFORM, "Repositories": [{"Name": "CRAN", "URL": CRAN}]},
        "Packages": {name: {"Package": name, "Version": version, "Source": "Repository",
                            "Repository": "CRAN"} for name, version in versions.items()},
    })


def test_plumber_api_through_the_proxy_with_packages_from_renv_lock(r_server: RunningServer) -> None:
    key, guid = new_content(r_server, "r-plumber")
    # The bundle's renv.lock, when it has one, is what is restored.
    files = {"plumber.R": PLUMBER_API, "renv.lock": renv_lock(plumber="1.2.1", **{TEST_PACKAGE: "0.1.0"})}
    archive = r_bundle("api", files, {"plumber": "1.2.1"})
    _, task = deploy(r_server, key, guid, archive)
    assert task["code"] == 0, output_of(task)
    assert "2 packages from renv.lock" in output_of(task), output_of(task)
    answer = r_server.api(key).get(f"{r_server.url}/content/{guid}/answer", params={"plus": 8})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"answer": 50, "r": PLATFORM}
    jobs = r_server.api(key).get(f"{r_server.url}/__api__/v1/content/{guid}/jobs").json()
    assert "run_api" in [job["tag"] for job in jobs]


def test_r_content_refused_clearly_when_no_environment_provides_r(tmp_path: Path) -> None:
    # /bin/false is no R: the server's Local environment then has no R installation.
    server = start_server(tmp_path / "data", {"PODIUM_R_INSTALLATIONS": json.dumps(["/bin/false"])})
    try:
        key, guid = new_content(server, "r-nowhere")
        _, task = deploy(server, key, guid, r_bundle("shiny", {"app.R": SHINY_APP}, {"shiny": "1.7.4"}))
        assert task["code"] != 0
        error = task["error"]
        assert "This bundle needs R (R 4.2.2, from manifest platform); no execution environment provides it" in error
        assert "image 'Local' has Python" in error and "r_installations" in error, error
    finally:
        server.stop()


def test_unreachable_r_repository_is_named_as_such(tmp_path: Path) -> None:
    from tests.conftest import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = start_server(tmp_path / "data", {"PODIUM_R_REPOSITORY_URL": nowhere})
    try:
        key, guid = new_content(server, "r-offline")
        archive = r_bundle("rmd-static", {"report.Rmd": "# hello\n"}, {"podiumabsent": "1.0.0"},
                           metadata={"primary_rmd": "report.Rmd"})
        _, task = deploy(server, key, guid, archive)
        assert task["code"] != 0
        assert f"cannot read the R package repository {nowhere} (setting r_repository_url)" in output_of(task), \
            output_of(task)
        assert "has no such package" not in output_of(task)
    finally:
        server.stop()
