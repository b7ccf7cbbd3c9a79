"""One painting run, the same for the web UI and the API: inputs in, pictures out.

The path of a run, each step owned here (the UI, :mod:`webui.ui.common`, and the API,
:mod:`webui.api.generation`, only turn their inputs into :class:`RunInputs` and an
:class:`Answer` into their own shape):

1. **scrub** every input image (photo, mask, ControlNet maps, IP-Adapter references, an edit
   model's references) from its bytes with :func:`privacy.scrub.scrub` (limits before decoding;
   a fresh picture from the pixels alone). Each is decoded once: the scrubbed picture is what is
   checked and spooled.
2. **mask rule** (one for both front ends): a mask of the photo's proportions is resized to the
   photo (a painter's canvas or a scaled mask file); any other shape is refused with one sentence
   (``mask_shape_mismatch``). The API's ``inpainting_mask_invert`` inverts it here.
3. **check** the request with its pictures in memory (:meth:`core.engine.Engine.validate`), before
   anything is written anywhere.
4. **spool** each picture encrypted as raw pixels (:meth:`privacy.spool.Spool.put_image`) while
   the job waits; the request in the queue holds no picture.
5. **submit** ``iterations`` jobs, one after another (AUTOMATIC1111's ``n_iter``; seed + index x
   batch size each), with ``kind`` (txt2img, img2img, inpaint) for the audit trail. ``prepare``
   decrypts the pictures on the worker just before a job starts; ``on_end`` pastes the original
   back outside the blurred mask after inpainting (AUTOMATIC1111's overlay), takes the decrypted
   pictures out of the ended job's request (:func:`without_pictures`: a reference face is not
   held while later batches run) and **shreds** the
   spool when the run cannot go on — done, failed, cancelled, interrupted, the caller gone; the
   run's ``finally`` shreds as well, however it ends.
6. **wait** without polling: :class:`core.jobs.JobWaiter` (``Job.subscribe`` +
   ``call_soon_threadsafe``, subscribed at submission) wake the run on each step, queue move
   and end; an :class:`Update` carries the position, the step and a preview only when it changed,
   at most every ``every`` seconds (the UI: 4 a second; the API: none, only the answer).
7. **deliver**: each picture is encoded once with :func:`privacy.output.encode_picture` (the AI
   label; the parameters text only when the account opted in), sealed into the owner's gallery
   when asked (accounts mode, to the key as of submission), and handed back as PNG bytes + the
   infotext.

:class:`Runs` (one per studio) knows each owner's runs in progress, so that progress, interrupt,
skip and the UI's Cancel act on the caller's own work only.

Input pictures are named (:class:`RunImage`): ``photo`` and ``mask`` (the request's ``image`` and
``mask``), ``control:<i>`` (ControlNet unit *i*'s picture), ``reference:<i>:<j>`` (IP-Adapter
unit *i*'s reference *j*; a face photo is biometric data, see docs/privacy.md) and ``edit:<j>``
(an edit model's extra reference *j*, ``GenerationRequest.references``). Every one of them is
scrubbed, checked, spooled, decrypted just before its job and shredded at its end the same way:
:func:`place` puts a picture at its place in a request (``dataclasses.replace`` of the unit) and
:func:`without_pictures` takes every picture out, so that the request in the queue holds none.
A new kind of input picture is one more name in :func:`place` and :func:`without_pictures`;
scrubbing, spooling and shredding need no change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, ImageFilter, ImageOps

from core.engine import MAX_SEED, GenerationRequest, GenerationResult
from core.errors import InputError
from core.jobs import Job, JobState, JobWaiter, forget_frames
from privacy.output import encode_picture
from privacy.scrub import detect_format, scrub
from webui.infotext import infotext

if TYPE_CHECKING:
    from webui.studio import Studio

# Pictures read as one grey channel (white = repaint); the rest as RGB.
GREY = frozenset({"mask"})
MAX_ITERATIONS = 16
# The units' pictures and an edit model's references (every picture but the photo and its
# mask, which have max_upload_pixels each) have this many times max_upload_pixels together,
# counted from their headers before any is decoded: each may be a large photo, but twenty of
# them (4 ControlNet units + 4 IP-Adapter units x 4 references) would be gigabytes decoded,
# only to be resized to 1024 px or the processor's resolution.
UNIT_PIXEL_BUDGET = 2
OWN_LIMIT = frozenset({"photo", "mask"})


@dataclass
class RunImage:
    """One input picture: upload bytes (scrubbed here), or a mask the UI's painter built from
    layers that were each scrubbed with :func:`privacy.scrub.scrub_mask` (:func:`painted_mask`)."""

    name: str
    data: bytes | Image.Image


@dataclass
class RunInputs:
    request: GenerationRequest  # no pictures in it; they come as ``images``
    images: list[RunImage] = field(default_factory=list)
    iterations: int = 1
    mask_blur: int = 4  # AUTOMATIC1111's default
    invert_mask: bool = False
    save: bool = True  # sealed into the owner's gallery (accounts mode only)
    session: str = ""  # the UI's browser session, for its Cancel button


@dataclass
class Picture:
    png: bytes  # encoded once: the AI label, the parameters text only when opted in
    seed: int
    infotext: str
    photo_based: bool


@dataclass
class Answer:
    pictures: list[Picture]
    results: list[GenerationResult]  # settings of each job (their images already delivered)
    interrupted: bool
    saved: bool  # sealed into the gallery
    seconds: float


@dataclass
class Update:
    """A change of the run: ``state`` is queued, starting, running or done."""

    state: str
    position: int = 0
    step: int = 0
    total: int = 0
    iteration: int = 0
    preview: Image.Image | None = None  # only when it changed since the last update
    answer: Answer | None = None


@dataclass
class Run:
    owner: str
    iterations: int
    session: str = ""
    started: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    index: int = 0
    job: Job | None = None
    interrupted: bool = False
    skipped: set[str] = field(default_factory=set)  # ids of jobs skipped (the run goes on)

    def interrupt(self) -> None:
        self.interrupted = True
        if self.job is not None:
            self.job.cancel()


class Runs:
    """Runs in progress, by owner (UI and API alike)."""

    def __init__(self) -> None:
        self._runs: list[Run] = []
        self._lock = threading.Lock()

    def add(self, run: Run) -> None:
        with self._lock:
            self._runs.append(run)

    def remove(self, run: Run) -> None:
        with self._lock:
            if run in self._runs:
                self._runs.remove(run)

    def of(self, owner: str) -> list[Run]:
        with self._lock:
            return [run for run in self._runs if run.owner == owner]

    def holding(self, job: Job) -> Run | None:
        with self._lock:
            return next((run for run in self._runs if run.job is job), None)

    def cancel(self, owner: str, session: str) -> bool:
        """Interrupt ``owner``'s runs from this browser session (nobody else's)."""
        found = [run for run in self.of(owner) if run.session == session]
        for run in found:
            run.interrupt()
        return bool(found)


def painted_mask(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
    """White where the person painted, black elsewhere; ``None`` when nothing was painted.

    Layers come from :func:`privacy.scrub.scrub_mask`, which turns transparency black, and the
    brush paints white, so any non-black pixel of any layer is a stroke."""
    mask = Image.new("L", size, 0)
    for layer in layers:
        grey = layer.convert("L")
        if grey.size != size:
            grey = grey.resize(size, Image.Resampling.NEAREST)
        strokes = grey.point(lambda value: 255 if value > 0 else 0)
        mask.paste(255, mask=strokes)
    return mask if mask.getbbox() is not None else None


def fit_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The one mask rule: the photo's size, or its proportions (then resized to it) within a
    pixel of rounding; any other shape is refused with one sentence."""
    width, height = size
    grey = mask if mask.mode == "L" else mask.convert("L")
    if grey.size == size:
        return grey
    if abs(grey.width * height - grey.height * width) > max(width, height, *grey.size):
        raise InputError(
            "mask_shape_mismatch",
            "The mask must have the photo's proportions ({width}x{height}); draw it on the "
            "same photo.",
            width=width, height=height, image="mask",
        )
    return grey.resize(size, Image.Resampling.NEAREST)


