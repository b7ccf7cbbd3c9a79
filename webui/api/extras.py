"""``extra-single-image`` and ``extra-batch-images``: AUTOMATIC1111's upscale, on the one run path.

This module only maps fields: an extras body → a :class:`core.engine.Upscale` job with the
picture as the run's ``photo`` (:class:`webui.run.RunImage`) → :func:`webui.run.paint`, which
scrubs, checks, spools, runs, shreds and labels it exactly as it does an img2img photo (no
privacy code here) → AUTOMATIC1111's answer (``image`` / ``images`` and ``html_info``).

A batch runs its pictures one after another, each its own run (scrubbed, spooled and shredded on
its own); a caller who hangs up cancels the run in progress and the rest never start. Upscaled
pictures are handed back, never kept: extras has no ``save_images``. The ``name`` of a batch
entry is a file name and is never used.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from core.engine import GenerationRequest, Upscale
from core.errors import InputError
from privacy.errors import PrivacyError
from webui.api.generation import run_for_caller
from webui.api.pictures import decode_base64
from webui.api.problems import ApiError, input_problem
from webui.api.schemas import ExtrasBatchImagesRequest, ExtrasFields, ExtrasSingleImageRequest
from webui.run import Answer, RunImage, RunInputs
from webui.studio import Studio

# Engine codes → the extras field they are about.
FIELD_OF_CODE = {
    "upscale_scale_out_of_range": "upscaling_resize",
    "upscale_size_out_of_range": "upscaling_resize_w",
    "upscale_visibility_out_of_range": "extras_upscaler_2_visibility",
    "upscale_latent_mode": "upscaler_1",
    "unknown_upscaler": "upscaler_1",
    "upscaler_refused": "upscaler_1",
    "upscaler_unavailable": "upscaler_1",
    "upscaler_load_failed": "upscaler_1",
    "upscaler_not_upscaler": "upscaler_1",
    "upscaler_missing": "upscaler_1",
    "upscale_too_large": "upscaling_resize",
}


def upscale_of(body: ExtrasFields) -> Upscale:
    """AUTOMATIC1111's extras fields as the engine's :class:`Upscale`."""
    to_box = body.resize_mode == 1
    return Upscale(
        scale=body.upscaling_resize,
        width=body.upscaling_resize_w if to_box else 0,
        height=body.upscaling_resize_h if to_box else 0,
        crop=body.upscaling_crop,
        upscaler=body.upscaler_1,
        upscaler_2=body.upscaler_2,
        upscaler_2_visibility=body.extras_upscaler_2_visibility if body.upscaler_2 != "None"
        else 0.0,
    )


class Extras:
    """Runs extras calls for callers of one studio."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    @property
    def body_limit(self) -> int:
        # As img2img's: the pictures of one call together, in base64, plus room for the rest.
        return 3 * self.studio.max_upload_bytes + 1_000_000

    async def single(self, request: Request, owner: str,
                     body: ExtrasSingleImageRequest) -> Response:
        text, body.image = body.image, ""
        picture = await asyncio.to_thread(decode_base64, text, "image",
                                          self.studio.max_upload_bytes)
        del text
        answer = await self._run(request, owner, upscale_of(body), picture, "image")
        if answer is None:
            return Response(status_code=499)  # the caller hung up; nobody reads it
        images, info = _pictures(answer)
        return JSONResponse(
            {"html_info": info, "image": images[0] if images else "",
             "obscura_ignored": body.ignored()},
            headers={"cache-control": "no-store"},
        )

    async def batch(self, request: Request, owner: str,
                    body: ExtrasBatchImagesRequest) -> Response:
        if not body.imageList:
            raise ApiError(422, "missing_image", "imageList: send at least one base64 picture.",
                           "imageList")
        texts = [entry.data for entry in body.imageList]
        body.imageList = []  # the names are never looked at
        upscale = upscale_of(body)
        limit = self.studio.max_upload_bytes
        images: list[str] = []
        infos: list[str] = []
        for index in range(len(texts)):
            field = f"imageList.{index}.data"
            picture = await asyncio.to_thread(decode_base64, texts[index], field, limit)
            texts[index] = ""
            answer = await self._run(request, owner, upscale, picture, field)
            del picture
            if answer is None:
                return Response(status_code=499)
            pictures, info = _pictures(answer)
            images.extend(pictures)
            infos.append(info)
        return JSONResponse(
            {"html_info": "\n".join(infos), "images": images, "obscura_ignored": body.ignored()},
            headers={"cache-control": "no-store"},
        )

    async def _run(self, request: Request, owner: str, upscale: Upscale, picture: bytes,
                   field: str) -> Answer | None:
        """One picture through the run path; ``None`` when the caller hung up (cancelled)."""
        inputs = RunInputs(
            request=GenerationRequest(prompt="", upscale=upscale),
            images=[RunImage("photo", picture)],
            save=False,
        )
        del picture

        try:
            return await run_for_caller(self.studio, owner, inputs, request)
        except (InputError, PrivacyError) as err:
            raise _problem(err, field) from None


def _problem(err: Exception, image_field: str) -> ApiError:
    code = str(getattr(err, "code", ""))
    if code == "shutting_down":
        return ApiError(503, "shutting_down", str(err), headers={"retry-after": "10"})
    params: Any = getattr(err, "params", None) or {}
    field = image_field if params.get("image") else FIELD_OF_CODE.get(code)
    if code.startswith("upload_") or code.startswith("scrub_") or code == "not_an_image":
        field = image_field
    return input_problem(err, field)


def _pictures(answer: Answer) -> tuple[list[str], str]:
    images = [base64.b64encode(picture.png).decode("ascii") for picture in answer.pictures]
    info = "\n".join(picture.infotext for picture in answer.pictures)
    return images, info
