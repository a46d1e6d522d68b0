"""Continuous batching on a vLLM engine for the gateway: requests join and leave at any step.

`VllmBackend.generate` (like the transformers backend) decodes one call's rows under one
`GenerationConfig`, so a gateway built on it makes one call per decoding setting and a request
that arrives meanwhile waits for the whole call. Here each row is its own engine request, added
as soon as it arrives: rows with different temperatures, stops, max tokens and ES members decode
in the same engine steps, vLLM's scheduler fills the batch, a job is answered the step its last
row ends, and a job nobody waits for any more is aborted (its rows leave the batch at once).

ES members ride on vLLM's multi-LoRA (`vllm_backend.write_adapter`): the adapters of a
population are written once, when its first row arrives, and removed when the population is
replaced and its last row has left.

Only the thread that owns the stream may touch the engine (vLLM's client is not thread-safe).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.policy.backend import Generation, GenerationConfig
from agent.policy.lowrank import PopulationPerturbation

if TYPE_CHECKING:
    from vllm.lora.request import LoRARequest

    from agent.policy.vllm_backend import VllmBackend


@dataclass
class _Job:
    config: GenerationConfig
    requests: list[str]
    adapters: PopulationAdapters | None
    done: dict[int, Generation] = field(default_factory=dict)
    prompt_tokens: int = 0


class PopulationAdapters:
    """One population's members as LoRA adapters (files in RAM), registered lazily per member."""

    def __init__(self, backend: VllmBackend, perturbation: PopulationPerturbation) -> None:
        from agent.policy.vllm_backend import ram_dir

        self.backend = backend
        self.perturbation = perturbation
        self.folder = Path(tempfile.mkdtemp(prefix="lineage-lora-", dir=ram_dir()))
        self.requests: dict[int, LoRARequest] = {}
        self.live_rows = 0

    def of(self, member: int) -> LoRARequest:
        from vllm.lora.request import LoRARequest

        from agent.policy.vllm_backend import write_adapter

        if member not in self.requests:
            path = self.folder / f"member{member}"
            write_adapter(self.perturbation, member, path)
            lora_id = self.backend.next_lora_id()
            self.requests[member] = LoRARequest(f"lineage-{lora_id}", lora_id, str(path))
        return self.requests[member]

    def close(self) -> None:
        """Remove the adapters from the engine and their files (no row may still use them)."""
        try:
            for request in self.requests.values():
                self.backend.llm.llm_engine.remove_lora(request.lora_int_id)
        finally:
            self.requests = {}
            shutil.rmtree(self.folder, ignore_errors=True)


class VllmStream:
    """Jobs in, finished jobs out (see the module docstring). `add`, `abort`, `step`, `close`."""

    def __init__(self, backend: VllmBackend) -> None:
        self.backend = backend
        self.engine = backend.llm.llm_engine
        self._jobs: dict[Hashable, _Job] = {}
        self._rows: dict[str, tuple[Hashable, int]] = {}  # engine request id -> (job, row)
        self._ids = itertools.count()
        self._population: PopulationAdapters | None = None  # the current one
        self._retired: list[PopulationAdapters] = []  # replaced, rows still decoding

    @property
    def busy(self) -> bool:
        """Whether any row is decoding (then `step` returns within one engine step)."""
        return bool(self._rows)

    def use_population(self, perturbation: PopulationPerturbation | None) -> None:
        """The population whose member m serves rows added as member m from now on; the one it
        replaces is removed from the engine once its last row has left."""
        current = self._population
        if current is not None and current.perturbation is perturbation:
            return
        if current is not None:
            self._retired.append(current)
        self._population = (
            PopulationAdapters(self.backend, perturbation) if perturbation is not None else None
        )
        self._sweep()

    def add(
        self, key: Hashable, prompts: list[str], config: GenerationConfig, member: int = -1
    ) -> None:
        """Start a job: every prompt a row, all under `config`, as member `member` of the
        current population (-1: unperturbed)."""
        if key in self._jobs:
            raise ValueError(f"job {key!r} is already running")
        adapters = self._population if member >= 0 else None
        if member >= 0:
            if adapters is None:
                raise ValueError(f"ES member {member}, but no population is set")
            if member >= adapters.perturbation.members:
                raise ValueError(
                    f"ES member {member}, the population has {adapters.perturbation.members}"
                )
        lora = adapters.of(member) if adapters is not None else None
        job = _Job(config, [], adapters)
        self._jobs[key] = job
        try:
            for row, prompt in enumerate(prompts):
                request = f"lineage-{next(self._ids)}"
                params = self.backend.sampling_params(config, row, final_only=True)
                self.engine.add_request(request, prompt, params, lora_request=lora)
                job.requests.append(request)
                self._rows[request] = (key, row)
                if adapters is not None:
                    adapters.live_rows += 1
        except BaseException:  # e.g. a prompt longer than the engine's context: none of it runs
            self.abort(key)
            raise

    def abort(self, key: Hashable) -> None:
        """Drop a job: its rows stop decoding now; nothing of it is returned."""
        job = self._jobs.pop(key, None)
        if job is None:
            return
        left = [r for r in job.requests if r in self._rows]
        for request in left:
            del self._rows[request]
        if left:
            self.engine.abort_request(left)
        self._release(job, len(left))

    def step(self) -> list[tuple[Hashable, list[Generation], int]]:
        """One engine step; returns the jobs it finished as (key, generations in row order,
        prompt tokens). Call only while `busy`."""
        if not self.engine.has_unfinished_requests():  # step() would wait for them forever
            lost = sorted({key for key, _ in self._rows.values()}, key=str)
            for key in lost:
                self.abort(key)
            raise RuntimeError(f"the engine dropped the rows of {len(lost)} job(s) unanswered")
        finished = []
        for output in self.engine.step():
            if not output.finished or output.request_id not in self._rows:
                continue  # an aborted row's last word
            key, row = self._rows.pop(output.request_id)
            job = self._jobs[key]
            job.done[row] = self.backend.to_generation(output, job.config)
            job.prompt_tokens += len(output.prompt_token_ids or ())
            self._release(job, 1)
            if len(job.done) == len(job.requests):
                del self._jobs[key]
                finished.append(
                    (key, [job.done[i] for i in range(len(job.requests))], job.prompt_tokens)
                )
        return finished

    def close(self) -> None:
        """Abort everything and remove every adapter."""
        for key in list(self._jobs):
            self.abort(key)
        for adapters in [*self._retired, *([self._population] if self._population else [])]:
            adapters.close()
        self._retired, self._population = [], None

    def _release(self, job: _Job, rows: int) -> None:
        if job.adapters is not None:
            job.adapters.live_rows -= rows
            self._sweep()

    def _sweep(self) -> None:
        """Remove replaced populations whose last row has left."""
        keep = []
        for adapters in self._retired:
            if adapters.live_rows > 0:
                keep.append(adapters)
            else:
                adapters.close()
        self._retired = keep
