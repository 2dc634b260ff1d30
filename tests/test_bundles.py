"""Tests for podium.bundles: manifest parsing and safe unpacking of untrusted archives.

Archives are built in each test with tarfile, so every attack is spelled out here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from rsconnect.bundle import make_api_bundle, make_html_bundle
from rsconnect.environment import Environment
from rsconnect.models import AppModes

from podium.bundles import BundleError, BundleLimits, Manifest, missing_files, parse_manifest, unpack_bundle

LIMITS = BundleLimits(
    max_bytes=1024**3,
    max_unpacked_bytes=4 * 1024**3,
    max_files=100_000,
    max_compression_ratio=200.0,
)

Entry = tuple[tarfile.TarInfo, bytes | None]

INDEX_HTML = b"<!doctype html><title>hello</title><link rel=stylesheet href=style.css>\n"
STYLE_CSS = b"body { font-family: sans-serif; }\n"
APP_PY = b"from fastapi import FastAPI\n\napp = FastAPI()\n"
REQUIREMENTS = b"fastapi==0.115.0\n"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def file(name: str, data: bytes | str, mode: int = 0o644) -> Entry:
    body = data.encode() if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size = len(body)
    info.mode = mode
    return info, body


def directory(name: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def link(name: str, target: str, type: bytes = tarfile.SYMTYPE) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = target
    return info, None


def special(name: str, type: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = type
    info.devmajor, info.devminor = 1, 3
    return info, None


def manifest_file(manifest: dict[str, Any]) -> Entry:
    return file("manifest.json", json.dumps(manifest))


def html_manifest() -> dict[str, Any]:
    """The manifest rsconnect `deploy html` writes (reference/connect-api.md section 6)."""
    return {
        "version": 1,
        "metadata": {"appmode": "static", "primary_html": "index.html", "entrypoint": "index.html"},
        "files": {
            "index.html": {"checksum": md5(INDEX_HTML)},
            "style.css": {"checksum": md5(STYLE_CSS)},
        },
    }


def html_entries(manifest: dict[str, Any] | None = None) -> list[Entry]:
    """Members in the order rsconnect's html bundles use: manifest.json last."""
    return [
        file("index.html", INDEX_HTML),
        file("style.css", STYLE_CSS),
        manifest_file(manifest or html_manifest()),
    ]


