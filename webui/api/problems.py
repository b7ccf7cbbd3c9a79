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
    # The model library (issue 11): LoRA tags and prompt weights are written in the prompt.
    **{code: "prompt" for code in (
        "lora_bad_tag", "lora_bad_weight", "lora_weight_out_of_range", "too_many_loras",
        "lora_not_found", "lora_wrong_arch", "lora_unusable", "lora_damaged", "lora_mismatch",
        "unknown_lora", "lora_refused", "unknown_embedding", "embedding_refused",
        "prompt_bad_weight", "prompt_weight_out_of_range", "prompt_too_complex",
        "prompt_weights_unusable",
    )},
    **{code: "sd_vae" for code in (
        "bad_vae", "vae_not_found", "vae_wrong_arch", "vae_unusable", "vae_damaged",
        "vae_mismatch", "unknown_vae", "vae_refused", "vae_unsupported",
    )},
    "clip_skip_out_of_range": "CLIP_stop_at_last_layers",
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


# pydantic's error types → the sentence after "field: ".
SENTENCES = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_type": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "string_unicode": "contains characters that are not valid text",
    "string_too_long": "is too long; keep it under {max_length} characters",
    "too_long": "has too many entries; send at most {max_length}",
    "list_type": "must be a list",
    "dict_type": "must be an object",
}
# A range error of a field the engine also checks keeps the engine's code.
RANGE_CODES = {
    **{name: code for code, name in FIELD_OF_CODE.items() if code.endswith("_out_of_range")},
    "height": "size_out_of_range",
    "n_iter": "n_iter_out_of_range",
}


def validation_problem(err: ValidationError) -> ApiError:
    """The first bad field of a request body, named, with the range when it has one
    (``mask_blur: must be between 0 and 64.``). Never the value sent."""
    first = err.errors(include_url=False, include_input=False)[0]
    location = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    field = ".".join(location) or None
    if field is None:
        return ApiError(422, "invalid_body", "The request body must be a JSON object.")
    kind = str(first.get("type", ""))
    context = {key: str(value) for key, value in (first.get("ctx") or {}).items()}
    code = "invalid_value"
    if kind in ("out_of_range", "bool_not_number"):
        message = str(first.get("msg", "invalid value"))  # our own sentences (schemas.py)
        code = RANGE_CODES.get(field, "out_of_range") if kind == "out_of_range" else code
    elif kind in SENTENCES:
        try:
            message = SENTENCES[kind].format(**context)
        except (KeyError, IndexError):
            message = "invalid value"
    else:
        message = "invalid value"
    if field in ("prompt", "negative_prompt") and kind == "string_unicode":
        code = "prompt_not_text"
    elif field in ("prompt", "negative_prompt") and kind == "string_too_long":
        code = "prompt_too_long"
    return ApiError(422, code, f"{field}: {message}.", field)
