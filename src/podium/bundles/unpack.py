"""Safe unpacking of an uploaded bundle: an untrusted gzip-compressed tar archive.

:func:`unpack_bundle` checks every member itself, so a refusal names the member and the
rule, and extracts through tarfile's ``data`` filter as a second line of defence. It
extracts into a temporary sibling of the destination and renames it into place only
once the whole bundle (members, manifest, checksums) has passed, so a refused bundle
leaves nothing behind.

What is refused, and with which code (see :class:`~podium.bundles.BundleError`):

* 39: data that is not gzip (a plain tar is refused too: every Connect client sends
  gzip, and the compression-ratio defence needs a compressed size), a corrupt or
  truncated archive, absolute names, ``..`` components, NUL, backslash or control
  characters in names, device files, FIFOs, sparse files, a member that replaces another
  or sits inside a file or link, symlinks resolving outside the bundle (relative
  in-bundle symlinks are kept), hardlinks to anything but an earlier file.
* 40: an archive over ``max_bytes``, more than ``max_files`` members, file bytes over
  ``max_unpacked_bytes`` or over ``max_compression_ratio`` times the archive size (not
  applied below 1 MiB, so small, very compressible bundles pass). Bytes are metered as
  they are decompressed, headers included, so a bomb stops early.
* 38 / 104: the manifest checks in :func:`_check_contents`.

File modes come from the ``data`` filter: no setuid/setgid/sticky bits, nothing
group/other-writable, owner always read/write; everything is readable by everyone (and
folders searchable), since content runs as a uid of its own; ownership is never applied.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from .manifest import (
    CHECKSUM_MISMATCH,
    LIMIT_EXCEEDED,
    MANIFEST_INVALID,
    UNSAFE_ARCHIVE,
    BundleError,
    Manifest,
    bundle_path,
    parse_manifest,
)

_CHUNK = 64 * 1024
# Decompressed bytes tarfile may read per member beyond the member's own data: its
# header block(s), pax or GNU long-name records, padding, and tarfile's read-ahead.
_HEADER_ALLOWANCE = 64 * 1024
_RATIO_EXEMPT_BYTES = 1024 * 1024
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_MAX_NAME_BYTES = 2048  # leaves room for the data dir path within PATH_MAX
_MAX_COMPONENT_BYTES = 255
_SPECIAL_TYPES = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO (named pipe)",
}


@dataclass(frozen=True)
class BundleLimits:
    """Caps on one bundle; the server settings ``bundle_max_*`` fill them."""

    max_bytes: int  # compressed archive size
    max_unpacked_bytes: int  # total size of the regular files inside
    max_files: int  # members: files, directories and links
    max_compression_ratio: float  # unpacked / compressed; beyond it a gzip bomb


def unpack_bundle(archive: Path, dest: Path, limits: BundleLimits) -> Manifest:
    """Validate the gzip tar ``archive`` and extract it into ``dest``; return its manifest.

    ``dest`` must not exist (FileExistsError otherwise, before anything is read); its
    parent is created if needed. On any failure, BundleError or not, nothing is left at
    ``dest`` nor beside it.
    """
    dest = Path(dest)
    if os.path.lexists(dest):
        raise FileExistsError(f"bundle destination {dest} already exists")
    with open(archive, "rb") as raw:
        compressed = _check_archive(raw, limits)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=dest.parent))
        try:
            kinds = _extract(raw, tmp, limits, compressed)
            manifest = _check_contents(tmp, kinds)
            os.chmod(tmp, 0o755)  # mkdtemp made it 0o700; content jobs may run as another user
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def _check_archive(raw: BinaryIO, limits: BundleLimits) -> int:
    size = os.fstat(raw.fileno()).st_size
    if size > limits.max_bytes:
        raise BundleError(
            LIMIT_EXCEEDED,
            f"bundle archive is {size:,} bytes; the most accepted is {limits.max_bytes:,} "
            "(server setting bundle_max_bytes)",
        )
    if raw.read(2) != b"\x1f\x8b":
        raise BundleError(
            UNSAFE_ARCHIVE,
            "bundle is not a gzip-compressed tar archive; upload a .tar.gz with "
            "manifest.json at its root, as rsconnect makes",
        )
    raw.seek(0)
    return size


class _MeteredStream:
    """The decompressed archive as tarfile reads it, metered.

    tarfile may read only as far as the members accepted so far account for (their data
    plus a header allowance each), so a compression bomb hidden anywhere, in file data,
    pax headers or long names, is stopped after at most one allowance.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self.allowance = _HEADER_ALLOWANCE
        self.consumed = 0
        self.last_member = ""

    def grant(self, nbytes: int) -> None:
        self.allowance += nbytes

    def as_io(self) -> IO[bytes]:
        return cast(IO[bytes], self)  # tarfile needs only read(), which this provides

    def close(self) -> None:
        self._gzip.close()

    def read(self, size: int = -1) -> bytes:
        size = _CHUNK if size < 0 else size
        size = min(size, self.allowance - self.consumed + 1)
        try:
            data = self._gzip.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise BundleError(
                UNSAFE_ARCHIVE, f"bundle archive is corrupt or truncated (gzip: {exc})"
            ) from None
        self.consumed += len(data)
        if self.consumed > self.allowance:
            where = f" after member {_q(self.last_member)}" if self.last_member else ""
            raise BundleError(
                LIMIT_EXCEEDED,
                f"bundle archive expands to more data than its members account for{where}; "
                "refused as a likely compression bomb",
            )
        return data