def overlay(
    generated: Image.Image, original: Image.Image, mask: Image.Image, blur: int
) -> Image.Image:
    """Keep the original outside the (blurred) mask, as AUTOMATIC1111 does after inpainting."""
    size = generated.size
    base = original.convert("RGB")
    if base.size != size:
        base = base.resize(size, Image.Resampling.LANCZOS)
    alpha = mask.convert("L")
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.NEAREST)
    if blur > 0:
        alpha = alpha.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(generated.convert("RGB"), base, alpha)


def sealing_key(studio: Studio, owner: str) -> bytes | None:
    """The public key this owner's new pictures are sealed to, as of now (submission): a
    password reset during the job must not let the resetting admin open them. The one place
    that asks for it."""
    if studio.accounts is None or studio.gallery is None:
        return None
    return studio.accounts.sealing_key(owner)  # proven at login (privacy.accounts)


# A picture name's kind → how many indexes follow it ("reference:1:0": unit 1, picture 0).
PICTURE_KINDS = {"photo": 0, "mask": 0, "control": 1, "reference": 2, "edit": 1}


def picture_place(name: str) -> tuple[str, int, int]:
    """``(kind, i, j)`` of a run picture's name (``"control:2"`` → ``("control", 2, 0)``);
    ``ValueError`` for a name no request has a place for (a programming error, not input)."""
    kind, *indexes = name.split(":")
    if (kind not in PICTURE_KINDS or len(indexes) != PICTURE_KINDS[kind]
            or not all(part.isascii() and part.isdigit() and len(part) <= 3 for part in indexes)):
        raise ValueError(f"unknown run image {name!r}")
    numbers = [int(part) for part in indexes] + [0, 0]
    return kind, numbers[0], numbers[1]


