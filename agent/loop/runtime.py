"""Everything a run holds open: the policy, its gateway, two sandbox pools, the archive, the tasks.

Two pools on purpose: agent jobs (the scaffold) get the gateway's socket mounted and nothing else;
scoring jobs get no gateway, so a program under test can never reach the model, and the agent's
container never holds a test.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from agent.es.chain_replayer import ChainReplayer
from agent.es.checkpoint import Checkpoint, save_checkpoint
from agent.gateway import (
    ExternalEndpoint,
    Gateway,
    PromptMeter,
    tokenizer_chat_template,
)
from agent.loop.config import RunConfig
from agent.loop.policy import open_policy
from agent.policy.served_model import ServedModel, ServedModelConfig
from agent.policy.transformers_backend import TransformersBackend
from agent.scaffold.solving import Meter
from agent.scale.executor import make_executor
from archive import Archive, WeightsChain
from evaluators.splits import load_split
from evaluators.task import Task
from evaluators.timeouts import calibrate
from sandbox import SandboxConfig, SandboxPool


@dataclass
class TaskSets:
    train: list[Task]
    stage1: list[Task]  # the fixed train sample every node is judged on first
    dev: list[Task]
    heldout: list[Task]


def sample(tasks: list[Task], k: int, seed: str) -> list[Task]:
    """A fixed, seeded sample (k = 0: all), in a stable order."""
    import random

    if not k or k >= len(tasks):
        return list(tasks)
    return sorted(random.Random(seed).sample(tasks, k), key=lambda t: t.task_id)


def load_tasks(config: RunConfig) -> TaskSets:
    t = config.tasks
    train = load_split(t.train)
    return TaskSets(
        train=train,
        stage1=sample(train, t.stage1_tasks, f"{config.seed}:stage1"),
        dev=sample(load_split(t.dev), t.dev_tasks, f"{config.seed}:dev"),
        heldout=sample(
            load_split(t.heldout, include_held_out=True), t.heldout_tasks, f"{config.seed}:heldout"
        ),
    )


CHECKPOINT_SCRATCH = "es-checkpoint.safetensors"


class WeightsName:
    """Names the weights unperturbed rows generate with, for the gateway's reused greedy
    replies (`agent/gateway/reuse.py`): the loaded chain (replay is bit-identical, so one chain is
    one set of weights) and a count of moves. Whatever moves the weights says so first
    (`moving`); until the move is done and named (`settled`) there is no key, so nothing is
    reused or kept."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.moves = 0

    def moving(self) -> None:
        self.name = None
        self.moves += 1

    def settled(self, loaded: list[str] | None) -> None:
        """The weights are base + `loaded` (`ChainReplayer.loaded`; None: unknown)."""
        if loaded is None:
            self.name = None
            return
        self.name = hashlib.sha256(json.dumps(loaded).encode()).hexdigest()

    def key(self) -> tuple[str, int] | None:
        return None if self.name is None else (self.name, self.moves)


