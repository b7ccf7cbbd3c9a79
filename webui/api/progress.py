"""``progress``, ``interrupt`` and ``skip`` for one caller: their own jobs, nobody else's.

A caller's jobs are every unfinished job with their owner id in the shared queue (from the API
or the UI); :class:`webui.run.Runs` (``studio.runs``) adds which batch of a call is running.
"""

from __future__ import annotations

import time
from typing import Any

from core.jobs import Job, JobState
from webui.api.pictures import encode_base64_png
from webui.studio import Studio


def progress(studio: Studio, owner: str, with_image: bool) -> dict[str, Any]:
    """AUTOMATIC1111's progress answer for ``owner``'s running job, else their next waiting
    one; idle (``job_count`` 0) when they have none, whatever anybody else is running."""
    jobs = [job for job in studio.queue.jobs_of(owner) if not job.done]
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
    run = studio.runs.holding(job)
    job_no, job_count = (run.index, run.iterations) if run else (0, 1)
    fraction = job.step / job.total_steps if job.total_steps else 0.0
    progress = min(1.0, (job_no + fraction) / job_count)
    eta = 0.0
    if run is not None and progress > 0:
        spent = time.monotonic() - run.started
        eta = spent / progress - spent
    position = studio.queue.position(job)
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

def stop(studio: Studio, owner: str, *, skip: bool) -> None:
    """Interrupt (the runs end) or skip (the runs go on with their next iteration)."""
    for run in studio.runs.of(owner):
        if not skip:
            run.interrupted = True
        elif run.job is not None and run.job.state is JobState.RUNNING:
            run.skipped.add(run.job.id)
    for job in studio.queue.jobs_of(owner):
        if not job.done and (not skip or job.state is JobState.RUNNING):
            job.cancel()
