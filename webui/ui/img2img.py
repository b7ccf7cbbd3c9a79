"""Photo → picture (api name ``/img2img``): upload or webcam, strength, style presets."""

from __future__ import annotations

import gradio as gr

from core.engine import MAX_PROMPT_CHARS
from core.errors import InputError
from privacy.errors import PrivacyError
from webui.components import PrivateImage, RawSlider
from webui.studio import Studio
from webui.ui.common import (
    cancel_button,
    checked_request,
    label,
    on_cancel,
    output_panel,
    settings_controls,
    stream,
    take_photo,
    viewer_of,
)


def build(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            photo = PrivateImage(label=label("photo"), sources=["upload", "webcam"],
                                 type="filepath", image_mode=None, buttons=[],
                                 format="png", elem_id="img2img-photo", height=320)
            gr.Markdown(label("photo_help"))
            prompt = gr.Textbox("", label=label("prompt"), placeholder=label("prompt_placeholder"),
                                lines=2, max_length=MAX_PROMPT_CHARS, elem_id="img2img-prompt")
            negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                  max_length=MAX_PROMPT_CHARS)
            strength = RawSlider(0.05, 1.0, value=0.6, step=0.05, label=label("strength"),
                                 elem_id="strength")
            controls = settings_controls(studio, with_size=False)
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="img2img-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    controls.add_lora_to(studio, prompt)

    async def img2img(
        image: str | None = None,
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
        from webui.i18n import error_text, language_of, text

        lang = language_of(request)
        if not image:
            raise gr.Error(text("no_photo", lang), print_exception=False)
        try:
            data = take_photo(studio, viewer, image)
        except (InputError, PrivacyError) as err:  # gone or not this user's
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        generation = checked_request(
            studio, request, prompt, negative_prompt, style, model, sampler, num_inference_steps,
            guidance_scale, width, height, seed, batch_size, strength, vae=vae,
            clip_skip=clip_skip,
        )
        async for update in stream(studio, request, generation, photo=data):
            yield update

    go.click(
        img2img,
        [photo, prompt, negative, strength, *controls.inputs(), controls.batch,
         *controls.library_inputs()],
        out.list(controls.last_seed),
        api_name="img2img",
        concurrency_limit=None,
        show_progress="minimal",
    )
    # The job is cancelled in core (it stops within one step); the running event then
    # reports "Cancelled." itself and ends.
    stop.click(on_cancel(studio), None, None, api_visibility="private")
