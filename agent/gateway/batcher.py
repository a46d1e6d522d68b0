"""The one thread that owns the policy backend: requests from many sessions, one `generate` call.

HTTP handler threads `submit` rows and wait on a future. The worker takes the first queued job,
collects whatever else arrives within `window_s` of it (up to `max_rows` rows), groups the jobs by
decoding settings, and runs one `backend.generate` per group with every session's rows together,
each row tagged with its session's ES member. While a batch generates, new jobs queue up, so under
load batches fill without waiting at all.

A backend that batches continuously (`open_stream()`, the vLLM backend) is driven differently
(`_run_stream`): each job's rows join the engine as soon as the job arrives, whatever its decoding
settings or member, a job is answered the engine step its last row ends, and the rows of a job
whose future was cancelled (its session closed while it decoded) are aborted. Work that must not
overlap decoding (new weights) runs in the worker between steps (`run_exclusive`).
"""

from __future__ import annotations

import itertools
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from agent.gateway.protocol import Decoding
from agent.policy.backend import GenerationConfig, PolicyBackend
from agent.policy.lowrank import PopulationPerturbation


class GatewayClosed(RuntimeError):
    """The gateway shut down before this request was generated."""


@dataclass
class RowRequest:
    """Rows of one request (a prompt repeated n times is n rows), all for one member."""

    rows: list[str]
    decoding: Decoding
    member: int
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys decode identically and can share a `generate` call. Greedy
        decoding ignores top_p and seed, so those do not split greedy batches."""
        d = self.decoding
        if d.temperature == 0:
            return (d.max_tokens, 0.0, 1.0, d.stop, 0)
        return (d.max_tokens, d.temperature, d.top_p, d.stop, d.seed)


def resolve(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Settle a future unless someone (shutdown) already did."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


_STOP = object()


@dataclass
class _Exclusive:
    """A callable for the worker to run while no row decodes (`Batcher.run_exclusive`)."""

    fn: Callable[[], object]
    future: Future = field(default_factory=Future)


def generation_config(d: Decoding, max_rows: int) -> GenerationConfig:
    """A job's decoding as the backend takes it; a sampled job without a seed gets a fresh one."""
    seed = d.seed if d.seed is not None else secrets.randbelow(2**31)
    return GenerationConfig(
        max_new_tokens=d.max_tokens,
        temperature=d.temperature,
        top_p=d.top_p,
        seed=seed,
        stop=d.stop,
        batch_size=max_rows,
    )


