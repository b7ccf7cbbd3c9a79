"""What every painting page shares: the settings controls, who is asking, their language,
and turning a page's inputs into a :class:`core.engine.GenerationRequest`."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.engine import GenerationRequest
from core.errors import InputError
from core.samplers import sampler_names
from webui.auth import Viewer
from webui.components import PrivateGallery, PrivateImage
from webui.i18n import error_text, gradio_translations, language_of, text
from webui.painting import PaintError, cancel, paint
from webui.studio import Studio
from webui.styles import find_style

# Labels are translated in the browser by Gradio; the keys live in webui/messages_*.toml.
TRANSLATIONS = gr.I18n(**gradio_translations())


def label(key: str) -> Any:
    return TRANSLATIONS(key)


def viewer_of(studio: Studio, request: gr.Request | None) -> Viewer:
    viewer = studio.gate.viewer_of(request)
    if viewer is None:
        raise gr.Error(text("not_logged_in", language_of(request)), print_exception=False)
    return viewer


def lang_of(request: gr.Request | None) -> str:
    return language_of(request)


@dataclass
class Controls:
    style: gr.Dropdown
    model: gr.Dropdown
    sampler: gr.Dropdown
    steps: gr.Number
    guidance: gr.Number
    width: gr.Number
    height: gr.Number
    seed: gr.Number
    batch: gr.Slider

    def inputs(self) -> list[Any]:
        return [self.style, self.model, self.sampler, self.steps, self.guidance, self.width,
                self.height, self.seed]


def settings_controls(studio: Studio, *, with_size: bool = True) -> Controls:
    models = studio.registry.models
    try:
        default = studio.engine.model_for(None)
    except Exception:  # noqa: BLE001
        default = None
    spec = default.spec if default else None
    style_choices = [("—", "")] + [
        (f"{s.name_en} / {s.name_zh}", s.id) for s in studio.styles.values()
    ]
    # Custom values are allowed so that scripts can name styles, models and samplers in
    # either language; the server checks them and answers with a sentence.
    style = gr.Dropdown(style_choices, value="", label=label("style"), elem_id="style",
                        allow_custom_value=True)
    with gr.Accordion(label("settings"), open=False):
        model = gr.Dropdown(
            [(m.label, m.name) for m in models], value=default.name if default else None,
            label=label("model"), elem_id="model", allow_custom_value=True,
        )
        if default is not None and default.is_demo:
            gr.Markdown(label("demo_model_note"), elem_id="demo-note")
        sampler = gr.Dropdown(
            [("—", "")] + [(n, n) for n in sampler_names()], value="", label=label("sampler"),
            allow_custom_value=True,
        )
        with gr.Row():
            # No Gradio bounds: the engine checks ranges and the message is translated.
            steps = gr.Number(spec.default_steps if spec else 25, precision=0,
                              label=label("steps"), elem_id="steps")
            guidance = gr.Number(spec.default_guidance if spec else 7.0, step=0.5,
                                 label=label("guidance"))
        with gr.Row(visible=with_size):
            size = (spec.default_size if spec else 512) if with_size else 0
            width = gr.Number(size, precision=0, step=8,
                              label=label("width"), elem_id="width")
            height = gr.Number(size, precision=0, step=8,
                               label=label("height"), elem_id="height")
        with gr.Row():
            seed = gr.Number(-1, precision=0, label=label("seed"), elem_id="seed")
            random_seed = gr.Button(label("seed_random"), size="sm")
            reuse_seed = gr.Button(label("seed_reuse"), size="sm")
        batch = gr.Slider(1, 8, value=1, step=1, label=label("batch"), elem_id="batch")
    last_seed = gr.State(-1)
    random_seed.click(lambda: -1, None, seed, api_visibility="private")
    reuse_seed.click(lambda last: last, last_seed, seed, api_visibility="private")
    controls = Controls(style, model, sampler, steps, guidance, width, height, seed, batch)
    controls.last_seed = last_seed  # type: ignore[attr-defined]
    return controls


def build_request(
    studio: Studio,
    prompt: str | None,
    negative_prompt: str | None,
    style: str | None,
    model: str | None,
    sampler: str | None,
    num_inference_steps: float | None,
    guidance_scale: float | None,
    width: float | None,
    height: float | None,
    seed: float | None,
    batch_size: float | None = 1,
    strength: float | None = None,
) -> GenerationRequest:
    """Page values → request. Empty, zero or negative values mean "the model's default"."""
    prompt, negative = str(prompt or ""), str(negative_prompt or "")
    chosen = find_style(studio.styles, style)
    if chosen is not None:
        prompt, negative = chosen.apply(prompt, negative)

    def finite(value: float | None, what: str) -> float | None:
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InputError("not_a_number", "{what} must be a number.", what=what)
        return number

    def positive(value: float | None, what: str) -> int | None:
        number = finite(value, what)
        return int(number) if number is not None and number > 0 else None

    guidance = finite(guidance_scale, "Guidance")
    seed_value = finite(seed, "Seed")
    strength_value = finite(strength, "Strength")

    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        strength=0.75 if strength_value is None else strength_value,
        num_inference_steps=positive(num_inference_steps, "Steps"),
        guidance_scale=None if guidance is None or guidance < 0 else guidance,
        width=positive(width, "Width"),
        height=positive(height, "Height"),
        batch_size=positive(batch_size, "Pictures per run") or 1,
        seed=None if seed_value is None or seed_value < 0 else int(seed_value),
        sampler=sampler or None,
        model=model or None,
    )


@dataclass
class Outputs:
    pictures: PrivateGallery
    preview: PrivateImage
    status: gr.Markdown

    def list(self, last_seed: Any) -> list[Any]:
        return [self.pictures, self.preview, self.status, last_seed]


def output_panel() -> Outputs:
    status = gr.Markdown("", elem_id="status", elem_classes=["obscura-status"])
    preview = PrivateImage(label=label("preview"), interactive=False, buttons=[],
                           height=256, elem_id="preview")
    pictures = PrivateGallery(label=label("result"), buttons=["download", "fullscreen"],
                              columns=2, height="auto", elem_id="result", interactive=False)
    return Outputs(pictures, preview, status)


def checked_request(studio: Studio, request: gr.Request, *values: Any, **named: Any) -> GenerationRequest:
    """:func:`build_request`, with a mistake shown as one sentence in the person's language."""
    try:
        return build_request(studio, *values, **named)
    except InputError as err:
        raise gr.Error(error_text(err, lang_of(request)), print_exception=False) from None


async def stream(
    studio: Studio, request: gr.Request, generation: GenerationRequest, **paint_args: Any
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """Yield (pictures, preview, status, last seed) while a job runs."""
    viewer = viewer_of(studio, request)
    lang = lang_of(request)
    session = getattr(request, "session_hash", None) or "api"
    try:
        async for step in paint(studio, viewer, session, lang, generation, **paint_args):
            if step.pictures is not None:
                yield step.pictures, None, step.status, step.seed
            else:
                yield gr.skip(), step.preview or gr.skip(), step.status, gr.skip()
    except PaintError as err:
        raise gr.Error(str(err), print_exception=False) from None


def cancel_button(studio: Studio) -> gr.Button:
    return gr.Button(label("cancel"), variant="stop", elem_id="cancel")


def on_cancel(studio: Studio):
    def handler(request: gr.Request) -> None:
        viewer = viewer_of(studio, request)
        cancel(studio, viewer, getattr(request, "session_hash", "") or "")

    return handler
