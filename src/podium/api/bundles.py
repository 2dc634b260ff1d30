"""``v1/content/{guid}/bundles``: upload, list, read, download and delete bundles.

Uploads arrive as a raw gzip tar (chunked with no content type from rsconnect,
sized from posit-sdk) or as ``multipart/form-data`` with ``archive`` and
``metadata``. The archive is streamed to a temporary file under a size cap,
unpacked and checked by :mod:`podium.bundles`, and only then recorded: a
refused bundle leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from podium import audit, errors
from podium.api import deps
from podium.api.content import describe, managed_content, visible_content
from podium.api.lookup import found
from podium.api.serialize import bundle_json
from podium.bundles import BundleError, BundleLimits, unpack_bundle
from podium.layout import DataLayout
from podium.settings import Settings
from podium.store.models import Bundle, Content, GitRepository, User

router = APIRouter()
_CHUNK = 1 << 16


def bundle_limits(s: Settings) -> BundleLimits:
    return BundleLimits(
        max_bytes=s.bundle_max_bytes,
        max_unpacked_bytes=s.bundle_max_unpacked_bytes,
        max_files=s.bundle_max_files,
        max_compression_ratio=s.bundle_max_compression_ratio,
    )


def _too_big(limit: int) -> errors.ApiError:
    return errors.ApiError(
        413, 40, f"The bundle is larger than the server's limit of {limit} bytes "
        "(setting bundle_max_bytes); remove large files or ask an administrator to raise it."
    )


class _Sink:
    """A temporary file that hashes what it is given and enforces the size cap."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.path = directory / f"upload-{uuid.uuid4().hex}.tar.gz"
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in finish()/discard()
        self._limit = limit
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha1 = hashlib.sha1(usedforsecurity=False)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise _too_big(self._limit)
        self.md5.update(chunk)
        self.sha1.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


