"""Photo → portrait that still looks like you (api name ``/portrait``).

Upload or take a photo, pick a style preset, move one "likeness ↔ style" slider, optionally keep
the pose; the recipe (:mod:`core.portrait`) turns that into one request with an IP-Adapter
Plus-Face unit on the photo's face and, for the pose, a Canny/Union ControlNet unit on the photo.
Only the photo is uploaded: both units mean "the job's photo", so it goes through the one run
path (:mod:`webui.run`: scrubbed, spooled encrypted, shredded when the job ends) like any photo,
and the face crop is made by the job in memory (core/control.py).

When the face-keeping models are missing for the chosen checkpoint, the page says which, in one
sentence, from the moment it loads; the person may go on with styled img2img only by ticking
"go on without face-keeping" (which also lets a photo with no face found go on).

Every input has a default, so a script can call it with a photo alone
(``gradio_client``: ``predict(image=handle_file(path), api_name="/portrait")``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from core.engine import MAX_BATCH, MAX_PROMPT_CHARS, MAX_SEED
from core.errors import InputError
from core.portrait import (
    check_likeness,
    missing_error,
    portrait_request,
    pose_missing_error,
)
from privacy.errors import PrivacyError
from privacy.scrub import scrub
from webui.components import PrivateImage, RawNumber, RawSlider
from webui.i18n import error_text, language_of, text
from webui.studio import Studio
from webui.styles import DEFAULT_PORTRAIT_LIKENESS, Style, find_style
from webui.ui.common import (
    _finite,
    _text,
    _whole,
    cancel_button,
    label,
    on_cancel,
    output_panel,
    stream,
    take_photo,
    viewer_of,
)

DEFAULT_VARIANTS = 4
DEFAULT_STYLE = "anime"


def _default_style(studio: Studio) -> Style | None:
    if DEFAULT_STYLE in studio.styles:
        return studio.styles[DEFAULT_STYLE]
    return next(iter(studio.styles.values()), None)


def _likeness_of(style: Style | None) -> float:
    if style is None or style.portrait_likeness is None:
        return DEFAULT_PORTRAIT_LIKENESS
    return style.portrait_likeness


def models_note(studio: Studio, model: Any, lang: str) -> str:
    """The one sentence of what the chosen checkpoint's portrait is missing ("" if nothing)."""
    try:
        info = studio.engine.model_for(_text(model) or None)
    except InputError as err:
        return error_text(err, lang)
    problem = missing_error(info, studio.registry.library)
    return "" if problem is None else error_text(problem, lang)


def pose_note(studio: Studio, model: Any, lang: str) -> str:
    """The sentence under "keep the pose" when no ControlNet can keep it ("" if one can)."""
    try:
        info = studio.engine.model_for(_text(model) or None)
    except InputError:
        return ""
    err = pose_missing_error(info, studio.registry.library)
    return "" if err is None else error_text(err, lang)