def write_tar_gz(path: Path, entries: Iterable[Entry]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where the bundle should land; its parent exists, as the data dir's apps/<content>."""
    parent = tmp_path / "apps" / "content"
    parent.mkdir(parents=True)
    return parent / "bundle-1"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return tmp_path / "bundle.tar.gz"


def refuse(archive: Path, dest: Path, limits: BundleLimits = LIMITS) -> BundleError:
    """Unpack expecting a refusal; check that it left nothing at dest nor beside it."""
    with pytest.raises(BundleError) as caught:
        unpack_bundle(archive, dest, limits)
    assert not os.path.lexists(dest)
    assert list(dest.parent.iterdir()) == []
    return caught.value


# --- good bundles -----------------------------------------------------------------------


def test_unpack_bundle_extracts_html_bundle(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, html_entries())

    manifest = unpack_bundle(archive, dest, LIMITS)

    assert manifest.appmode == "static"
    assert manifest.metadata.primary_html == "index.html"
    assert (dest / "index.html").read_bytes() == INDEX_HTML
    assert (dest / "style.css").read_bytes() == STYLE_CSS
    assert sorted(p.name for p in dest.iterdir()) == ["index.html", "manifest.json", "style.css"]
    assert list(dest.parent.iterdir()) == [dest]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_unpack_bundle_extracts_fastapi_bundle_with_environment(archive: Path, dest: Path) -> None:
    # The manifest of `rsconnect deploy fastapi --image ... --disable-env-management
    # --package-installer UV`, with checksums of this test's files. Members carry a "./"
    # prefix and a root entry, as `tar -czf bundle.tar.gz -C dir .` writes them.
    manifest = {
        "version": 1,
        "locale": "en_US.UTF-8",
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {
            "version": "3.11.7",
            "package_manager": {
                "name": "uv",
                "version": "23.2.1",
                "package_file": "requirements.txt",
                "allow_uv": True,
            },
        },
        "environment": {
            "python": {"requires": "~=3.11.0"},
            "image": "ghcr.io/acme/py311:latest",
            "environment_management": {"python": False, "r": False},
        },
        "files": {
            "requirements.txt": {"checksum": md5(REQUIREMENTS)},
            ".python-version": {"checksum": md5(b"3.11\n")},
            "app.py": {"checksum": md5(APP_PY)},
        },
    }
    write_tar_gz(
        archive,
        [
            directory("."),
            file("./manifest.json", json.dumps(manifest)),
            file("./requirements.txt", REQUIREMENTS),
            file("./.python-version", "3.11\n"),
            file("./app.py", APP_PY),
        ],
    )

    result = unpack_bundle(archive, dest, LIMITS)

    assert result.appmode == "python-fastapi"
    assert result.entrypoint == "app"
    assert result.python is not None and result.python.package_manager is not None
    assert result.python.package_manager.name == "uv"
    assert result.python.package_manager.allow_uv is True
    assert result.python_requires == "~=3.11.0"
    assert result.environment is not None
    assert result.environment.image == "ghcr.io/acme/py311:latest"
    assert result.environment.environment_management is not None
    assert result.environment.environment_management.python is False
    assert (dest / "app.py").read_bytes() == APP_PY
    assert (dest / ".python-version").read_text() == "3.11\n"


def test_unpack_bundle_accepts_static_notebook_with_empty_files_map(
    archive: Path, dest: Path
) -> None:
    # `rsconnect deploy notebook --static` uploads an empty files map.
    manifest = {"metadata": {"appmode": "static", "primary_html": "hello.html"}, "files": {}}
    write_tar_gz(archive, [file("hello.html", INDEX_HTML), manifest_file(manifest)])

    assert unpack_bundle(archive, dest, LIMITS).metadata.primary_html == "hello.html"


def test_unpack_bundle_keeps_links_inside_the_bundle(archive: Path, dest: Path) -> None:
    write_tar_gz(
        archive,
        [
            *html_entries(),
            directory("docs"),
            link("docs/home.html", "../index.html"),
            link("docs/same.css", "style.css", tarfile.LNKTYPE),
        ],
    )

    unpack_bundle(archive, dest, LIMITS)

    assert os.readlink(dest / "docs" / "home.html") == "../index.html"
    assert (dest / "docs" / "home.html").read_bytes() == INDEX_HTML
    assert os.stat(dest / "docs" / "same.css").st_ino == os.stat(dest / "style.css").st_ino


def test_unpack_bundle_strips_dangerous_modes(archive: Path, dest: Path) -> None:
    write_tar_gz(
        archive, [*html_entries(), file("run.sh", "#!/bin/sh\n", mode=0o6777), file("w", "", 0o666)]
    )

    unpack_bundle(archive, dest, LIMITS)

    assert stat.S_IMODE(os.stat(dest / "run.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "w").st_mode) == 0o644


def test_unpack_bundle_accepts_rsconnect_html_bundle(tmp_path: Path, dest: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(INDEX_HTML)
    (site / "style.css").write_bytes(STYLE_CSS)
    archive = tmp_path / "html.tar.gz"
    with make_html_bundle(str(site), None, [], []) as bundle:
        archive.write_bytes(bundle.read())

    manifest = unpack_bundle(archive, dest, LIMITS)

    assert manifest.appmode == "static"
    assert (dest / "style.css").read_bytes() == STYLE_CSS


def test_unpack_bundle_accepts_rsconnect_fastapi_bundle(tmp_path: Path, dest: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_bytes(APP_PY)
    (project / "requirements.txt").write_bytes(REQUIREMENTS)
    (project / ".python-version").write_text("3.11\n")
    environment = Environment.create_python_environment(str(project))
    archive = tmp_path / "api.tar.gz"
    with make_api_bundle(
        str(project), "app", AppModes.PYTHON_FASTAPI, environment, [], [], image="img:1"
    ) as bundle:
        archive.write_bytes(bundle.read())

    manifest = unpack_bundle(archive, dest, LIMITS)

    assert manifest.appmode == "python-fastapi"
    assert manifest.python_requires == "~=3.11.0"
    assert set(manifest.files) >= {"app.py", "requirements.txt"}


def test_unpack_bundle_refuses_existing_destination(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, html_entries())
    dest.mkdir()

    with pytest.raises(FileExistsError):
        unpack_bundle(archive, dest, LIMITS)
    assert list(dest.iterdir()) == []


# --- unsafe archives (code 39) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (file("../x", "evil"), "'../x' has a '..' component"),
        (file("docs/../../x", "evil"), "'..' component"),
        (file("/etc/x", "evil"), "'/etc/x' has an absolute path"),
        (file("a\\..\\..\\x", "evil"), "backslash"),
        (link("link", "../../etc/passwd"), "symlink to '../../etc/passwd', outside the bundle"),
        (link("link", "/etc/passwd"), "symlink to '/etc/passwd', outside the bundle"),
        (link("docs/link", "../../x"), "outside the bundle"),
        (link("hard", "../../etc/passwd", tarfile.LNKTYPE), "hardlink to '../../etc/passwd'"),
        (link("hard", "/etc/passwd", tarfile.LNKTYPE), "hardlink to '/etc/passwd'"),
        (link("hard", "not-a-member", tarfile.LNKTYPE), "not a file earlier in the bundle"),
        (special("tty", tarfile.CHRTYPE), "'tty' is a character device"),
        (special("sda", tarfile.BLKTYPE), "'sda' is a block device"),
        (special("pipe", tarfile.FIFOTYPE), "'pipe' is a FIFO"),
    ],
    ids=[
        "traversal",
        "nested-traversal",
        "absolute",
        "backslash",
        "symlink-relative-escape",
        "symlink-absolute",
        "symlink-nested-escape",
        "hardlink-relative-escape",
        "hardlink-absolute",
        "hardlink-non-member",
        "chrdev",
        "blkdev",
        "fifo",
    ],
)
def test_unpack_bundle_refuses_unsafe_member(
    archive: Path, dest: Path, entry: Entry, fragment: str
) -> None:
    write_tar_gz(archive, [*html_entries(), entry])

    err = refuse(archive, dest)

    assert (err.code, err.status) == (39, 400)
    assert fragment in err.message


def test_unpack_bundle_refuses_symlink_chain_escape(archive: Path, dest: Path) -> None:
    # Each link looks inside on its own; together, y -> x/sub/.. -> (root)/.. escapes.
    write_tar_gz(archive, [*html_entries(), link("y", "x/sub/.."), link("x/sub", "..")])

    err = refuse(archive, dest)

    assert err.code == 39
    assert "'y' is a symlink that resolves outside the bundle" in err.message


def test_unpack_bundle_refuses_member_inside_symlink(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, [*html_entries(), directory("sub"), link("d", "sub"), file("d/x", "")])

    err = refuse(archive, dest)

    assert err.code == 39
    assert "'d/x' is inside 'd', which is a symlink" in err.message


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([file("a", "1"), file("a", "2")], "'a' appears more than once"),
        ([file("d/x", "1"), file("d", "2")], "'d' would replace a directory with a file"),
        ([file("d", "1"), directory("d")], "'d' would replace a file with a directory"),
        ([file("f", "1"), file("f/x", "2")], "'f/x' is inside 'f', which is a file"),
    ],
    ids=["duplicate-file", "file-over-directory", "directory-over-file", "file-under-file"],
)
def test_unpack_bundle_refuses_replacing_members(
    archive: Path, dest: Path, entries: list[Entry], fragment: str
) -> None:
    write_tar_gz(archive, [*html_entries(), *entries])

    err = refuse(archive, dest)

    assert err.code == 39
    assert fragment in err.message


@pytest.mark.parametrize(
    "data",
    [b"", b"PK\x03\x04 a zip file", b"plain text, not an archive"],
    ids=["empty", "zip", "text"],
)
def test_unpack_bundle_refuses_non_gzip_data(archive: Path, dest: Path, data: bytes) -> None:
    archive.write_bytes(data)

    err = refuse(archive, dest)

    assert err.code == 39
    assert "not a gzip-compressed tar archive" in err.message


def test_unpack_bundle_refuses_plain_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "w") as tar:
        for info, data in html_entries():
            tar.addfile(info, io.BytesIO(data or b""))

    assert refuse(archive, dest).code == 39


