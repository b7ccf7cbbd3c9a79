"""AUTOMATIC1111's ControlNet extension (sd-webui-controlnet) on Obscura: its units in txt2img and
img2img bodies, and its ``/controlnet/*`` routes.

Units: ``alwayson_scripts.controlnet.args`` (the key in any case, as A1111 finds scripts) is a
list of the extension's ControlNetUnit objects (:class:`webui.api.schemas.ControlNetUnitArgs`:
its field names, defaults and old aliases). A unit whose ``module`` is one of the extension's
IP-Adapter preprocessors (``ip-adapter_clip_sd15`` / ``_h``, ``ip-adapter_clip_sdxl`` / ``_g``,
``ip-adapter_clip_sdxl_plus_vith``, ``ip-adapter-auto``) and whose ``model`` is an IP-Adapter of
the library becomes a :class:`core.control.IPAdapterUnit`; one with a weight-free preprocessor
(``none``, ``canny``, ``pyracanny``, ``invert``) and a ControlNet becomes a
:class:`core.control.ControlUnit`. InsightFace-based modules (FaceID, InstantID, PuLID) are
refused: their models are licensed for non-commercial research only and ship as pickles.

A unit's pictures are base64 only, as ``init_images``: a URL or a file path is refused with one
sentence, so nothing a client names is ever fetched or opened. They become the run's pictures
``control:<i>`` / ``reference:<i>:<j>`` (:mod:`webui.run`): scrubbed, checked, spooled encrypted
while the job waits, shredded when it ends. A reference photo for a face is biometric data
(docs/privacy.md): it takes exactly that path, and nothing derived from it (the face crop, its
embedding, the detector's box) leaves the job.

Every number is bounded when the body is parsed (:data:`webui.api.schemas.BOUNDS`, the
`` (controlnet)`` rows); an unknown module or model is a 422 naming the unit's field, never
repeating the value. Settings Obscura does not follow (``pixel_perfect``, ``low_vram``, a unit's
``mask``) are named in ``info.obscura_ignored``.

Routes, with the extension's shapes, each needing a caller like ``/sdapi/v1`` (the same
:class:`webui.api.endpoint.ApiRoute`: token or session, JSON bodies only): ``model_list``,
``module_list``, ``control_types``, ``settings``, ``version`` and ``detect`` (a preprocessor's
map of pictures, scrubbed and processed in memory, never spooled, never logged).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from core.control import MAX_REFERENCES, MAX_UNITS, ControlUnit, IPAdapterUnit
from core.errors import InputError
from core.library import LibraryItem, ModelLibrary
from core.preprocess import preprocess
from privacy.errors import PrivacyError
from privacy.scrub import scrub
from webui.api.endpoint import ApiRoute, caller, parse, read_json
from webui.api.pictures import decode_base64
from webui.api.problems import ApiError, input_problem, validation_problem
from webui.api.schemas import MAX_UNIT_ARGS, ControlNetUnitArgs, DetectRequest
from webui.run import RunImage, RunInputs
from webui.studio import Studio

PREFIX = "/controlnet"
API_VERSION = 3  # the extension's /controlnet/version of the API these shapes follow

# Weight-free preprocessors (core/preprocess.py): A1111 name → its label (alias_names=true).
CONTROL_MODULES = {
    "none": "none",
    "canny": "canny",
    "pyracanny": "pyracanny",  # Fooocus' PyraCanny (not in A1111)
    "invert": "invert (from white bg & black line)",
}
# The extension's IP-Adapter preprocessors (CLIP image encoders): name → label. Which encoder a
# model needs is read from the model itself, so they all run the same way here.
IP_ADAPTER_MODULES = {
    "ip-adapter-auto": "ip-adapter-auto",
    "ip-adapter_clip_sd15": "ip-adapter_clip_h",
    "ip-adapter_clip_sdxl": "ip-adapter_clip_g",
    "ip-adapter_clip_sdxl_plus_vith": "ip-adapter_clip_sdxl_plus_vith",
}
# Modules that need InsightFace (non-commercial research licence, pickled models): refused.
INSIGHTFACE = ("ip-adapter_face_id", "ip-adapter-faceid", "ip-adapter_pulid", "instant_id",
               "instantid", "insightface")
# A1111's slider descriptions (module_detail), by module.
RESOLUTION = {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}
CANNY_SLIDERS = [
    RESOLUTION,
    {"name": "Canny Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
    {"name": "Canny High Threshold", "value": 200, "min": 1, "max": 255, "step": 1},
]
SLIDERS: dict[str, list[dict[str, Any]]] = {
    "none": [], "canny": CANNY_SLIDERS, "pyracanny": CANNY_SLIDERS, "invert": [],
}
DEFAULT_RES, DEFAULT_LOW, DEFAULT_HIGH = 512, 100.0, 200.0
# ControlNet-Union: the extension's union_control_type names → core.control's control types.
UNION_TYPES = {
    "openpose": "openpose", "depth": "depth", "soft edge": "hed", "hard edge": "canny",
    "normal map": "normal", "segmentation": "seg", "tile": "tile", "inpaint": "repaint",
}
ARGS = "alwayson_scripts.controlnet.args"
# core.control's error codes about the units (named by their field in the API's answer): of
# one unit (its field when the code tells it), of an IP-Adapter unit, of all of them.
UNIT_CODES = ("control", "ipadapter", "reference", "clip_vision", "no_face", "unknown_control",
              "unknown_ipadapter", "unknown_union", "union_", "too_many_control",
              "too_many_ip", "too_many_references")
IP_CODES = ("ipadapter", "reference", "clip_vision", "no_face", "unknown_ipadapter",
            "too_many_ip", "too_many_references")
REQUEST_WIDE = frozenset({
    "control_wrong_family", "control_with_hires", "too_many_control_units", "clip_vision_missing",
    "ipadapter_mixed_encoders", "union_mixed", "control_units_invalid",
})
SUBFIELD = {
    **dict.fromkeys(("control_not_an_image", "control_image_missing", "reference_image_missing",
                     "too_many_ip_references", "too_many_references", "no_face_found"), "image"),
    **dict.fromkeys(("control_bad_model", "controlnet_wrong_arch", "ipadapter_wrong_arch",
                     "unknown_controlnet", "unknown_ipadapter", "controlnet_refused",
                     "ipadapter_refused", "controlnet_mismatch", "controlnet_load_failed",
                     "ipadapter_load_failed"), "model"),
    **dict.fromkeys(("unknown_union_type", "union_type_needed", "union_type_unsupported",
                     "union_type_not_union"), "union_control_type"),
    "control_weight_out_of_range": "weight",
    "control_guidance_out_of_range": "guidance_start",
    "unknown_control_mode": "control_mode",
    "unknown_control_resize_mode": "resize_mode",
    "control_res_out_of_range": "processor_res",
    "control_threshold_out_of_range": "threshold_a",
    "unknown_control_module": "module",
}
# core.preprocess's error codes → the detect field at fault.
DETECT_FIELD = {"unknown_control_module": "controlnet_module",
                "control_res_out_of_range": "controlnet_processor_res",
                "control_threshold_out_of_range": "controlnet_threshold_a"}
PICTURES_PER_BODY = 4  # base64 pictures' worth of one txt2img/img2img/detect body
# /controlnet/detect is CPU work: this many run at a time and this many more wait their turn,
# each before its body is read (a waiting request holds no decoded body); the next is a 503.
DETECT_RUNNING, DETECT_WAITING = 2, 2
# One caller holds at most this many of the places, so no one can fill the line for everybody;
# a body that has not arrived in DETECT_BODY_SECONDS gives its place up (a stalled upload).
DETECT_PER_CALLER = 2
DETECT_BODY_SECONDS = 30.0
_LINK = re.compile(r"^[a-z][a-z0-9+.-]*:(?://)?", re.I)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=\s]")


def canonical_module(module: str) -> str | None:
    """The A1111 name of a module (its name or its label, any case); ``None`` if unknown."""
    wanted = module.strip().lower()
    for table in (CONTROL_MODULES, IP_ADAPTER_MODULES):
        for name, label in table.items():
            if wanted in (name, label.lower()):
                return name
    return None


def is_insightface(module: str) -> bool:
    wanted = module.strip().lower()
    return any(wanted.startswith(prefix) for prefix in INSIGHTFACE)


def find_item(library: ModelLibrary, kind: str, wanted: str) -> LibraryItem | None:
    """A library file by the name A1111 lists (``name``, ``name [hash]``, its file name)."""
    text = wanted.strip()
    bare = text[: text.rindex(" [")] if text.endswith("]") and " [" in text else text
    for item in library.items(kind):
        if bare in (item.name, item.path.name, item.path.stem):
            return item
    return None


def looks_like_link(text: str) -> bool:
    """A URL or a file path where a base64 picture belongs (``data:`` URLs are base64)."""
    stripped = text.strip()
    if stripped.lower().startswith("data:"):
        return False
    if _LINK.match(stripped) or stripped.startswith(("~", "./", "../", "\\\\")):
        return True
    return bool(_NOT_BASE64.search(stripped)) and ("/" in stripped or "\\" in stripped)


def picture_bytes(text: object, field_name: str, limit: int) -> bytes:
    """The bytes of a unit's base64 picture; a 422 for a URL or path (never fetched)."""
    if isinstance(text, str) and looks_like_link(text):
        raise ApiError(
            422, "image_not_base64",
            f"{field_name}: send the picture itself, base64-encoded; Obscura never fetches a URL "
            "or opens a file path a client sends.", field_name,
        )
    return decode_base64(text, field_name, limit)


