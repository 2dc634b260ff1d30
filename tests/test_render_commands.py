"""Render job commands are pure functions of the manifest: golden tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.render.commands import notebook_plan, primary_file, quarto_plan, quarto_target

NOTEBOOK = {"metadata": {"appmode": "jupyter-static", "entrypoint": "report.ipynb"}}
CONVERT = ["/env/bin/python", "-m", "nbconvert", "--to", "html", "--execute",
           "--ExecutePreprocessor.kernel_name=python3", "--output-dir", "/out", "--output", "index"]


def test_notebook_plan_executes_and_converts() -> None:
    plan = notebook_plan("/env/bin/python", NOTEBOOK, "/out")
    assert plan.argv == [*CONVERT, "report.ipynb"]
    assert plan.primary_candidates == ("index.html",)


def test_notebook_plan_hides_input_as_the_manifest_asks() -> None:
    hide_all = notebook_plan("/env/bin/python", {**NOTEBOOK, "jupyter": {"hide_all_input": True}}, "/out")
    assert hide_all.argv == [*CONVERT, "--no-input", "report.ipynb"]
    tagged = notebook_plan("/env/bin/python", {**NOTEBOOK, "jupyter": {"hide_tagged_input": True}}, "/out")
    assert tagged.argv == [*CONVERT, "--TagRemovePreprocessor.remove_input_tags=hide_input", "report.ipynb"]


def test_notebook_plan_needs_an_entrypoint() -> None:
    with pytest.raises(ValueError, match="entrypoint"):
        notebook_plan("/env/bin/python", {"metadata": {"appmode": "jupyter-static"}}, "/out")


def test_quarto_target_document_project_or_nothing() -> None:
    assert quarto_target({"files": {"notes.md": {}, "doc.qmd": {}}}, []) == "doc.qmd"
    assert quarto_target({"files": {"a.qmd": {}}}, ["_quarto.yml", "a.qmd"]) is None
    assert quarto_target({"metadata": {"entrypoint": "b.qmd"}, "files": {"a.qmd": {}}}, []) == "b.qmd"
    with pytest.raises(ValueError, match="no _quarto.yml"):
        quarto_target({"files": {"data.csv": {}}}, ["data.csv"])


def test_quarto_plan_passes_python_for_the_jupyter_engine() -> None:
    plan = quarto_plan("/q/bin/quarto", "/env/bin/python", {"files": {"doc.qmd": {}}}, ["doc.qmd"], "/out")
    assert plan.argv == ["/q/bin/quarto", "render", "doc.qmd", "--output-dir", "/out"]
    assert plan.env == {"QUARTO_PYTHON": "/env/bin/python"}
    assert plan.primary_candidates == ("index.html", "doc.html")
    project = quarto_plan("/q/bin/quarto", None, {}, ["_quarto.yml"], "/out")
    assert project.argv == ["/q/bin/quarto", "render", "--output-dir", "/out"] and project.env == {}


def test_primary_file_prefers_candidates_then_any_page(tmp_path: Path) -> None:
    assert primary_file(tmp_path, ("index.html",)) is None
    (tmp_path / "b.html").write_text("b")
    (tmp_path / "a.html").write_text("a")
    assert primary_file(tmp_path, ("index.html",)) == "a.html"
    (tmp_path / "index.html").write_text("i")
    assert primary_file(tmp_path, ("index.html", "b.html")) == "index.html"