def _extract(raw: BinaryIO, root: Path, limits: BundleLimits, compressed: int) -> dict[str, str]:
    """Check and extract every member; return {member name: kind} (implied dirs included)."""
    ratio_cap = max(limits.max_compression_ratio * compressed, _RATIO_EXEMPT_BYTES)
    kinds: dict[str, str] = {}
    count = unpacked = 0
    stream = _MeteredStream(raw)
    try:
        with closing(stream), tarfile.open(fileobj=stream.as_io(), mode="r|", errorlevel=2) as tar:
            for member in tar:
                count += 1
                if count > limits.max_files:
                    raise BundleError(
                        LIMIT_EXCEEDED,
                        f"bundle holds more than {limits.max_files:,} files and folders "
                        "(server setting bundle_max_files)",
                    )
                name = _clean_name(member.name)
                kind = _kind(member, name or ".")
                size = member.size if kind == "file" and not member.islnk() else 0
                if not name:  # the bundle root itself, "./"
                    if kind != "directory":
                        raise BundleError(UNSAFE_ARCHIVE, "member '.' is not a directory")
                    stream.grant(_HEADER_ALLOWANCE)
                    continue
                if unpacked + size > limits.max_unpacked_bytes:
                    raise BundleError(
                        LIMIT_EXCEEDED,
                        f"bundle unpacks to more than {limits.max_unpacked_bytes:,} bytes at "
                        f"member {_q(name)} (server setting bundle_max_unpacked_bytes)",
                    )
                if unpacked + size > ratio_cap:
                    raise BundleError(
                        LIMIT_EXCEEDED,
                        f"bundle unpacks to more than {limits.max_compression_ratio:g} times "
                        f"its compressed size ({compressed:,} bytes) at member {_q(name)}; "
                        "refused as a likely compression bomb (server setting "
                        "bundle_max_compression_ratio)",
                    )
                linkname = _check_link(member, name, kinds)
                _add(kinds, name, kind)
                stream.grant(_HEADER_ALLOWANCE + -(-size // 512) * 512)
                stream.last_member = name
                # Readable by every uid: content runs sandboxed as a uid of its own and
                # reads its bundle, which it must not be able to change (podium.isolation).
                mode = member.mode | (0o555 if member.isdir() else 0o444)
                tar.extract(
                    member.replace(name=name, linkname=linkname, mode=mode, deep=False), root, filter="data"
                )
                if size:
                    unpacked += os.lstat(root / name).st_size
    except tarfile.FilterError as exc:
        refused = exc.tarinfo.name if exc.tarinfo else "?"
        raise BundleError(
            UNSAFE_ARCHIVE, f"member {_q(refused)} was refused as unsafe ({type(exc).__name__})"
        ) from None
    except tarfile.TarError as exc:
        raise BundleError(
            UNSAFE_ARCHIVE, f"bundle archive is corrupt or truncated ({exc})"
        ) from None
    _check_symlinks_resolved(root, kinds)
    return kinds


def _q(name: str) -> str:
    """A name quoted for a message, shortened: names come from the archive, any length."""
    return repr(name if len(name) <= 100 else name[:60] + "..." + name[-30:])


def _refuse(message: str) -> BundleError:
    return BundleError(UNSAFE_ARCHIVE, message)


def _clean_name(raw: str, what: str = "member") -> str:
    """The member name relative to the bundle root, "" for the root; refuses tricks."""
    if any(c in "\x00\\" or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise _refuse(f"{what} {_q(raw)} has a NUL, backslash or control character in its name")
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(f"{what} {_q(raw)} has a name that is not UTF-8") from None
    if raw.startswith("/"):
        raise _refuse(f"{what} {_q(raw)} has an absolute path; bundle paths must be relative")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(f"{what} {_q(raw)} has a '..' component; bundle paths must stay inside it")
    if len(encoded) > _MAX_NAME_BYTES or any(len(p.encode()) > _MAX_COMPONENT_BYTES for p in parts):
        raise _refuse(f"{what} {_q(raw)} has a name too long to unpack")
    return "/".join(parts)


def _kind(member: tarfile.TarInfo, name: str) -> str:
    if member.isreg() or member.islnk():
        if member.sparse is not None or member.type == tarfile.GNUTYPE_SPARSE:
            raise _refuse(f"member {_q(name)} is a sparse file; bundles may not hold sparse files")
        return "file"
    if member.isdir():
        return "directory"
    if member.issym():
        return "symlink"
    what = _SPECIAL_TYPES.get(member.type, f"file of unknown tar type {member.type!r}")
    raise _refuse(
        f"member {_q(name)} is a {what}; bundles may hold only files, directories and links"
    )


def _check_link(member: tarfile.TarInfo, name: str, kinds: dict[str, str]) -> str:
    """Refuse a link that leaves the bundle; return the linkname to extract with."""
    target = member.linkname
    if member.issym():
        outside = _refuse(
            f"member {_q(name)} is a symlink to {_q(target)}, outside the bundle; links may only "
            "point inside the bundle"
        )
        if not target or target.startswith("/") or any(c in "\x00\\" for c in target):
            raise outside
        depth = name.count("/")  # directories above the link, within the bundle
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise outside
            elif part not in ("", "."):
                depth += 1
        return target
    if member.islnk():
        try:
            clean = _clean_name(target, "hardlink target")
        except BundleError:
            raise _refuse(
                f"member {_q(name)} is a hardlink to {_q(target)}, outside the bundle"
            ) from None
        if kinds.get(clean) != "file":
            raise _refuse(
                f"member {_q(name)} is a hardlink to {_q(target)}, which is not a file earlier in "
                "the bundle"
            )
        return clean
    return target


def _add(kinds: dict[str, str], name: str, kind: str) -> None:
    """Record a member; refuse one that replaces another or sits inside a non-directory."""
    parts = name.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        parent_kind = kinds.setdefault(parent, "directory")
        if parent_kind != "directory":
            raise _refuse(f"member {_q(name)} is inside {_q(parent)}, which is a {parent_kind}")
    previous = kinds.get(name)
    if previous == "directory" and kind != "directory":
        raise _refuse(f"member {_q(name)} would replace a directory with a {kind}")
    if previous is not None and kind != "directory":
        raise _refuse(f"member {_q(name)} appears more than once in the archive")
    if previous not in (None, "directory"):
        raise _refuse(f"member {_q(name)} would replace a {previous} with a directory")
    kinds[name] = kind


def _check_symlinks_resolved(root: Path, kinds: dict[str, str]) -> None:
    """Resolve every symlink on disk, now that all exist: chains of links can escape."""
    real_root = os.path.realpath(root)
    for name, kind in kinds.items():
        if kind == "symlink":
            real = os.path.realpath(root / name)
            if os.path.commonpath([real, real_root]) != real_root:
                raise _refuse(
                    f"member {_q(name)} is a symlink that resolves outside the bundle through "
                    "other links; links may only point inside the bundle"
                )


def _check_contents(root: Path, kinds: dict[str, str]) -> Manifest:
    """Parse manifest.json, verify the files it lists, and the static primary document."""
    kind = kinds.get("manifest.json")
    if kind is None:
        raise BundleError(
            MANIFEST_INVALID,
            "bundle has no manifest.json at its root; write one with `rsconnect "
            "write-manifest` and put it beside your content",
        )
    path = root / "manifest.json"
    if kind != "file" or os.lstat(path).st_size > _MAX_MANIFEST_BYTES:
        raise BundleError(
            MANIFEST_INVALID,
            f"manifest.json must be a regular file of at most {_MAX_MANIFEST_BYTES:,} bytes",
        )
    manifest = parse_manifest(path.read_bytes())
    for listed, entry in manifest.files.items():
        actual = _md5(root, kinds, bundle_path(listed))
        if actual is None:
            # Connect accepts it (a .gitignore'd file, say): the deploy log warns, see
            # missing_files; files that are present are still checked.
            continue
        if entry.checksum is not None and actual != entry.checksum:
            raise BundleError(
                CHECKSUM_MISMATCH,
                f"file {_q(listed)} does not match its checksum in manifest.json (expected "
                f"{entry.checksum}, got {actual}); rewrite the manifest and deploy again",
            )
    if manifest.appmode == "static":
        _check_primary_document(root, kinds, manifest)
    return manifest


def _md5(root: Path, kinds: dict[str, str], name: str) -> str | None:
    """MD5 hex of a bundle file (following in-bundle links), None if it is not a file."""
    if kinds.get(name) not in ("file", "symlink"):
        return None
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(root / name, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (IsADirectoryError, FileNotFoundError):
        return None
    return digest.hexdigest()


def _check_primary_document(root: Path, kinds: dict[str, str], manifest: Manifest) -> None:
    meta = manifest.metadata
    named = [
        (f, v)
        for f, v in (("primary_html", meta.primary_html), ("entrypoint", meta.entrypoint))
        if v
    ]
    for field, value in named:
        name = bundle_path(value)
        if kinds.get(name) not in ("file", "symlink") or not (root / name).is_file():
            raise BundleError(
                MANIFEST_INVALID,
                f"manifest.json: metadata.{field} {_q(value)} is not a file in the bundle; add "
                "it or name the bundle's main HTML file",
            )
    if not named and kinds.get("index.html") not in ("file", "symlink"):
        raise BundleError(
            MANIFEST_INVALID,
            "static bundle has no index.html and manifest.json names no metadata.primary_html; "
            "add one of them",
        )


def missing_files(manifest: dict[str, Any], root: Path) -> list[str]:
    """Files ``manifest`` lists that the unpacked bundle at ``root`` does not hold (the
    upload accepted them; a deploy says so as a warning)."""
    listed = manifest.get("files") or {}
    missing = []
    for name in listed:
        try:
            path = bundle_path(name)
        except BundleError:
            continue
        if not (root / path).is_file():
            missing.append(name)
    return missing