class Runtime:
    """Opened once per `run`/`resume`; closed on exit, whatever happens."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.meter: Meter | None = None  # progress bars, set by whoever shows them
        self._stack = ExitStack()
        try:
            # Created on first use: a run killed before its archive existed resumes from scratch.
            self.archive = self._stack.enter_context(Archive(run_dir, create=True))
            for stale in run_dir.glob(CHECKPOINT_SCRATCH + "*"):  # a checkpoint write killed
                stale.unlink()
            self.tasks = load_tasks(config)
            self.policy = open_policy(config)
            self._stack.callback(getattr(self.policy.generator, "close", lambda: None))
            self.backend = self.policy.host  # the model ES moves (vLLM: a host-side copy)
            self.weights = ChainReplayer(self.backend.model, config.es.target_modules)
            self.set_weights_s = 0.0  # replaying chains and handing the engine the result
            self.weights_name = WeightsName()  # what reused greedy replies are keyed by
            s = config.sandbox
            # With Ray, generation runs on model replicas (they rebuild weights from ES records)
            # and scoring fans out over a pool per node; the archive, the ES step's `tell`, the
            # gateway and the agent containers (which need its socket) stay on this machine.
            executor = make_executor(
                config.executor,
                config.ray_address,
                sandbox_config=SandboxConfig(workers=s.scoring_workers),
                replicas=config.ray_replicas,
            )
            self.scoring_pool = self._stack.enter_context(executor.job_runner())
            self.replicas = None
            generator = self.policy.generator  # local: the gateway drives this process's model
            if config.executor == "ray":
                self.replicas = generator = executor.policy(self.policy.replica_source)
                self._stack.callback(self.replicas.close)
            self.gateway = self._stack.enter_context(
                Gateway(
                    generator,
                    config.gateway,
                    chat_template=tokenizer_chat_template(self.backend.tokenizer),
                    meter=PromptMeter.of(self.backend),  # the replicas' model, counted here
                    weights_key=self.weights_name.key,
                )
            )
            self.agent_pool = self._stack.enter_context(
                SandboxPool(
                    SandboxConfig(
                        workers=s.agent_workers,
                        gateway_dir=str(Path(self.gateway.socket_path).parent),
                        memory_mb=config.solve.memory_mb,
                    )
                )
            )
            self.proposer = self._open_proposer()
            everything = self.tasks.train + self.tasks.dev + self.tasks.heldout
            self.timeouts = calibrate(everything, self.scoring_pool, config.timeouts)
        except BaseException:
            self._stack.close()
            raise

    def _open_proposer(self) -> ExternalEndpoint | None:
        """Where edits' diagnosis and `improve` sessions go: None (the node's own policy), a
        running server, or a model this run serves itself (see `EditSection`); None, and no
        server started, when no operator edits."""
        e = self.config.edit
        if not e.proposer_model or not self.config.operators.edits:
            return None
        if e.proposer_base_url:
            return ExternalEndpoint(e.proposer_base_url, e.proposer_model, e.api_key_env)
        served = ServedModel(
            ServedModelConfig(
                model=e.proposer_model,
                dtype=self.config.model.dtype,
                seed=self.config.seed,
                memory_fraction=e.proposer_memory_fraction,
                cpu_bind=self.config.model.cpu_bind,
            ),
            self.run_dir / "proposer.log",
        )
        return self._stack.enter_context(served).endpoint

    def set_weights(self, chain: WeightsChain) -> None:
        """Put the policy (and every replica) at the chain's weights, replaying from the chain's
        deepest checkpoint where there is one (a replica whose node cannot read the archive's
        file replays from the base)."""
        started = time.perf_counter()
        self.weights_name.moving()
        checkpoint = checkpoint_of(chain)
        self.weights.set(chain.records, checkpoint)
        self.sync_engine()
        if self.replicas is not None:
            self.replicas.set_weights(chain.records, checkpoint)
        else:  # Ray's replicas load weights out of this process's sight: left unnamed
            self.weights_name.settled(self.weights.loaded)
        self.set_weights_s += time.perf_counter() - started

    def sync_engine(self) -> None:
        """A vLLM engine gets the loaded weights if they are not the ones it holds (pushed from
        the gateway's worker, between engine steps)."""
        sync = getattr(self.policy.generator, "sync", None)
        if sync is not None:
            sync(self.weights.loaded, list(self.weights.base), self.gateway.run_exclusive)

    def reused_since(self) -> Callable[[], int]:
        """From now, a count of the tokens answered with greedy replies the gateway kept: they
        were generated once, for an earlier node, so a cost's `generated_tokens` leaves them out."""
        start = self.gateway.usage()["reused_tokens"]
        return lambda: self.gateway.usage()["reused_tokens"] - start

    def write_checkpoint(self) -> Path:
        """The loaded weights' checkpoint, in a scratch file of the run (the archive copies it
        into its blobs; one left by a crash is removed when the run reopens)."""
        path = self.run_dir / CHECKPOINT_SCRATCH
        save_checkpoint(path, self.weights.master, self.weights.state)
        return path

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def checkpoint_of(chain: WeightsChain) -> Checkpoint | None:
    """Where replaying `chain` may start: its deepest checkpoint, as the archive names it."""
    if chain.checkpoint is None:
        return None
    return Checkpoint(chain.checkpoint, chain.checkpoint_records)


def model_hash(backend: TransformersBackend) -> str:
    """What names the base weights in the archive: the model's folder and config, not its bytes
    (hashing 2 GB per run start would cost more than it protects against)."""
    path = getattr(backend.model.config, "_name_or_path", "") or ""
    return hashlib.sha256(
        (os.path.basename(path) + backend.model.config.to_json_string()).encode()
    ).hexdigest()[:16]
