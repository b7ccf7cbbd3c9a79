"""Text → picture (api name ``/txt2img``)."""

from __future__ import annotations

import gradio as gr

from core.engine import MAX_PROMPT_CHARS
from webui.studio import Studio
from webui.ui.common import (
    cancel_button,
    checked_request,
    label,
    on_cancel,
    output_panel,
    settings_controls,
    stream,
)


def build(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox("", label=label("prompt"), placeholder=label("prompt_placeholder"),
                                lines=3, max_length=MAX_PROMPT_CHARS, elem_id="txt2img-prompt")
            negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                  max_length=MAX_PROMPT_CHARS,
                                  placeholder=label("negative_placeholder"))
            controls = settings_controls(studio)
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="txt2img-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    controls.add_lora_to(studio, prompt)

    async def txt2img(
        prompt: str | None = None,
        negative_prompt: str | None = None,
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
        generation = checked_request(
            studio, request, prompt, negative_prompt, style, model, sampler, num_inference_steps,
            guidance_scale, width, height, seed, batch_size, vae=vae, clip_skip=clip_skip,
        )
        async for update in stream(studio, request, generation):
            yield update

    go.click(
        txt2img,
        [prompt, negative, *controls.inputs(), controls.batch, *controls.library_inputs()],
        out.list(controls.last_seed),
        api_name="txt2img",
        concurrency_limit=None,
        show_progress="minimal",
    )
    # The job is cancelled in core (it stops within one step); the running event then
    # reports "Cancelled." itself and ends.
    stop.click(on_cancel(studio), None, None, api_visibility="private")
