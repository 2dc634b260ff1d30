"""The package inventory read from built environments (podium.inventory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from podium.inventory import InstalledPackage, python_packages, r_packages, requirements_lock

UV = str(Path(sys.executable).parent / "uv")


def test_inventory_python_packages_match_uv_pip_list(tmp_path: Path) -> None:
    """A real venv made by uv, with packages installed from the index: the inventory
    lists what ``uv pip list`` lists, names as uv prints them (``typing-extensions``)."""
    env = tmp_path / "env"
    subprocess.run([UV, "venv", "--python", sys.executable, str(env)], check=True, capture_output=True)
    subprocess.run([UV, "pip", "install", "--python", str(env / "bin" / "python"), "typing_extensions", "itsdangerous"],
                   check=True, capture_output=True)
    listed = json.loads(subprocess.run([UV, "pip", "list", "--format", "json", "--python", str(env / "bin" / "python")],
                                       check=True, capture_output=True, text=True).stdout)
    found = python_packages(env)
    assert [(p.name, p.version) for p in found] == sorted((p["name"], p["version"]) for p in listed)
    assert {"typing-extensions", "itsdangerous"} <= {p.name for p in found}


def test_inventory_r_packages_from_description_files(tmp_path: Path) -> None:
    """DESCRIPTION files as R writes them into an installed library."""
    library = tmp_path / "library"
    (library / "jsonlite").mkdir(parents=True)
    (library / "jsonlite" / "DESCRIPTION").write_text(
        "Package: jsonlite\nVersion: 1.8.8\nTitle: A Simple and Robust JSON Parser and Generator\n"
        "  for R\nLicense: MIT + file LICENSE\nNeedsCompilation: yes\nRepository: CRAN\n"
        "Built: R 4.3.2; x86_64-pc-linux-gnu; 2024-01-10 12:00:00 UTC; unix\n"
    )
    (library / "mypkg").mkdir()
    (library / "mypkg" / "DESCRIPTION").write_text(
        "Package: mypkg\nVersion: 0.1.0\nRemoteType: github\nRemoteSha: 3f2a1c9\n"
    )
    (library / "not-a-package").mkdir()
    assert r_packages(library) == [InstalledPackage("jsonlite", "1.8.8", None),
                                   InstalledPackage("mypkg", "0.1.0", "3f2a1c9")]


def test_inventory_requirements_lock_pins_every_package() -> None:
    text = requirements_lock([InstalledPackage("starlette", "0.40.0"), InstalledPackage("anyio", "4.6.0", "sha256:x")])
    assert text == "anyio==4.6.0\nstarlette==0.40.0\n"
