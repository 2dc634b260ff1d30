"""What a render job runs: pure functions of the manifest, the interpreters and the output directory.

A notebook (``jupyter-static``) is executed and converted to HTML with nbconvert
in the content's package environment, with the kernel packages
(:data:`KERNEL_REQUIREMENTS`) added to it; ``jupyter.hide_all_input`` and
``jupyter.hide_tagged_input`` (cells tagged ``hide_input``, as in Connect) are
honoured. A Quarto document or project (``quarto-static``) is rendered with the
execution environment's ``quarto render``; the jupyter engine uses the content's
Python through ``QUARTO_PYTHON``. An R Markdown document (``rmd-static``) is
rendered by ``rmarkdown::render`` with the execution environment's R, its package
library first on ``R_LIBS`` (set by the caller).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Added to the package environment of notebooks (and of Quarto documents using the
# jupyter engine) so they can be executed and converted.
KERNEL_REQUIREMENTS = ["nbconvert", "nbclient", "ipykernel"]
# Connect's job tags for render jobs.
TAGS = {"jupyter-static": "build_jupyter", "quarto-static": "build_report", "rmd-static": "build_report"}
# Cells with this tag have their input hidden when the manifest asks for hide_tagged_input.
HIDE_INPUT_TAG = "hide_input"
QUARTO_PROJECT_FILES = ("_quarto.yml", "_quarto.yaml")
_QUARTO_SOURCES = (".qmd", ".ipynb", ".rmd", ".md")


@dataclass(frozen=True)
class RenderPlan:
    """The command of a render job, the variables it needs, and the page to serve."""

    argv: list[str]
    env: dict[str, str]
    primary_candidates: tuple[str, ...]  # first existing one is served at the root


def _section(manifest: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = manifest.get(name)
    return value if isinstance(value, Mapping) else {}


def notebook_plan(python: str, manifest: Mapping[str, Any], output_dir: str) -> RenderPlan:
    """Execute the manifest's notebook and convert it to ``<output_dir>/index.html``."""
    entrypoint = str(_section(manifest, "metadata").get("entrypoint") or "")
    if not entrypoint:
        raise ValueError("a jupyter-static manifest needs metadata.entrypoint (the notebook file)")
    jupyter = _section(manifest, "jupyter")
    argv = [
        python, "-m", "nbconvert", "--to", "html", "--execute",
        "--ExecutePreprocessor.kernel_name=python3",
        "--output-dir", output_dir, "--output", "index",
    ]
    if jupyter.get("hide_all_input"):
        argv.append("--no-input")
    elif jupyter.get("hide_tagged_input"):
        argv.append(f"--TagRemovePreprocessor.remove_input_tags={HIDE_INPUT_TAG}")
    argv.append(entrypoint)
    return RenderPlan(argv, {}, ("index.html",))


def quarto_target(manifest: Mapping[str, Any], bundle_files: list[str]) -> str | None:
    """What ``quarto render`` is given: ``None`` for a project (``_quarto.yml``), else the document."""
    if any(name in bundle_files for name in QUARTO_PROJECT_FILES):
        return None
    entrypoint = _section(manifest, "metadata").get("entrypoint")
    if isinstance(entrypoint, str) and entrypoint:
        return entrypoint
    files = [str(name) for name in _section(manifest, "files")] or bundle_files
    for suffix in _QUARTO_SOURCES:
        found = sorted(f for f in files if f.lower().endswith(suffix) and "/" not in f)
        if found:
            return found[0]
    raise ValueError("the bundle has no _quarto.yml and no .qmd, .ipynb, .Rmd or .md document to render")


def quarto_plan(
    quarto: str, python: str | None, manifest: Mapping[str, Any], bundle_files: list[str], output_dir: str
) -> RenderPlan:
    """``quarto render [document] --output-dir <output_dir>`` in the bundle directory."""
    target = quarto_target(manifest, bundle_files)
    argv = [quarto, "render", *([target] if target else []), "--output-dir", output_dir]
    env = {"QUARTO_PYTHON": python} if python else {}
    candidates = ("index.html",) + ((f"{Path(target).stem}.html",) if target else ())
    return RenderPlan(argv, env, candidates)


# Run by ``R -e`` with the document and the output directory as arguments; intermediate
# files go to a temporary directory, so the bundle directory holds only the bundle.
RMARKDOWN_RENDER = (
    "args <- commandArgs(trailingOnly = TRUE); "
    "rmarkdown::render(args[[1]], output_dir = args[[2]], intermediates_dir = tempdir(), "
    "envir = new.env(parent = globalenv()))"
)


def rmd_document(manifest: Mapping[str, Any], bundle_files: list[str]) -> str:
    """The document an ``rmd-static`` bundle renders: ``metadata.primary_rmd``, else its only
    (or first) ``.Rmd`` file at the top of the bundle."""
    primary = _section(manifest, "metadata").get("primary_rmd")
    if isinstance(primary, str) and primary:
        parts = primary.split("/")
        if primary.startswith(("/", "-")) or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"metadata.primary_rmd {primary!r} must be a relative path inside the bundle")
        return primary
    files = [str(name) for name in _section(manifest, "files")] or bundle_files
    found = sorted(f for f in files if f.lower().endswith(".rmd") and "/" not in f)
    if not found:
        raise ValueError("the manifest names no metadata.primary_rmd and the bundle has no .Rmd document")
    return found[0]


def rmarkdown_plan(
    r: str, manifest: Mapping[str, Any], bundle_files: list[str], output_dir: str
) -> RenderPlan:
    """``rmarkdown::render(<document>, output_dir = <output_dir>)`` with R, in the bundle directory."""
    document = rmd_document(manifest, bundle_files)
    argv = [r, "--no-echo", "--no-restore", "--no-save", "-e", RMARKDOWN_RENDER,
            "--args", document, output_dir]
    primary_html = _section(manifest, "metadata").get("primary_html")
    candidates = ((primary_html,) if isinstance(primary_html, str) and primary_html else ()) + (
        f"{Path(document).stem}.html", "index.html",
    )
    return RenderPlan(argv, {}, candidates)


def primary_file(output_dir: Path, candidates: tuple[str, ...]) -> str | None:
    """The page served at the root of a rendering: the first candidate present, else the
    first HTML file at the top of the output, else None (nothing to serve)."""
    for name in candidates:
        if (output_dir / name).is_file():
            return name
    pages = sorted(p.name for p in output_dir.glob("*.html") if p.is_file())
    return pages[0] if pages else None