def _at(items: list[Any], index: int, item: Any, name: str, *, grow: bool) -> list[Any]:
    """``items`` with ``item`` at ``index`` (appended at the end when ``grow``)."""
    changed = list(items)
    if index < len(changed):
        changed[index] = item
    elif grow and index == len(changed):
        changed.append(item)
    else:
        raise ValueError(f"run image {name!r} has no place in this request")
    return changed


def place(request: GenerationRequest, name: str, picture: Image.Image) -> GenerationRequest:
    """``request`` with ``picture`` at the place its name gives (a copy; units are replaced,
    never changed in place, so the request in the queue keeps holding no picture)."""
    kind, i, j = picture_place(name)
    if kind == "photo":
        return dataclasses.replace(request, image=picture)
    if kind == "mask":
        return dataclasses.replace(request, mask=picture)
    if kind == "control":
        if i >= len(request.controlnets):
            raise ValueError(f"run image {name!r} has no place in this request")
        unit = dataclasses.replace(request.controlnets[i], image=picture)
        return dataclasses.replace(
            request, controlnets=_at(request.controlnets, i, unit, name, grow=False))
    if kind == "reference":
        if i >= len(request.ip_adapters):
            raise ValueError(f"run image {name!r} has no place in this request")
        adapter = request.ip_adapters[i]
        adapter = dataclasses.replace(
            adapter, images=_at(adapter.images, j, picture, name, grow=True))
        return dataclasses.replace(
            request, ip_adapters=_at(request.ip_adapters, i, adapter, name, grow=False))
    return dataclasses.replace(  # kind == "edit"
        request, references=_at(request.references, i, picture, name, grow=True))


def with_pictures(request: GenerationRequest, pictures: dict[str, Image.Image]) -> GenerationRequest:
    """``request`` with every picture at its place, references in their order."""
    for name in sorted(pictures, key=picture_place):
        request = place(request, name, pictures[name])
    return request


def without_pictures(request: GenerationRequest) -> GenerationRequest:
    """``request`` with no picture left in it: what waits in the queue (the pictures wait in
    the spool, encrypted). :meth:`core.engine.GenerationRequest.without_pictures` knows every
    picture field (the queue drops them the same way when a job ends)."""
    return request.without_pictures()


def pictures_in(request: GenerationRequest) -> list[str]:
    """The names of the pictures ``request`` holds (none for a request a run is given: its
    pictures come as :class:`RunImage` s, or they would skip scrubbing and the spool)."""
    names = [name for name, value in (("photo", request.image), ("mask", request.mask))
             if value is not None]
    names += [f"control:{i}" for i, unit in enumerate(request.controlnets)
              if unit.image is not None]
    names += [f"reference:{i}:{j}" for i, unit in enumerate(request.ip_adapters)
              for j in range(len(unit.images))]
    names += [f"edit:{j}" for j in range(len(request.references))]
    return names


def declared_pixels(data: bytes | Image.Image) -> int:
    """The pixels a picture's header declares, read without decoding any; 0 for one that
    cannot be read (:func:`privacy.scrub.scrub` refuses it with its own sentence)."""
    if isinstance(data, Image.Image):
        return data.width * data.height
    if detect_format(data) is None:
        return 0
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as source:
            width, height = source.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0
    return max(0, width) * max(0, height)


