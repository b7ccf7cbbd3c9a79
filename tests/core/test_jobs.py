"""The job queue: fair between owners, cancel within one step, hooks that always run, owners
kept apart, waiters woken without polling."""

from __future__ import annotations

import threading
import time

import pytest

from core.engine import GenerationRequest
from core.errors import InputError, JobCancelled, ServerStopping
from core.jobs import JobQueue, JobState, watch


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
    # Their callers are told the server is stopping (not that they cancelled).
    for job in (running, waiting):
        assert job.state is JobState.FAILED
        assert isinstance(job.error, ServerStopping) and job.error.code == "shutting_down"
    with pytest.raises(ServerStopping):
        q.submit(_request(), owner="a")


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


def _blocked_queue(engine):
    """A started queue whose worker is held by a job of ``carol`` until the event is set."""
    q = JobQueue([engine])
    q.start()
    release = threading.Event()
    started = threading.Event()

    def hold(request: GenerationRequest) -> GenerationRequest:
        started.set()
        release.wait(60)
        return request

    blocker = q.submit(_request(steps=1), owner="carol", prepare=hold)
    assert started.wait(30)
    return q, blocker, release


def _recording(order: list[str], name: str):
    return lambda request: (order.append(name), request)[1]


def test_owners_are_served_round_robin_so_one_job_never_waits_behind_a_long_line(engine):
    q, blocker, release = _blocked_queue(engine)
    order: list[str] = []
    try:
        alice = [
            q.submit(_request(steps=1), owner="alice", prepare=_recording(order, f"alice{i}"))
            for i in range(4)
        ]
        bob = q.submit(_request(steps=1), owner="bob", prepare=_recording(order, "bob"))
        # Bob is second in line: behind one of alice's jobs, not all four.
        assert q.position(bob) == 2
        assert [q.position(job) for job in alice] == [1, 3, 4, 5]
        release.set()
        for job in [blocker, *alice, bob]:
            job.wait(60)
    finally:
        release.set()
        q.stop()
    assert order == ["alice0", "bob", "alice1", "alice2", "alice3"]


def test_a_batch_counts_as_its_pictures_in_the_fair_order(engine):
    q, blocker, release = _blocked_queue(engine)
    order: list[str] = []
    try:
        jobs = [
            q.submit(_request(steps=1, batch_size=4), owner="alice",
                     prepare=_recording(order, "alice-batch")),
            q.submit(_request(steps=1), owner="alice", prepare=_recording(order, "alice-next")),
            q.submit(_request(steps=1), owner="bob", prepare=_recording(order, "bob0")),
            q.submit(_request(steps=1), owner="bob", prepare=_recording(order, "bob1")),
            q.submit(_request(steps=1), owner="bob", prepare=_recording(order, "bob2")),
        ]
        release.set()
        for job in [blocker, *jobs]:
            job.wait(60)
    finally:
        release.set()
        q.stop()
    # Alice's four pictures are worth four of bob's single ones.
    assert order == ["alice-batch", "bob0", "bob1", "bob2", "alice-next"]


def test_an_owner_who_was_idle_banks_no_credit(engine):
    q, blocker, release = _blocked_queue(engine)
    release.set()
    blocker.wait(60)
    order: list[str] = []
    try:
        for _ in range(5):  # alice has the queue to herself for a while
            q.submit(_request(steps=1), owner="alice").wait(60)
        hold, started = threading.Event(), threading.Event()
        second = q.submit(_request(steps=1), owner="carol",
                          prepare=lambda r: (started.set(), hold.wait(60), r)[2])
        assert started.wait(30)
        jobs = []
        for i in range(3):
            jobs.append(q.submit(_request(steps=1), owner="alice",
                                 prepare=_recording(order, f"alice{i}")))
        for i in range(3):
            jobs.append(q.submit(_request(steps=1), owner="bob",
                                 prepare=_recording(order, f"bob{i}")))
        hold.set()
        for job in [second, *jobs]:
            job.wait(60)
    finally:
        release.set()
        q.stop()
    # Bob, new, does not get alice's past five as a head start: they take turns.
    assert order == ["alice0", "bob0", "alice1", "bob1", "alice2", "bob2"]


def test_the_job_kind_is_what_the_caller_says_for_the_audit_trail(queue):
    from PIL import Image

    def prepare(request: GenerationRequest) -> GenerationRequest:
        request.image = Image.new("RGB", (64, 64), (10, 20, 30))
        return request

    job = queue.submit(_request(strength=0.5), owner="alice", prepare=prepare, kind="img2img")
    assert job.kind == "img2img"
    assert job.wait(60).mode == "img2img"
    assert queue.submit(_request(), owner="alice").kind == "txt2img"


def test_subscribers_hear_every_step_and_the_end_once(queue):
    heard: list[tuple[int, bool]] = []
    job = queue.submit(_request(steps=4), owner="alice")
    job.subscribe(lambda j: heard.append((j.step, j.done)))
    job.wait(60)
    ends = [entry for entry in heard if entry[1]]
    assert len(ends) == 1 and heard[-1] == (4, True)
    late: list[bool] = []
    job.subscribe(lambda j: late.append(j.done))  # already ended: called at once
    assert late == [True]


def test_a_failing_listener_does_not_break_the_job(queue):
    job = queue.submit(_request(steps=2), owner="alice")
    job.subscribe(lambda j: 1 / 0)
    assert job.wait(60).images


def test_watch_wakes_an_asyncio_waiter_without_polling(queue):
    import asyncio

    async def follow() -> tuple[list[int], float]:
        # The job spends 0.6 s in prepare: a poll would wake the waiter many times meanwhile.
        job = queue.submit(_request(steps=3), owner="alice",
                           prepare=lambda r: (time.sleep(0.6), r)[1])
        steps: list[int] = []
        async for changed in watch(job):
            steps.append(changed.step)
        return steps, time.monotonic() - (job.ended_at or 0)

    steps, lag = asyncio.run(follow())
    assert steps and steps[-1] == 3
    assert len(steps) <= 5  # started, 3 steps, ended — nothing in between
    assert lag < 0.5  # woken by the end itself


def test_watch_reports_a_move_in_the_queue(engine):
    import asyncio

    q, blocker, release = _blocked_queue(engine)
    hold = threading.Event()

    async def follow() -> list[int]:
        # alice's job stays running until the waiter has seen it start.
        waiting = q.submit(_request(steps=1), owner="alice",
                           prepare=lambda r: (hold.wait(30), r)[1])
        positions: list[int] = [q.position(waiting)]
        release.set()
        async for job in watch(waiting):
            positions.append(q.position(job))
            if positions[-1] == 0:
                hold.set()
        return positions

    try:
        positions = asyncio.run(follow())
    finally:
        release.set()
        hold.set()
        q.stop()
    assert positions[0] == 1  # waiting behind carol's job
    assert 0 in positions  # woken when it moved to the front and started
    assert positions[-1] == -1  # and when it ended