def test_unpack_bundle_refuses_truncated_archive(archive: Path, dest: Path) -> None:
    big = os.urandom(64 * 1024)  # incompressible, so truncation lands inside this member
    write_tar_gz(archive, [*html_entries(), file("data.bin", big)])
    archive.write_bytes(archive.read_bytes()[: len(big) // 2])

    err = refuse(archive, dest)

    assert err.code == 39
    assert "corrupt or truncated" in err.message


def test_unpack_bundle_refuses_gzip_of_non_tar(archive: Path, dest: Path) -> None:
    archive.write_bytes(gzip.compress(b"this is not a tar archive" * 100))

    err = refuse(archive, dest)

    assert err.code == 39
    assert "corrupt or truncated" in err.message


# --- caps (code 40, HTTP 413) -----------------------------------------------------------


class Zeros(io.RawIOBase):
    """n zero bytes, streamed, so a bomb never sits in memory."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture
def count_decompressed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Total bytes gzip hands out while the test runs (to show a bomb stopped early)."""
    total = [0]
    real_read = gzip.GzipFile.read

    def read(self: gzip.GzipFile, size: int = -1) -> bytes:
        data = real_read(self, size)
        total[0] += len(data)
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", read)
    return total


def test_unpack_bundle_refuses_gzip_bomb_early(
    archive: Path, dest: Path, count_decompressed: list[int]
) -> None:
    # 200 MiB of zeros compress to about 200 KB: a ratio near 1000, over the cap of 200.
    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        for info, data in html_entries():
            tar.addfile(info, io.BytesIO(data or b""))
        info = tarfile.TarInfo("zeros.bin")
        info.size = 200 * 1024**2
        tar.addfile(info, Zeros(info.size))
    assert archive.stat().st_size < 1024**2

    err = refuse(archive, dest)

    assert (err.code, err.status) == (40, 413)
    assert "200 times its compressed size" in err.message
    assert "'zeros.bin'" in err.message
    assert count_decompressed[0] < 1024**2


def test_unpack_bundle_refuses_bomb_spread_over_many_members(
    archive: Path, dest: Path, count_decompressed: list[int]
) -> None:
    entries = html_entries()
    entries += [file(f"part{i:02}.bin", bytes(1024**2)) for i in range(40)]
    write_tar_gz(archive, entries)

    err = refuse(archive, dest)

    assert err.code == 40
    assert "compression bomb" in err.message
    assert count_decompressed[0] < 20 * 1024**2


def test_unpack_bundle_refuses_bomb_in_tar_headers(
    archive: Path, dest: Path, count_decompressed: list[int]
) -> None:
    # A pax extended header tarfile would read whole into memory.
    info, data = file("index.html", INDEX_HTML)
    info.pax_headers = {"comment": "0" * (8 * 1024**2)}
    write_tar_gz(archive, [(info, data), *html_entries()[1:]])

    err = refuse(archive, dest)

    assert (err.code, err.status) == (40, 413)
    assert "more data than its members account for" in err.message
    assert count_decompressed[0] < 1024**2


def test_unpack_bundle_refuses_oversize_archive(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, html_entries())
    limits = BundleLimits(100, LIMITS.max_unpacked_bytes, LIMITS.max_files, 200.0)

    err = refuse(archive, dest, limits)

    assert (err.code, err.status) == (40, 413)
    assert "bundle_max_bytes" in err.message


def test_unpack_bundle_refuses_too_many_files(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, [*html_entries(), *(file(f"f{i}", "") for i in range(5))])
    limits = BundleLimits(LIMITS.max_bytes, LIMITS.max_unpacked_bytes, 5, 200.0)

    err = refuse(archive, dest, limits)

    assert (err.code, err.status) == (40, 413)
    assert "more than 5 files and folders" in err.message


def test_unpack_bundle_refuses_too_many_unpacked_bytes(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, html_entries())
    limits = BundleLimits(LIMITS.max_bytes, len(INDEX_HTML) + 10, LIMITS.max_files, 200.0)

    err = refuse(archive, dest, limits)

    assert (err.code, err.status) == (40, 413)
    assert "member 'style.css'" in err.message
    assert "bundle_max_unpacked_bytes" in err.message


# --- manifest and checksums (codes 38 and 104) -----------------------------------------


def test_unpack_bundle_refuses_missing_manifest(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, html_entries()[:2])

    err = refuse(archive, dest)

    assert (err.code, err.status) == (38, 400)
    assert "no manifest.json at its root" in err.message


def test_unpack_bundle_refuses_manifest_not_at_root(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, [*html_entries()[:2], file("app/manifest.json", "{}")])

    assert "no manifest.json at its root" in refuse(archive, dest).message


def test_unpack_bundle_refuses_malformed_manifest_json(archive: Path, dest: Path) -> None:
    write_tar_gz(archive, [*html_entries()[:2], file("manifest.json", '{"version": 1,\n  oops}')])

    err = refuse(archive, dest)

    assert err.code == 38
    assert "not valid JSON" in err.message
    assert "line 2, column 3" in err.message


def test_unpack_bundle_refuses_manifest_without_appmode(archive: Path, dest: Path) -> None:
    manifest = html_manifest()
    del manifest["metadata"]["appmode"]
    write_tar_gz(archive, html_entries(manifest))

    err = refuse(archive, dest)

    assert err.code == 38
    assert err.message == "manifest.json: metadata.appmode is required"


def test_unpack_bundle_refuses_unknown_appmode(archive: Path, dest: Path) -> None:
    manifest = html_manifest()
    manifest["metadata"]["appmode"] = "python-flask"
    write_tar_gz(archive, html_entries(manifest))

    err = refuse(archive, dest)

    assert err.code == 38
    assert "metadata.appmode 'python-flask' is not a known app mode; known: shiny" in err.message


def test_unpack_bundle_refuses_bad_checksum(archive: Path, dest: Path) -> None:
    manifest = html_manifest()
    manifest["files"]["style.css"]["checksum"] = md5(b"something else")
    write_tar_gz(archive, html_entries(manifest))

    err = refuse(archive, dest)

    assert (err.code, err.status) == (104, 400)
    assert "'style.css' does not match its checksum" in err.message


def test_unpack_bundle_accepts_listed_file_missing_and_names_it(archive: Path, dest: Path) -> None:
    # As Connect: a file the manifest lists but the archive leaves out (.gitignore'd, say)
    # is a warning at deploy time, not a refusal; present files are still checked.
    manifest = html_manifest()
    manifest["files"]["script.js"] = {"checksum": md5(b"")}
    write_tar_gz(archive, html_entries(manifest))

    unpacked = unpack_bundle(archive, dest, LIMITS)

    assert "script.js" in unpacked.files
    assert missing_files(unpacked.model_dump(mode="json"), dest) == ["script.js"]


def test_unpack_bundle_refuses_static_without_primary_html(archive: Path, dest: Path) -> None:
    manifest = {"metadata": {"appmode": "static", "primary_html": "report.html"}}
    write_tar_gz(archive, html_entries(manifest))

    err = refuse(archive, dest)

    assert err.code == 38
    assert "metadata.primary_html 'report.html' is not a file in the bundle" in err.message


def test_unpack_bundle_refuses_static_without_index_html(archive: Path, dest: Path) -> None:
    write_tar_gz(
        archive, [file("page.html", INDEX_HTML), manifest_file({"metadata": {"appmode": "static"}})]
    )

    assert "no index.html" in refuse(archive, dest).message


# --- parse_manifest ---------------------------------------------------------------------

EXAMPLE_MANIFESTS: dict[str, dict[str, Any]] = {
    "fastapi": {
        "version": 1,
        "locale": "en_US.UTF-8",
        "metadata": {"appmode": "python-fastapi", "entrypoint": "app"},
        "python": {
            "version": "3.11.7",
            "package_manager": {
                "name": "pip",
                "version": "23.2.1",
                "package_file": "requirements.txt",
            },
        },
        "files": {
            "requirements.txt": {"checksum": "f201888e2eefa5a2871c8449d8e5c9ea"},
            "app.py": {"checksum": "49d995082fd597bfa54aa6d08ad63f13"},
        },
    },
    "notebook": {
        "version": 1,
        "locale": "en_US.UTF-8",
        "metadata": {"appmode": "jupyter-static", "entrypoint": "hello.ipynb"},
        "python": {"version": "3.11.7", "package_manager": {"name": "pip", "version": "23.2.1"}},
        "jupyter": {"hide_all_input": True},
        "files": {"hello.ipynb": {"checksum": "1bda0a6a8cb9d19f9fe5e706e678c631"}},
    },
    "quarto": {
        "version": 1,
        "metadata": {"appmode": "quarto-static"},
        "quarto": {"version": "1.4.550", "engines": ["markdown"]},
        "files": {"doc.qmd": {"checksum": "29a704de42aa2d0809546e5f4553f800"}},
    },
    "old-rsconnect-nulls": {
        "version": 1,
        "metadata": {
            "appmode": "python-dash",
            "entrypoint": "app",
            "primary_rmd": None,
            "primary_html": None,
            "content_category": None,
            "has_parameters": False,
        },
    },
}


@pytest.mark.parametrize("name", list(EXAMPLE_MANIFESTS))
def test_parse_manifest_accepts_rsconnect_manifests(name: str) -> None:
    raw = EXAMPLE_MANIFESTS[name]

    manifest = parse_manifest(json.dumps(raw).encode())

    assert isinstance(manifest, Manifest)
    assert manifest.appmode == raw["metadata"]["appmode"]
    assert set(manifest.files) == set(raw.get("files", {}))


def test_parse_manifest_preserves_unknown_fields() -> None:
    raw = {
        "metadata": {"appmode": "nodejs", "entrypoint": "index.js", "future_field": 1},
        "node": {"version": "20.1.0", "package_manager": {"name": "npm"}},
    }

    dumped = parse_manifest(json.dumps(raw).encode()).model_dump(exclude_unset=True)

    assert dumped == raw


def test_parse_manifest_accepts_utf8_bom() -> None:
    data = b"\xef\xbb\xbf" + json.dumps({"metadata": {"appmode": "static"}}).encode()

    assert parse_manifest(data).appmode == "static"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[]", "manifest.json must hold a JSON object"),
        (b"\xff\xfe{}", "manifest.json is not UTF-8 text"),
        (b"{}", "manifest.json: metadata is required"),
        (
            {"metadata": {"appmode": 5}},
            "manifest.json: metadata.appmode must be a string (got 5)",
        ),
        (
            {"metadata": {"appmode": "python-api"}, "files": {"app.py": {"checksum": "abc"}}},
            "manifest.json: files[\"app.py\"].checksum 'abc' is not an MD5 checksum",
        ),
        (
            {"metadata": {"appmode": "python-api"}, "files": {"../app.py": {}}},
            "manifest.json: files key '../app.py' is not a relative path inside the bundle",
        ),
        (
            {
                "metadata": {"appmode": "python-api"},
                "environment": {"python": {"requires": "python3.11"}},
            },
            (
                "manifest.json: environment.python.requires 'python3.11' is not a PEP 440 "
                "version specifier"
            ),
        ),
        (
            {"metadata": {"appmode": "python-api"}, "jupyter": {"hide_all_input": "maybe"}},
            "manifest.json: jupyter.hide_all_input must be true or false",
        ),
    ],
    ids=[
        "array",
        "not-utf8",
        "no-metadata",
        "appmode-type",
        "checksum",
        "path",
        "requires",
        "bool",
    ],
)
def test_parse_manifest_names_the_bad_field(raw: bytes | dict[str, Any], message: str) -> None:
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()

    with pytest.raises(BundleError) as caught:
        parse_manifest(data)

    assert caught.value.code == 38
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)