def _check_pixel_budget(studio: Studio, images: list[RunImage]) -> None:
    """One sentence, naming the picture that goes over, when the units' pictures and the
    references have more than :data:`UNIT_PIXEL_BUDGET` x max_upload_pixels together."""
    budget = UNIT_PIXEL_BUDGET * studio.max_upload_pixels
    total = 0
    for item in images:
        if item.name in OWN_LIMIT:
            continue
        total += declared_pixels(item.data)
        if total > budget:
            raise InputError(
                "unit_pictures_too_many_pixels",
                "The unit and reference pictures of one request may have {megapixels} "
                "megapixels together; send smaller or fewer pictures.",
                megapixels=f"{budget / 1_000_000:g}", image=item.name,
            )


def _clean_images(studio: Studio, inputs: RunInputs) -> dict[str, Image.Image]:
    """Check the pixel budget (headers only), scrub every upload (limits before decoding),
    then apply the mask rule."""
    _check_pixel_budget(studio, inputs.images)
    pictures: dict[str, Image.Image] = {}
    for item in inputs.images:
        picture_place(item.name)  # a name with a place in a request, or ValueError
        if item.name in pictures:
            raise ValueError(f"run image {item.name!r} given twice")
        mode: Literal["RGB", "L"] = "L" if item.name in GREY else "RGB"
        if isinstance(item.data, Image.Image):
            pictures[item.name] = item.data if item.data.mode == mode else item.data.convert(mode)
            continue
        try:
            pictures[item.name] = scrub(
                item.data, max_bytes=studio.max_upload_bytes,
                max_pixels=studio.max_upload_pixels, mode=mode,
            )
        except ValueError as err:  # ScrubError: say which picture (for the API's field)
            params = getattr(err, "params", None)
            if isinstance(params, dict):
                params.setdefault("image", item.name)
            raise
    inputs.images = []  # the raw upload bytes are not kept past scrubbing
    mask = pictures.get("mask")
    if mask is not None:
        photo = pictures.get("photo")
        if photo is None:
            raise InputError(
                "mask_without_image", "A mask needs a photo to paint into; add the photo.",
                image="mask",
            )
        mask = fit_mask(mask, photo.size)
        pictures["mask"] = ImageOps.invert(mask) if inputs.invert_mask else mask
    return pictures


