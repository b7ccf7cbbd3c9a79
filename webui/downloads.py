"""``GET /my/pictures.zip``: all of the viewer's gallery pictures, decrypted with the key
unlocked at login and zipped in memory. No plaintext file is written, not even a temporary
one; the response is ``no-store``."""

from __future__ import annotations

import asyncio
import io
import zipfile

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from privacy.errors import PrivacyError
from webui.i18n import error_text, language_of, text
from webui.studio import Studio

_NOT_LOGGED_IN = PrivacyError("not_logged_in", "Log in first.")


def zip_of_pictures(studio: Studio, user_id: str, private_key: bytes) -> bytes:
    gallery = studio.gallery
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        if gallery is not None:
            for index, info in enumerate(gallery.list(user_id), start=1):
                try:
                    picture = gallery.open(user_id, info.id, private_key)
                except PrivacyError:
                    continue  # a damaged picture is left out
                stamp = info.created.strftime("%Y%m%d-%H%M")
                bundle.writestr(f"obscura-{stamp}-{index}.{info.kind}", picture)
    return buffer.getvalue()


def routes(studio: Studio) -> APIRouter:
    router = APIRouter()

    @router.get("/my/pictures.zip", include_in_schema=False)
    async def my_pictures(request: Request) -> Response:
        viewer = studio.gate.viewer_of(request)
        if viewer is None:
            return JSONResponse({"error": error_text(_NOT_LOGGED_IN, language_of(request))}, 401)
        if viewer.session is None:  # an API token: it never unlocks the gallery
            return JSONResponse({"error": text("zip_needs_login", language_of(request))}, 403)
        key = viewer.session.private_key
        archive = await asyncio.to_thread(zip_of_pictures, studio, viewer.user_id, key)
        return Response(archive, media_type="application/zip", headers={
            "content-disposition": 'attachment; filename="obscura-pictures.zip"',
            "cache-control": "no-store",
        })

    return router