@dataclass
class Units:
    """A body's enabled units for the engine, their pictures for the run, the API field of each
    picture (for errors) and the unit settings Obscura does not follow."""

    controlnets: list[ControlUnit] = field(default_factory=list)
    ip_adapters: list[IPAdapterUnit] = field(default_factory=list)
    images: list[RunImage] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)  # run picture name → API field
    ignored: list[str] = field(default_factory=list)
    control_args: list[int] = field(default_factory=list)  # args index of each ControlNet unit
    ip_args: list[int] = field(default_factory=list)  # args index of each IP-Adapter unit

    def field_of(self, code: object, params: dict[str, Any]) -> str | None:
        """The API field of the engine's error about a unit (core.control's codes), if any."""
        text = str(code or "")
        if not (self.control_args or self.ip_args) or not text.startswith(UNIT_CODES):
            return None
        if text in REQUEST_WIDE:
            return ARGS
        ip = text.startswith(IP_CODES)
        rows = self.ip_args if ip else self.control_args
        index = params.get("index")
        if isinstance(index, int) and 0 <= index < len(rows):
            where = f"{ARGS}.{rows[index]}"
        elif len(rows) == 1:
            where = f"{ARGS}.{rows[0]}"
        else:
            return ARGS
        return f"{where}.{SUBFIELD[text]}" if text in SUBFIELD else where