async def paint(
    studio: Studio,
    owner: str,
    inputs: RunInputs,
    *,
    every: float | None = 0.0,
    every_in_line: float | None = None,
) -> AsyncIterator[Update]:
    """Run ``inputs`` for ``owner``, yielding :class:`Update` s; the last has the answer.

    ``every``: updates come on each change of the job, but no more often than every ``every``
    seconds (the newest state, coalesced; the end is never delayed); ``None``: only the answer.
    ``every_in_line``: the same while the job waits in line (default: ``every``).

    Raises :class:`core.errors.InputError` / :class:`privacy.errors.PrivacyError` (one sentence;
    ``shutting_down`` when the server stops) or ``RuntimeError`` (the engine failed). Closing
    the generator or cancelling its task cancels the job and shreds the pictures."""
    if not 1 <= inputs.iterations <= MAX_ITERATIONS:
        raise InputError("n_iter_out_of_range", "The number of runs must be between 1 and "
                         "{max}.", max=MAX_ITERATIONS)
    held = pictures_in(inputs.request)
    if held:  # pictures go in as RunImages only: scrubbed, spooled and shredded below
        raise ValueError(f"the request holds pictures {held}; pass them as RunImages")
    request = inputs.request
    spooled: dict[str, str] = {}
    run = Run(owner, inputs.iterations, inputs.session)
    jobs: list[Job] = []
    started = time.monotonic()

    def shred() -> None:
        for spool_id in spooled.values():
            studio.spool.shred(spool_id)

    try:
        pictures: dict[str, Image.Image] = {}
        if inputs.images:
            pictures = await asyncio.to_thread(_clean_images, studio, inputs)
        # Checked here, complete, for every run (the queue does not check a request whose
        # pictures come with ``prepare``): bad input is one sentence before anything waits.
        checked = with_pictures(request, pictures)
        await asyncio.to_thread(studio.engine.validate, checked)
        kind = checked.mode
        for name in list(pictures):  # popped: no loop variable keeps the last one alive
            spooled[name] = await asyncio.to_thread(
                studio.spool.put_image, pictures.pop(name), owner=owner
            )
        del pictures, checked  # from here on the pictures live in the spool only
        sealed_to = sealing_key(studio, owner) if inputs.save else None
        decoded: dict[str, Image.Image] = {}

        def prepare(req: GenerationRequest) -> GenerationRequest:
            for name, spool_id in spooled.items():
                decoded[name] = studio.spool.get_image(
                    spool_id, owner=owner, max_pixels=studio.max_upload_pixels
                )
            return with_pictures(req, decoded) if decoded else req

        def on_end(job: Job) -> None:
            try:
                result = job.result
                if job.state is JobState.DONE and result is not None and "mask" in decoded:
                    photo, mask = decoded["photo"], decoded["mask"]
                    result.images = [
                        overlay(image, photo, mask, inputs.mask_blur) for image in result.images
                    ]
            finally:
                decoded.clear()
                job.request = without_pictures(job.request)  # the job lets go of them now
                last = run.index >= run.iterations - 1
                going_on = job.state is JobState.DONE or job.id in run.skipped
                if last or run.interrupted or not going_on:
                    shred()

        studio.runs.add(run)
        results: list[GenerationResult] = []
        for index in range(inputs.iterations):
            if run.interrupted:
                break
            run.index = index
            seed = request.seed
            if seed is not None and seed >= 0:
                seed = (seed + index * request.batch_size) % (MAX_SEED + 1)
            job = studio.queue.submit(
                dataclasses.replace(request, seed=seed), owner,
                prepare=prepare, on_end=on_end, kind=kind,
            )
            run.job = job
            jobs.append(job)
            if run.interrupted:  # an interrupt that came while this batch was being queued
                job.cancel()
            last_preview: Any = None
            wake = JobWaiter(job)  # subscribed now: no change before the wait is lost
            try:
                while every is not None and not job.done:  # now, then on every change
                    if job.state is JobState.QUEUED:
                        position = studio.queue.position(job)
                        yield Update("queued" if position > 0 else "starting", position=position,
                                     iteration=index)
                    elif job.total_steps:
                        preview = job.preview
                        fresh = preview if preview is not last_preview else None
                        last_preview = preview
                        yield Update("running", step=job.step, total=job.total_steps,
                                     iteration=index, preview=fresh)
                    else:
                        yield Update("starting", iteration=index)
                    pause = every
                    if job.state is JobState.QUEUED and every_in_line is not None:
                        pause = every_in_line
                    await wake.change(pause)
                await wake.ended
            finally:
                wake.unsubscribe()
            if job.state is JobState.DONE and job.result is not None:
                results.append(job.result)
            elif job.state is JobState.FAILED:
                error = job.error or RuntimeError("The job failed.")
                job.error = None  # the ended job keeps no error (nor the frames it went through)
                forget_frames(error)
                raise error
            elif job.id not in run.skipped:
                run.interrupted = True
        pictures_out = await asyncio.to_thread(
            _deliver, studio, owner, request, results, sealed_to
        )
        yield Update("done", answer=Answer(
            pictures_out, results, run.interrupted, sealed_to is not None,
            time.monotonic() - started,
        ))
    finally:
        if run.job is not None and not run.job.done:
            run.job.cancel()
        studio.runs.remove(run)
        shred()
        for ended in jobs:
            if ended.done:
                studio.queue.forget(ended)


def _deliver(
    studio: Studio,
    owner: str,
    request: GenerationRequest,
    results: list[GenerationResult],
    sealed_to: bytes | None,
) -> list[Picture]:
    """Encode each picture once with the AI label (the parameters text only when the account
    opted in); seal it into the owner's gallery when asked."""
    accounts, gallery = studio.accounts, studio.gallery
    embed = accounts is not None and accounts.settings(owner).embed_parameters
    pictures: list[Picture] = []
    for result in results:
        photo_based = result.mode != "txt2img"
        for image, seed in zip(result.images, result.seeds, strict=False):
            text = infotext(request.prompt, request.negative_prompt, result, seed)
            png = encode_picture(image, "png", photo_based=photo_based,
                                 parameters=text if embed else None)
            if gallery is not None and sealed_to is not None:
                gallery.store(owner, sealed_to, png, kind="png")
            pictures.append(Picture(png, seed, text, photo_based))
        result.images = []
    return pictures
