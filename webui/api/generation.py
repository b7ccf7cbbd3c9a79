"""txt2img and img2img: an AUTOMATIC1111 body → :class:`webui.run.RunInputs` → the one run path
(:mod:`webui.run`: scrub, check, spool, jobs, shred, encode, seal) → base64 PNGs and
AUTOMATIC1111's ``info``.

This module only maps fields: the body to a request (styles, sampler, scheduler, model, seed),
and the run's :class:`webui.run.Answer` to AUTOMATIC1111's answer. Pictures leave with the AI
label only, plus AUTOMATIC1111's ``parameters`` text when the caller's account opted in;
``save_images`` seals them into the caller's gallery in accounts mode. Each caller has their own
model choice (``POST options``), so nobody changes another person's model.

A caller who hangs up is noticed at once (``http.disconnect`` from the ASGI ``receive``, no
polling): the run is cancelled and its pictures shredded. A server that stops answers 503.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from core.conditioning import check_clip_skip
from core.engine import GenerationRequest, HiresFix
from core.errors import InputError
from core.families import family_of, is_flow
from core.registry import ARCH_TITLES, VARIANT_TITLES, ModelInfo
from core.samplers import (
    SCHEDULES,
    Schedule,
    find_sampler,
    find_schedule,
    sampler_names,
    with_schedule,
)
from core.upscale import DEFAULT_LATENT_MODE
from privacy.errors import PrivacyError
from webui.api.controlnet import PICTURES_PER_BODY, Units
from webui.api.problems import ApiError, input_problem
from webui.api.schemas import MAX_ITERATIONS, GenerationFields, Txt2ImgRequest
from webui.auth import Viewer
from webui.infotext import unit_params
from webui.run import Answer, RunInputs, paint
from webui.studio import Studio
from webui.styles import find_style

# A run's picture names → the AUTOMATIC1111 field they came in.
FIELD_OF_IMAGE = {"photo": "init_images", "mask": "mask"}
# AUTOMATIC1111's schedules Obscura follows (name → label); any other name is "automatic".
SCHEDULERS = {s.name: s.label for s in SCHEDULES.values()}


def model_name(title: str) -> str:
    """A model name from an AUTOMATIC1111 title (``name.safetensors [hash]`` → ``name``)."""
    name = title.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    for suffix in (".safetensors", ".ckpt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


# What AUTOMATIC1111's sd_vae calls the model's own VAE.
OWN_VAE = frozenset({"", "automatic", "none"})


def library_vae(studio: Studio, value: object, field: str) -> str | None:
    """The library VAE that AUTOMATIC1111's ``sd_vae`` value names (its file name, as
    ``/sd-vae`` lists it, or its name); ``None`` for Automatic/None (the model's own). A 422
    naming ``field`` otherwise; the sentence never repeats the value."""
    if not isinstance(value, str):
        raise ApiError(422, "invalid_value", f"{field}: expected a VAE name or Automatic.", field)
    wanted = value.strip()
    if wanted.lower() in OWN_VAE:
        return None
    library = studio.registry.library
    for item in library.items("vae"):
        if wanted in (item.name, item.path.name):
            return item.name
    try:
        return library.find("vae", model_name(wanted)).name
    except InputError as err:
        raise input_problem(err, field) from None


def clip_skip_of(value: object, field: str) -> int:
    """AUTOMATIC1111's ``CLIP_stop_at_last_layers`` (1 to the engine's bound), or a 422."""
    try:
        return check_clip_skip(value)
    except InputError as err:
        raise input_problem(err, field) from None


def hires_of(body: GenerationFields) -> HiresFix | None:
    """AUTOMATIC1111's ``enable_hr`` + ``hr_*`` fields as the engine's :class:`HiresFix`
    (A1111's defaults: denoising 0.75, the Latent upscaler, "" prompts = the first pass's)."""
    if not isinstance(body, Txt2ImgRequest) or not body.enable_hr:
        return None
    return HiresFix(
        scale=body.hr_scale,
        resize_x=body.hr_resize_x,
        resize_y=body.hr_resize_y,
        upscaler=body.hr_upscaler or DEFAULT_LATENT_MODE,
        second_pass_steps=body.hr_second_pass_steps,
        denoising_strength=0.75 if body.denoising_strength is None else body.denoising_strength,
        sampler=(None if (body.hr_sampler_name or "").strip().lower() in ("", "use same sampler")
                 else body.hr_sampler_name),
        prompt=body.hr_prompt or None,
        negative_prompt=body.hr_negative_prompt or None,
    )


class CallerModels:
    """Each caller's model (``sd_model_checkpoint``), VAE (``sd_vae``) and CLIP skip
    (``CLIP_stop_at_last_layers``), set with ``POST options``; the server's defaults for the
    rest. One caller's choice never changes another's (AUTOMATIC1111 has one global setting)."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._chosen: dict[str, str] = {}
        self._vae: dict[str, str | None] = {}
        self._clip_skip: dict[str, int] = {}
        self._lock = threading.Lock()

    def default(self) -> str:
        return self.studio.settings.default_model or self.studio.registry.default().name

    def of(self, owner: str) -> str:
        with self._lock:
            chosen = self._chosen.get(owner)
        if chosen and any(m.name == chosen for m in self.studio.registry.models):
            return chosen
        return self.default()

    def choose(self, owner: str, name: str) -> None:
        with self._lock:
            self._chosen[owner] = name

    def vae_of(self, owner: str) -> str | None:
        """The caller's VAE by library name; ``None`` = the model's own (also when the chosen
        file has left the library since)."""
        with self._lock:
            chosen = self._vae.get(owner)
        if chosen and any(v.name == chosen for v in self.studio.registry.library.items("vae")):
            return chosen
        return None

    def choose_vae(self, owner: str, name: str | None) -> None:
        with self._lock:
            self._vae[owner] = name

    def clip_skip_of(self, owner: str) -> int:
        with self._lock:
            return self._clip_skip.get(owner, 1)

    def choose_clip_skip(self, owner: str, clip_skip: int) -> None:
        with self._lock:
            self._clip_skip[owner] = clip_skip


