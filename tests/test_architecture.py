"""The import graph of ``podium`` keeps the layers of docs/architecture.md and has no cycle.

The layers are read from ``[tool.importlinter]`` in pyproject.toml (which ``make lint``
checks with ``lint-imports``) and checked here with grimp, the graph library under
import-linter, so the suite fails on an upward import even where lint is not run.
"""

from __future__ import annotations

import graphlib
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[grimp.Layer]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [grimp.Layer(*(part.strip() for part in line.split("|"))) for line in contract["layers"]]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("podium", cache_dir=None)


def _illegal(graph: grimp.ImportGraph) -> list[str]:
    found = graph.find_illegal_dependencies_for_layers(layers=_layers())
    return sorted(
        f"{route.heads} -> ... -> {route.tails}" for dependency in found for route in dependency.routes
    )


def test_architecture_every_import_points_down(graph: grimp.ImportGraph) -> None:
    assert _illegal(graph) == []


def test_architecture_names_every_module(graph: grimp.ImportGraph) -> None:
    """A new top-level module or package must be placed in a layer."""
    named = {module for layer in _layers() for module in layer.module_tails}
    placed = {m for m in graph.modules if m != "podium" and any(m == n or m.startswith(n + ".") for n in named)}
    assert sorted(set(graph.modules) - placed - {"podium", "podium.environments", "podium.git"}) == []


def test_architecture_check_catches_an_upward_import(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="podium.store.models", imported="podium.api.deps")
    graph.add_import(importer="podium.secrets", imported="podium.jobs")  # siblings
    try:
        illegal = _illegal(graph)
    finally:
        graph.remove_import(importer="podium.store.models", imported="podium.api.deps")
        graph.remove_import(importer="podium.secrets", imported="podium.jobs")
    assert any("podium.store.models" in line and "podium.api.deps" in line for line in illegal), illegal
    assert any("podium.secrets" in line and "podium.jobs" in line for line in illegal), illegal


def _cycle(graph: grimp.ImportGraph) -> list[str]:
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    try:
        list(graphlib.TopologicalSorter(imports).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_architecture_module_graph_has_no_cycle(graph: grimp.ImportGraph) -> None:
    assert _cycle(graph) == []


def test_architecture_cycle_check_catches_a_cycle(graph: grimp.ImportGraph) -> None:
    graph.add_import(importer="podium.errors", imported="podium.api.body")  # api.body imports errors
    try:
        cycle = _cycle(graph)
    finally:
        graph.remove_import(importer="podium.errors", imported="podium.api.body")
    assert "podium.errors" in cycle and "podium.api.body" in cycle