class Batcher:
    """Owns `backend`; see the module docstring. `start()`, `submit(...)`, `stop()`."""

    def __init__(self, backend: PolicyBackend, window_s: float, max_rows: int) -> None:
        self.backend = backend
        self.window_s = window_s
        self.max_rows = max_rows
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closing = False
        self._population: PopulationPerturbation | None = None
        self.streaming = callable(getattr(backend, "open_stream", None))
        self._thread = threading.Thread(
            target=self._run_stream if self.streaming else self._run, name="lineage-gateway-batcher"
        )
        self.batches = 0  # generate calls made (engine steps, when streaming)
        self.rows = 0  # rows generated
        self.busy_s = 0.0  # seconds the backend spent generating
        self._keys = itertools.count()  # stream job keys

    def start(self) -> None:
        self._thread.start()

    def set_population(self, perturbation: PopulationPerturbation | None) -> None:
        """Members' perturbations for the batches formed from now on."""
        with self._lock:
            self._population = perturbation

    @property
    def population(self) -> PopulationPerturbation | None:
        with self._lock:
            return self._population

    def submit(self, rows: Sequence[str], decoding: Decoding, member: int) -> Future:
        """Queue rows; the future yields their generations, or raises `GatewayClosed`."""
        if not 1 <= len(rows) <= self.max_rows:
            raise ValueError(f"a job needs 1 to {self.max_rows} rows, got {len(rows)}")
        job = RowRequest(list(rows), decoding, member)
        with self._lock:
            if self._closing:
                raise GatewayClosed("the gateway is shutting down")
            self._queue.put(job)
        return job.future

    def run_exclusive(self, fn: Callable[[], object]) -> object:
        """`fn()` where no row decodes meanwhile: in the worker, between engine steps, once the
        rows in flight have finished (jobs that arrive meanwhile wait). Without a stream the
        backend is only busy inside `generate`, so `fn` runs here."""
        if not self.streaming:
            return fn()
        call = _Exclusive(fn)
        with self._lock:
            if self._closing:
                raise GatewayClosed("the gateway is shutting down")
            self._queue.put(call)
        return call.future.result()

    def stop(self) -> None:
        """Answer every queued job with `GatewayClosed` now, let a running `generate` finish
        (a stream's rows in flight are aborted and answered `GatewayClosed`), and join the
        worker."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._fail_queued([])
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join()

    # -- the worker ------------------------------------------------------------------------
    def _run(self) -> None:
        held: list[RowRequest] = []  # a job that did not fit the last batch goes first in the next
        while True:
            batch = self._collect(held)
            if batch is None:
                self._fail_queued(held)
                return
            for group in self._groups(batch):
                if self._closing:  # stop() came while this batch was forming or generating
                    self._fail_queued(group)
                    continue
                try:
                    self._generate(group)
                except Exception as exc:  # a bug here must not strand the waiting callers
                    for job in group:
                        resolve(job.future, error=exc)

    def _collect(self, held: list[RowRequest]) -> list[RowRequest] | None:
        """The next batch: the first job plus what arrives within the window; None on stop."""
        first = held.pop() if held else self._queue.get()
        if first is _STOP:
            return None
        batch, rows = [first], len(first.rows)
        deadline = first.queued_at + self.window_s
        while rows < self.max_rows:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is _STOP:
                self._fail_queued(batch)
                return None
            if rows + len(job.rows) > self.max_rows:
                held.append(job)
                break
            batch.append(job)
            rows += len(job.rows)
        return batch

    @staticmethod
    def _groups(batch: list[RowRequest]) -> list[list[RowRequest]]:
        groups: dict[tuple, list[RowRequest]] = {}
        for job in batch:
            groups.setdefault(job.key, []).append(job)
        return list(groups.values())

    def _generate(self, group: list[RowRequest]) -> None:
        """One `generate` call for jobs with equal decoding settings; results split back."""
        config = generation_config(group[0].decoding, self.max_rows)
        population = self.population
        runnable = []
        for job in group:
            problem = self._member_problem(job.member, population)
            if problem:
                resolve(job.future, error=ValueError(problem))
            else:
                runnable.append(job)
        if not runnable:
            return
        group = runnable
        prompts = [row for job in group for row in job.rows]
        members = [job.member for job in group for _ in job.rows]
        perturbed = population is not None and any(m >= 0 for m in members)
        started = time.monotonic()
        try:
            generations = self.backend.generate(
                prompts,
                config,
                perturbation=population if perturbed else None,
                member_of_row=members if perturbed else None,
            )
        except Exception as exc:  # the backend's complaint goes to every caller of the group
            for job in group:
                resolve(job.future, error=exc)
            return
        finally:
            self.busy_s += time.monotonic() - started
        self.batches += 1
        self.rows += len(prompts)
        start = 0
        for job in group:
            rows = generations[start : start + len(job.rows)]
            resolve(job.future, rows)
            start += len(job.rows)

    # -- the worker, on a continuously batching backend --------------------------------------
    def _run_stream(self) -> None:
        stream = self.backend.open_stream()  # type: ignore[attr-defined]
        jobs: dict[Hashable, RowRequest] = {}
        waiting: deque = deque()  # taken from the queue, not started: behind an exclusive call
        try:
            while True:
                try:
                    return self._stream(stream, jobs, waiting)  # returns on stop()
                except Exception as exc:  # a bug here must not strand the callers, now or later
                    self._fail_running(stream, jobs, exc)
        finally:
            closed = GatewayClosed("the gateway shut down before this request was generated")
            for job in jobs.values():
                resolve(job.future, error=closed)
            stream.close()

    def _stream(self, stream, jobs: dict[Hashable, RowRequest], waiting: deque) -> None:
        """Take what is queued (blocking only when nothing decodes), start it, abort what nobody
        waits for, run one engine step, answer what it finished; until `stop()`."""
        while True:
            block = not stream.busy and not waiting
            while True:
                try:
                    waiting.append(self._queue.get() if block else self._queue.get_nowait())
                except queue.Empty:
                    break
                block = False
            while waiting:
                item = waiting[0]
                if item is _STOP:
                    self._fail_queued([w for w in waiting if w is not _STOP])
                    return
                if isinstance(item, _Exclusive) and stream.busy:
                    break  # the rows in flight finish first; later jobs wait behind the call
                waiting.popleft()
                if isinstance(item, _Exclusive):
                    try:
                        resolve(item.future, item.fn())
                    except Exception as exc:
                        resolve(item.future, error=exc)
                else:
                    self._start(stream, jobs, item)
            for key in [k for k, job in jobs.items() if job.future.done()]:
                stream.abort(key)  # cancelled: its caller is gone
                del jobs[key]
            if not stream.busy:
                continue
            started = time.monotonic()
            try:
                finished = stream.step()
            except Exception as exc:  # the engine failed: every row in flight fails with it
                self._fail_running(stream, jobs, exc)
                continue
            finally:
                self.busy_s += time.monotonic() - started
            self.batches += 1
            for key, generations, _prompt_tokens in finished:
                job = jobs.pop(key)
                self.rows += len(generations)
                resolve(job.future, generations)

    @staticmethod
    def _fail_running(stream, jobs: dict[Hashable, RowRequest], error: BaseException) -> None:
        for key, job in list(jobs.items()):
            resolve(job.future, error=error)
            try:
                stream.abort(key)
            except Exception:  # noqa: S110 (a dead engine cannot abort; the job is answered)
                pass
        jobs.clear()

    def _start(self, stream, jobs: dict[Hashable, RowRequest], job: RowRequest) -> None:
        if job.future.done():  # cancelled while queued
            return
        population = self.population
        problem = self._member_problem(job.member, population)
        if problem:
            resolve(job.future, error=ValueError(problem))
            return
        key = next(self._keys)
        try:
            stream.use_population(population)
            stream.add(
                key, job.rows, generation_config(job.decoding, self.max_rows), member=job.member
            )
        except Exception as exc:  # e.g. a prompt longer than the engine's context
            resolve(job.future, error=exc)
            return
        jobs[key] = job

    @staticmethod
    def _member_problem(member: int, population: PopulationPerturbation | None) -> str | None:
        if member < 0:
            return None
        if population is None:
            return f"session is for ES member {member}, but no population is set"
        if member >= population.members:
            return f"session is for ES member {member}, the population has {population.members}"
        return None

    def _fail_queued(self, jobs: list[RowRequest]) -> None:
        """Answer `jobs` and everything still queued with `GatewayClosed`. A stop signal met
        on the way goes back in the queue: the worker, between two groups of a batch when
        `stop()` came, must still find it (else it waits on an empty queue and `stop()` with it)."""
        closed = GatewayClosed("the gateway shut down before this request was generated")
        for job in jobs:
            resolve(job.future, error=closed)
        stopping = False
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                stopping = True
            else:
                resolve(job.future, error=closed)
        if stopping:
            self._queue.put(_STOP)
