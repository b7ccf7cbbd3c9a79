"""What every painting page shares: the settings controls, who is asking, their language,
and turning a page's inputs into a :class:`core.engine.GenerationRequest`."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from core.conditioning import MAX_CLIP_SKIP, check_clip_skip
from core.engine import (
    MAX_BATCH,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIZE,
    MAX_STEPS,
    GenerationRequest,
)
from core.errors import InputError
from core.families import family_of, is_flow
from core.flow import MAX_REFERENCES  # extra reference pictures of an edit model
from core.planner import describe
from core.registry import ModelInfo
from core.samplers import sampler_names
from privacy.errors import PrivacyError
from webui.auth import Viewer
from webui.components import PrivateGallery, PrivateImage, RawNumber, RawSlider, data_url
from webui.i18n import error_text, gradio_translations, language_of, text
from webui.run import RunImage, RunInputs, paint
from webui.studio import Studio
from webui.styles import find_style

log = logging.getLogger("obscura.webui")
# After the first status, an update (step, place in line, preview) is sent at most this often
# per job; the end is sent at once. Every update costs Gradio a postprocess, a diff and an SSE
# message (with 20 people waiting, every job that ends moves 19 places in line); a preview is
# encoded only when it changed and is about to be sent.
STEP_UPDATE_SECONDS = 0.25
LINE_UPDATE_SECONDS = 1.0  # the place in line, while waiting
# A browser session unused this long is dropped from Gradio's per-session state (the last
# pictures it showed, its components), so memory stays flat however many sessions come and go.
SESSION_IDLE_SECONDS = 30 * 60
SWEEP_EVERY_SECONDS = 60.0
_last_sweep = 0.0

# Labels are translated in the browser by Gradio; the keys live in webui/messages_*.toml.
TRANSLATIONS = gr.I18n(**gradio_translations())


def label(key: str) -> Any:
    return TRANSLATIONS(key)


def viewer_of(studio: Studio, request: gr.Request | None) -> Viewer:
    viewer = studio.gate.viewer_of(request)
    if viewer is None:
        raise gr.Error(text("not_logged_in", language_of(request)), print_exception=False)
    return viewer


def account_viewer(studio: Studio, request: gr.Request | None) -> Viewer:
    """:func:`viewer_of` for what changes an account (settings, tokens, deletions, the Admin
    page): it needs a login with the password. An API token is for painting; one that leaked
    must not be able to mint more tokens, turn retention off or run the Admin page."""
    viewer = viewer_of(studio, request)
    if studio.accounts is not None and viewer.session is None:
        raise gr.Error(text("password_login_needed", language_of(request)),
                       print_exception=False)
    return viewer


def lang_of(request: gr.Request | None) -> str:
    return language_of(request)


@dataclass
class Controls:
    style: gr.Dropdown
    model: gr.Dropdown
    sampler: gr.Dropdown
    steps: RawNumber
    guidance: RawNumber
    width: RawNumber
    height: RawNumber
    seed: RawNumber
    batch: RawSlider
    vae: gr.Dropdown
    clip_skip: RawSlider
    lora: gr.Dropdown
    last_seed: gr.State
    # The memory plan line under the model picker and the aspect-ratio presets (txt2img).
    plan: gr.Markdown | None = None
    aspect: gr.Dropdown | None = None
    sd_only: gr.Row | None = None  # VAE and CLIP skip: the SD families only

    def inputs(self) -> list[Any]:
        return [self.style, self.model, self.sampler, self.steps, self.guidance, self.width,
                self.height, self.seed]

    def library_inputs(self) -> list[Any]:
        """VAE and CLIP skip: after the pictures per run, so older scripts keep working."""
        return [self.vae, self.clip_skip]

    def add_lora_to(self, studio: Studio, prompt: gr.Textbox) -> None:
        """Choosing a LoRA appends ``<lora:NAME:1>`` to ``prompt`` (the engine reads the tag)."""

        def add(text: Any, name: Any) -> tuple[str, str]:
            return with_lora(studio, _text(text) or "", _text(name) or ""), ""

        self.lora.input(add, [prompt, self.lora], [prompt, self.lora],
                        api_visibility="private", show_progress="hidden")

    def follow_model(self, studio: Studio, negative: gr.Textbox, *, hires: Any = None,
                     references: Any = None) -> None:
        """Choosing a model shows the controls its family takes and hides the others, and puts
        its defaults (steps, guidance, size, samplers, aspect ratios) in; the memory plan line
        is shown under the picker (on page load too, in the person's language)."""
        parts: dict[str, Any] = {
            "negative": negative, "guidance": self.guidance, "steps": self.steps,
            "sampler": self.sampler, "sd_only": self.sd_only, "lora": self.lora,
            "plan": self.plan,
        }
        with_size = self.aspect is not None
        if with_size:
            parts |= {"width": self.width, "height": self.height, "aspect": self.aspect}
        if hires is not None:
            parts["hires"] = hires
        if references is not None:
            parts["references"] = references
        keys = [k for k, v in parts.items() if v is not None]

        def change(model: Any, request: gr.Request) -> list[Any]:
            updates = family_updates(studio, model, lang_of(request), with_size=with_size,
                                     references=references is not None)
            return [updates.get(key, gr.skip()) for key in keys]

        def load(model: Any, request: gr.Request) -> Any:
            return plan_line(studio, model_info(studio, model), lang_of(request))

        self.model.change(change, self.model, [parts[k] for k in keys],
                          api_visibility="private", show_progress="hidden")
        root = gr.context.Context.root_block
        if root is not None and self.plan is not None:
            root.load(load, self.model, self.plan, api_visibility="private",
                      show_progress="hidden")


def with_lora(studio: Studio, prompt: str, name: str) -> str:
    """``prompt`` with ``<lora:name:1>`` appended, for a LoRA of the library that the prompt
    does not name yet; unchanged otherwise (or when it would pass the prompt's length)."""
    if name not in {item.name for item in studio.registry.library.items("lora")}:
        return prompt
    tag = f"<lora:{name}:1>"
    if f"<lora:{name}:" in prompt:
        return prompt
    joined = f"{prompt.rstrip()}, {tag}" if prompt.strip() else tag
    return joined if len(joined) <= MAX_PROMPT_CHARS else prompt


# -- what each model family shows ------------------------------------------------------------
# The SD families take every control; the transformer families (core/families.py) may ignore
# the negative prompt and CFG (guidance-distilled), and never use what only the SD path has
# (CLIP skip, a library VAE, LoRA networks, the hires fix: core/engine.py). A control a family
# ignores is hidden on the page, and a stale value it still holds is dropped by the handler and
# named in the status line (:func:`for_family`), never silently.
SDXL_RATIOS: tuple[tuple[str, int, int], ...] = (
    ("1:1", 1024, 1024), ("4:3", 1152, 896), ("3:4", 896, 1152), ("3:2", 1216, 832),
    ("2:3", 832, 1216), ("16:9", 1344, 768), ("9:16", 768, 1344),
)
RATIOS = (("1:1", 1.0), ("4:3", 4 / 3), ("3:4", 3 / 4), ("3:2", 3 / 2), ("2:3", 2 / 3),
          ("16:9", 16 / 9), ("9:16", 9 / 16))
# A control a family ignores → the label key that names it in the status line.
CONTROL_LABELS = {"negative_prompt": "negative_prompt", "cfg_scale": "guidance",
                  "clip_skip": "clip_skip", "vae": "vae", "hires": "hires_fix",
                  "references": "references_short", "strength": "strength",
                  "emphasis": "emphasis_short", "prompt_editing": "prompt_editing_short",
                  "prompt_truncated": "prompt_truncated_short"}


@dataclass(frozen=True)
class FamilyControls:
    """Which settings apply to one model, and the defaults its page starts from."""

    arch: str
    negative_prompt: bool  # the negative prompt changes the picture
    cfg: bool  # the CFG / guidance value changes the picture
    sd_only: bool  # CLIP skip, library VAE, LoRA picker and hires fix apply (the SD path)
    samplers: tuple[str, ...]
    steps: int
    guidance: float
    size: int
    size_multiple: int
    aspect_ratios: tuple[tuple[str, int, int], ...]
    references: int = 0  # extra reference pictures an edit model takes (Photo → picture)


def _ratios(size: int, multiple: int) -> tuple[tuple[str, int, int], ...]:
    """About ``size``² pixels at the usual aspect ratios, each side a multiple of ``multiple``."""
    def side(value: float) -> int:
        return max(multiple, round(value / multiple) * multiple)

    return tuple((name, side(size * math.sqrt(r)), side(size / math.sqrt(r))) for name, r in RATIOS)


def family_controls(info: ModelInfo) -> FamilyControls:
    """The controls and defaults of ``info``'s family (core/families.py for the transformer
    families; the engine's defaults come from ``info.spec`` for every family)."""
    spec = info.spec
    if not is_flow(info):
        sdxl = info.arch == "sdxl" and spec.default_size == 1024
        return FamilyControls(
            arch=info.arch, negative_prompt=True, cfg=True, sd_only=True,
            samplers=tuple(sampler_names()), steps=spec.default_steps,
            guidance=spec.default_guidance, size=spec.default_size, size_multiple=8,
            aspect_ratios=SDXL_RATIOS if sdxl else _ratios(spec.default_size, 8),
        )
    row = family_of(info)
    references = row.max_references if "edit" in row.pipelines else 0
    return FamilyControls(
        arch=info.arch, negative_prompt=row.negative_prompt, cfg=row.guidance != "none",
        sd_only=False, samplers=tuple(row.samplers), steps=spec.default_steps,
        guidance=spec.default_guidance, size=spec.default_size,
        size_multiple=row.size_multiple, aspect_ratios=row.aspect_ratios,
        references=min(references, MAX_REFERENCES),
    )


def default_family(studio: Studio) -> FamilyControls | None:
    """The controls of the model a page starts with (the server's default model)."""
    info = model_info(studio, None)
    return family_controls(info) if info is not None else None


def model_info(studio: Studio, name: Any) -> ModelInfo | None:
    """The model a page value names (empty: the server's default); None if there is none."""
    try:
        return studio.engine.model_for(_text(name) or None)
    except InputError:
        return None


def for_family(studio: Studio, generation: GenerationRequest,
               guidance_default: bool = False) -> tuple[GenerationRequest, list[str]]:
    """``generation`` without the values its model's family ignores, and their names.

    A control hidden on the page still sends the value it held for the last model: it is
    dropped here (the engine never sees it) and named, so the status line can say so. The
    guidance counts as set only when it differs from the family's default (the page puts the
    default there when the model changes), or when ``guidance_default`` is False and a script
    sent one."""
    info = model_info(studio, generation.model)
    if info is None:
        return generation, []
    controls = family_controls(info)
    ignored: list[str] = []
    changes: dict[str, Any] = {}
    if not controls.negative_prompt and generation.negative_prompt.strip():
        ignored.append("negative_prompt")
        changes["negative_prompt"] = ""
    if not controls.cfg and generation.guidance_scale is not None:
        if not (guidance_default and generation.guidance_scale == controls.guidance):
            ignored.append("cfg_scale")
        changes["guidance_scale"] = None
    if not controls.sd_only:
        if generation.clip_skip > 1:
            ignored.append("clip_skip")
            changes["clip_skip"] = 1
        if generation.vae is not None:
            ignored.append("vae")
            changes["vae"] = None
        if generation.hires is not None:
            ignored.append("hires")
            changes["hires"] = None
    if changes:
        generation = dataclasses.replace(generation, **changes)
    return generation, ignored


def ignored_line(names: list[str], lang: str) -> str:
    """One sentence naming the controls the model did not use ("" when none)."""
    shown = [text(CONTROL_LABELS[n], lang) if n in CONTROL_LABELS else n for n in names]
    return text("ignored_controls", lang, names=", ".join(shown)) if shown else ""


def plan_line(studio: Studio, info: ModelInfo | None, lang: str) -> str:
    """The memory plan for ``info`` on this server's device, as one short line (core/planner.py)."""
    if info is None:
        return ""
    try:
        plan = studio.engine.plan_for(info)
    except InputError as err:  # it fits in no memory mode: the sentence says what would
        return error_text(err, lang)
    except OSError:  # its files moved or vanished since the scan: the job will say so
        return ""
    return text("memory_plan", lang, plan=describe(plan, lang))


def family_updates(studio: Studio, model: Any, lang: str, *, with_size: bool,
                   references: bool = False) -> dict[str, Any]:
    """What the settings become when ``model`` is chosen: each value is a Gradio update, keyed
    by the :class:`Controls` field (plus ``negative``, ``hires`` and ``references``)."""
    info = model_info(studio, model)
    if info is None:  # an unknown name typed in: the engine's sentence comes at Paint
        return {}
    c = family_controls(info)
    updates: dict[str, Any] = {
        "negative": gr.update(visible=c.negative_prompt),
        "guidance": gr.update(visible=c.cfg, value=c.guidance),
        "steps": gr.update(value=c.steps),
        "sampler": gr.update(choices=[("—", "")] + [(n, n) for n in c.samplers], value=""),
        "sd_only": gr.update(visible=c.sd_only),
        "lora": gr.update(visible=c.sd_only),
        "hires": gr.update(visible=c.sd_only),
        "plan": gr.update(value=plan_line(studio, info, lang)),
    }
    if with_size:
        step = c.size_multiple
        updates["width"] = gr.update(value=c.size, step=step)
        updates["height"] = gr.update(value=c.size, step=step)
        updates["aspect"] = gr.update(choices=aspect_choices(c), value="")
    if references:
        updates["references"] = gr.update(visible=c.references > 0)
    return updates


def aspect_choices(controls: FamilyControls) -> list[tuple[str, str]]:
    return [("—", "")] + [(f"{name} ({w}×{h})", f"{w}x{h}")
                          for name, w, h in controls.aspect_ratios]


def settings_controls(studio: Studio, *, with_size: bool = True) -> Controls:
    models = studio.registry.models
    try:
        default = studio.engine.model_for(None)
    except InputError:  # no model installed, or the configured default is gone
        default = None
    spec = default.spec if default else None
    shown = family_controls(default) if default else None
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
        # The plan needs the person's language: filled by the page's load event.
        plan = gr.Markdown("", elem_id="memory-plan", elem_classes=["obscura-plan"])
        samplers = shown.samplers if shown else tuple(sampler_names())
        sampler = gr.Dropdown(
            [("—", "")] + [(n, n) for n in samplers], value="", label=label("sampler"),
            allow_custom_value=True, elem_id="sampler",
        )
        library = studio.registry.library
        sd_only = shown is None or shown.sd_only
        with gr.Row(visible=sd_only) as sd_row:
            vae = gr.Dropdown(
                [("Automatic", "")] + [(v.name, v.name) for v in library.items("vae")],
                value="", label=label("vae"), elem_id="vae", allow_custom_value=True,
            )
            clip_skip = RawSlider(1, MAX_CLIP_SKIP, value=1, step=1, label=label("clip_skip"),
                                  elem_id="clip-skip")
        lora = gr.Dropdown(
            [("—", "")] + [(item.name, item.name) for item in library.items("lora")],
            value="", label=label("lora_add"), elem_id="lora-add", visible=sd_only,
        )
        with gr.Row():
            # The browser shows the engine's ranges; the server gets the raw value
            # (RawNumber) and build_request + the engine check it, in the person's language.
            steps = RawNumber(spec.default_steps if spec else 25, precision=0,
                              minimum=0, maximum=MAX_STEPS, label=label("steps"),
                              elem_id="steps")
            guidance = RawNumber(spec.default_guidance if spec else 7.0, step=0.5,
                                 minimum=-1, maximum=MAX_GUIDANCE, label=label("guidance"),
                                 elem_id="guidance", visible=shown is None or shown.cfg)
        aspect = None
        if with_size:
            aspect = gr.Dropdown(aspect_choices(shown) if shown else [("—", "")], value="",
                                 label=label("aspect_ratio"), elem_id="aspect-ratio")
        with gr.Row(visible=with_size):
            size = (spec.default_size if spec else 512) if with_size else 0
            step = shown.size_multiple if shown else 8
            width = RawNumber(size, precision=0, step=step, minimum=0, maximum=MAX_SIZE,
                              label=label("width"), elem_id="width")
            height = RawNumber(size, precision=0, step=step, minimum=0, maximum=MAX_SIZE,
                               label=label("height"), elem_id="height")
        with gr.Row():
            seed = RawNumber(-1, precision=0, minimum=-1, maximum=MAX_SEED,
                             label=label("seed"), elem_id="seed")
            random_seed = gr.Button(label("seed_random"), size="sm")
            reuse_seed = gr.Button(label("seed_reuse"), size="sm")
        batch = RawSlider(1, MAX_BATCH, value=1, step=1, label=label("batch"),
                          elem_id="batch")
    last_seed = gr.State(-1)
    random_seed.click(lambda: -1, None, seed, api_visibility="private")
    reuse_seed.click(lambda last: last, last_seed, seed, api_visibility="private")
    if aspect is not None:
        aspect.input(_aspect_size, aspect, [width, height], api_visibility="private",
                     show_progress="hidden")
    return Controls(style, model, sampler, steps, guidance, width, height, seed, batch,
                    vae, clip_skip, lora, last_seed, plan=plan, aspect=aspect, sd_only=sd_row)


def _aspect_size(choice: Any) -> tuple[Any, Any]:
    """An aspect preset ("1216x832") → width and height; anything else changes nothing."""
    parts = (_text(choice) or "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and 0 < int(p) <= MAX_SIZE for p in parts):
        return gr.skip(), gr.skip()
    return int(parts[0]), int(parts[1])


def build_request(
    studio: Studio,
    prompt: Any,
    negative_prompt: Any,
    style: Any,
    model: Any,
    sampler: Any,
    num_inference_steps: Any,
    guidance_scale: Any,
    width: Any,
    height: Any,
    seed: Any,
    batch_size: Any = 1,
    strength: Any = None,
    vae: Any = None,
    clip_skip: Any = None,
) -> GenerationRequest:
    """Page values (or whatever a script posts) → request; the engine checks the ranges
    (:meth:`core.engine.Engine.validate`: the same bounds as the API and the CLI).

    Empty means the model's default for every number; so does 0 for steps, width, height and
    pictures per run (one picture), and -1 for the guidance. The seed is random when empty or
    -1; any other negative seed is refused, as in the API. Text, NaN, infinity or true/false
    where a number belongs is one sentence (``not_a_number``); a fraction where a whole number
    belongs too (``not_a_whole_number``)."""
    prompt, negative = _text(prompt) or "", _text(negative_prompt) or ""
    chosen = find_style(studio.styles, _text(style))
    if chosen is not None:
        prompt, negative = chosen.apply(prompt, negative)

    guidance = _finite(guidance_scale, "Guidance")
    strength_value = _finite(strength, "Strength")
    # CLIP skip: empty or 0 = 1 (the last layer); the VAE by library name, "" = the model's own.
    skip = _whole(clip_skip, "CLIP skip", default=0)
    vae_name = (_text(vae) or "").strip()
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        strength=0.75 if strength_value is None else strength_value,
        num_inference_steps=_whole(num_inference_steps, "Steps", default=0),
        guidance_scale=None if guidance == -1 else guidance,
        width=_whole(width, "Width", default=0),
        height=_whole(height, "Height", default=0),
        batch_size=_whole(batch_size, "Pictures per run", default=0) or 1,
        seed=_whole(seed, "Seed", default=-1),
        sampler=_text(sampler) or None,
        model=_text(model) or None,
        clip_skip=1 if skip is None else check_clip_skip(skip),
        vae=None if vae_name.lower() in ("", "automatic", "none") else vae_name,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _finite(value: Any, what: str) -> float | None:
    """``None`` for an empty value; a finite float; else one sentence."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, int | float | str):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # "twelve"; an int past float's range
            pass
    if not math.isfinite(number):
        raise InputError("not_a_number", "{what} must be a number.", what=what)
    return number


def _whole(value: Any, what: str, default: int) -> int | None:
    """``None`` for an empty value or ``default``; a whole number; else one sentence."""
    number = _finite(value, what)
    if number is None or number == default:
        return None
    if not number.is_integer():
        raise InputError("not_a_whole_number", "{what} must be a whole number.", what=what)
    return int(number)


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


def checked_request(studio: Studio, request: gr.Request | None, *values: Any, **named: Any) -> GenerationRequest:
    """:func:`build_request`, with a mistake shown as one sentence in the person's language."""
    try:
        return build_request(studio, *values, **named)
    except InputError as err:
        raise gr.Error(error_text(err, lang_of(request)), print_exception=False) from None


def take_photo(studio: Studio, viewer: Viewer, source: str | bytes | None) -> bytes | None:
    """The raw bytes of an upload: a cache path (checked to be this user's, then deleted) or
    bytes the browser sent in memory."""
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    return studio.uploads.take(source, viewer.user_id, max_bytes=studio.max_upload_bytes)


def _preview_url(preview: Image.Image) -> str:
    """A step preview (made from the latents: no metadata) as a fast PNG ``data:`` URL."""
    buffer = io.BytesIO()
    preview.save(buffer, format="PNG", compress_level=1)
    return data_url(buffer.getvalue())


async def stream(
    studio: Studio,
    request: gr.Request | None,
    generation: GenerationRequest,
    *,
    photo: bytes | Image.Image | None = None,  # Image: already scrubbed (the Portrait page)
    mask: bytes | Image.Image | None = None,
    references: list[bytes] | None = None,
    ignored: list[str] | None = None,
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """Yield (pictures, preview, status, last seed) while the run (:mod:`webui.run`) goes on.

    ``references`` are an edit model's extra pictures (run names ``edit:<j>``); ``ignored``
    names the controls :func:`for_family` dropped: the last status says them, with any the
    engine reports (``GenerationResult.extras["ignored"]``).

    Only the last-seed State is ever skipped: ``gr.skip()`` on a component makes Gradio build a
    new component instance in the session's state on every yield, so unchanged outputs are sent
    again as the same value (an empty diff) instead."""
    viewer = viewer_of(studio, request)
    lang = lang_of(request)
    session = getattr(request, "session_hash", None) or "api"
    _expire_idle_sessions(request)
    images = [RunImage("photo", photo)] if photo is not None else []
    if mask is not None:
        images.append(RunImage("mask", mask))
    images.extend(RunImage(f"edit:{j}", data) for j, data in enumerate(references or []))
    del photo, mask, references
    inputs = RunInputs(generation, images, session=session)
    preview_url: str | None = None
    pending: Image.Image | None = None
    status = ""
    try:
        async for update in paint(studio, viewer.user_id, inputs, every=STEP_UPDATE_SECONDS,
                                  every_in_line=LINE_UPDATE_SECONDS):
            answer = update.answer
            if answer is not None:
                if answer.interrupted and not answer.pictures:
                    yield None, preview_url, text("cancelled", lang), gr.skip()
                    return
                urls = [data_url(picture.png) for picture in answer.pictures]
                seed = answer.results[0].seed if answer.results else gr.skip()
                done = text("done", lang, count=len(urls), seed=seed,
                             seconds=f"{answer.seconds:.1f}")
                names = list(ignored or [])
                for result in answer.results:
                    names += [n for n in result.extras.get("ignored", []) if n not in names]
                if names:
                    done = f"{done} {ignored_line(names, lang)}"
                if any(result.extras.get("face_found") is False for result in answer.results):
                    done = f"{done} {text('no_face_painted', lang)}"  # allow_no_face went on
                yield urls, None, done, seed
                return
            if update.preview is not None:
                pending = update.preview
            if update.state == "queued":
                new_status = text("queued", lang, position=update.position)
            elif update.state == "running":
                new_status = text("running", lang, step=update.step, total=update.total)
            else:
                new_status = text("starting", lang)
            if pending is not None:
                preview_url = await asyncio.to_thread(_preview_url, pending)
                pending = None
            elif new_status == status:
                continue
            status = new_status
            yield None, preview_url, status, gr.skip()
    except (InputError, PrivacyError) as err:
        raise gr.Error(error_text(err, lang), print_exception=False) from None
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as err:  # noqa: BLE001
        log.error("painting failed: %s", type(err).__name__)
        raise gr.Error(text("unexpected", lang), print_exception=False) from None


def _expire_idle_sessions(request: gr.Request | None) -> None:
    """Drop the Gradio session state of browser sessions idle for SESSION_IDLE_SECONDS (checked
    at most once a minute, when someone paints)."""
    global _last_sweep
    now = time.monotonic()
    if now - _last_sweep < SWEEP_EVERY_SECONDS:
        return
    _last_sweep = now
    starlette_request = getattr(request, "request", None)
    holder = getattr(getattr(starlette_request, "app", None), "state_holder", None)
    if holder is not None:
        expire_sessions(holder, SESSION_IDLE_SECONDS, keep=getattr(request, "session_hash", None))


def expire_sessions(holder: Any, idle_seconds: float, keep: str | None = None) -> int:
    """Remove Gradio sessions (``gradio.state_holder.StateHolder``) unused for ``idle_seconds``
    (their State values get their ``delete_callback``); returns how many went."""
    import datetime

    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=idle_seconds)
    stale = [sid for sid, used in list(holder.time_last_used.items())
             if used < cutoff and sid != keep]
    for sid in stale:
        holder.delete_state(sid)
        with holder.lock:
            holder.session_data.pop(sid, None)
            holder.time_last_used.pop(sid, None)
    return len(stale)


def cancel_button(studio: Studio) -> gr.Button:
    return gr.Button(label("cancel"), variant="stop", elem_id="cancel")


def on_cancel(studio: Studio):
    def handler(request: gr.Request) -> None:
        viewer = viewer_of(studio, request)
        studio.runs.cancel(viewer.user_id, getattr(request, "session_hash", "") or "")

    return handler
