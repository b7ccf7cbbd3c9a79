"""The ``/sdapi/v1/`` routes: AUTOMATIC1111's request and response shapes on Obscura's engine.

Every route needs a caller and answers errors as JSON (:mod:`webui.api.endpoint`); generation
goes through the one run path (:mod:`webui.api.generation` maps fields, :mod:`webui.run` runs);
``progress``, ``interrupt`` and ``skip`` act on the caller's own jobs only
(:mod:`webui.api.progress`). AUTOMATIC1111 endpoints Obscura lacks answer 501 by name.

The library listings (``loras``, ``embeddings``, ``sd-vae``, ``upscalers``, ...) list the
server's shared model library (:mod:`core.library`), not anyone's data, but still need a caller.
They keep AUTOMATIC1111's shapes with two deliberate differences (docs/api.md): a file's path is
relative to the models folder (``Lora/styles/x.safetensors``), never the server's absolute path,
and a LoRA's ``metadata`` is not the file's training metadata (``ss_*`` values name the
trainer's folders, data sets and base files) but only ``ss_base_model_version``, made from the
architecture Obscura read from the weights' shapes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psutil
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from core.errors import InputError
from core.library import LibraryItem, ModelLibrary
from core.samplers import SCHEDULES, sampler_names
from webui.api import progress as caller_jobs
from webui.api.controlnet import add_units, build_controlnet_router, units_of
from webui.api.endpoint import ApiRoute, caller, parse, read_json
from webui.api.extras import Extras
from webui.api.generation import (
    CallerModels,
    Generation,
    clip_skip_of,
    edit_references,
    family_json,
    library_vae,
    model_name,
    sampler_families,
)
from webui.api.pictures import decode_base64
from webui.api.problems import ApiError, input_problem
from webui.api.schemas import (
    ExtrasBatchImagesRequest,
    ExtrasSingleImageRequest,
    Img2ImgRequest,
    Txt2ImgRequest,
)
from webui.config import is_loopback
from webui.run import RunImage
from webui.studio import Studio

PREFIX = "/sdapi/v1"
# AUTOMATIC1111 endpoints Obscura does not have (answered 501, by name).
UNSUPPORTED = frozenset({
    "png-info", "interrogate", "face-restorers",
    "realesrgan-models", "reload-checkpoint", "unload-checkpoint", "scripts", "script-info",
    "extensions", "create/embedding", "create/hypernetwork", "train/embedding",
    "train/hypernetwork", "preprocess", "server-kill", "server-restart", "server-stop",
    "artist-categories", "artists",
})
SUPPORTED = frozenset({
    "txt2img", "img2img", "sd-models", "samplers", "schedulers", "options",
    "refresh-checkpoints", "progress", "interrupt", "skip", "prompt-styles", "memory",
    "cmd-flags", "loras", "refresh-loras", "embeddings", "refresh-embeddings", "hypernetworks",
    "sd-vae", "refresh-vae", "sd-modules", "upscalers", "latent-upscale-modes",
    "extra-single-image", "extra-batch-images",
})
# A1111's ss_base_model_version for the architectures the library reads from a LoRA's shapes.
BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}

def shown_path(item: LibraryItem, library: ModelLibrary) -> str:
    """A library file's path relative to the models folder (or the embeddings folder): never
    the server's absolute path, which would tell every caller about its file system."""
    for root in (library.models_dir, *library.embedding_dirs()):
        try:
            return item.path.relative_to(root).as_posix()
        except ValueError:
            continue
    return item.path.name


def lora_json(item: LibraryItem, library: ModelLibrary) -> dict[str, Any]:
    """AUTOMATIC1111's LoRA entry (``name``, ``alias``, ``path``, ``metadata``). ``alias`` is
    the name (``<lora:NAME:1>``), not the file's ``ss_output_name``; ``metadata`` holds only the
    base model version Obscura read from the shapes, none of the file's training metadata."""
    metadata = {}
    if item.arch in BASE_MODEL_VERSION:
        metadata["ss_base_model_version"] = BASE_MODEL_VERSION[item.arch]
    return {"name": item.name, "alias": item.name, "path": shown_path(item, library),
            "metadata": metadata}


def embedding_json(item: LibraryItem) -> dict[str, Any]:
    """AUTOMATIC1111's embedding entry; its training step and checkpoint are not read."""
    return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
            "shape": item.detail.get("width"), "vectors": item.detail.get("vectors")}


