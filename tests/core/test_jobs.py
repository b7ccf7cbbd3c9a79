"""The job queue: FIFO, cancel within one step, hooks that always run, owners kept apart."""

from __future__ import annotations

import threading
import time

import pytest

from core.engine import GenerationRequest
from core.errors import InputError, JobCancelled
from core.jobs import JobQueue, JobState


@pytest.fixture
def queue(engine):
    q = JobQueue([engine])
    q.start()
    yield q
    q.stop()


def _request(steps: int = 3, **changes) -> GenerationRequest:
    values = {"width": 64, "height": 64, "num_inference_steps": steps, **changes}
    return GenerationRequest("a quiet harbour", **values)


def test_a_job_runs_and_reports_progress_and_a_preview(queue):
    job = queue.submit(_request(steps=5), owner="alice")
    result = job.wait(60)
    assert job.state is JobState.DONE
    assert job.step == job.total_steps == 5
    assert job.preview is not None and job.preview.mode == "RGB"
    assert result.images[0].size == (64, 64)


def test_cancel_stops_a_running_job_within_one_step(queue):
    job = queue.submit(_request(steps=150), owner="alice")
    deadline = time.monotonic() + 60
    while job.step < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    step_at_cancel = job.step
    job.cancel()
    with pytest.raises(JobCancelled):
        job.wait(60)
    assert job.state is JobState.CANCELLED
    assert job.step <= step_at_cancel + 1
    assert job.result is None


def test_cancel_while_waiting_drops_the_job_and_runs_on_end_once(queue):
    ended: list[str] = []
    blocker = queue.submit(_request(steps=150), owner="alice")
    waiting = queue.submit(
        _request(), owner="alice", on_end=lambda job: ended.append(job.state.value)
    )
    assert queue.position(waiting) == 1 or queue.position(waiting) == 2
    waiting.cancel()
    assert waiting.done and ended == ["cancelled"]
    assert queue.position(waiting) == -1
    blocker.cancel()
    with pytest.raises(JobCancelled):
        blocker.wait(60)
    assert ended == ["cancelled"]


@pytest.mark.parametrize("outcome", ["done", "failed", "cancelled"])
def test_on_end_runs_exactly_once_however_the_job_ends(queue, outcome):
    ended: list[str] = []
    started = threading.Event()

    def prepare(request: GenerationRequest) -> GenerationRequest:
        started.set()
        if outcome == "failed":
            raise RuntimeError("the upload could not be decrypted")
        return request

    steps = 150 if outcome == "cancelled" else 2
    job = queue.submit(
        _request(steps=steps),
        owner="alice",
        prepare=prepare,
        on_end=lambda j: ended.append(j.state.value),
    )
    if outcome == "cancelled":
        started.wait(30)
        job.cancel()
    with pytest.raises(Exception) if outcome != "done" else _nothing():
        job.wait(60)
    assert ended == [outcome]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_prepare_supplies_the_inputs_on_the_worker(queue):
    from PIL import Image

    seen: list[str] = []

    def prepare(request: GenerationRequest) -> GenerationRequest:
        seen.append(threading.current_thread().name)
        request.image = Image.new("RGB", (64, 64), (200, 30, 30))
        return request

    job = queue.submit(_request(strength=0.5), owner="alice", prepare=prepare)
    result = job.wait(60)
    assert result.mode == "img2img"
    assert seen and seen[0].startswith("obscura-worker")
    assert job.request.image is None  # decoded inputs are dropped when the job ends


def test_a_failed_job_does_not_break_the_next_one(queue):
    def explode(request: GenerationRequest) -> GenerationRequest:
        raise RuntimeError("boom")

    failed = queue.submit(_request(), owner="alice", prepare=explode)
    with pytest.raises(RuntimeError) as info:
        failed.wait(60)
    assert "boom" not in str(info.value)  # internal errors are not passed through to users
    ok = queue.submit(_request(), owner="alice")
    assert ok.wait(60).images


def test_bad_requests_are_refused_before_queueing(queue):
    with pytest.raises(InputError):
        queue.submit(_request(width=100), owner="alice")
    assert queue.jobs_of("alice") == []


def test_jobs_are_first_in_first_out(queue):
    order: list[str] = []
    jobs = [
        queue.submit(
            _request(), owner=f"user{i}", prepare=lambda r, i=i: (order.append(f"user{i}"), r)[1]
        )
        for i in range(3)
    ]
    for job in jobs:
        job.wait(60)
    assert order == ["user0", "user1", "user2"]


def test_one_owner_cannot_look_up_another_owners_job(queue):
    job = queue.submit(_request(), owner="alice")
    assert queue.get(job.id, "alice") is job
    assert queue.get(job.id, "bob") is None
    assert queue.jobs_of("bob") == []
    job.wait(60)


def test_stop_cancels_waiting_jobs_and_runs_their_hooks(engine):
    q = JobQueue([engine])
    q.start()
    ended: list[str] = []
    running = q.submit(_request(steps=150), owner="a", on_end=lambda j: ended.append("running"))
    waiting = q.submit(_request(), owner="a", on_end=lambda j: ended.append("waiting"))
    q.stop()
    assert sorted(ended) == ["running", "waiting"]
    assert running.state is JobState.CANCELLED and waiting.state is JobState.CANCELLED


def test_finished_results_are_dropped_after_keep_ended_even_when_idle(engine):
    q = JobQueue([engine], keep_ended=0.2)
    q.start()
    try:
        job = q.submit(_request(), owner="alice")
        job.wait(60)
        deadline = time.monotonic() + 5
        while q.get(job.id, "alice") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert q.get(job.id, "alice") is None
        assert job.result is None and job.preview is None
    finally:
        q.stop()


def test_the_event_hook_sees_every_start_and_end_once(engine):
    events: list[tuple[str, str, str]] = []
    q = JobQueue([engine], on_event=lambda event, job: events.append((event, job.id, job.kind)))
    q.start()
    try:
        done = q.submit(_request(), owner="alice")
        done.wait(60)
        blocker = q.submit(_request(steps=150), owner="alice")
        waiting = q.submit(_request(), owner="alice")
        waiting.cancel()
        blocker.cancel()
        with pytest.raises(JobCancelled):
            blocker.wait(60)
    finally:
        q.stop()
    assert ("started", done.id, "txt2img") in events and ("ended", done.id, "txt2img") in events
    assert [e for e in events if e[1] == waiting.id] == [("ended", waiting.id, "txt2img")]
    assert sum(1 for e in events if e[1] == blocker.id and e[0] == "ended") == 1
