"""Text → picture (api name ``/txt2img``), with AUTOMATIC1111's hires fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.engine import MAX_PROMPT_CHARS, MAX_SIZE, MAX_STEPS, HiresFix
from core.errors import InputError
from core.hires import MAX_HIRES_SCALE
from core.upscale import DEFAULT_LATENT_MODE
from webui.components import RawNumber, RawSlider
from webui.i18n import error_text
from webui.studio import Studio
from webui.ui.common import (
    _finite,
    _whole,
    cancel_button,
    checked_request,
    default_family,
    for_family,
    label,
    lang_of,
    on_cancel,
    output_panel,
    settings_controls,
    stream,
)
from webui.ui.upscale import upscaler_choices


@dataclass
class HiresControls:
    enable: gr.Checkbox
    upscaler: gr.Dropdown
    scale: RawSlider
    steps: RawSlider
    denoising: RawSlider
    resize_x: RawNumber
    resize_y: RawNumber
    section: gr.Accordion | None = None  # hidden for the families without a hires fix

    def inputs(self) -> list[Any]:
        return [self.enable, self.upscaler, self.scale, self.steps, self.denoising,
                self.resize_x, self.resize_y]


def hires_controls(studio: Studio) -> HiresControls:
    """The Hires fix section: A1111's defaults (Latent, x2, same steps, denoising 0.7)."""
    with gr.Accordion(label("hires_fix"), open=False, elem_id="hires") as section:
        enable = gr.Checkbox(False, label=label("hires_enable"), elem_id="hires-enable")
        with gr.Row():
            upscaler = gr.Dropdown(upscaler_choices(studio, latent=True),
                                   value=DEFAULT_LATENT_MODE, label=label("hires_upscaler"),
                                   elem_id="hires-upscaler", allow_custom_value=True)
            scale = RawSlider(1, MAX_HIRES_SCALE, value=2, step=0.05, label=label("hires_scale"),
                              elem_id="hires-scale")
        with gr.Row():
            steps = RawSlider(0, MAX_STEPS, value=0, step=1, label=label("hires_steps"),
                              elem_id="hires-steps")
            denoising = RawSlider(0, 1, value=0.7, step=0.01, label=label("hires_denoising"),
                                  elem_id="hires-denoising")
        with gr.Row():
            resize_x = RawNumber(0, precision=0, step=8, minimum=0, maximum=MAX_SIZE,
                                 label=label("hires_resize_x"), elem_id="hires-resize-x")
            resize_y = RawNumber(0, precision=0, step=8, minimum=0, maximum=MAX_SIZE,
                                 label=label("hires_resize_y"), elem_id="hires-resize-y")
    return HiresControls(enable, upscaler, scale, steps, denoising, resize_x, resize_y,
                         section=section)


def hires_fix(enable: Any, upscaler: Any, scale: Any, steps: Any, denoising: Any,
              resize_x: Any, resize_y: Any) -> HiresFix | None:
    """Page values (or a script's) → :class:`HiresFix`; the engine checks the bounds. Empty
    means A1111's default."""
    if enable is not True and str(enable).strip().lower() not in ("true", "1"):
        return None
    by = _finite(scale, "Upscale by")
    strength = _finite(denoising, "Denoising strength")
    return HiresFix(
        scale=2.0 if by is None else by,
        resize_x=_whole(resize_x, "Resize width", default=0) or 0,
        resize_y=_whole(resize_y, "Resize height", default=0) or 0,
        upscaler=str(upscaler or DEFAULT_LATENT_MODE),
        second_pass_steps=_whole(steps, "Hires steps", default=0) or 0,
        denoising_strength=0.7 if strength is None else strength,
    )


def build(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox("", label=label("prompt"), placeholder=label("prompt_placeholder"),
                                lines=3, max_length=MAX_PROMPT_CHARS, elem_id="txt2img-prompt")
            shown = default_family(studio)
            negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                  max_length=MAX_PROMPT_CHARS, elem_id="txt2img-negative",
                                  placeholder=label("negative_placeholder"),
                                  visible=shown is None or shown.negative_prompt)
            controls = settings_controls(studio)
            hires = hires_controls(studio)
            if shown is not None and hires.section is not None:
                hires.section.visible = shown.sd_only
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="txt2img-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    controls.add_lora_to(studio, prompt)
    controls.follow_model(studio, negative, hires=hires.section)

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
        enable_hr: bool | None = None,
        hr_upscaler: str | None = None,
        hr_scale: float | None = None,
        hr_second_pass_steps: float | None = None,
        denoising_strength: float | None = None,
        hr_resize_x: float | None = None,
        hr_resize_y: float | None = None,
        request: gr.Request | None = None,
    ):
        generation = checked_request(
            studio, request, prompt, negative_prompt, style, model, sampler, num_inference_steps,
            guidance_scale, width, height, seed, batch_size, vae=vae, clip_skip=clip_skip,
        )
        try:
            second = hires_fix(enable_hr, hr_upscaler, hr_scale, hr_second_pass_steps,
                               denoising_strength, hr_resize_x, hr_resize_y)
        except InputError as err:
            raise gr.Error(error_text(err, lang_of(request)), print_exception=False) from None
        generation = dataclasses.replace(generation, hires=second)
        # Controls the model's family ignores are dropped here and named in the status.
        generation, ignored = for_family(studio, generation, guidance_default=True)
        async for update in stream(studio, request, generation, ignored=ignored):
            yield update

    go.click(
        txt2img,
        [prompt, negative, *controls.inputs(), controls.batch, *controls.library_inputs(),
         *hires.inputs()],
        out.list(controls.last_seed),
        api_name="txt2img",
        concurrency_limit=None,
        show_progress="minimal",
    )
    # The job is cancelled in core (it stops within one step); the running event then
    # reports "Cancelled." itself and ends.
    stop.click(on_cancel(studio), None, None, api_visibility="private")
