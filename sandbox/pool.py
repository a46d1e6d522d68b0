"""The warm container pool: the fast path every evaluation goes through.

One worker thread per container feeds it jobs over its attach stream. A container that dies or
stalls mid-job is replaced and the job retried (`SandboxConfig.retries`); a job that still cannot
run comes back as `infra_error`, never as a failed test. Leaving the `with` block, Ctrl-C included,
removes the pool's containers.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from sandbox.channel import ChannelClosed
from sandbox.config import SandboxConfig
from sandbox.containers import WarmContainer, remove_leftovers, start_container
from sandbox.errors import SandboxError
from sandbox.image import ensure_image
from sandbox.job import Job, Status, Verdict

_STOP = object()


class _Worker(threading.Thread):
    """Owns one container at a time; replaces it whenever it stops answering properly."""

    def __init__(self, pool: SandboxPool, slot: int) -> None:
        super().__init__(name=f"sandbox-worker-{slot}", daemon=True)
        self.pool = pool
        self.container: WarmContainer | None = None
        self.replacements = 0
        self._ids = itertools.count()

    def run(self) -> None:
        while True:
            item = self.pool._queue.get()
            if item is _STOP:
                return
            index, job, results = item
            try:
                verdict = self._run_with_retries(job)
            except Exception as exc:  # a bug here must not leave the caller waiting forever
                verdict = Verdict(
                    Status.INFRA_ERROR, detail=f"sandbox worker: {exc!r}", tag=job.tag
                )
            results.put((index, verdict))

    def ensure_container(self) -> WarmContainer:
        if self.container is None:
            self.container = start_container(self.pool.image, self.pool.config)
        return self.container

    def _replace(self) -> None:
        if self.container is not None:
            self.container.stop()
            self.container = None
            self.replacements += 1

    def _run_with_retries(self, job: Job) -> Verdict:
        reason = ""
        attempts = self.pool.config.retries + 1
        for attempt in range(1, attempts + 1):
            if self.pool._closed.is_set():
                reason = "pool closed"
                break
            try:
                return self._run_once(job, attempt)
            except (ChannelClosed, SandboxError, OSError) as exc:
                reason = str(exc)
                stderr = self.container.channel.stderr_tail if self.container else b""
                if stderr:
                    reason += f" | supervisor stderr: {stderr[-500:].decode('utf-8', 'replace')}"
                self._replace()
        return Verdict(
            Status.INFRA_ERROR,
            checks=(),
            detail=f"sandbox failed {attempts} time(s): {reason}"[:2000],
            attempts=attempts,
            tag=job.tag,
        )

    def _run_once(self, job: Job, attempt: int) -> Verdict:
        container = self.ensure_container()
        job_id = next(self._ids)
        container.channel.send({"id": job_id, "job": job.to_wire()})
        answer: dict[str, Any] = container.channel.receive(
            job.limits.wall_s + self.pool.config.job_grace_s
        )
        if answer.get("id") != job_id:
            raise ChannelClosed(f"supervisor answered job {answer.get('id')!r}, expected {job_id}")
        if not answer.get("clean", False):
            self._replace()  # the supervisor exits after an unclean job; start afresh next time
        if answer.get("status") == Status.INFRA_ERROR.value:
            raise ChannelClosed(str(answer.get("detail", "supervisor infra error")))
        return Verdict.from_wire(answer, tag=job.tag, attempts=attempt)


class SandboxPool:
    """Run `Job`s in warm hardened containers; verdicts come back as they finish."""

    def __init__(self, config: SandboxConfig | None = None, image: str | None = None) -> None:
        self.config = config or SandboxConfig()
        self._image_request = image or self.config.image
        self.image = ""
        self._queue: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._workers: list[_Worker] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SandboxPool:
        self.image = ensure_image(self._image_request)
        remove_leftovers()
        self._workers = [_Worker(self, slot) for slot in range(self.config.pool_size)]
        starters = [threading.Thread(target=self._warm, args=(w,)) for w in self._workers]
        errors: list[BaseException] = []
        self._start_errors = errors
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if errors:
            self.close()
            raise errors[0]
        for w in self._workers:
            w.start()
        return self

    def _warm(self, worker: _Worker) -> None:
        try:
            worker.ensure_container()
        except BaseException as exc:  # reported by start()
            self._start_errors.append(exc)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for _ in self._workers:
            self._queue.put(_STOP)
        containers = [w.container for w in self._workers if w.container is not None]
        for w in self._workers:
            w.container = None
        # Closing every stream first lets all supervisors exit (and auto-remove) at once; the
        # forced removals, for a container that does not exit, then run side by side.
        for c in containers:
            c.channel.close()
        stoppers = [threading.Thread(target=c.stop) for c in containers]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def __enter__(self) -> SandboxPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running jobs ------------------------------------------------------------------------
    def run_iter(self, jobs: Iterable[Job]) -> Iterator[tuple[int, Verdict]]:
        """Yield (index into jobs, verdict) as each finishes."""
        if self._closed.is_set() or not self._workers:
            raise SandboxError("the pool is not running (use `with SandboxPool(...) as pool:`)")
        results: queue.Queue = queue.Queue()
        count = 0
        for index, job in enumerate(jobs):
            self._queue.put((index, job, results))
            count += 1
        for _ in range(count):
            yield results.get()

    def run(self, jobs: Iterable[Job]) -> list[Verdict]:
        """All verdicts, in job order."""
        jobs = list(jobs)
        verdicts: list[Verdict | None] = [None] * len(jobs)
        for index, verdict in self.run_iter(jobs):
            verdicts[index] = verdict
        return verdicts  # type: ignore[return-value]

    @property
    def container_ids(self) -> list[str]:
        return [w.container.id for w in self._workers if w.container is not None]

    @property
    def replacements(self) -> int:
        return sum(w.replacements for w in self._workers)
