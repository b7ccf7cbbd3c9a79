"""JSON errors of the API: one sentence, a stable code, and the field at fault when there is one.

Shape: ``{"error": code, "detail": sentence, "field": name}`` (``field`` only when one field is
at fault). ``detail`` is the key AUTOMATIC1111 clients print. Sentences never repeat a prompt,
a user name or an image.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from core.errors import InputError

# core's error codes → the AUTOMATIC1111 field they are about.
FIELD_OF_CODE = {
    "bad_prompt": "prompt",
    "prompt_too_long": "prompt",
    "steps_out_of_range": "steps",
    "guidance_out_of_range": "cfg_scale",
    "batch_out_of_range": "batch_size",
    "seed_out_of_range": "seed",
    "strength_out_of_range": "denoising_strength",
    "size_out_of_range": "width",
    "unknown_sampler": "sampler_name",
    "unknown_model": "sd_model_checkpoint",
    "model_refused": "sd_model_checkpoint",
    "model_load_failed": "sd_model_checkpoint",
    "model_out_of_memory": "sd_model_checkpoint",
    "mask_size_mismatch": "mask",
    "mask_without_image": "init_images",
    "bad_style": "styles",
}
TOO_LARGE = {"upload_too_large", "upload_too_many_pixels", "body_too_large"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field = status, code, detail, field
        self.headers = headers

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        headers = {"cache-control": "no-store", **(self.headers or {})}
        return JSONResponse(body, status_code=self.status, headers=headers)


def input_problem(err: Exception, field: str | None = None) -> ApiError:
    """A 422 (413 for too-large pictures) from core's or privacy's one-sentence errors."""
    code = str(getattr(err, "code", "invalid_value"))
    field = field or FIELD_OF_CODE.get(code)
    status = 413 if code in TOO_LARGE else 422
    detail = str(err) if isinstance(err, InputError | ValueError) else "The request is invalid."
    if field is not None and not detail.startswith(field):
        detail = f"{field}: {detail}"
    return ApiError(status, code, detail, field)


def validation_problem(err: ValidationError) -> ApiError:
    """The first bad field of a request body, named."""
    first = err.errors(include_url=False, include_input=False)[0]
    location = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    field = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if field is None:
        return ApiError(422, "invalid_body", "The request body must be a JSON object.")
    return ApiError(422, "invalid_value", f"{field}: {message}.", field)
