"""One bounded queue of segmentation jobs and the single worker thread that empties it in micro-batches.

Requests put a :class:`Job` in the queue (:meth:`BatchWorker.submit`, refused with :class:`QueueFull` when
``capacity`` jobs wait) and wait on its ``future``. The worker takes the oldest job and, with it, up to
``max_batch - 1`` later ones of the same key (the inference settings) and image size, so they share one forward
pass; images of other sizes wait for their own turn. A job whose request gave up (timed out, disconnected) is
taken out of the queue at once (:meth:`BatchWorker.forget`), freeing its slot. :meth:`BatchWorker.close` stops
new jobs, lets the worker finish every queued one, and joins it: how a server drains on SIGTERM.

Nothing here knows HTTP; the work is a plain function ``run(key, images) -> labels``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BatchWorker", "Job", "QueueClosed", "QueueFull"]

RunBatch = Callable[[Hashable, Sequence[np.ndarray]], Sequence[np.ndarray]]


class QueueFull(Exception):
    """The queue holds ``capacity`` waiting jobs; the request should be retried later (HTTP 503)."""


class QueueClosed(Exception):
    """The worker is shutting down and takes no new jobs (HTTP 503)."""


@dataclass(eq=False)
class Job:
    """One image to segment: ``image`` (H, W, 3) uint8 RGB, ``key`` what must be equal for two jobs of one size to
    share a forward pass, ``future`` the (H, W) label map (or the exception the work raised)."""

    image: np.ndarray
    key: Hashable
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class BatchWorker:
    """A bounded queue of :class:`Job` and one thread that runs ``run(key, images)`` on batches of them.

    ``capacity``: the most jobs waiting (the batch being computed not counted); ``max_batch``: the most images of
    one key and size in one call of ``run``. ``run`` gets a list of equal-size images and returns their label maps
    in order. Counters for metrics: ``images_done``, ``batches_done``, ``rate(window)`` (images per second).
    """

    def __init__(self, run: RunBatch, *, capacity: int, max_batch: int, name: str = "pspnet-serve-worker"):
        if capacity < 1:
            raise ValueError(f"queue capacity must be positive, got {capacity}")
        if max_batch < 1:
            raise ValueError(f"max batch must be positive, got {max_batch}")
        self.run = run
        self.capacity = capacity
        self.max_batch = max_batch
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._done_times: deque[tuple[float, int]] = deque()  # (monotonic time, images) of recent batches
        self.images_done = 0
        self.batches_done = 0
        self.busy = False

    def start(self) -> BatchWorker:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """The worker thread runs and takes jobs."""
        return self._thread.is_alive() and not self._closing

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (not the batch being computed)."""
        return len(self._pending)

    def submit(self, image: np.ndarray, key: Hashable) -> Job:
        """Queue one image; raises :class:`QueueFull` when ``capacity`` jobs wait, :class:`QueueClosed` after
        :meth:`close`."""
        job = Job(image, key)
        with self._cond:
            if self._closing:
                raise QueueClosed("the server is shutting down")
            if len(self._pending) >= self.capacity:
                raise QueueFull(f"{len(self._pending)} images are waiting, the most this server queues")
            self._pending.append(job)
            self._cond.notify()
        return job

    def forget(self, job: Job) -> bool:
        """Take ``job`` out of the queue if it still waits (its request gave up) and cancel its future; a job being
        computed finishes and its result is dropped. True when the job was still waiting (it is never computed)."""
        with self._cond:
            try:
                self._pending.remove(job)
                waiting = True
            except ValueError:
                waiting = False
        job.future.cancel()
        return waiting

    def rate(self, window: float = 30.0) -> float:
        """Images finished per second over the last ``window`` seconds."""
        now = time.monotonic()
        with self._cond:
            while self._done_times and self._done_times[0][0] < now - window:
                self._done_times.popleft()
            return sum(n for _, n in self._done_times) / window

    def close(self, timeout: float | None = None) -> bool:
        """Take no new jobs, let the worker finish the queued ones, and wait for it (at most ``timeout`` seconds).
        True when the worker has ended."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self) -> list[Job] | None:
        """The next batch: the oldest job and the later ones of its key and size (at most ``max_batch``), or None
        when closing with nothing left."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            first = self._pending.popleft()
            batch = [first]
            for job in list(self._pending):
                if len(batch) >= self.max_batch:
                    break
                if job.key == first.key and job.image.shape == first.image.shape:
                    self._pending.remove(job)
                    batch.append(job)
            self.busy = True
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]  # drop given-up requests
            try:
                if live:
                    self._compute(live)
            finally:
                with self._cond:
                    self.busy = False

    def _compute(self, jobs: list[Job]) -> None:
        try:
            results = list(self.run(jobs[0].key, [job.image for job in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(jobs)} images")
        except Exception as error:  # noqa: BLE001 - the requests report it; the worker goes on with the next batch
            for job in jobs:
                job.future.set_exception(error)
            return
        for job, labels in zip(jobs, results, strict=True):
            job.future.set_result(labels)
        with self._cond:
            self.images_done += len(jobs)
            self.batches_done += 1
            self._done_times.append((time.monotonic(), len(jobs)))
