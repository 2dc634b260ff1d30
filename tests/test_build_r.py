"""R package lists, library fingerprints, the R Markdown render command, R discovery on
the host and the refusal when no environment has R: pure functions, no R needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from packaging.version import Version

from podium.build.r import (
    PackageListError,
    RPackage,
    packages_from_manifest,
    packages_from_renv_lock,
    r_fingerprint,
    r_managed,
    wanted_packages,
)
from podium.environments.host import local_environment
from podium.environments.model import Environment, Installation, request_from_manifest
from podium.environments.select import missing_runtime, select_environment
from podium.render.commands import RMARKDOWN_RENDER, rmarkdown_plan

R = Installation(Version("4.2.2"), "/usr/lib/R/bin/R", "4.2.2")


def manifest_packages(**versions: str) -> dict:
    """``packages`` as rsconnect for R writes it."""
    return {
        "packages": {
            name: {"Source": "CRAN", "Repository": "https://cran.rstudio.com",
                   "description": {"Package": name, "Version": version, "Title": name}}
            for name, version in versions.items()
        }
    }


def test_packages_from_manifest_reads_rsconnect_descriptions_sorted() -> None:
    found = packages_from_manifest(manifest_packages(**{"shiny": "1.7.4", "R6": "2.5.1", "data.table": "1.14.8"}))
    assert found == [RPackage("R6", "2.5.1", "CRAN"), RPackage("data.table", "1.14.8", "CRAN"),
                     RPackage("shiny", "1.7.4", "CRAN")]


@pytest.mark.parametrize(
    "packages, needle",
    [({"shi ny": {"description": {"Version": "1.0"}}}, "'shi ny' is not an R package name"),
     ({"shiny": {"description": {"Version": "latest"}}}, "version 'latest' of shiny"),
     ({"shiny": {"Source": "CRAN"}}, "version None of shiny"),
     (["shiny"], "must be an object")],
)
def test_packages_from_manifest_refuses_what_cannot_be_restored(packages: object, needle: str) -> None:
    with pytest.raises(PackageListError, match=needle.replace("(", r"\(")):
        packages_from_manifest({"packages": packages})


def test_packages_from_renv_lock_and_the_lockfile_wins(tmp_path: Path) -> None:
    lock = {"R": {"Version": "4.2.2"}, "Packages": {
        "plumber": {"Package": "plumber", "Version": "1.2.1", "Source": "Repository", "Repository": "CRAN"},
        "R6": {"Package": "R6", "Version": "2.5.1", "Source": "Repository"},
    }}
    assert packages_from_renv_lock(json.dumps(lock)) == [
        RPackage("R6", "2.5.1", "Repository"), RPackage("plumber", "1.2.1", "Repository")]
    (tmp_path / "renv.lock").write_text(json.dumps(lock))
    found, origin = wanted_packages(tmp_path, manifest_packages(shiny="1.7.4"))
    assert origin == "renv.lock" and [p.name for p in found] == ["R6", "plumber"]
    (tmp_path / "renv.lock").unlink()
    assert wanted_packages(tmp_path, manifest_packages(shiny="1.7.4")) == (
        [RPackage("shiny", "1.7.4", "CRAN")], "manifest packages")
    with pytest.raises(PackageListError, match="not valid JSON"):
        packages_from_renv_lock("{")


def test_rpackage_dcf_record_has_one_line_per_field() -> None:
    assert RPackage("shiny", "1.7.4", "CRAN\nInjected: x").dcf() == (
        "Package: shiny\nVersion: 1.7.4\nSource: CRAN Injected: x\n")


@pytest.mark.parametrize(
    "environment, default, expected",
    [(None, True, True), (None, False, False), ({"environment_management": {"r": False}}, True, False),
     ({"environment_management": {"r": True}}, False, True), ({"environment_management": {"python": False}}, True, True)],
)
def test_r_managed_manifest_then_server_default(environment: dict | None, default: bool, expected: bool) -> None:
    manifest = {"environment": environment} if environment is not None else {}
    assert r_managed(manifest, default) is expected


def test_r_fingerprint_same_inputs_same_library() -> None:
    a = [RPackage("shiny", "1.7.4", "CRAN"), RPackage("R6", "2.5.1", "CRAN")]
    repo = "https://cloud.r-project.org"
    assert r_fingerprint(R, a, repo, None) == r_fingerprint(R, list(reversed(a)), repo, "")
    assert r_fingerprint(R, a, repo, None).startswith("r-")
    others = {
        r_fingerprint(R, [RPackage("shiny", "1.8.0", "CRAN"), a[1]], repo, None),
        r_fingerprint(R, a, "file:///srv/cran", None),
        r_fingerprint(Installation(Version("4.3.1"), "/opt/R/4.3.1/bin/R"), a, repo, None),
        r_fingerprint(R, a, repo, "ghcr.io/acme/r:4.2"),
    }
    assert r_fingerprint(R, a, repo, None) not in others and len(others) == 4


def test_rmarkdown_plan_renders_the_primary_rmd_into_the_output_dir() -> None:
    manifest = {"metadata": {"appmode": "rmd-static", "primary_rmd": "report.Rmd", "primary_html": None}}
    plan = rmarkdown_plan("/usr/lib/R/bin/R", manifest, ["report.Rmd", "other.Rmd"], "/data/outputs/1/2")
    assert plan.argv == ["/usr/lib/R/bin/R", "--no-echo", "--no-restore", "--no-save", "-e",
                         RMARKDOWN_RENDER, "--args", "report.Rmd", "/data/outputs/1/2"]
    assert plan.primary_candidates == ("report.html", "index.html") and plan.env == {}
    # No primary_rmd: the .Rmd at the top of the bundle; primary_html is served first.
    manifest = {"metadata": {"primary_html": "out.html"}, "files": {"b.Rmd": {}, "sub/a.Rmd": {}}}
    plan = rmarkdown_plan("R", manifest, [], "/o")
    assert plan.argv[-2:] == ["b.Rmd", "/o"] and plan.primary_candidates == ("out.html", "b.html", "index.html")


@pytest.mark.parametrize(
    "manifest, needle",
    [({"metadata": {"primary_rmd": "../x.Rmd"}}, "relative path"),
     ({"metadata": {"primary_rmd": "-e.Rmd"}}, "relative path"),
     ({"files": {"doc.md": {}}}, "no .Rmd document")],
)
def test_rmarkdown_plan_refuses_bad_documents(manifest: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        rmarkdown_plan("R", manifest, [], "/o")


def test_missing_r_names_what_was_asked_and_what_exists() -> None:
    local = Environment(1, "g-1", "Local", "Local", "Local",
                        python=(Installation(Version("3.11.7"), "/usr/bin/python3.11"),))
    request = request_from_manifest({"metadata": {"appmode": "shiny"}, "platform": "4.2.2"})
    selection = select_environment(request, [local])
    message = missing_runtime(selection, "r")
    assert message is not None
    assert message.startswith(
        "This bundle needs R (R 4.2.2, from manifest platform); no execution environment provides it.")
    assert message.endswith(" Environments: image 'Local' has Python 3.11.7.")
    assert "r-base-core" in message and "r_installations" in message
    assert missing_runtime(selection, "quarto") is None  # not asked for
    with_r = Environment(2, "g-2", "r-image", matching="any", r=(R,))
    assert missing_runtime(select_environment(request, [local, with_r]), "r") is None


def test_host_discovery_reports_r_from_rscript_as_the_r_beside_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bin_dir = tmp_path / "R-4.3.1" / "bin"
    bin_dir.mkdir(parents=True)
    for name, banner in (("R", "R version 4.3.1 (2023-06-16) -- \"Beagle Scouts\""),
                         ("Rscript", "Rscript (R) version 4.3.1 (2023-06-16)")):
        (bin_dir / name).write_text(f"#!/bin/sh\necho '{banner}'\n")
        (bin_dir / name).chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="podium.environments.host"):
        local = local_environment([], [str(bin_dir / "Rscript"), "/bin/false", "/opt/R/9.9.9/bin/R"],
                                  [str(tmp_path)], "any")
    assert local["r"] == {"installations": [{"version": "4.3.1", "path": str(bin_dir / "R")}]}
    assert local["quarto"] == {"installations": []}
    # What was listed and cannot be used is said, with the reason.
    assert [record.getMessage() for record in caplog.records] == [
        "r_installations: /bin/false is skipped: no version in what `false --version` printed",
        "r_installations: /opt/R/9.9.9/bin/R is skipped: no such file",
        f"quarto_installations: {tmp_path} is skipped: not an executable file",
    ]
