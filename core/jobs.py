"""The job queue: fair between owners, one worker thread per engine (device).

A job carries an ``owner`` that core treats as an opaque string; ``get`` and ``jobs_of`` only
answer for the owner given. Two hooks let the caller keep inputs safe while a job waits:
``prepare`` runs on the worker just before the job starts (e.g. decrypt an upload) and
``on_end`` runs exactly once when the job ends in any way — done, failed, cancelled while
running, or cancelled while waiting (e.g. destroy that upload).

Order: owners are served round-robin, weighted by pictures (start-time fair queueing). Each
job gets a virtual start tag ``max(now, the owner's previous finish tag)`` and a finish tag
``start + pictures``; the waiting job with the smallest start tag runs next (ties: first come).
"Now" is the start tag of the job that started last, so an owner who was idle banks no credit,
and one owner's job never waits behind more than one job (or one batch) of any other owner
beyond the one that is running. With one owner, or owners who each send one job, this is first
in, first out.

Waiting without polling: :meth:`Job.subscribe` calls back (on the worker thread) after every
step, when the queue moves (a waiting job's position may change) and once when the job ends;
:class:`JobWaiter` and :func:`watch` bring that to an asyncio caller.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable

from PIL import Image

from core.engine import Engine, GenerationRequest, GenerationResult
from core.errors import InputError, JobCancelled, ServerStopping

log = logging.getLogger("obscura.core")

Prepare = Callable[[GenerationRequest], GenerationRequest]
OnEnd = Callable[["Job"], None]
OnEvent = Callable[[str, "Job"], None]  # ("started" | "ended", job), for an audit trail
Listener = Callable[["Job"], None]


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}


class Job:
    def __init__(
        self,
        queue: JobQueue,
        request: GenerationRequest,
        owner: str,
        prepare: Prepare | None,
        on_end: OnEnd | None,
        kind: str | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(16)
        self.owner = owner
        self.request = request
        # What the job does (txt2img, img2img, inpaint), kept for the audit trail: a job whose
        # photo waits in a spool has no image in ``request`` until ``prepare`` runs, so the
        # caller says what it is.
        self.kind = kind or request.mode
        # Pictures it makes: the weight of the job in the fair order.
        self.weight = max(1, int(request.batch_size or 1))
        self.state = JobState.QUEUED
        self.step = 0
        self.total_steps = 0
        self.preview: Image.Image | None = None
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None
        self.created = time.monotonic()
        self.ended_at: float | None = None
        self._queue = queue
        self._prepare = prepare
        self._on_end = on_end
        self._stop = threading.Event()
        self._done = threading.Event()
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        self._start_tag = 0.0
        self._seq = 0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def cancel(self) -> None:
        """Waiting: removed at once. Running: stops at the end of the current step."""
        self._stop.set()
        self._queue._drop_if_waiting(self)

    def skip(self) -> None:
        """AUTOMATIC1111's "skip": with one image per job it is the same as cancel."""
        self.cancel()

    def wait(self, timeout: float | None = None) -> GenerationResult:
        if not self._done.wait(timeout):
            raise TimeoutError("the job is still running")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(job)`` after every step, when the queue moves and once when the job
        has ended (at once if it already has); returns the function that unsubscribes.

        Listeners run on the worker thread and must be quick; an exception in one is logged by
        type and ignored."""
        with self._listeners_lock:
            self._listeners.append(listener)
        if self.done:
            self._call(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _changed(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            self._call(listener)

    def _call(self, listener: Listener) -> None:
        try:
            listener(self)
        except Exception as exc:  # an observer must never kill the worker
            log.error("job listener failed: %s", type(exc).__name__)

    def _progress(self, step: int, total: int, preview: Image.Image | None) -> None:
        self.step, self.total_steps = step, total
        if preview is not None:
            self.preview = preview
        self._changed()

    def _end(self, state: JobState, error: BaseException | None = None) -> None:
        self.state, self.error = state, error
        self.ended_at = time.monotonic()
        # Drop the decoded inputs now, every one (a face reference is biometric data: it
        # lives for the job only), and the frames an error would keep them alive through.
        self.request = self.request.without_pictures()
        forget_frames(error)
        try:
            if self._on_end is not None:
                self._on_end(self)
        except Exception as exc:  # a cleanup hook must never kill the worker
            log.error("job %s on_end hook failed: %s", self.id, type(exc).__name__)
        finally:
            self._done.set()
            self._queue._notify("ended", self)
            self._changed()
            with self._listeners_lock:
                self._listeners.clear()


class JobWaiter:
    """Wakes an asyncio coroutine from the worker thread (:meth:`Job.subscribe` +
    ``call_soon_threadsafe``). Subscribed when made, so no change between submitting a job and
    waiting for it is lost. :meth:`change` returns on the next change (coalesced: the caller
    sees the newest state, never a backlog); :attr:`ended` is done once the job has ended.
    Make it on the event loop's thread; call :meth:`unsubscribe` when done with it."""

    def __init__(self, job: Job) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self.ended: asyncio.Future[None] = self._loop.create_future()
        self.unsubscribe = job.subscribe(self._listener)

    def _listener(self, job: Job) -> None:  # on the worker thread
        try:
            self._loop.call_soon_threadsafe(self._set, job.done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _set(self, done: bool) -> None:
        self._changed.set()
        if done and not self.ended.done():
            self.ended.set_result(None)

    async def change(self, every: float = 0.0) -> None:
        """No sooner than ``every`` seconds (unless the job ends), then on the next change —
        at once if it changed meanwhile."""
        if every > 0:
            try:
                await asyncio.wait_for(asyncio.shield(self.ended), every)
            except TimeoutError:
                pass
        await self._changed.wait()
        self._changed.clear()


def watch(job: Job) -> AsyncIterator[Job]:
    """``async for job in watch(job)``: the job each time it changed (a step, a move in the
    queue, its end); the iteration ends once the job has ended. Subscribed at this call."""
    waiter = JobWaiter(job)

    async def changes() -> AsyncIterator[Job]:
        try:
            while True:
                await waiter.change()
                yield job
                if job.done:
                    return
        finally:
            waiter.unsubscribe()

    return changes()


class JobQueue:
    """The queue shared by all callers (fair between owners); finished jobs are kept
    ``keep_ended`` seconds."""

    def __init__(
        self, engines: list[Engine], keep_ended: float = 600.0, on_event: OnEvent | None = None
    ) -> None:
        if not engines:
            raise ValueError("JobQueue needs at least one engine")
        self.engines = engines
        self.keep_ended = keep_ended
        self.on_event = on_event
        self._waiting: list[Job] = []
        self._running: dict[int, Job] = {}
        # Fair order: the virtual time and each waiting or running owner's last finish tag.
        self._now = 0.0
        self._finish: dict[str, float] = {}
        self._seq = 0
        self._jobs: dict[str, Job] = {}
        self._cv = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closing = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        with self._cv:
            if self._threads:
                return
            self._closing = False
            for index, engine in enumerate(self.engines):
                thread = threading.Thread(
                    target=self._work,
                    args=(index, engine),
                    name=f"obscura-worker-{index}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel everything and stop the workers (every job's on_end still runs)."""
        with self._cv:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            for job in self._running.values():
                job._stop.set()
            self._cv.notify_all()
        for job in waiting:
            job._stop.set()
            job._end(JobState.FAILED, ServerStopping())
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    # -- submitting and looking up --------------------------------------------------------
    def submit(
        self,
        request: GenerationRequest,
        owner: str,
        *,
        prepare: Prepare | None = None,
        on_end: OnEnd | None = None,
        kind: str | None = None,
    ) -> Job:
        """Check the request (InputError at once) and put it in line. ``kind`` is what the job
        does once ``prepare`` has supplied its pictures (default: what ``request`` does).

        A request with ``prepare`` waits without its pictures (a ControlNet unit without its
        picture is no request the engine can run), so it is not checked here: its caller
        checked it with the pictures in (webui.run), and Engine.generate checks it again once
        ``prepare`` has put them back."""
        if prepare is None:
            self.engines[0].validate(request)
        job = Job(self, request, str(owner), prepare, on_end, kind)
        with self._cv:
            if self._closing:
                raise ServerStopping()
            self._prune()
            start = max(self._now, self._finish.get(job.owner, 0.0))
            self._finish[job.owner] = start + job.weight
            self._seq += 1
            job._start_tag, job._seq = start, self._seq
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cv.notify()
        return job

    def get(self, job_id: str, owner: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            return None
        return job

    def jobs_of(self, owner: str) -> list[Job]:
        return [job for job in list(self._jobs.values()) if job.owner == owner]

    def forget(self, job: Job) -> None:
        """Drop an ended job's result from memory now."""
        if job.done:
            self._jobs.pop(job.id, None)
            job.result = None
            job.preview = None

    def position(self, job: Job) -> int:
        """0 while running; 1 + the number of waiting jobs that run before it while waiting
        (other owners' jobs are only counted, never named); -1 once it has left the queue."""
        with self._cv:
            if job.state is JobState.RUNNING:
                return 0
            if job not in self._waiting:
                return -1
            key = _order(job)
            return 1 + sum(1 for other in self._waiting if _order(other) < key)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- internals ---------------------------------------------------------------------
    def _prune(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.ended_at is not None and now - job.ended_at > self.keep_ended:
                self.forget(job)
                self._jobs.pop(job_id, None)

    def _notify(self, event: str, job: Job) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, job)
        except Exception as exc:  # an observer must never kill the worker
            log.error("job event hook failed: %s", type(exc).__name__)

    def _drop_if_waiting(self, job: Job) -> None:
        with self._cv:
            try:
                self._waiting.remove(job)
            except ValueError:
                return
            self._forget_idle_owner(job.owner)
            behind = list(self._waiting)
        job._end(JobState.CANCELLED, JobCancelled())
        for other in behind:  # their positions may have moved up
            other._changed()

    def _forget_idle_owner(self, owner: str) -> None:
        """An owner with nothing waiting or running needs no finish tag (bounded memory)."""
        busy = any(j.owner == owner for j in self._waiting) or any(
            j.owner == owner for j in self._running.values()
        )
        if not busy:
            self._finish.pop(owner, None)

    def _next(self) -> Job:
        job = min(self._waiting, key=_order)
        self._waiting.remove(job)
        self._now = max(self._now, job._start_tag)
        return job

    def _work(self, index: int, engine: Engine) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closing:
                    # Wake now and then to drop old results even when nobody submits.
                    if not self._cv.wait(timeout=min(60.0, self.keep_ended)):
                        self._prune()
                if self._closing and not self._waiting:
                    return
                job = self._next()
                job.state = JobState.RUNNING
                self._running[index] = job
                behind = list(self._waiting)
            job._changed()
            for other in behind:  # one place nearer the front
                other._changed()
            self._run(engine, job)
            with self._cv:
                self._running.pop(index, None)
                self._forget_idle_owner(job.owner)
            del job, behind  # an ended job is not held here while the worker waits

    def _run(self, engine: Engine, job: Job) -> None:
        started = time.monotonic()
        log.info("job %s started on %s", job.id, engine.device)
        self._notify("started", job)
        try:
            if job.cancel_requested:
                raise JobCancelled()
            if job._prepare is not None:
                job.request = job._prepare(job.request)
            result = engine.generate(
                job.request, on_step=job._progress, should_stop=lambda: job.cancel_requested
            )
        except JobCancelled as exc:
            if self._closing:  # stopped by the server, not by its owner
                job._end(JobState.FAILED, ServerStopping())
            else:
                job._end(JobState.CANCELLED, exc)
        except InputError as exc:
            job._end(JobState.FAILED, exc)
        except Exception as exc:  # the next job must still run
            log.error("job %s failed: %s", job.id, type(exc).__name__)
            job._end(
                JobState.FAILED,
                RuntimeError("The job failed inside the engine; it was not your input."),
            )
        else:
            job.result = result
            job._end(JobState.DONE)
        log.info("job %s ended: %s in %.1f s", job.id, job.state.value, time.monotonic() - started)


def forget_frames(error: BaseException | None) -> None:
    """Clear the tracebacks of ``error`` and of the errors it came from: a kept error must not
    keep alive the frames (and the pictures in their variables) it was raised through."""
    seen: set[int] = set()
    chain = [error]
    while chain:
        each = chain.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        each.__traceback__ = None
        chain += [each.__cause__, each.__context__]


def _order(job: Job) -> tuple[float, int]:
    return (job._start_tag, job._seq)
