"""One painting run, from the browser's inputs to pictures in the browser.

The path of a photo: the upload is taken out of Gradio's cache (read once, file and folder
deleted), scrubbed of all metadata, encrypted into the spool while the job waits, decrypted in
memory by ``prepare`` just before the job runs, and shredded by ``on_end`` however the job
ends. Pictures leave as ``data:`` URLs; in accounts mode they are also sealed into the owner's
gallery. Progress, previews and queue position are yielded while the job runs; closing the
generator (Gradio's cancel, a closed tab) cancels the job, which stops within one step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from core.engine import GenerationRequest
from core.errors import InputError
from core.jobs import Job, JobState
from privacy.errors import PrivacyError
from privacy.output import encode_picture
from privacy.scrub import scrub
from webui.auth import Viewer
from webui.components import data_url
from webui.i18n import error_text, text
from webui.infotext import infotext
from webui.studio import Studio

log = logging.getLogger("obscura.webui")
POLL_SECONDS = 0.15


class PaintError(Exception):
    """A sentence for the person, already in their language."""


@dataclass
class Progress:
    status: str
    preview: str | None = None  # data: URL
    pictures: list[str] | None = None  # data: URLs, set once at the end
    seed: int | None = None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # spool copy: fast, about as small
    return buffer.getvalue()


def take_photo(studio: Studio, viewer: Viewer, source: str | bytes | None) -> bytes | None:
    """The raw bytes of an upload: a cache path (checked to be this user's, then deleted) or
    bytes the browser sent in memory."""
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    return studio.uploads.take(source, viewer.user_id, max_bytes=studio.max_upload_bytes)


def mask_from_layers(layers: list[Image.Image], size: tuple[int, int]) -> Image.Image | None:
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


async def paint(
    studio: Studio,
    viewer: Viewer,
    session_hash: str,
    lang: str,
    request: GenerationRequest,
    *,
    photo: bytes | None = None,
    mask: Image.Image | None = None,
    mask_must_match: bool = False,
) -> AsyncIterator[Progress]:
    """Run one job for ``viewer`` and yield its progress; raises :class:`PaintError`."""
    owner = viewer.user_id
    spool_ids: list[str] = []
    job: Job | None = None
    started = time.monotonic()
    try:
        if photo is not None:
            clean = await asyncio.to_thread(
                scrub, photo, max_bytes=studio.max_upload_bytes,
                max_pixels=studio.max_upload_pixels,
            )
            del photo
            if mask is not None and mask.size != clean.size:
                if mask_must_match:  # a mask file sent with the photo
                    raise InputError(
                        "mask_size_mismatch",
                        "The mask must be the same size as the photo ({width}x{height}); "
                        "draw it on the same photo.",
                        width=clean.width, height=clean.height,
                    )
                # The painter's canvas may differ from the upright photo by rounding.
                mask = mask.resize(clean.size, Image.Resampling.NEAREST)
            # Checked with the pictures in memory, before anything is written anywhere.
            checked = dataclasses.replace(request, image=clean, mask=mask)
            await asyncio.to_thread(studio.engine.validate, checked)
            spool_ids.append(studio.spool.put(_png(clean), owner=owner))
            if mask is not None:
                spool_ids.append(studio.spool.put(_png(mask), owner=owner))
            del clean, checked
        waiting = dataclasses.replace(request, image=None, mask=None)

        def prepare(req: GenerationRequest) -> GenerationRequest:
            if not spool_ids:
                return req
            image = Image.open(io.BytesIO(studio.spool.get(spool_ids[0], owner=owner)))
            image.load()
            painted = None
            if len(spool_ids) > 1:
                painted = Image.open(io.BytesIO(studio.spool.get(spool_ids[1], owner=owner)))
                painted.load()
            return dataclasses.replace(req, image=image, mask=painted)

        def on_end(_job: Job) -> None:
            for spool_id in spool_ids:
                studio.spool.shred(spool_id)

        # The owner's key as of submission: a password reset during the job must not let the
        # resetting admin open this picture (the new key pair is theirs to know).
        sealed_to = studio.accounts.public_key(owner) if studio.accounts is not None else None
        job = studio.queue.submit(waiting, owner, prepare=prepare, on_end=on_end)
        with studio.lock:
            studio.active[(owner, session_hash)] = job
        last_preview: Any = None
        while not job.done:
            position = studio.queue.position(job)
            if job.state is JobState.QUEUED and position > 0:
                # In line at ``position``: the running job and those before it are ahead.
                yield Progress(text("queued", lang, position=position))
            elif job.total_steps:
                preview = job.preview
                url = None
                if preview is not None and preview is not last_preview:
                    last_preview = preview
                    url = data_url(await asyncio.to_thread(_png, preview))
                yield Progress(text("running", lang, step=job.step, total=job.total_steps), url)
            else:
                yield Progress(text("starting", lang))
            await asyncio.sleep(POLL_SECONDS)
        if job.state is JobState.CANCELLED:
            yield Progress(text("cancelled", lang))
            return
        if job.state is JobState.FAILED or job.result is None:
            raise job.error or RuntimeError("job failed")
        result = job.result
        pictures = await asyncio.to_thread(_deliver, studio, viewer, result, request, sealed_to)
        seconds = f"{time.monotonic() - started:.1f}"
        yield Progress(
            text("done", lang, count=len(pictures), seed=result.seed, seconds=seconds),
            pictures=pictures,
            seed=result.seed,
        )
    except (InputError, PrivacyError) as err:
        raise PaintError(error_text(err, lang)) from None
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as err:  # noqa: BLE001
        log.error("painting failed: %s", type(err).__name__)
        raise PaintError(text("unexpected", lang)) from None
    finally:
        if job is not None:
            if not job.done:
                job.cancel()
            with studio.lock:
                if studio.active.get((owner, session_hash)) is job:
                    del studio.active[(owner, session_hash)]
            if job.done:
                studio.queue.forget(job)
        else:
            for spool_id in spool_ids:
                studio.spool.shred(spool_id)


def _deliver(
    studio: Studio,
    viewer: Viewer,
    result: Any,
    request: GenerationRequest,
    sealed_to: bytes | None,
) -> list[str]:
    """Encode each picture with the AI label only; keep it in the gallery in accounts mode."""
    embed = False
    if studio.accounts is not None:
        embed = studio.accounts.settings(viewer.user_id).embed_parameters
    urls = []
    for image, seed in zip(result.images, result.seeds, strict=True):
        parameters = None
        if embed:
            parameters = infotext(request.prompt, request.negative_prompt, result, seed)
        png = encode_picture(image, "png", photo_based=result.mode != "txt2img",
                             parameters=parameters)
        if studio.gallery is not None and sealed_to is not None:
            studio.gallery.store(viewer.user_id, sealed_to, png, kind="png")
        urls.append(data_url(png))
    result.images = []
    return urls


def cancel(studio: Studio, viewer: Viewer, session_hash: str) -> bool:
    """Cancel the job this user runs from this browser session (nobody else's)."""
    with studio.lock:
        job = studio.active.get((viewer.user_id, session_hash))
    if job is None or job.owner != viewer.user_id:
        return False
    job.cancel()
    return True