def add_units(inputs: RunInputs, units: Units) -> None:
    """The units into the run's request; their pictures among the run's pictures."""
    inputs.request = dataclasses.replace(
        inputs.request, controlnets=units.controlnets, ip_adapters=units.ip_adapters)
    inputs.images.extend(units.images)
    units.images = []


def script_args(scripts: dict[str, Any]) -> tuple[str, Any] | None:
    """``(key, args)`` of the ControlNet entry of ``alwayson_scripts`` (any case)."""
    for key, value in scripts.items():
        if key.strip().lower() == "controlnet":
            args = value.get("args") if isinstance(value, dict) else None
            return key, args
    return None


def _unit_fields(where: str, entry: Any) -> ControlNetUnitArgs:
    if not isinstance(entry, dict):
        raise ApiError(422, "invalid_value", f"{where}: each unit must be an object.", where)
    try:
        return ControlNetUnitArgs.model_validate(entry)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        if first.get("type") == "unit_choice":  # our own sentence (schemas._choice)
            name = ".".join(str(p) for p in first.get("loc", ()) if not isinstance(p, int))
            message = str(first.get("msg", "invalid value"))
            raise ApiError(422, "invalid_value", f"{where}.{name}: {message}.",
                           f"{where}.{name}") from None
        problem = validation_problem(err)
        name = problem.field or ""
        raise ApiError(problem.status, problem.code, f"{where}.{problem.detail}",
                       f"{where}.{name}") from None


