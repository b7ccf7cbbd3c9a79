"""The ``/sdapi/v1/`` routes: AUTOMATIC1111's request and response shapes on Obscura's engine.

Every route needs a caller (:mod:`webui.api.auth`); ``progress``, ``interrupt`` and ``skip``
see and act on the caller's own jobs only; generation goes through the one shared queue
(:mod:`webui.api.runs`). Errors are JSON (:mod:`webui.api.problems`), never a traceback, and
nothing of a request (prompt, picture, user) is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import psutil
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from core.engine import GenerationRequest, GenerationResult
from core.errors import InputError
from core.jobs import Job, JobState
from core.samplers import SAMPLERS, find_sampler, sampler_names
from privacy.errors import PrivacyError
from privacy.output import encode_picture
from webui.api.auth import require_viewer
from webui.api.pictures import clean_picture, encode_base64_png, prepare_mask
from webui.api.problems import ApiError, input_problem, validation_problem
from webui.api.runs import Inputs, Runs, execute
from webui.api.schemas import GenerationFields, Img2ImgRequest, Txt2ImgRequest
from webui.auth import Gate, Viewer
from webui.studio import Studio
from webui.styles import find_style

log = logging.getLogger("obscura.webui")
PREFIX = "/sdapi/v1"
MAX_ITERATIONS = 16
SCHEDULERS = {"automatic": "Automatic", "karras": "Karras"}

# AUTOMATIC1111 endpoints Obscura does not have (answered 501, by name).
UNSUPPORTED = frozenset({
    "extra-single-image", "extra-batch-images", "png-info", "interrogate", "upscalers",
    "latent-upscale-modes", "sd-vae", "sd-modules", "hypernetworks", "face-restorers",
    "realesrgan-models", "embeddings", "loras", "refresh-loras", "refresh-vae",
    "refresh-embeddings", "reload-checkpoint", "unload-checkpoint", "scripts", "script-info",
    "extensions", "create/embedding", "create/hypernetwork", "train/embedding",
    "train/hypernetwork", "preprocess", "server-kill", "server-restart", "server-stop",
    "artist-categories", "artists",
})
SUPPORTED = frozenset({
    "txt2img", "img2img", "sd-models", "samplers", "schedulers", "options",
    "refresh-checkpoints", "progress", "interrupt", "skip", "prompt-styles", "memory",
    "cmd-flags",
})
UNEXPECTED = ApiError(
    500, "internal_error", "Something went wrong on the server; the request was not completed."
)


class ApiRoute(APIRoute):
    """Every route of the API: the caller is checked first (no route can forget to), and every
    error of the route becomes a JSON answer."""

    gate: Gate | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        gate = self.gate

        async def answer(request: Request) -> Response:
            try:
                if gate is None:
                    raise RuntimeError("ApiRoute without a gate")
                request.state.api_viewer = await asyncio.to_thread(require_viewer, gate, request)
                return await handler(request)
            except ApiError as err:
                return err.response()
            except RequestValidationError as err:
                errors = err.errors()
                where = [str(p) for p in (errors[0].get("loc", ()) if errors else ())]
                name = where[-1] if where else "request"
                return ApiError(422, "invalid_value", f"{name}: invalid value.", name).response()
            except Exception as err:  # noqa: BLE001  (one sentence, never a traceback)
                log.error("api request failed: %s", type(err).__name__)
                return UNEXPECTED.response()

        return answer


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def model_name(title: str) -> str:
    """A model name from an AUTOMATIC1111 title (``name.safetensors [hash]`` → ``name``)."""
    name = title.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    for suffix in (".safetensors", ".ckpt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, read into memory (never a temp file) and refused past ``limit``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(
                413, "body_too_large",
                f"The request is larger than {limit / 1_000_000:g} MB; send smaller pictures.",
            )
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_body", "The request body is not valid JSON.") from None
    finally:
        body[:] = b""


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise validation_problem(err) from None


class SdApi:
    """The routes' shared state: the caller's runs and each caller's chosen model."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.runs = Runs()
        self.chosen: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- callers and models ----------------------------------------------------------------
    def default_model(self) -> str:
        settings_model = self.studio.settings.default_model
        if settings_model:
            return settings_model
        return self.studio.registry.default().name

    def model_of(self, owner: str) -> str:
        with self._lock:
            chosen = self.chosen.get(owner)
        if chosen and any(m.name == chosen for m in self.studio.registry.models):
            return chosen
        return self.default_model()

    @property
    def body_limit(self) -> int:
        # Photo and mask in base64 (4/3) plus room for the rest.
        return 3 * self.studio.max_upload_bytes + 1_000_000

    # -- generation --------------------------------------------------------------------------
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
        model = model_name(override) if override else self.model_of(owner)
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
        images, info = await asyncio.to_thread(self.deliver, viewer, body, inputs, outcome.results)
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
    ) -> tuple[list[str], dict[str, Any]]:
        """Base64 PNGs with the AI label (settings only when opted in); the caller's gallery
        when ``save_images`` in accounts mode; and AUTOMATIC1111's ``info``."""
        studio = self.studio
        accounts, gallery = studio.accounts, studio.gallery
        embed = accounts is not None and accounts.settings(viewer.user_id).embed_parameters
        keep = body.save_images and accounts is not None and gallery is not None
        public_key = accounts.public_key(viewer.user_id) if keep and accounts else None
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

    # -- progress -----------------------------------------------------------------------------
    def progress(self, owner: str, with_image: bool) -> dict[str, Any]:
        jobs = [job for job in self.studio.queue.jobs_of(owner) if not job.done]
        running = [job for job in jobs if job.state is JobState.RUNNING]
        candidates = running or sorted(jobs, key=lambda j: j.created)
        job: Job | None = candidates[0] if candidates else None
        state: dict[str, Any] = {
            "skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
            "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
            "sampling_steps": 0,
        }
        idle = {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                "textinfo": None, "current_task": None}
        if job is None:
            return idle
        run = self.runs.holding(job)
        job_no, job_count = (run.index, run.iterations) if run else (0, 1)
        fraction = job.step / job.total_steps if job.total_steps else 0.0
        progress = min(1.0, (job_no + fraction) / job_count)
        eta = 0.0
        if run is not None and progress > 0:
            spent = time.monotonic() - run.started
            eta = spent / progress - spent
        position = self.studio.queue.position(job)
        textinfo = f"Waiting: number {position} in line" if position >= 1 else None
        state.update(
            job=f"Batch {job_no + 1} out of {job_count}", job_count=job_count, job_no=job_no,
            job_timestamp=run.timestamp if run else "0", sampling_step=job.step,
            sampling_steps=job.total_steps, interrupted=bool(run and run.interrupted),
        )
        image = None
        preview = job.preview
        if with_image and preview is not None:
            photo_based = job.request.image is not None
            image = encode_base64_png(preview, photo_based=photo_based, parameters=None)
        return {"progress": round(progress, 4), "eta_relative": round(eta, 2), "state": state,
                "current_image": image, "textinfo": textinfo, "current_task": None}

    def stop(self, owner: str, *, skip: bool) -> None:
        """Interrupt (the runs end) or skip (the runs go on with their next iteration)."""
        for run in self.runs.of(owner):
            if skip:
                if run.job is not None:
                    run.skipped.add(run.job.id)
            else:
                run.interrupted = True
        for job in self.studio.queue.jobs_of(owner):
            if not job.done and (not skip or job.state is JobState.RUNNING):
                job.cancel()


