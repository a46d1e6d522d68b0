"""The gateway on a continuously batching backend (`open_stream`, vLLM's path), with a fake stream
that decodes one token per row per step: rows of different settings decode in the same steps, a
cancelled job's rows are aborted, exclusive work waits for the rows in flight, a session closed
mid-call drops its call, an engine failure fails the rows in flight and nothing else."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import pytest

from agent.gateway import Budget, Gateway, GatewayConfig
from agent.gateway.batcher import Batcher, GatewayClosed
from agent.gateway.protocol import Decoding
from agent.policy.backend import Generation
from agent.scaffold.llm_client import LLM, LLMError

STEP_S = 0.005


def decoding(max_tokens: int, temperature: float = 0.0, stop: tuple[str, ...] = ()) -> Decoding:
    return Decoding(max_tokens, temperature, 1.0, stop, None)


class FakeStream:
    """Row r of a job of max tokens m ends after m steps with text f"{prompt}:{m}:{member}"."""

    def __init__(self, backend: FakeStreamBackend) -> None:
        self.backend = backend
        self.jobs: dict = {}  # key -> [prompts, config, member, steps done]

    @property
    def busy(self) -> bool:
        return bool(self.jobs)

    def use_population(self, perturbation) -> None:
        self.backend.populations.append(perturbation)

    def add(self, key, prompts, config, member=-1) -> None:
        if self.backend.fail_add:
            raise ValueError("prompt too long for the engine")
        self.jobs[key] = [list(prompts), config, member, 0]
        self.backend.added.append((key, config.max_new_tokens, config.temperature))

    def abort(self, key) -> None:
        self.jobs.pop(key, None)
        self.backend.aborted.append(key)

    def step(self):
        time.sleep(STEP_S)
        if self.backend.fail_step:
            self.backend.fail_step = False
            raise RuntimeError("engine died")
        self.backend.steps.append(sorted(self.jobs, key=str))
        finished = []
        for key, job in list(self.jobs.items()):
            prompts, config, member, done = job
            job[3] = done + 1
            if job[3] >= config.max_new_tokens:
                del self.jobs[key]
                texts = [f"{p}:{config.max_new_tokens}:{member}" for p in prompts]
                generations = [Generation(t, config.max_new_tokens, "length") for t in texts]
                finished.append((key, generations, len(prompts)))
        return finished

    def close(self) -> None:
        self.backend.closed = True


class FakeStreamBackend:
    """Streams only: the grouped path (`generate`) must never be used with a stream."""

    def __init__(self) -> None:
        self.added: list = []
        self.aborted: list = []
        self.steps: list = []
        self.populations: list = []
        self.fail_add = False
        self.fail_step = False
        self.closed = False
        self.stream: FakeStream | None = None

    def open_stream(self) -> FakeStream:
        self.stream = FakeStream(self)
        return self.stream

    def generate(self, *args, **kwargs):
        raise AssertionError("a streaming backend got a grouped generate call")


def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the stream never started decoding"
        time.sleep(0.001)


@pytest.fixture
def fake() -> FakeStreamBackend:
    return FakeStreamBackend()


@pytest.fixture
def batcher(fake: FakeStreamBackend):
    b = Batcher(fake, window_s=0.0, max_rows=64)
    yield b
    b.stop()


def test_jobs_of_different_settings_decode_in_the_same_steps(fake, batcher) -> None:
    jobs = [
        batcher.submit(["a", "b"], decoding(3), -1),
        batcher.submit(["c"], decoding(6, temperature=0.7), -1),
        batcher.submit(["d"], decoding(4, stop=("\n",)), -1),
    ]
    batcher.start()  # all three are queued: they join the engine before its first step
    results = [j.result(timeout=10) for j in jobs]
    assert [g.text for g in results[0]] == ["a:3:-1", "b:3:-1"]
    assert results[1][0].text == "c:6:-1"
    assert len(fake.steps[0]) == 3  # every job in the first step
    assert batcher.batches == 6  # the longest job's steps, not 3 + 6 + 4
    assert batcher.rows == 4
    assert batcher.busy_s > 0


def test_a_cancelled_job_is_aborted_and_the_rest_go_on(fake, batcher) -> None:
    batcher.start()
    long = batcher.submit(["x"], decoding(10_000), -1)
    short = batcher.submit(["y"], decoding(5), -1)
    assert short.result(timeout=10)[0].text == "y:5:-1"
    assert long.cancel()  # its caller is gone
    started = time.monotonic()
    assert batcher.run_exclusive(lambda: "idle") == "idle"  # only once no row decodes
    assert time.monotonic() - started < 2
    assert len(fake.aborted) == 1
    assert not fake.stream.busy


def test_exclusive_work_waits_for_rows_in_flight_and_holds_later_jobs(fake, batcher) -> None:
    batcher.start()
    first = batcher.submit(["x"], decoding(30), -1)
    wait_for(lambda: fake.steps)
    seen: dict = {}

    def exclusive() -> None:
        seen["busy"] = fake.stream.busy
        seen["first_done"] = first.done()
        seen["later_started"] = any(a[1] == 2 for a in fake.added)

    thread = threading.Thread(target=batcher.run_exclusive, args=(exclusive,))
    thread.start()
    time.sleep(0.02)  # the exclusive call is queued now
    later = batcher.submit(["z"], decoding(2), -1)
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen == {"busy": False, "first_done": True, "later_started": False}
    assert later.result(timeout=10)[0].text == "z:2:-1"


def test_members_get_the_population_and_bad_members_a_clear_error(fake, batcher) -> None:
    batcher.start()
    orphan = batcher.submit(["x"], decoding(2), 0)
    with pytest.raises(ValueError, match="no population is set"):
        orphan.result(timeout=10)

    class Population:
        members = 2

    population = Population()
    batcher.set_population(population)
    assert batcher.submit(["x"], decoding(2), 1).result(timeout=10)[0].text == "x:2:1"
    with pytest.raises(ValueError, match="the population has 2"):
        batcher.submit(["x"], decoding(2), 2).result(timeout=10)
    assert fake.populations[-1] is population


def test_a_refused_job_and_a_failed_step_fail_only_their_rows(fake, batcher) -> None:
    batcher.start()
    fake.fail_add = True
    with pytest.raises(ValueError, match="too long"):
        batcher.submit(["x"], decoding(2), -1).result(timeout=10)
    fake.fail_add = False
    fake.fail_step = True
    with pytest.raises(RuntimeError, match="engine died"):
        batcher.submit(["x"], decoding(5), -1).result(timeout=10)
    assert batcher.submit(["y"], decoding(2), -1).result(timeout=10)[0].text == "y:2:-1"


def test_stop_answers_rows_in_flight_and_closes_the_stream(fake) -> None:
    from agent.gateway.batcher import GatewayClosed

    batcher = Batcher(fake, window_s=0.0, max_rows=64)
    batcher.start()
    running = batcher.submit(["x"], decoding(10_000), -1)
    wait_for(lambda: fake.steps)
    batcher.stop()
    with pytest.raises(GatewayClosed):
        running.result(timeout=10)
    assert fake.closed


def test_closing_a_session_drops_its_call_in_flight(fake) -> None:
    with Gateway(fake, GatewayConfig()) as gateway:
        token = gateway.open_session("job", Budget(tokens=100_000))
        answer: dict = {}

        def call() -> None:
            try:
                LLM(gateway.socket_path, token).complete("x", max_tokens=5_000)
            except LLMError as exc:
                answer["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        wait_for(lambda: fake.steps)
        gateway.close_session(token)
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert answer["error"].status == 503
        assert "session was closed" in str(answer["error"])
        assert gateway.run_exclusive(lambda: fake.stream.busy) is False
        assert len(fake.aborted) == 1


def test_a_cancelled_future_raises_cancelled(fake, batcher) -> None:
    job = batcher.submit(["x"], decoding(3), -1)
    assert job.cancel()
    batcher.start()
    with pytest.raises(CancelledError):
        job.result(timeout=10)
    assert batcher.run_exclusive(lambda: fake.added) == []  # never started


class BlockingBackend:
    """A static-batching backend whose `generate` waits for `release`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def generate(self, prompts, config, perturbation=None, member_of_row=None, on_done=None):
        self.entered.set()
        self.release.wait(10)
        return [Generation("x", 1, "length") for _ in prompts]


def test_stop_while_a_batch_of_several_groups_generates_returns() -> None:
    """stop() during the first of two groups: the worker fails the second group (and the queue)
    and still sees the stop signal, so stop() returns instead of waiting forever."""
    backend = BlockingBackend()
    b = Batcher(backend, window_s=0.5, max_rows=64)
    greedy = b.submit(["a"], decoding(2), -1)
    sampled = b.submit(["b"], decoding(2, temperature=0.7), -1)  # another group, same batch
    b.start()
    assert backend.entered.wait(5)
    stopper = threading.Thread(target=b.stop)
    stopper.start()
    time.sleep(0.2)
    backend.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert greedy.result(timeout=1)[0].text == "x"
    with pytest.raises(GatewayClosed):
        sampled.result(timeout=1)