def _pictures(value: Any, where: str) -> tuple[list[Any], bool]:
    """A unit's ``image`` in any of the extension's shapes → (base64 texts, whether a mask came
    with them): a text, ``{"image", "mask"}``, ``[image, mask]``, ``[{"image", "mask"}, ...]``
    or a list of one or of three or more texts."""
    if value is None:
        return [], False
    if isinstance(value, str):
        return [value], False
    if isinstance(value, dict):
        return [value.get("image")], value.get("mask") is not None
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if len(value) > MAX_REFERENCES:
            raise ApiError(422, "too_many_references", f"{where}: at most {MAX_REFERENCES} "
                           "pictures per unit.", where)
        return [v.get("image") for v in value], any(v.get("mask") is not None for v in value)
    if isinstance(value, list) and len(value) == 2 and not isinstance(value[0], list):
        return [value[0]], value[1] is not None  # [image, mask]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > MAX_REFERENCES:
            raise ApiError(422, "too_many_references", f"{where}: at most {MAX_REFERENCES} "
                           "pictures per unit.", where)
        return list(value), False  # [image] or [image, image, image, ...]
    raise ApiError(422, "invalid_value", f"{where}: expected a base64-encoded picture.", where)


def units_of(studio: Studio, scripts: dict[str, Any], *, has_photo: bool) -> Units:
    """The enabled units of a body's ``alwayson_scripts`` (a 422 naming the field for anything
    wrong), their pictures decoded from base64 (scrubbed later, by the run)."""
    units = Units()
    found = script_args(scripts)
    if found is None:
        return units
    _key, args = found
    base = ARGS
    if not isinstance(args, list):
        raise ApiError(422, "invalid_value", f"{base}: expected a list of units.", base)
    if len(args) > MAX_UNIT_ARGS:
        raise ApiError(422, "too_many_units", f"{base}: at most {MAX_UNIT_ARGS} entries.", base)
    library = studio.registry.library
    limit = studio.max_upload_bytes
    for index, entry in enumerate(args):
        where = f"{base}.{index}"
        unit = _unit_fields(where, entry)
        if not unit.enabled:
            continue
        if is_insightface(unit.module):
            raise ApiError(
                422, "insightface_refused",
                f"{where}.module: FaceID, InstantID and PuLID need InsightFace models, which are "
                "licensed for non-commercial research only; Obscura does not run them.",
                f"{where}.module",
            )
        module = canonical_module(unit.module)
        if module is None:
            raise ApiError(422, "unknown_control_module", f"{where}.module: Obscura has no such "
                           "preprocessor; /controlnet/module_list lists them.", f"{where}.module")
        ip_adapter = module in IP_ADAPTER_MODULES
        kind = "ipadapter" if ip_adapter else "controlnet"
        item = find_item(library, kind, unit.model)
        if item is None:
            other = find_item(library, "controlnet" if ip_adapter else "ipadapter", unit.model)
            if unit.model.strip().lower() in ("", "none"):
                sentence = "choose a model; /controlnet/model_list lists them."
            elif other is not None and ip_adapter:
                sentence = "this is a ControlNet; an ip-adapter module needs an IP-Adapter model."
            elif other is not None:
                sentence = "this is an IP-Adapter; use it with an ip-adapter module."
            else:
                sentence = "no such model in the library; /controlnet/model_list lists them."
            raise ApiError(422, "unknown_control_model", f"{where}.model: {sentence}",
                           f"{where}.model")
        start = unit.guidance_start
        end = unit.guidance if unit.guidance is not None else unit.guidance_end
        if start > end:
            raise ApiError(422, "guidance_order", f"{where}.guidance_start: must not be after "
                           "guidance_end.", f"{where}.guidance_start")
        image = unit.image if unit.image is not None else unit.input_image
        texts, masked = _pictures(image, f"{where}.image")
        if not texts and not has_photo:
            raise ApiError(422, "unit_without_image", f"{where}.image: send a base64 picture "
                           "for this unit (txt2img has no photo to use).", f"{where}.image")
        if masked or unit.mask is not None or unit.mask_image is not None:
            units.ignored.append(f"{where}.mask")
        for flag in ("pixel_perfect", "low_vram", "lowvram"):
            if getattr(unit, flag):
                units.ignored.append(f"{where}.{flag}")
        if ip_adapter:
            i = len(units.ip_adapters)
            if i >= MAX_UNITS:
                raise ApiError(422, "too_many_units", f"{where}: at most {MAX_UNITS} IP-Adapter "
                               "units.", where)
            units.ip_args.append(index)
            units.ip_adapters.append(IPAdapterUnit(
                model=item.name, weight=unit.weight, style_weight=unit.obscura_style_weight,
                crop_face=unit.obscura_crop_face, allow_no_face=unit.obscura_allow_no_face,
                guidance_start=start, guidance_end=end,
            ))
            names = [f"reference:{i}:{j}" for j in range(len(texts))]
        else:
            i = len(units.controlnets)
            if i >= MAX_UNITS:
                raise ApiError(422, "too_many_units", f"{where}: at most {MAX_UNITS} ControlNet "
                               "units.", where)
            if len(texts) > 1:
                raise ApiError(422, "invalid_value", f"{where}.image: a ControlNet unit takes "
                               "one picture.", f"{where}.image")
            union = (unit.union_control_type or "").strip().lower()
            units.control_args.append(index)
            units.controlnets.append(ControlUnit(
                model=item.name, module=module, weight=unit.weight,
                guidance_start=start, guidance_end=end, control_mode=unit.control_mode,
                resize_mode=unit.resize_mode,
                processor_res=DEFAULT_RES if unit.processor_res < 0 else unit.processor_res,
                threshold_a=DEFAULT_LOW if unit.threshold_a < 0 else unit.threshold_a,
                threshold_b=DEFAULT_HIGH if unit.threshold_b < 0 else unit.threshold_b,
                union_type=UNION_TYPES.get(union, union) if union and union != "unknown" else None,
            ))
            names = [f"control:{i}" for _ in texts]
        for name, text in zip(names, texts, strict=True):
            units.images.append(RunImage(name, picture_bytes(text, f"{where}.image", limit)))
            units.fields[name] = f"{where}.image"
        del texts, image
        for key in ("image", "input_image", "mask", "mask_image"):
            if key in entry:
                entry[key] = None  # decoded: the body keeps no copy (nor echoes one back)
    return units