def caller(request: Request) -> Viewer:
    """The caller :class:`ApiRoute` checked."""
    viewer: Viewer = request.state.api_viewer
    return viewer


def infotext(prompt: str, negative: str, result: GenerationResult, seed: int) -> str:
    """AUTOMATIC1111's "parameters" text (only written into a file when the owner opted in)."""
    line = (
        f"Steps: {result.num_inference_steps}, Sampler: {result.sampler}, "
        f"CFG scale: {result.guidance_scale}, Seed: {seed}, "
        f"Size: {result.width}x{result.height}, Model: {result.model}"
    )
    if result.strength is not None:
        line += f", Denoising strength: {result.strength}"
    return f"{prompt}\nNegative prompt: {negative}\n{line}"


def build_api_router(studio: Studio) -> APIRouter:
    """The ``/sdapi/v1/`` routes for ``studio`` (include it in the server's FastAPI app)."""
    api = SdApi(studio)
    route_class = type("StudioApiRoute", (ApiRoute,), {"gate": studio.gate})
    router = APIRouter(prefix=PREFIX, route_class=route_class, tags=["sdapi"])

    @router.post("/txt2img")
    async def txt2img(request: Request) -> JSONResponse:
        viewer = caller(request)
        body = parse(Txt2ImgRequest, await read_json(request, api.body_limit))
        if body.script_name:
            raise ApiError(422, "script_not_found", "script_name: Obscura has no scripts.",
                           "script_name")
        inputs = await asyncio.to_thread(api.build_request, viewer.user_id, body, 0.75)
        return await api.generate(request, viewer, body, inputs)

    @router.post("/img2img")
    async def img2img(request: Request) -> JSONResponse:
        viewer = caller(request)
        body = parse(Img2ImgRequest, await read_json(request, api.body_limit))
        if body.script_name:
            raise ApiError(422, "script_not_found", "script_name: Obscura has no scripts.",
                           "script_name")
        if not body.init_images:
            raise ApiError(422, "missing_init_image", "init_images: send one base64 picture.",
                           "init_images")
        inputs = await asyncio.to_thread(
            api.build_request, viewer.user_id, body, body.denoising_strength
        )
        scrubbed = functools.partial(clean_picture, max_bytes=studio.max_upload_bytes,
                                   max_pixels=studio.max_upload_pixels)
        photo = await asyncio.to_thread(scrubbed, body.init_images[0], "init_images")
        mask = None
        if body.mask is not None:
            raw_mask = await asyncio.to_thread(scrubbed, body.mask, "mask", mask=True)
            mask = prepare_mask(raw_mask, photo.size, bool(body.inpainting_mask_invert))
        body.init_images = None
        body.mask = None
        inputs.photo, inputs.mask, inputs.mask_blur = photo, mask, max(0, body.blur)
        del photo, mask
        return await api.generate(request, viewer, body, inputs)

    @router.get("/sd-models")
    def sd_models(request: Request) -> list[dict[str, Any]]:
        return [
            {"title": m.name, "model_name": m.name, "hash": None, "sha256": None,
             "filename": m.path.name, "config": None}
            for m in studio.registry.models
        ]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints(request: Request) -> None:
        studio.registry.scan()

    @router.get("/samplers")
    def samplers(request: Request) -> list[dict[str, Any]]:
        return [{"name": name, "aliases": [], "options": {}} for name in sampler_names()]

    @router.get("/schedulers")
    def schedulers(request: Request) -> list[dict[str, Any]]:
        return [
            {"name": name, "label": label, "aliases": None, "default_rho": -1,
             "need_inner_model": False}
            for name, label in SCHEDULERS.items()
        ]

    @router.get("/options")
    def get_options(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        embed = False
        if studio.accounts is not None:
            embed = studio.accounts.settings(viewer.user_id).embed_parameters
        return {
            "sd_model_checkpoint": api.model_of(viewer.user_id),
            "sd_checkpoint_hash": None,
            "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1,
            "samples_format": "png",
            "enable_pnginfo": embed,
            "live_previews_enable": True,
            "show_progress_every_n_steps": 1,
        }

    @router.post("/options")
    async def set_options(request: Request) -> None:
        viewer = caller(request)
        data = await read_json(request, 1_000_000)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_body", "The request body must be a JSON object.")
        title = data.get("sd_model_checkpoint")
        if title is None:
            return None  # other options are AUTOMATIC1111's own; ignored, as it ignores unknowns
        if not isinstance(title, str) or not title.strip():
            raise ApiError(422, "invalid_value", "sd_model_checkpoint: expected a model name.",
                           "sd_model_checkpoint")
        name = model_name(title)
        try:
            await asyncio.to_thread(studio.engine.load, name)
        except InputError as err:
            raise input_problem(err, "sd_model_checkpoint") from None
        with api._lock:  # noqa: SLF001
            api.chosen[viewer.user_id] = name
        return None

    @router.get("/progress")
    def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        viewer = caller(request)
        return api.progress(viewer.user_id, not skip_current_image)

    @router.post("/interrupt")
    def interrupt(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        api.stop(viewer.user_id, skip=False)
        return {}

    @router.post("/skip")
    def skip(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        api.stop(viewer.user_id, skip=True)
        return {}

    @router.get("/prompt-styles")
    def prompt_styles(request: Request) -> list[dict[str, Any]]:
        return [
            {"name": s.name_en, "prompt": s.prompt, "negative_prompt": s.negative}
            for s in studio.styles.values()
        ]

    @router.get("/memory")
    def memory(request: Request) -> dict[str, Any]:
        ram = psutil.virtual_memory()
        answer: dict[str, Any] = {
            "ram": {"free": ram.available, "used": ram.total - ram.available, "total": ram.total}
        }
        device = str(studio.engine.device)
        if device.startswith("cuda"):
            import torch

            free, total = torch.cuda.mem_get_info(torch.device(device))
            answer["cuda"] = {"system": {"free": free, "used": total - free, "total": total}}
        else:
            answer["cuda"] = {"error": f"no CUDA device in use (running on {device})"}
        return answer

    @router.get("/cmd-flags")
    def cmd_flags(request: Request) -> dict[str, Any]:
        settings = studio.settings
        dtype = str(studio.engine.dtype).removeprefix("torch.")
        return {
            "api": True,
            "nowebui": False,
            "listen": not is_loopback(settings.host),
            "port": settings.port,
            "share": False,
            "device": str(studio.engine.device),
            "precision": dtype,
            "no_half": dtype == "float32",
            "medvram": settings.memory_mode == "model-offload",
            "lowvram": settings.memory_mode == "sequential-offload",
            "obscura_mode": studio.mode,
        }

    @router.api_route(
        "/{endpoint:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    def unsupported(request: Request, endpoint: str) -> JSONResponse:
        name = endpoint.strip("/")
        shown = name[:60]
        if name in SUPPORTED:
            raise ApiError(405, "method_not_allowed",
                           f"{PREFIX}/{shown} does not answer {request.method}.")
        if name in UNSUPPORTED:
            raise ApiError(501, "not_supported",
                           f"{PREFIX}/{shown} is an AUTOMATIC1111 endpoint that Obscura does not "
                           "support; see docs/api.md.")
        raise ApiError(404, "unknown_endpoint",
                       f"{PREFIX}/{shown} is not an endpoint of this API; see docs/api.md.")

    return router