class Generation:
    """Runs txt2img/img2img calls for callers of one studio."""

    def __init__(self, studio: Studio, models: CallerModels) -> None:
        self.studio = studio
        self.models = models

    @property
    def body_limit(self) -> int:
        # The photo, a mask and the units' pictures in base64 (4/3), plus room for the rest.
        return PICTURES_PER_BODY * self.studio.max_upload_bytes * 4 // 3 + 1_000_000

    def build_request(self, owner: str, body: GenerationFields, strength: float) -> RunInputs:
        prompt, negative = body.prompt, body.negative_prompt
        for style_name in body.styles:
            try:
                style = find_style(self.studio.styles, style_name)
            except InputError as err:
                raise input_problem(err, "styles") from None
            if style is not None:
                prompt, negative = style.apply(prompt, negative)
        if not 1 <= body.n_iter <= MAX_ITERATIONS:
            raise ApiError(
                422, "n_iter_out_of_range",
                f"n_iter: must be between 1 and {MAX_ITERATIONS}.", "n_iter",
            )
        override = body.override_settings.get("sd_model_checkpoint")
        if override is not None and not isinstance(override, str):
            raise ApiError(422, "invalid_value", "override_settings.sd_model_checkpoint: expected "
                           "a model name.", "override_settings.sd_model_checkpoint")
        model = model_name(override) if override else self.models.of(owner)
        settings = body.override_settings
        vae = self.models.vae_of(owner)
        chosen = self.info_of(model)
        if vae is not None and chosen is not None and is_flow(chosen):
            # The caller's saved VAE (POST options) is an SD one: not for this family; named
            # in obscura_ignored as sd_vae. Asked for in this call, the engine refuses it.
            vae = None
        if "sd_vae" in settings:
            vae = library_vae(self.studio, settings["sd_vae"], "override_settings.sd_vae")
        clip_skip = self.models.clip_skip_of(owner)
        if "CLIP_stop_at_last_layers" in settings:
            clip_skip = clip_skip_of(settings["CLIP_stop_at_last_layers"],
                                     "override_settings.CLIP_stop_at_last_layers")
        seed = body.seed if body.seed >= 0 else secrets.randbits(32)

        def floor8(value: int | None) -> int | None:
            return None if value is None else value // 8 * 8

        request = GenerationRequest(
            prompt=prompt,
            negative_prompt=negative,
            strength=strength,
            num_inference_steps=body.steps,
            guidance_scale=body.cfg_scale,
            width=floor8(body.width),
            height=floor8(body.height),
            batch_size=body.batch_size,
            seed=seed,
            sampler=self.sampler_of(body, model),
            model=model,
            clip_skip=clip_skip,
            vae=vae,
            hires=hires_of(body),
            allow_missing_networks=body.obscura_allow_missing_networks,
        )
        return RunInputs(request=request, iterations=body.n_iter, save=bool(body.save_images))

    def sampler_of(self, body: GenerationFields, model: str) -> str | None:
        # As in AUTOMATIC1111, any sampler goes with any schedule (core.samplers); a schedule
        # Obscura cannot follow is "automatic" and named in obscura_ignored, never a 422.
        name = body.sampler_name or body.sampler_index
        info = self.info_of(model)
        if info is not None and is_flow(info):
            return flow_sampler(info, name)
        if name is not None:
            try:
                name = find_sampler(name).name
            except InputError as err:
                raise input_problem(err, "sampler_name") from None
        schedule = find_schedule(body.scheduler)
        if schedule is not None and schedule.options:
            if name is None:
                try:
                    name = self.studio.registry.get(model).spec.default_sampler
                except InputError as err:
                    raise input_problem(err, "sd_model_checkpoint") from None
            name, _followed = with_schedule(name, schedule.name)
        return name

    def info_of(self, model: str | None) -> ModelInfo | None:
        """The installed model ``model`` names; None for an unknown one (the run says so)."""
        try:
            return self.studio.registry.get(model) if model else None
        except InputError:
            return None

    def problem(self, err: Exception, request: GenerationRequest,
                units: Units | None = None) -> ApiError:
        """The API's answer to a run's one-sentence error, naming the field at fault."""
        code = getattr(err, "code", None)
        if code == "shutting_down":
            return ApiError(503, "shutting_down", str(err), headers={"retry-after": "10"})
        params = getattr(err, "params", None) or {}
        image = str(params.get("image", ""))
        field = FIELD_OF_IMAGE.get(image) or (units.fields.get(image) if units else None)
        if field is None and units is not None:
            field = units.field_of(code, params)
        if code == "size_out_of_range":
            low, high = params.get("min", 0), params.get("max", 0)
            width = request.width
            width_ok = width is None or (low <= width <= high and width % 8 == 0)
            field = "width" if not width_ok else "height"
        return input_problem(err, field)

    async def generate(self, request: Request, viewer: Viewer, body: GenerationFields,
                       inputs: RunInputs, units: Units | None = None) -> Response:
        try:
            answer = await run_for_caller(self.studio, viewer.user_id, inputs, request)
        except (InputError, PrivacyError) as err:
            raise self.problem(err, inputs.request, units) from None
        if answer is None:
            return Response(status_code=499)  # hung up: nobody reads it
        images, info = await asyncio.to_thread(self.deliver, body, inputs, answer, units)
        model = self.info_of(inputs.request.model)
        if (model is not None and is_flow(model) and "sd_vae" not in body.override_settings
                and self.models.vae_of(viewer.user_id) is not None):
            info["obscura_ignored"].append("sd_vae")  # the saved SD VAE: not for this family
        parameters = body.model_dump(mode="json")
        for name in ("init_images", "mask"):
            if name in parameters:
                parameters[name] = None  # the photo is never sent back
        if answer.interrupted:
            info["interrupted"] = True
        return JSONResponse(
            {"images": images, "parameters": parameters, "info": json.dumps(info)},
            headers={"cache-control": "no-store"},
        )

    def deliver(
        self, body: GenerationFields, inputs: RunInputs, answer: Answer,
        units: Units | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        """Base64 PNGs (labelled once by the run) and AUTOMATIC1111's ``info``."""
        request = inputs.request
        images = (
            [base64.b64encode(picture.png).decode("ascii") for picture in answer.pictures]
            if body.send_images else []
        )
        infotexts = [picture.infotext for picture in answer.pictures]
        seeds = [picture.seed for picture in answer.pictures]
        results = answer.results
        first = results[0] if results else None
        ignored = body.ignored() + (units.ignored if units else [])
        if body.save_images and not answer.saved:
            ignored.append("save_images")
        sampler = first.sampler if first else request.sampler
        schedule = _schedule_of(sampler)
        asked = (body.scheduler or "").strip()
        if asked and asked.lower() != "automatic" and find_schedule(asked) is not schedule:
            ignored.append("scheduler")  # not one diffusers can follow with this sampler
        model = self.info_of(first.model if first else request.model)
        if model is not None and is_flow(model):
            # A flow family: the schedule of an SD sampler name mapped to its flow sampler
            # ("Euler Karras"), or a scheduler field (flow samplers keep their own schedule).
            for name in family_ignored(model, body):
                if name not in ignored:
                    ignored.append(name)
        for result in results:  # what the engine reports it did not use
            for name in result.extras.get("ignored", []):
                if name not in ignored:
                    ignored.append(name)
        vae_file = next(
            (v.path.name for v in self.studio.registry.library.items("vae")
             if v.name == request.vae), None,
        ) if request.vae else None
        seed = seeds[0] if seeds else int(request.seed or 0)
        info: dict[str, Any] = {
            "prompt": request.prompt,
            "all_prompts": [request.prompt] * len(seeds),
            "negative_prompt": request.negative_prompt,
            "all_negative_prompts": [request.negative_prompt] * len(seeds),
            "seed": seed,
            "all_seeds": seeds,
            "subseed": seed,
            "all_subseeds": seeds,
            "subseed_strength": 0,
            "width": first.width if first else request.width,
            "height": first.height if first else request.height,
            "sampler_name": sampler,
            "scheduler": schedule.label,
            "cfg_scale": first.guidance_scale if first else request.guidance_scale,
            "steps": first.num_inference_steps if first else request.num_inference_steps,
            "batch_size": request.batch_size,
            "n_iter": inputs.iterations,
            "restore_faces": False,
            "sd_model_name": first.model if first else request.model,
            "sd_model_hash": None,
            "sd_vae_name": vae_file,
            "sd_vae_hash": None,
            "denoising_strength": first.strength if first else None,
            "clip_skip": request.clip_skip,
            "styles": body.styles,
            "extra_generation_params": _extra_params(schedule.label, request),
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "job_timestamp": "",
            "is_using_inpainting_conditioning": bool(first and first.mode == "inpaint"),
            "version": "obscura",
            "obscura_demo_model": bool(first and first.is_demo),
            "obscura_ignored": ignored,
            "obscura_saved_to_gallery": answer.saved,
            # LoRAs/embeddings painted without (only when asked to): for this caller only.
            "obscura_skipped_networks": [
                {"kind": item.get("kind"), "name": item.get("name"), "reason": item.get("message")}
                for result in answer.results for item in result.extras.get("skipped_networks", [])
            ],
        }
        if first is not None:  # "ControlNet 0": "Module: canny, Model: ..." (the extension's)
            info["extra_generation_params"].update(unit_params(first))
            if "face_found" in first.extras:  # yes/no only, for the caller (never in a picture)
                info["obscura_face_found"] = bool(first.extras["face_found"])
        hires = first.extras.get("hires") if first else None
        if hires and first is not None:  # AUTOMATIC1111: Size is the first pass's; hr fields the rest
            info["extra_generation_params"].update(hires)
            info["denoising_strength"] = hires["Denoising strength"]
            info["width"], info["height"] = first.extras["first_pass_size"]
        return images, info


def flow_sampler(info: ModelInfo, name: str | None) -> str | None:
    """AUTOMATIC1111's ``sampler_name`` for a flow-family model: one of the family's samplers
    (core/families.py; any case), or an SD name whose sampler the family has, without its
    schedule ("Euler Karras" → "Euler", the schedule named in obscura_ignored); ``None`` = the
    model's default. Any other name is a 422 that lists the family's samplers."""
    if name is None or not name.strip():
        return None
    row = family_of(info)
    wanted = name.strip().lower()
    for sampler in row.samplers:
        if sampler.lower() == wanted:
            return sampler
    try:
        base, schedule = with_schedule(name, None)
    except InputError:
        base, schedule = "", SCHEDULES["automatic"]
    if schedule.options:
        base = base[: -len(schedule.label) - 1]
    if base in row.samplers:
        return base
    raise ApiError(
        422, "sampler_not_for_family",
        f"sampler_name: {row.title} models take these samplers: {', '.join(row.samplers)}.",
        "sampler_name",
    )


def family_ignored(info: ModelInfo, body: GenerationFields) -> list[str]:
    """The fields of this call that ``info``'s flow family does not use and the engine cannot
    know of (a schedule: the engine reports the rest, negative prompt, CFG, CLIP skip, ...)."""
    row = family_of(info)
    names = []
    asked = body.sampler_name or body.sampler_index
    if asked and asked.strip().lower() not in {s.lower() for s in row.samplers}:
        names.append("scheduler")  # an SD name's schedule: the flow sampler has its own
    if body.scheduler and body.scheduler.strip().lower() not in ("", "automatic"):
        names.append("scheduler")
    return list(dict.fromkeys(names))


def family_json(info: ModelInfo) -> dict[str, Any]:
    """What ``/sd-models`` adds to AUTOMATIC1111's entry (``obscura_family``): the family, its
    defaults, its samplers and the fields its pipeline does not use."""
    spec = info.spec
    answer: dict[str, Any] = {
        "arch": info.arch, "variant": info.variant, "format": info.format,
        "title": (ARCH_TITLES.get(info.arch, info.arch)
                  + VARIANT_TITLES.get(info.variant, "")),
        "steps": spec.default_steps, "cfg_scale": spec.default_guidance,
        "width": spec.default_size, "height": spec.default_size,
        "sampler_name": spec.default_sampler,
    }
    if is_flow(info):
        row = family_of(info)
        answer |= {"samplers": list(row.samplers), "ignores": list(row.ignored_controls),
                   "size_multiple": row.size_multiple, "modes": sorted(row.pipelines),
                   "max_references": edit_references(info)}
    else:
        answer |= {"samplers": list(sampler_names()), "ignores": [], "size_multiple": 8,
                   "modes": ["img2img", "inpaint", "txt2img"], "max_references": 0}
    return answer


def sampler_families() -> dict[str, list[str]]:
    """Sampler name → the architectures that take it (``/samplers``' ``obscura_families``)."""
    from core.families import FAMILIES, SD_ARCHS

    names: dict[str, list[str]] = {name: list(SD_ARCHS) for name in sampler_names()}
    for arch, row in FAMILIES.items():
        for name in row.samplers:
            names.setdefault(name, []).append(arch)
    return names


def edit_references(info: ModelInfo | None) -> int:
    """How many extra ``init_images`` an edit model takes as reference pictures (0: none)."""
    if info is None or not is_flow(info):
        return 0
    row = family_of(info)
    return row.max_references if "edit" in row.pipelines else 0


def _schedule_of(sampler: str | None) -> Schedule:
    """The schedule a sampler name follows ("Euler a Karras" → Karras)."""
    try:
        return with_schedule(sampler, None)[1]
    except InputError:
        return SCHEDULES["automatic"]


def _extra_params(schedule: str, request: GenerationRequest) -> dict[str, Any]:
    """AUTOMATIC1111's ``extra_generation_params`` for ``info`` (the caller's own answer only;
    a picture carries parameters only when its owner opted in, :mod:`webui.infotext`). LoRA
    hashes are left out: hashing every LoRA file would cost a read of the whole file."""
    params: dict[str, Any] = {}
    if schedule != "Automatic":
        params["Schedule type"] = schedule
    if request.clip_skip > 1:
        params["Clip skip"] = request.clip_skip
    return params


async def run_for_caller(
    studio: Studio, owner: str, inputs: RunInputs, request: Request
) -> Answer | None:
    """The run (:func:`webui.run.paint`) for an API caller; ``None`` when they hung up first,
    in which case the job was cancelled and its pictures shredded at once. Raises the run's
    InputError/PrivacyError, and ApiError 500 for a failure inside the engine."""

    async def run() -> Answer | None:
        answer = None
        async for update in paint(studio, owner, inputs, every=None):
            answer = update.answer or answer
        return answer

    running = asyncio.ensure_future(run())
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({running, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():  # the caller hung up: cancel the job, shred the pictures
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            return None
        try:
            return running.result()
        except RuntimeError:
            raise ApiError(
                500, "job_failed", "The job failed inside the engine; it was not your input."
            ) from None
    finally:
        gone.cancel()
        if not running.done():
            running.cancel()


async def _hung_up(request: Request) -> None:
    """Returns when the caller has hung up: the ASGI server sends ``http.disconnect`` through
    ``receive`` (the body has been read by then, so nothing else comes)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return