# -- routes ---------------------------------------------------------------------------------
def module_detail(name: str) -> dict[str, Any]:
    return {"model_free": False, "sliders": SLIDERS.get(name, [])}


def detect_one(studio: Studio, text: str, where: str, body: DetectRequest) -> str:
    """One picture's map, in memory: scrubbed (limits before decoding), processed, PNG."""
    data = picture_bytes(text, where, studio.max_upload_bytes)
    try:
        picture = scrub(data, max_bytes=studio.max_upload_bytes,
                        max_pixels=studio.max_upload_pixels, mode="RGB")
    except (PrivacyError, ValueError) as err:
        raise input_problem(err, where) from None
    del data
    module = canonical_module(body.controlnet_module) or body.controlnet_module
    res = body.controlnet_processor_res
    low, high = body.controlnet_threshold_a, body.controlnet_threshold_b
    try:
        result = preprocess(module, picture, DEFAULT_RES if res < 0 else res,
                            DEFAULT_LOW if low < 0 else low, DEFAULT_HIGH if high < 0 else high)
    except InputError as err:
        raise input_problem(err, DETECT_FIELD.get(err.code)) from None
    buffer = io.BytesIO()
    result.save(buffer, format="PNG")  # a map made from the pixels alone: no metadata to keep
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def build_controlnet_router(studio: Studio, rescan: Callable[[], None]) -> APIRouter:
    """The ``/controlnet/`` routes for ``studio`` (included next to ``/sdapi/v1``); ``rescan``
    is the API's one-scan-at-a-time rescan (webui/api/routes.py), shared with its refresh routes."""
    route_class = type("StudioControlNetRoute", (ApiRoute,), {"gate": studio.gate})
    router = APIRouter(prefix=PREFIX, route_class=route_class, tags=["controlnet"])
    detecting = asyncio.Semaphore(DETECT_RUNNING)
    admitted = [0]  # running + waiting detect requests (on the event loop's thread only)
    admitted_for: dict[str, int] = {}  # the same per caller

    def library() -> ModelLibrary:
        return studio.registry.library

    def names(kind: str) -> list[str]:
        return [item.name for item in library().items(kind)]

    @router.get("/version")
    def version(request: Request) -> dict[str, Any]:
        return {"version": API_VERSION}

    @router.get("/settings")
    def settings(request: Request) -> dict[str, Any]:
        return {"control_net_unit_count": MAX_UNITS}

    @router.get("/model_list")
    def model_list(request: Request, update: bool = False) -> dict[str, Any]:
        # A1111 rescans on every call by default; here only when asked (update=true).
        if update:
            rescan()  # under the refresh routes' lock: one scan at a time
        return {"model_list": names("controlnet") + names("ipadapter")}

    @router.get("/module_list")
    def module_list(request: Request, alias_names: bool = False) -> dict[str, Any]:
        tables = {**CONTROL_MODULES, **IP_ADAPTER_MODULES}
        shown = {(label if alias_names else name): name for name, label in tables.items()}
        return {"module_list": list(shown),
                "module_detail": {key: module_detail(name) for key, name in shown.items()}}

    @router.get("/control_types")
    def control_types(request: Request) -> dict[str, Any]:
        controlnets = library().items("controlnet")
        canny = [item.name for item in controlnets
                 if "canny" in item.name.lower() or "union" in item.name.lower()
                 or item.detail.get("union")]
        ip_adapters = names("ipadapter")
        every = ["None", *names("controlnet"), *ip_adapters]
        labels = {**CONTROL_MODULES, **IP_ADAPTER_MODULES}
        return {"control_types": {
            "All": {"module_list": list(labels.values()), "model_list": every,
                    "default_option": "none", "default_model": "None"},
            "Canny": {"module_list": ["none", "canny", "pyracanny",
                                      CONTROL_MODULES["invert"]],
                      "model_list": ["None", *canny], "default_option": "canny",
                      "default_model": canny[0] if canny else "None"},
            "IP-Adapter": {"module_list": ["none", *IP_ADAPTER_MODULES.values()],
                           "model_list": ["None", *ip_adapters],
                           "default_option": "ip-adapter-auto",
                           "default_model": ip_adapters[0] if ip_adapters else "None"},
        }}

    @router.post("/detect")
    async def detect(request: Request) -> dict[str, Any]:
        who = caller(request).user_id
        if (admitted[0] >= DETECT_RUNNING + DETECT_WAITING
                or admitted_for.get(who, 0) >= DETECT_PER_CALLER):
            raise ApiError(503, "detect_busy", "Too many pictures are being processed right "
                           "now; try again in a few seconds.", headers={"retry-after": "5"})
        admitted[0] += 1
        admitted_for[who] = admitted_for.get(who, 0) + 1
        try:
            async with detecting:  # taken before the body is read: waiting holds no body
                return await detect_in_turn(request)
        finally:
            admitted[0] -= 1
            admitted_for[who] -= 1
            if not admitted_for[who]:
                del admitted_for[who]

    async def detect_in_turn(request: Request) -> dict[str, Any]:
        limit = PICTURES_PER_BODY * studio.max_upload_bytes * 4 // 3 + 1_000_000
        try:
            async with asyncio.timeout(DETECT_BODY_SECONDS):
                data = await read_json(request, limit)
        except TimeoutError:
            raise ApiError(408, "body_too_slow", "The request body did not arrive within "
                           f"{DETECT_BODY_SECONDS:g} seconds; send it again.") from None
        body: DetectRequest = parse(DetectRequest, data)
        del data
        module = canonical_module(body.controlnet_module)
        if module is None or module in IP_ADAPTER_MODULES:
            raise ApiError(422, "unknown_control_module", "controlnet_module: this module has no "
                           "map to show; use none, canny, pyracanny or invert.",
                           "controlnet_module")
        if not body.controlnet_input_images:
            raise ApiError(422, "missing_image", "controlnet_input_images: send at least one "
                           "base64 picture.", "controlnet_input_images")
        images = []
        for index, text in enumerate(body.controlnet_input_images):
            where = f"controlnet_input_images.{index}"
            images.append(await asyncio.to_thread(detect_one, studio, text, where, body))
            body.controlnet_input_images[index] = ""
        return {"images": images, "info": "Success"}

    @router.api_route("/{endpoint:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                      include_in_schema=False)
    def unknown(request: Request, endpoint: str) -> None:
        shown = endpoint.strip("/")[:60]
        raise ApiError(404, "unknown_endpoint",
                       f"{PREFIX}/{shown} is not an endpoint of this API; see docs/api.md.")

    return router
