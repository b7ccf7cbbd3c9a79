"""Upscale a picture (api name ``/upscale``): AUTOMATIC1111's extras upscale in the UI.

The picture goes through the one run path (:mod:`webui.run`) exactly as a photo for Photo →
picture does: scrubbed, spooled encrypted while it waits, shredded when the job ends. The
upscalers are A1111's built-in ones (None, Lanczos, Nearest) and the library's upscaler models;
latent modes belong to the hires fix and are not offered here.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.engine import GenerationRequest, Upscale
from core.errors import InputError
from core.upscale import MAX_EXTRAS_SCALE, PIXEL_UPSCALERS
from privacy.errors import PrivacyError
from webui.components import PrivateImage, RawSlider
from webui.studio import Studio
from webui.ui.common import (
    _finite,
    cancel_button,
    label,
    on_cancel,
    output_panel,
    stream,
    take_photo,
    viewer_of,
)


def upscaler_choices(studio: Studio, *, latent: bool = False) -> list[tuple[str, str]]:
    """A1111's built-in upscalers, then the library's upscaler models (then latent modes)."""
    from core.upscale import LATENT_MODES

    names = [*PIXEL_UPSCALERS]
    names += [item.name for item in studio.registry.library.items("upscaler")]
    if latent:
        names = [*LATENT_MODES, *names]
    return [(name, name) for name in names]


def upscale_request(upscaler: Any, scale: Any) -> GenerationRequest:
    """Page values (or a script's) → an upscale job; the engine checks the bounds."""
    by = _finite(scale, "Upscale by")
    return GenerationRequest(
        prompt="",
        upscale=Upscale(scale=2.0 if by is None else by, upscaler=str(upscaler or "Lanczos")),
    )


def build(studio: Studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            photo = PrivateImage(label=label("upscale_photo"), sources=["upload"],
                                 type="filepath", image_mode=None, buttons=[], format="png",
                                 elem_id="upscale-photo", height=320)
            gr.Markdown(label("upscale_help"))
            upscaler = gr.Dropdown(upscaler_choices(studio), value="Lanczos",
                                   label=label("upscaler"), elem_id="upscale-upscaler",
                                   allow_custom_value=True)
            scale = RawSlider(1, MAX_EXTRAS_SCALE, value=2, step=0.5, label=label("upscale_by"),
                              elem_id="upscale-by")
            with gr.Row():
                go = gr.Button(label("upscale_go"), variant="primary", elem_id="upscale-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    last_seed = gr.State(-1)

    async def upscale(
        image: str | None = None,
        upscaler: str | None = None,
        scale: float | None = None,
        request: gr.Request | None = None,
    ):
        from webui.i18n import error_text, language_of, text

        viewer = viewer_of(studio, request)
        lang = language_of(request)
        if not image:
            raise gr.Error(text("no_photo", lang), print_exception=False)
        try:
            job = upscale_request(upscaler, scale)
            data = take_photo(studio, viewer, image)
        except (InputError, PrivacyError) as err:
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        async for update in stream(studio, request, job, photo=data):
            yield update

    go.click(upscale, [photo, upscaler, scale], out.list(last_seed), api_name="upscale",
             concurrency_limit=None, show_progress="minimal")
    stop.click(on_cancel(studio), None, None, api_visibility="private")
