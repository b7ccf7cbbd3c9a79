"""Inpaint (api name ``/inpaint``): paint over the parts of a photo to repaint.

``image`` is the mask painter's value (``{"background": photo, "layers": [...],
"composite": ...}``); ``mask`` is an optional mask file (white = repaint) that wins over the
painted layers, handy for scripts."""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.engine import MAX_PROMPT_CHARS
from core.errors import InputError
from privacy.errors import PrivacyError
from privacy.scrub import scrub_mask
from webui.components import PrivateImage, PrivateImageMask, RawSlider
from webui.i18n import error_text, language_of, text
from webui.run import painted_mask as mask_from_layers
from webui.studio import Studio
from webui.ui.common import (
    cancel_button,
    checked_request,
    default_family,
    for_family,
    label,
    on_cancel,
    output_panel,
    settings_controls,
    stream,
    take_photo,
    viewer_of,
)
from webui.uploads import EDITOR_FILES


def build(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            editor = PrivateImageMask(
                label=label("mask_editor"), sources=["upload"], type="filepath",
                image_mode="RGBA", layers=False, transforms=(), buttons=[],
                brush=gr.Brush(colors=["#ffffff"], default_color="#ffffff", color_mode="fixed"),
                elem_id="inpaint-editor", height=380, format="png",
            )
            gr.Markdown(label("mask_help"))
            with gr.Accordion(label("mask_editor"), open=False, visible=False):
                mask_file = PrivateImage(label="mask", type="filepath", image_mode=None,
                                         sources=["upload"], buttons=[], format="png")
            prompt = gr.Textbox("", label=label("prompt"), lines=2, max_length=MAX_PROMPT_CHARS,
                                elem_id="inpaint-prompt")
            shown = default_family(studio)
            negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                  max_length=MAX_PROMPT_CHARS, elem_id="inpaint-negative",
                                  visible=shown is None or shown.negative_prompt)
            strength = RawSlider(0.05, 1.0, value=0.9, step=0.05, label=label("strength"))
            controls = settings_controls(studio, with_size=False)
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="inpaint-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    controls.add_lora_to(studio, prompt)
    controls.follow_model(studio, negative)

    async def inpaint(
        image: dict[str, Any] | None = None,
        mask: str | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        strength: float | None = None,
        style: str | None = None,
        model: str | None = None,
        sampler: str | None = None,
        num_inference_steps: float | None = None,
        guidance_scale: float | None = None,
        width: float | None = None,
        height: float | None = None,
        seed: float | None = None,
        batch_size: float | None = None,
        vae: str | None = None,
        clip_skip: float | None = None,
        request: gr.Request | None = None,
    ):
        viewer = viewer_of(studio, request)
        lang = language_of(request)
        image = image or {}
        sources = [image.get("background"), image.get("composite"), *(image.get("layers") or [])]
        try:
            # Every file the editor sent is read once and deleted now, used or not.
            raw = [take_photo(studio, viewer, source) for source in sources]
            mask_bytes = take_photo(studio, viewer, mask) if mask else None
            studio.uploads.discard_pending(viewer.user_id, EDITOR_FILES)
            photo, layer_bytes = raw[0], [data for data in raw[2:] if data]
            if photo is None:
                raise gr.Error(text("no_photo", lang), print_exception=False)
            limits = {"max_bytes": studio.max_upload_bytes,
                      "max_pixels": studio.max_upload_pixels}
            layers = [scrub_mask(mask_bytes, **limits)] if mask_bytes else [
                scrub_mask(data, **limits) for data in layer_bytes
            ]
            size = layers[0].size if layers else (1, 1)
            painted = mask_from_layers(layers, size) if layers else None
        except gr.Error:
            raise
        except (InputError, PrivacyError) as err:  # gone, not this user's, not a picture
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        if painted is None:
            raise gr.Error(text("no_mask", lang), print_exception=False)
        generation = checked_request(
            studio, request, prompt, negative_prompt, style, model, sampler, num_inference_steps,
            guidance_scale, width, height, seed, batch_size, strength, vae=vae,
            clip_skip=clip_skip,
        )
        generation, ignored = for_family(studio, generation, guidance_default=True)
        async for update in stream(studio, request, generation, photo=photo, mask=painted,
                                   ignored=ignored):
            yield update

    go.click(
        inpaint,
        [editor, mask_file, prompt, negative, strength, *controls.inputs(), controls.batch,
         *controls.library_inputs()],
        out.list(controls.last_seed),
        api_name="inpaint",
        concurrency_limit=None,
        show_progress="minimal",
    )
    # The job is cancelled in core (it stops within one step); the running event then
    # reports "Cancelled." itself and ends.
    stop.click(on_cancel(studio), None, None, api_visibility="private")
