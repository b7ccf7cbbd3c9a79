"""Photo → picture (api name ``/img2img``): upload or webcam, strength, style presets.

An edit model (FLUX.2 [klein], Qwen-Image-Edit Plus: core/families.py ``max_references``) also
takes up to :data:`webui.ui.common.MAX_REFERENCES` extra reference pictures (``reference_1`` …
``reference_4``); they go through the one run path as ``edit:<j>`` (scrubbed, spooled, shredded
like the photo). For any other model the section is hidden and a stale picture in it is not
used (the status says so)."""

from __future__ import annotations

import gradio as gr

from core.engine import MAX_PROMPT_CHARS
from core.errors import InputError
from privacy.errors import PrivacyError
from webui.components import PrivateImage, RawSlider
from webui.studio import Studio
from webui.ui.common import (
    MAX_REFERENCES,
    cancel_button,
    checked_request,
    default_family,
    family_controls,
    for_family,
    label,
    model_info,
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
            shown = default_family(studio)
            with gr.Accordion(label("edit_references"), open=True, elem_id="edit-references",
                              visible=shown is not None and shown.references > 0) as section:
                with gr.Row():
                    references = [
                        PrivateImage(label=f"{j + 1}", sources=["upload"], type="filepath",
                                     image_mode=None, buttons=[], format="png", height=120,
                                     elem_id=f"img2img-reference-{j + 1}")
                        for j in range(MAX_REFERENCES)
                    ]
            negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                  max_length=MAX_PROMPT_CHARS, elem_id="img2img-negative",
                                  visible=shown is None or shown.negative_prompt)
            strength = RawSlider(0.05, 1.0, value=0.6, step=0.05, label=label("strength"),
                                 elem_id="strength")
            controls = settings_controls(studio, with_size=False)
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="img2img-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    controls.add_lora_to(studio, prompt)
    controls.follow_model(studio, negative, references=section)

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
        reference_1: str | None = None,
        reference_2: str | None = None,
        reference_3: str | None = None,
        reference_4: str | None = None,
        request: gr.Request | None = None,
    ):
        viewer = viewer_of(studio, request)
        from webui.i18n import error_text, language_of, text

        lang = language_of(request)
        if not image:
            raise gr.Error(text("no_photo", lang), print_exception=False)
        sent = [r for r in (reference_1, reference_2, reference_3, reference_4) if r]
        try:
            # Every upload is taken (read once, deleted) whether it is used or not.
            data = take_photo(studio, viewer, image)
            extra: list[bytes] = [b for b in (take_photo(studio, viewer, r) for r in sent) if b]
        except (InputError, PrivacyError) as err:  # gone or not this user's
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        generation = checked_request(
            studio, request, prompt, negative_prompt, style, model, sampler, num_inference_steps,
            guidance_scale, width, height, seed, batch_size, strength, vae=vae,
            clip_skip=clip_skip,
        )
        generation, ignored = for_family(studio, generation, guidance_default=True)
        info = model_info(studio, generation.model)
        takes = family_controls(info).references if info is not None else 0
        if extra and not takes:
            ignored.append("references")  # hidden for this model: a stale picture
            extra = []
        elif len(extra) > takes:
            ignored.append("references")  # more than the model takes: the first ones are used
            extra = extra[:takes]
        async for update in stream(studio, request, generation, photo=data, references=extra,
                                   ignored=ignored):
            yield update

    go.click(
        img2img,
        [photo, prompt, negative, strength, *controls.inputs(), controls.batch,
         *controls.library_inputs(), *references],
        out.list(controls.last_seed),
        api_name="img2img",
        concurrency_limit=None,
        show_progress="minimal",
    )
    # The job is cancelled in core (it stops within one step); the running event then
    # reports "Cancelled." itself and ends.
    stop.click(on_cancel(studio), None, None, api_visibility="private")
