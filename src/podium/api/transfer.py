"""``/__api__/internal/transfer``: job pods fetch and upload their files (no shared volume).

Pods of the Kubernetes backend with ``kubernetes_shared_volume = false`` call it with
a token of their own (``Authorization: Bearer ...``), and nothing else: the token
alone says which paths (:mod:`podium.runtime.transfer`). ``GET`` answers a tar of the
paths a fetch token names; ``PUT`` replaces the folder an upload token names with the
folder of the tar sent. A token works once, until it expires; any
other token is refused with 403 and the same message, whatever the reason.
"""

from __future__ import annotations

import asyncio
import logging
import tarfile
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from podium import errors
from podium.api import deps
from podium.runtime.transfer import Action, Grant, TransferRefused, TransferTokens, pack, unpack_upload

log = logging.getLogger(__name__)
router = APIRouter()
PATH = "/internal/transfer"


def _redeem(request: Request, tokens: TransferTokens, action: Action) -> Grant:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token:
            raise TransferRefused("no bearer token")
        return tokens.redeem(token.strip(), action)
    except TransferRefused:
        log.warning("transfer: refused a %s from %s", action, request.client.host if request.client else "?")
        raise errors.ApiError(403, 5, "This transfer token is not valid: unknown, used or expired.") from None


@router.get(PATH, include_in_schema=False)
async def fetch(request: Request, tokens: TransferTokens = Depends(deps.transfer_tokens)) -> Response:
    grant = _redeem(request, tokens, "fetch")
    archive = tempfile.NamedTemporaryFile(prefix="podium-transfer-", suffix=".tar", delete=False)  # noqa: SIM115
    try:
        await asyncio.to_thread(pack, grant.paths, archive)
    finally:
        archive.close()
    log.info("transfer: job %s (content %s) fetched %d paths", grant.job_key, grant.content_guid, len(grant.paths))
    return FileResponse(archive.name, media_type="application/x-tar",
                        background=BackgroundTask(Path(archive.name).unlink, missing_ok=True))


@router.put(PATH, include_in_schema=False)
async def upload(request: Request, tokens: TransferTokens = Depends(deps.transfer_tokens)) -> Response:
    grant = _redeem(request, tokens, "upload")
    with tempfile.TemporaryFile(prefix="podium-transfer-") as archive:
        async for chunk in request.stream():
            archive.write(chunk)
        archive.seek(0)
        try:
            await asyncio.to_thread(unpack_upload, archive, Path(str(grant.paths[0])), tokens.root,
                                    grant.absolute_links)
        except (OSError, ValueError, tarfile.TarError) as error:
            log.warning("transfer: job %s (content %s): upload refused: %s", grant.job_key, grant.content_guid, error)
            raise errors.bad_request(f"The upload could not be unpacked: {error}") from None
    log.info("transfer: job %s (content %s) uploaded %s", grant.job_key, grant.content_guid, grant.paths[0])
    return Response(status_code=204)