def build_api_router(studio: Studio) -> APIRouter:
    """The ``/sdapi/v1/`` routes for ``studio`` (include it in the server's FastAPI app)."""
    models = CallerModels(studio)

    def library() -> ModelLibrary:
        return studio.registry.library

    scanning = threading.Lock()

    def rescan() -> None:
        # One scan at a time (a scan is bounded: core.library's MAX_ENTRIES); checkpoints and
        # the other kinds are always found together, as A1111's refresh buttons do.
        with scanning:
            studio.registry.scan()
    api = Generation(studio, models)
    route_class = type("StudioApiRoute", (ApiRoute,), {"gate": studio.gate})
    router = APIRouter(prefix=PREFIX, route_class=route_class, tags=["sdapi"])

    @router.post("/txt2img")
    async def txt2img(request: Request) -> Response:
        viewer = caller(request)
        body = parse(Txt2ImgRequest, await read_json(request, api.body_limit))
        if body.script_name:
            raise ApiError(422, "script_not_found", "script_name: Obscura has no scripts.",
                           "script_name")
        inputs = await asyncio.to_thread(api.build_request, viewer.user_id, body, 0.75)
        units = await asyncio.to_thread(units_of, studio, body.alwayson_scripts, has_photo=False)
        add_units(inputs, units)
        return await api.generate(request, viewer, body, inputs, units)

    @router.post("/img2img")
    async def img2img(request: Request) -> Response:
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
        # ControlNet / IP-Adapter units (webui.api.controlnet): their pictures are run images.
        units = await asyncio.to_thread(units_of, studio, body.alwayson_scripts, has_photo=True)
        add_units(inputs, units)
        # Base64 → bytes here; scrubbing, the mask rule and the rest are the run's (webui.run).
        limit = studio.max_upload_bytes
        # init_images[1:]: an edit model's reference pictures (AUTOMATIC1111 would paint one
        # picture per init image; docs/api.md); for any other model they are not used.
        extra_texts = list(body.init_images[1:])
        takes = edit_references(api.info_of(inputs.request.model))
        if len(extra_texts) > takes > 0:
            raise ApiError(422, "too_many_references",
                           f"init_images: this model takes the photo and at most {takes} "
                           "reference pictures.", "init_images")
        photo_text, mask_text = body.take_pictures()
        photo = await asyncio.to_thread(decode_base64, photo_text, "init_images", limit)
        inputs.images.append(RunImage("photo", photo))
        if takes:
            body.references_used()
            for j, text in enumerate(extra_texts):
                data = await asyncio.to_thread(decode_base64, text, f"init_images[{j + 1}]", limit)
                inputs.images.append(RunImage(f"edit:{j}", data))
                del data
        del extra_texts
        if mask_text is not None:
            mask = await asyncio.to_thread(decode_base64, mask_text, "mask", limit)
            inputs.images.append(RunImage("mask", mask))
            del mask
        del photo_text, mask_text, photo
        inputs.invert_mask = bool(body.inpainting_mask_invert)
        inputs.mask_blur = max(0, body.blur)
        return await api.generate(request, viewer, body, inputs, units)

    extras = Extras(studio)

    @router.post("/extra-single-image")
    async def extra_single_image(request: Request) -> Response:
        """Upscale one picture (scrubbed, spooled and shredded like an img2img photo)."""
        viewer = caller(request)
        body = parse(ExtrasSingleImageRequest, await read_json(request, extras.body_limit))
        return await extras.single(request, viewer.user_id, body)

    @router.post("/extra-batch-images")
    async def extra_batch_images(request: Request) -> Response:
        viewer = caller(request)
        body = parse(ExtrasBatchImagesRequest, await read_json(request, extras.body_limit))
        return await extras.batch(request, viewer.user_id, body)

    @router.get("/sd-models")
    def sd_models(request: Request) -> list[dict[str, Any]]:
        return [
            {"title": m.name, "model_name": m.name, "hash": None, "sha256": None,
             "filename": m.path.name, "config": None, "obscura_family": family_json(m)}
            for m in studio.registry.models
        ]

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints(request: Request) -> None:
        rescan()

    @router.get("/samplers")
    def samplers(request: Request) -> list[dict[str, Any]]:
        # A1111's list, each with the families that take it (the flow families have their
        # own few: core/families.py; any other name is a 422 listing them).
        families = sampler_families()
        names = list(dict.fromkeys([*sampler_names(), *families]))
        return [{"name": name, "aliases": [], "options": {},
                 "obscura_families": families.get(name, [])} for name in names]

    @router.get("/schedulers")
    def schedulers(request: Request) -> list[dict[str, Any]]:
        return [
            {"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
             "default_rho": 7.0 if s.name == "karras" else -1, "need_inner_model": False}
            for s in SCHEDULES.values()
        ]

    @router.get("/loras")
    def loras(request: Request) -> list[dict[str, Any]]:
        return [lora_json(item, library()) for item in library().items("lora")]

    @router.post("/refresh-loras")
    def refresh_loras(request: Request) -> None:
        rescan()

    @router.get("/embeddings")
    def embeddings(request: Request) -> dict[str, Any]:
        # AUTOMATIC1111: "loaded" fit the caller's model, "skipped" are for another one.
        viewer = caller(request)
        try:
            arch = studio.registry.get(models.of(viewer.user_id)).arch
        except InputError:
            arch = None
        answer: dict[str, dict[str, Any]] = {"loaded": {}, "skipped": {}}
        for item in library().items("embedding"):
            fits = item.arch is None or arch is None or item.arch == arch
            answer["loaded" if fits else "skipped"][item.name] = embedding_json(item)
        return answer

    @router.post("/refresh-embeddings")
    def refresh_embeddings(request: Request) -> None:
        rescan()

    @router.get("/hypernetworks")
    def hypernetworks(request: Request) -> list[dict[str, Any]]:
        return []  # obsolete since LoRA; Obscura does not load them

    @router.get("/sd-vae")
    def sd_vae(request: Request) -> list[dict[str, Any]]:
        return [
            {"model_name": item.path.name, "filename": shown_path(item, library())}
            for item in library().items("vae")
        ]

    @router.post("/refresh-vae")
    def refresh_vae(request: Request) -> None:
        rescan()

    @router.get("/sd-modules")
    def sd_modules(request: Request) -> list[dict[str, Any]]:
        # Forge's list of separately loadable modules: here the VAEs (no text encoders).
        return sd_vae(request)

    @router.get("/upscalers")
    def upscalers(request: Request) -> list[dict[str, Any]]:
        from core.upscale import PIXEL_UPSCALERS

        builtin = [
            {"name": name, "model_name": None, "model_path": None, "model_url": None,
             "scale": 4}
            for name in PIXEL_UPSCALERS
        ]
        return builtin + [
            {"name": item.name, "model_name": item.detail.get("family"),
             "model_path": shown_path(item, library()), "model_url": None,
             "scale": item.detail.get("scale") or 4}
            for item in library().items("upscaler")
        ]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes(request: Request) -> list[dict[str, Any]]:
        from core.upscale import LATENT_MODES

        return [{"name": name} for name in LATENT_MODES]

    @router.get("/options")
    def get_options(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        embed = False
        if studio.accounts is not None:
            embed = studio.accounts.settings(viewer.user_id).embed_parameters
        vae = models.vae_of(viewer.user_id)
        vae_file = next(
            (v.path.name for v in library().items("vae") if v.name == vae), "Automatic"
        )
        return {
            "sd_model_checkpoint": models.of(viewer.user_id),
            "sd_checkpoint_hash": None,
            "sd_vae": vae_file,
            "CLIP_stop_at_last_layers": models.clip_skip_of(viewer.user_id),
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
        # Each option is checked before any is kept: a bad one changes nothing. Options other
        # than these are AUTOMATIC1111's own; ignored, as it ignores unknowns.
        vae = clip_skip = None
        if "sd_vae" in data:
            vae = await asyncio.to_thread(library_vae, studio, data["sd_vae"], "sd_vae")
        if "CLIP_stop_at_last_layers" in data:
            clip_skip = clip_skip_of(data["CLIP_stop_at_last_layers"], "CLIP_stop_at_last_layers")
        title = data.get("sd_model_checkpoint")
        if title is None:
            if "sd_vae" in data:
                models.choose_vae(viewer.user_id, vae)
            if clip_skip is not None:
                models.choose_clip_skip(viewer.user_id, clip_skip)
            return None
        if not isinstance(title, str) or not title.strip():
            raise ApiError(422, "invalid_value", "sd_model_checkpoint: expected a model name.",
                           "sd_model_checkpoint")
        name = model_name(title)
        try:
            await asyncio.to_thread(studio.engine.load, name)
        except InputError as err:
            raise input_problem(err, "sd_model_checkpoint") from None
        models.choose(viewer.user_id, name)
        if "sd_vae" in data:
            models.choose_vae(viewer.user_id, vae)
        if clip_skip is not None:
            models.choose_clip_skip(viewer.user_id, clip_skip)
        return None

    @router.get("/progress")
    def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        viewer = caller(request)
        return caller_jobs.progress(studio, viewer.user_id, not skip_current_image)

    @router.post("/interrupt")
    def interrupt(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        caller_jobs.stop(studio, viewer.user_id, skip=False)
        return {}

    @router.post("/skip")
    def skip(request: Request) -> dict[str, Any]:
        viewer = caller(request)
        caller_jobs.stop(studio, viewer.user_id, skip=True)
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

    # The ControlNet extension's routes (/controlnet/*) beside /sdapi/v1, with the same gate.
    both = APIRouter()
    both.include_router(router)
    both.include_router(build_controlnet_router(studio, rescan))
    return both
