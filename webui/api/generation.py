"""txt2img and img2img: an AUTOMATIC1111 body → a checked :class:`GenerationRequest` → jobs on
the shared queue (:mod:`webui.api.runs`) → base64 PNGs and AUTOMATIC1111's ``info``.

Pictures leave with the AI label only, plus AUTOMATIC1111's ``parameters`` text when the
caller's account opted in; ``save_images`` seals them into the caller's gallery in accounts
mode. Each caller has their own model choice (``POST options``), so nobody changes another
person's model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from core.engine import GenerationRequest, GenerationResult
from core.errors import InputError
from core.samplers import SAMPLERS, find_sampler
from privacy.errors import PrivacyError
from privacy.output import encode_picture
from webui.api.pictures import encode_base64_png
from webui.api.problems import ApiError, input_problem
from webui.api.runs import Inputs, Runs, execute
from webui.api.schemas import MAX_ITERATIONS, GenerationFields
from webui.auth import Viewer
from webui.infotext import infotext
from webui.studio import Studio
from webui.styles import find_style

SCHEDULERS = {"automatic": "Automatic", "karras": "Karras"}


def model_name(title: str) -> str:
    """A model name from an AUTOMATIC1111 title (``name.safetensors [hash]`` → ``name``)."""
    name = title.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    for suffix in (".safetensors", ".ckpt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


class CallerModels:
    """Each caller's model (``sd_model_checkpoint``); the server's default for the rest."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._chosen: dict[str, str] = {}
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


class Generation:
    """Runs txt2img/img2img calls for callers of one studio."""

    def __init__(self, studio: Studio, runs: Runs, models: CallerModels) -> None:
        self.studio = studio
        self.runs = runs
        self.models = models

    @property
    def body_limit(self) -> int:
        # Photo and mask in base64 (4/3) plus room for the rest.
        return 3 * self.studio.max_upload_bytes + 1_000_000

    def build_request(self, owner: str, body: GenerationFields, strength: float) -> Inputs:
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
        )
        return Inputs(request=request, iterations=body.n_iter)

    def sampler_of(self, body: GenerationFields, model: str) -> str | None:
        name = body.sampler_name or body.sampler_index
        scheduler = (body.scheduler or "automatic").strip().lower()
        if scheduler not in SCHEDULERS:
            raise ApiError(
                422, "unknown_scheduler",
                "scheduler: unknown scheduler; choose one of: automatic, karras.", "scheduler",
            )
        if name is not None:
            try:
                name = find_sampler(name).name
            except InputError as err:
                raise input_problem(err, "sampler_name") from None
        if scheduler == "karras":
            if name is None:
                try:
                    name = self.studio.registry.get(model).spec.default_sampler
                except InputError as err:
                    raise input_problem(err, "sd_model_checkpoint") from None
            if not name.endswith("Karras"):
                if f"{name} Karras" not in SAMPLERS:
                    raise ApiError(
                        422, "unknown_scheduler",
                        "scheduler: karras does not go with this sampler; use automatic, or one "
                        "of: " + ", ".join(n for n in SAMPLERS if n.endswith("Karras")) + ".",
                        "scheduler",
                    )
                name = f"{name} Karras"
        return name

    def check(self, request: GenerationRequest) -> None:
        """The engine's checks, with the pictures, before anything is spooled or queued."""
        try:
            self.studio.engine.validate(request)
        except InputError as err:
            field = None
            if err.code == "size_out_of_range":
                low, high = err.params.get("min", 0), err.params.get("max", 0)
                width = request.width
                width_ok = width is None or (low <= width <= high and width % 8 == 0)
                field = "width" if not width_ok else "height"
            raise input_problem(err, field) from None

    async def generate(
        self, request: Request, viewer: Viewer, body: GenerationFields, inputs: Inputs
    ) -> JSONResponse:
        if inputs.mask is not None and inputs.photo is None:
            raise ApiError(422, "mask_without_image", "mask: a mask needs an init image.", "mask")
        self.check(dataclasses.replace(inputs.request, image=inputs.photo, mask=inputs.mask))
        owner = viewer.user_id
        # The owner's key as of the request: a password reset during the job must not let the
        # resetting admin open this picture (the new key pair is theirs to know).
        accounts = self.studio.accounts
        sealed_to = accounts.public_key(owner) if accounts is not None and body.save_images else None
        try:
            outcome = await execute(
                self.studio, self.runs, owner, inputs, request.is_disconnected
            )
        except (InputError, PrivacyError) as err:
            raise input_problem(err) from None
        except RuntimeError:
            raise ApiError(
                500, "job_failed", "The job failed inside the engine; it was not your input."
            ) from None
        images, info = await asyncio.to_thread(
            self.deliver, viewer, body, inputs, outcome.results, sealed_to
        )
        parameters = body.model_dump(mode="json")
        for name in ("init_images", "mask"):
            if name in parameters:
                parameters[name] = None  # the photo is never sent back
        if outcome.interrupted:
            info["interrupted"] = True
        return JSONResponse(
            {"images": images, "parameters": parameters, "info": json.dumps(info)},
            headers={"cache-control": "no-store"},
        )

    def deliver(
        self,
        viewer: Viewer,
        body: GenerationFields,
        inputs: Inputs,
        results: list[GenerationResult],
        sealed_to: bytes | None = None,
    ) -> tuple[list[str], dict[str, Any]]:
        """Base64 PNGs with the AI label (settings only when opted in); the caller's gallery
        when ``save_images`` in accounts mode; and AUTOMATIC1111's ``info``."""
        studio = self.studio
        accounts, gallery = studio.accounts, studio.gallery
        embed = accounts is not None and accounts.settings(viewer.user_id).embed_parameters
        keep = body.save_images and accounts is not None and gallery is not None
        public_key = sealed_to if keep else None
        request = inputs.request
        images: list[str] = []
        infotexts: list[str] = []
        seeds: list[int] = []
        for result in results:
            for image, seed in zip(result.images, result.seeds, strict=False):
                text = infotext(request.prompt, request.negative_prompt, result, seed)
                infotexts.append(text)
                seeds.append(seed)
                photo_based = result.mode != "txt2img"
                parameters = text if embed else None
                if keep and gallery is not None and public_key is not None:
                    png = encode_picture(image, "png", photo_based=photo_based,
                                         parameters=parameters)
                    gallery.store(viewer.user_id, public_key, png, kind="png")
                if body.send_images:
                    images.append(
                        encode_base64_png(image, photo_based=photo_based, parameters=parameters)
                    )
            result.images = []
        first = results[0] if results else None
        ignored = body.ignored()
        if body.save_images and not keep:
            ignored.append("save_images")
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
            "sampler_name": first.sampler if first else request.sampler,
            "scheduler": "automatic",
            "cfg_scale": first.guidance_scale if first else request.guidance_scale,
            "steps": first.num_inference_steps if first else request.num_inference_steps,
            "batch_size": request.batch_size,
            "n_iter": inputs.iterations,
            "restore_faces": False,
            "sd_model_name": first.model if first else request.model,
            "sd_model_hash": None,
            "sd_vae_name": None,
            "sd_vae_hash": None,
            "denoising_strength": first.strength if first else None,
            "clip_skip": 1,
            "styles": body.styles,
            "extra_generation_params": {},
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "job_timestamp": "",
            "is_using_inpainting_conditioning": bool(first and first.mode == "inpaint"),
            "version": "obscura",
            "obscura_demo_model": bool(first and first.is_demo),
            "obscura_ignored": ignored,
            "obscura_saved_to_gallery": keep,
        }
        return images, info

