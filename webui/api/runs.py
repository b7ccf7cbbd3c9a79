"""One txt2img/img2img call: ``n_iter`` jobs on the shared queue, one after another.

The photo and mask are scrubbed in memory and encrypted into the spool before the first job is
queued; each job's ``prepare`` decrypts them on the worker, and they are shredded when the run
ends — last job done, interrupted, failed, cancelled while waiting, or the caller gone (the
handler's ``finally`` shreds as well). After an inpainting job, ``on_end`` puts the original
back outside the blurred mask (AUTOMATIC1111's overlay) while the photo is still in the spool.

:class:`Runs` knows each caller's runs in progress, so that ``progress``, ``interrupt`` and
``skip`` act on the caller's own work only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from PIL import Image

from core.engine import MAX_SEED, GenerationRequest, GenerationResult
from core.jobs import Job, JobState
from webui.api.pictures import open_png, overlay, png_bytes
from webui.studio import Studio

POLL_SECONDS = 0.05
DISCONNECT_CHECK_SECONDS = 1.0


@dataclass
class Run:
    owner: str
    iterations: int
    started: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    index: int = 0
    job: Job | None = None
    interrupted: bool = False
    skipped: set[str] = field(default_factory=set)  # ids of jobs skipped (the run goes on)


class Runs:
    """The API's runs in progress, by owner."""

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


@dataclass
class Inputs:
    """What a run starts from: the request (no pictures in it) and the scrubbed pictures."""

    request: GenerationRequest
    iterations: int
    photo: Image.Image | None = None
    mask: Image.Image | None = None  # white = repaint, same size as photo
    mask_blur: int = 0


@dataclass
class Outcome:
    results: list[GenerationResult]
    interrupted: bool


Disconnected = Callable[[], Awaitable[bool]]


async def execute(
    studio: Studio, runs: Runs, owner: str, inputs: Inputs, disconnected: Disconnected
) -> Outcome:
    """Run every iteration for ``owner``; raises the first job's InputError/RuntimeError."""
    request = inputs.request
    spool_ids: list[str] = []
    if inputs.photo is not None:
        photo_png = await asyncio.to_thread(png_bytes, inputs.photo)
        spool_ids.append(studio.spool.put(photo_png, owner=owner))
        del photo_png
        if inputs.mask is not None:
            mask_png = await asyncio.to_thread(png_bytes, inputs.mask)
            spool_ids.append(studio.spool.put(mask_png, owner=owner))
            del mask_png
    inputs.photo = inputs.mask = None  # from here on the pictures live in the spool only
    run = Run(owner, inputs.iterations)
    runs.add(run)

    def shred() -> None:
        for spool_id in spool_ids:
            studio.spool.shred(spool_id)

    def prepare(req: GenerationRequest) -> GenerationRequest:
        if not spool_ids:
            return req
        photo = open_png(studio.spool.get(spool_ids[0], owner=owner))
        mask = open_png(studio.spool.get(spool_ids[1], owner=owner)) if len(spool_ids) > 1 else None
        return dataclasses.replace(req, image=photo, mask=mask)

    def on_end(job: Job) -> None:
        last = run.index >= run.iterations - 1
        try:
            if job.state is JobState.DONE and job.result is not None and len(spool_ids) > 1:
                photo = open_png(studio.spool.get(spool_ids[0], owner=owner))
                mask = open_png(studio.spool.get(spool_ids[1], owner=owner))
                job.result.images = [
                    overlay(image, photo, mask, inputs.mask_blur) for image in job.result.images
                ]
        finally:
            going_on = job.state is JobState.DONE or job.id in run.skipped
            if last or run.interrupted or not going_on:
                shred()

    results: list[GenerationResult] = []
    jobs: list[Job] = []
    first_seed = request.seed
    try:
        for index in range(inputs.iterations):
            if run.interrupted:
                break
            run.index = index
            seed = None if first_seed is None else (first_seed + index * request.batch_size) % (
                MAX_SEED + 1
            )
            job = studio.queue.submit(
                dataclasses.replace(request, seed=seed), owner, prepare=prepare, on_end=on_end
            )
            run.job = job
            jobs.append(job)
            if run.interrupted:  # an interrupt that came while this batch was being queued
                job.cancel()
            checked = time.monotonic()
            while not job.done:
                await asyncio.sleep(POLL_SECONDS)
                if time.monotonic() - checked > DISCONNECT_CHECK_SECONDS:
                    checked = time.monotonic()
                    if await disconnected():
                        run.interrupted = True
                        job.cancel()
            if job.state is JobState.DONE and job.result is not None:
                results.append(job.result)
            elif job.state is JobState.FAILED:
                raise job.error or RuntimeError("The job failed.")
            elif job.id not in run.skipped:
                run.interrupted = True
    finally:
        if run.job is not None and not run.job.done:
            run.job.cancel()
        runs.remove(run)
        shred()
        for ended in jobs:
            if ended.done:
                studio.queue.forget(ended)
    return Outcome(results, run.interrupted)