async def _receive(request: Request, sink: _Sink) -> dict[str, Any]:
    """Stream the archive into ``sink``; returns the bundle metadata sent with it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > sink._limit + 1_000_000:
        raise _too_big(sink._limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        async for chunk in request.stream():
            sink.write(chunk)
        return {}
    form = await request.form(max_files=1, max_fields=10)
    try:
        archive = form.get("archive")
        if not isinstance(archive, UploadFile):
            raise errors.bad_request(
                "A multipart bundle upload needs a file part named 'archive'.", code=38
            )
        while chunk := await archive.read(_CHUNK):
            sink.write(chunk)
        raw = form.get("metadata")
        if raw is None:
            return {}
        try:
            metadata = json.loads(raw if isinstance(raw, str) else await raw.read())
        except ValueError as exc:
            raise errors.invalid_json(f"bundle metadata: {exc}") from None
        if not isinstance(metadata, dict):
            raise errors.invalid_json("bundle metadata must be a JSON object")
        return {str(k): v for k, v in metadata.items()}
    finally:
        await form.close()


def _check_checksum(request: Request, sink: _Sink) -> None:
    expected = request.headers.get("x-content-checksum")
    if expected and expected.strip() != base64.b64encode(sink.md5.digest()).decode():
        raise errors.ApiError(
            400, 104, "The X-Content-Checksum header does not match the uploaded bundle's MD5; "
            "the upload was probably corrupted: try again."
        )


@router.post("/v1/content/{guid}/bundles")
async def upload_bundle(
    guid: str,
    request: Request,
    settings: Settings = Depends(deps.settings),
    layout: DataLayout = Depends(deps.layout),
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> dict[str, Any]:
    content = managed_content(session, user, guid)
    if settings.git_enabled and session.scalar(
        select(GitRepository.id).where(GitRepository.content_id == content.id)
    ) is not None:
        raise errors.bad_request(
            "This content is deployed from a git repository, so bundles cannot be uploaded to it; "
            "push to the repository, or stop following it (DELETE .../repository) first.",
            code=144,
        )
    limits = bundle_limits(settings)
    sink = _Sink(layout.tmp(), limits.max_bytes)
    unpacked = layout.tmp() / f"unpack-{uuid.uuid4().hex}"
    try:
        metadata = await _receive(request, sink)
        sink.finish()
        _check_checksum(request, sink)
        try:
            manifest = await asyncio.to_thread(unpack_bundle, sink.path, unpacked, limits)
        except BundleError as exc:
            raise errors.ApiError(exc.status, exc.code, exc.message) from None
        bundle = Bundle(
            content_id=content.id,
            created_by_id=user.id,
            size=sink.size,
            archive_md5=sink.md5.hexdigest(),
            archive_sha1=sink.sha1.hexdigest(),
            app_mode=manifest.metadata.appmode,
            manifest=manifest.model_dump(mode="json", exclude_none=True),
            bundle_metadata=metadata,
        )
        session.add(bundle)
        session.flush()
        archive_path = layout.bundle_archive(content.id, bundle.id)
        bundle_path = layout.bundle_dir(content.id, bundle.id)
        archive_path.parent.mkdir(parents=True, exist_ok=True)
        bundle_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(sink.path, archive_path)
        os.rename(unpacked, bundle_path)
        audit.record(
            session, user, "upload_bundle",
            f"Uploaded bundle {bundle.id} ({bundle.app_mode}, {bundle.size} bytes) to content "
            f"{describe(content)}.",
        )
        try:
            session.commit()
        except BaseException:
            archive_path.unlink(missing_ok=True)
            shutil.rmtree(bundle_path, ignore_errors=True)
            raise
        return bundle_json(bundle, content)
    finally:
        sink.discard()
        shutil.rmtree(unpacked, ignore_errors=True)


def load_bundle(session: Session, content: Content, bundle_id: str | int | None) -> Bundle:
    """The bundle ``bundle_id`` of ``content``; code 82 when it belongs elsewhere."""
    ident = str(bundle_id)
    if not ident.isdigit():
        raise errors.invalid_id("bundle", ident)
    bundle = found(session.get(Bundle, int(ident)), "bundle", ident)
    if bundle.content_id != content.id:
        raise errors.bad_request(f"Bundle {ident} does not belong to this content.", code=82)
    return bundle


@router.get("/v1/content/{guid}/bundles")
def list_bundles(
    guid: str,
    session: Session = Depends(deps.db),
    user: User = Depends(deps.user),
) -> list[dict[str, Any]]:
    content = managed_content(session, user, guid)
    bundles = session.scalars(
        select(Bundle).where(Bundle.content_id == content.id).order_by(Bundle.id.desc())
    )
    return [bundle_json(b, content) for b in bundles]


@router.get("/v1/content/{guid}/bundles/{bundle_id}")
def get_bundle(
    guid: str,
    bundle_id: str,
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> dict[str, Any]:
    content = managed_content(session, who.user, guid)
    return bundle_json(load_bundle(session, content, bundle_id), content)


@router.get("/v1/content/{guid}/bundles/{bundle_id}/download")
def download_bundle(
    guid: str,
    bundle_id: str,
    layout: DataLayout = Depends(deps.layout),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> Response:
    content = managed_content(session, who.user, guid)
    bundle = load_bundle(session, content, bundle_id)
    return FileResponse(
        layout.bundle_archive(content.id, bundle.id),
        media_type="application/gzip",
        filename=f"bundle-{bundle.id}.tar.gz",
    )


@router.delete("/v1/content/{guid}/bundles/{bundle_id}", status_code=204)
def delete_bundle(
    guid: str,
    bundle_id: str,
    layout: DataLayout = Depends(deps.layout),
    session: Session = Depends(deps.db),
    who: deps.Caller = Depends(deps.caller),
) -> Response:
    content = managed_content(session, who.user, guid)
    bundle = load_bundle(session, content, bundle_id)
    if content.bundle_id == bundle.id:
        raise errors.bad_request(
            "The active bundle cannot be deleted; activate another bundle first.", code=75
        )
    session.delete(bundle)
    session.commit()
    layout.bundle_archive(content.id, bundle.id).unlink(missing_ok=True)
    shutil.rmtree(layout.bundle_dir(content.id, bundle.id), ignore_errors=True)
    return Response(status_code=204)


__all__ = ["router", "load_bundle", "visible_content"]