def _switch(value: Any) -> bool:
    """A checkbox value from the page (bool) or a script (bool, 0/1, "true"/"false")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value is True or (isinstance(value, int) and value == 1)


def build(studio: Studio) -> None:
    models = studio.registry.models
    try:
        default = studio.engine.model_for(None)
    except InputError:
        default = None
    first = _default_style(studio)
    style_choices = [("—", "")] + [
        (f"{s.name_en} / {s.name_zh}", s.id) for s in studio.styles.values()
    ]
    with gr.Row():
        with gr.Column(scale=1):
            photo = PrivateImage(label=label("photo"), sources=["upload", "webcam"],
                                 type="filepath", image_mode=None, buttons=[],
                                 format="png", elem_id="portrait-photo", height=320)
            gr.Markdown(label("portrait_help"))
            # What is missing for the chosen checkpoint, next to the way to go on without it.
            note = gr.Markdown("", elem_id="portrait-missing")
            without_face = gr.Checkbox(False, label=label("portrait_without_face"),
                                       elem_id="portrait-without-face")
            style = gr.Dropdown(style_choices, value=first.id if first else "",
                                label=label("style"), elem_id="portrait-style",
                                allow_custom_value=True)
            likeness = RawSlider(0.0, 1.0, value=_likeness_of(first), step=0.05,
                                 label=label("portrait_likeness"),
                                 info=label("portrait_likeness_info"),
                                 elem_id="portrait-likeness")
            keep_pose = gr.Checkbox(False, label=label("portrait_keep_pose"),
                                    elem_id="portrait-keep-pose")
            pose_hint = gr.Markdown("", elem_id="portrait-pose-note")
            batch = RawSlider(1, MAX_BATCH, value=DEFAULT_VARIANTS, step=1,
                              label=label("portrait_variants"), elem_id="portrait-batch")
            with gr.Accordion(label("settings"), open=False):
                prompt = gr.Textbox("", label=label("portrait_prompt"),
                                    placeholder=label("portrait_prompt_placeholder"), lines=2,
                                    max_length=MAX_PROMPT_CHARS, elem_id="portrait-prompt")
                negative = gr.Textbox("", label=label("negative_prompt"), lines=1,
                                      max_length=MAX_PROMPT_CHARS)
                model = gr.Dropdown(
                    [(m.label, m.name) for m in models],
                    value=default.name if default else None, label=label("model"),
                    elem_id="portrait-model", allow_custom_value=True,
                )
                seed = RawNumber(-1, precision=0, minimum=-1, maximum=MAX_SEED,
                                 label=label("seed"), elem_id="portrait-seed")
            with gr.Row():
                go = gr.Button(label("generate"), variant="primary", elem_id="portrait-go")
                stop = cancel_button(studio)
        with gr.Column(scale=1):
            out = output_panel()
    last_seed = gr.State(-1)

    def notes(model_name: Any, pose: Any, request: gr.Request) -> tuple[str, str]:
        """The missing-models sentence; the pose sentence only while "keep the pose" is on."""
        lang = language_of(request)
        return (models_note(studio, model_name, lang),
                pose_note(studio, model_name, lang) if _switch(pose) else "")

    def style_likeness(key: Any) -> Any:
        try:
            chosen = find_style(studio.styles, _text(key))
        except InputError:
            return gr.skip()
        return _likeness_of(chosen)

    for changed in (model.change, keep_pose.change):
        changed(notes, [model, keep_pose], [note, pose_hint], api_visibility="private",
                show_progress="hidden")
    style.input(style_likeness, style, likeness, api_visibility="private",
                show_progress="hidden")
    root = gr.context.Context.root_block
    if root is not None:  # the note is there from the moment the page loads, in its language
        root.load(notes, [model, keep_pose], [note, pose_hint], api_visibility="private",
                  show_progress="hidden")

    async def portrait(
        image: str | None = None,
        prompt: str | None = None,
        style: str | None = None,
        likeness: float | None = None,
        keep_pose: bool | None = None,
        batch_size: float | None = None,
        seed: float | None = None,
        without_face_keeping: bool | None = None,
        model: str | None = None,
        negative_prompt: str | None = None,
        request: gr.Request | None = None,
    ):
        viewer = viewer_of(studio, request)
        lang = language_of(request)
        if not image:
            raise gr.Error(text("no_photo", lang), print_exception=False)
        try:
            data = take_photo(studio, viewer, image)
            if data is None:
                raise gr.Error(text("no_photo", lang), print_exception=False)
            # Scrubbed here (the run path takes the clean picture as it is) to know the photo's
            # upright size: the result keeps its proportions.
            picture = await asyncio.to_thread(  # decoding must not hold up the event loop
                scrub, data, max_bytes=studio.max_upload_bytes,
                max_pixels=studio.max_upload_pixels)
            del data
            chosen = (_default_style(studio) if style is None
                      else find_style(studio.styles, _text(style)))
            value = _finite(likeness, "Likeness")
            info = studio.engine.model_for(_text(model) or None)
            generation = portrait_request(
                _text(prompt) or "",
                chosen,
                check_likeness(_likeness_of(chosen) if value is None else value),
                _switch(keep_pose),
                _whole(batch_size, "Pictures per run", default=0) or DEFAULT_VARIANTS,
                _whole(seed, "Seed", default=-1),
                info,
                studio.registry.library,
                picture.size,
                negative_prompt=_text(negative_prompt) or "",
                without_face_keeping=_switch(without_face_keeping),
            )
        except (InputError, PrivacyError) as err:
            raise gr.Error(error_text(err, lang), print_exception=False) from None
        # Styled img2img only (the person chose to go on without the face models): say so.
        plain = text("portrait_painted_plain", lang) if not generation.ip_adapters else ""
        run = stream(studio, request, generation, photo=picture)
        del picture  # from here on the photo waits in the spool only (encrypted), as every upload
        async for update in run:
            pictures, preview, status, seed = update
            if plain and pictures is not None:
                status = f"{status} {plain}"
            yield pictures, preview, status, seed

    go.click(
        portrait,
        [photo, prompt, style, likeness, keep_pose, batch, seed, without_face, model, negative],
        out.list(last_seed),
        api_name="portrait",
        concurrency_limit=None,
        show_progress="minimal",
    )
    stop.click(on_cancel(studio), None, None, api_visibility="private")

