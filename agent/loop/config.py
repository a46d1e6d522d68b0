"""The run's settings: one TOML file mapped onto validated sections, every key with a default.

`lineage run` with no file runs the quickstart. Errors name the file, the line (TOML syntax) or the
key path (`[es] population: ...`), so a typo never starts a day-long run with a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.es.config import EsConfig
from agent.gateway.config import GatewayConfig
from agent.policy.backends import registered
from agent.policy.cpu_bind import cpu_binding
from agent.policy.served_model import ServedModelConfig
from agent.scaffold.edit import EditConfig
from agent.scaffold.solving import SolveConfig
from evaluators.rewards import RewardConfig
from evaluators.timeouts import TimeoutPolicy


class ConfigError(ValueError):
    """A config file that cannot be run: the message names the file and the key or line."""


class Section(BaseModel):
    # TOML has inf and nan; no setting means either (an infinite wall_s overflows later), so
    # every float key of every section refuses them at load.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelSection(Section):
    """The policy model and the engine that generates with it (agent/loop/policy.py).

    `backend`: "auto" takes vLLM where it is installed and its engine starts (else transformers,
    saying why in one line), "vllm" insists on it, "transformers" is the reference backend; any
    other name registered in agent/policy/backends.py is built as registered.
    `cpu_bind` (vLLM on a CPU): the cores of the engine's threads, see `VllmBackendConfig`.
    `threads`: the transformers backend's torch threads (0 = one per core).
    """

    name: str = "default"  # registry name, HF id or local folder
    backend: str = "auto"  # or a name registered in agent/policy/backends.py
    device: str = "auto"
    dtype: str = "auto"
    threads: int = Field(0, ge=0)
    cpu_bind: str = "auto"

    @field_validator("cpu_bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        cpu_binding(value)  # a ValueError names the accepted forms
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value != "auto":
            registered(value)  # a ValueError names the registered backends
        return value


class TasksSection(Section):
    """Which tasks a node is judged on. Stage 1 is a fixed train sample every node gets; only a
    child within `stage1_margin` of its parent's train score goes on to the dev sample."""

    # MBPP with its visible example for selection, HumanEval held out: a gain must transfer.
    train: str = "mbpp-example:train"
    dev: str = "mbpp-example:dev"
    heldout: str = "humaneval:test"  # reporting only, never selection
    stage1_tasks: int = Field(8, ge=1)
    stage1_margin: float = Field(0.1, ge=0)
    dev_tasks: int = Field(16, ge=0)  # 0 = the whole split
    heldout_tasks: int = Field(0, ge=0)  # 0 = the whole split


class BudgetSection(Section):
    """Whichever comes first stops the run cleanly (None = unlimited)."""

    iterations: int | None = Field(6, ge=0)
    wall_clock_s: float | None = Field(None, gt=0)
    # Hold back of `wall_clock_s` what one more child and the final held-out report would take
    # (estimated from this run's nodes), so the run, report included, ends within it.
    reserve_report: bool = True
    generated_tokens: int | None = Field(None, gt=0)
    sandbox_s: float | None = Field(None, gt=0)


class OperatorsSection(Section):
    """How a child is made: a weight per registered operator (agent/loop/operators: `es_step`,
    `scaffold_edit`, `both`, or one of your own), by name; an operator left out keeps its default
    weight, an unknown name is an error."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, Annotated[float, Field(ge=0)]]

    bandit: bool = False  # pick by observed gains (UCB1) instead of the fixed mix
    # "random": draw by the weights each iteration; "cycle": take the operators with a weight
    # > 0 in turn (es_step, scaffold_edit, both), so a short run is guaranteed its mix.
    order: Literal["random", "cycle"] = "random"
    # "cycle" starts with this operator (None: the first in the order above), then goes on in
    # that order: a run that can afford one child makes the one it chose.
    first: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_operators(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        from agent.loop.operators import registered  # the operators import the whole loop

        specs = registered()
        unknown = sorted(set(data) - set(specs) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"unknown operator {', '.join(unknown)} (registered: {', '.join(specs)})"
            )
        return {name: spec.weight for name, spec in specs.items()} | data

    @model_validator(mode="after")
    def _some_weight(self) -> OperatorsSection:
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one operator weight must be > 0")
        if self.first is not None and self.weights.get(self.first, 0) <= 0:
            raise ValueError(
                f"first: {self.first!r} is not an operator with a weight > 0 "
                f"({', '.join(k for k, w in self.weights.items() if w > 0)})"
            )
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Every registered operator's weight, in cycle order."""
        from agent.loop.operators import registered

        extra = self.__pydantic_extra__ or {}
        return {name: float(extra.get(name, spec.weight)) for name, spec in registered().items()}

    def _any(self, flag: str) -> bool:
        from agent.loop.operators import registered

        specs = registered()
        return any(w > 0 and getattr(specs[k], flag) for k, w in self.weights.items())

    @property
    def edits(self) -> bool:
        """Whether any operator edits the scaffold (only those sessions reach a proposer)."""
        return self._any("edits")

    @property
    def steps_weights(self) -> bool:
        """Whether any operator runs ES populations (the policy engine must hold them)."""
        return self._any("steps_weights")


_ES = EsConfig()  # the ES library's defaults, which the section shares but for one


class EsSection(Section):
    """The loop's ES steps: the strategy's settings (`EsConfig`, agent/es/config.py, built by
    `es_config`) and what the loop does around a step."""

    # The one default that differs from EsConfig's 32 (EGGROLL's): a CPU judges a population
    # member by running the whole scaffold on every minibatch task, so 8 members is what a step
    # of a 2-core run can afford.
    population: int = Field(8, ge=2)
    sigma: float = Field(_ES.sigma, gt=0)
    alpha: float = Field(_ES.alpha, gt=0)  # see agent/es/config.py: Qiu et al.'s lr times sigma
    rank: int = Field(_ES.rank, ge=1)
    shaping: Literal["zscore", "centered_rank"] = _ES.shaping
    optimizer: Literal["sgd", "adam"] = _ES.optimizer
    adam_betas: tuple[float, float] = _ES.adam_betas
    adam_eps: float = Field(_ES.adam_eps, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: list(_ES.target_modules))
    tasks_per_step: int = Field(4, ge=1)
    # Every k-th ES step of depth, the child's fp32 targeted weights (and Adam's moments) are
    # stored with it, so setting any node's weights replays at most k-1 records; 0: never.
    # Each costs 4 bytes per targeted parameter on disk (1.4 GB for the default model).
    checkpoint_every: int = Field(0, ge=0)
    # A step whose members all tied on every task has a zero update: its child is its parent's
    # weights again. True: fail it as "no update" instead of judging it on stage 1 and dev.
    skip_tied: bool = True

    @model_validator(mode="after")
    def _even(self) -> EsSection:
        if self.population % 2:
            raise ValueError("population must be even (antithetic pairs)")
        return self

    def es_config(self, seed: int) -> EsConfig:
        """The strategy's settings for a run with this seed (noise depends on it)."""
        return EsConfig(
            population=self.population,
            sigma=self.sigma,
            alpha=self.alpha,
            rank=self.rank,
            seed=seed,
            target_modules=tuple(self.target_modules),
            shaping=self.shaping,
            optimizer=self.optimizer,
            adam_betas=self.adam_betas,
            adam_eps=self.adam_eps,
        )


class EditSection(EditConfig):
    """A self-edit's bounds (`EditConfig`, agent/scaffold/edit.py) and its proposer: the node's
    own policy (neither key set), a model served on this machine for the run (`proposer_model`
    alone: a registry name such as "coder-1.5b", an HF id or a folder, served by vLLM beside the
    policy), or a running OpenAI-compatible server (`proposer_base_url` and `proposer_model`,
    with `api_key_env` naming its key's variable)."""

    proposer_base_url: str | None = None
    proposer_model: str | None = None
    api_key_env: str | None = None
    proposer_memory_fraction: float = Field(ServedModelConfig.memory_fraction, gt=0, lt=1)

    @model_validator(mode="after")
    def _endpoint_complete(self) -> EditSection:
        if self.proposer_base_url and not self.proposer_model:
            raise ValueError("proposer_base_url needs proposer_model (the name the server serves)")
        if self.api_key_env and not self.proposer_base_url:
            raise ValueError("api_key_env is for a server named by proposer_base_url")
        return self


class SandboxSection(Section):
    scoring_workers: int = Field(0, ge=0)  # 0 = one per core
    agent_workers: int = Field(4, ge=1)  # agent jobs mostly wait on the gateway


class SelectionSection(Section):
    """How a parent is drawn: a strategy registered in archive/selection.py, by name, with its
    factory's keyword arguments (`params = { gain = 10.0 }`), checked when the file loads."""

    strategy: str = "score_child_prop"
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    split: Literal["train", "dev"] = "train"
    # The run's answer (the best node by dev) moves off the base only to a node that beats it
    # task by task on dev with McNemar's one-sided p at most this (agent/loop/frontier.py).
    frontier_alpha: float = Field(0.05, gt=0, le=1)

    @model_validator(mode="after")
    def _strategy_builds(self) -> SelectionSection:
        from archive.selection import make_strategy

        try:
            make_strategy(self.strategy, **self.params)
        except TypeError as exc:  # a keyword its factory does not take
            raise ValueError(
                f"strategy {self.strategy!r} refuses params {self.params}: {exc}"
            ) from None
        return self


class ReportSection(Section):
    heldout_every: int = Field(0, ge=0)  # evaluate the best node on held-out every k iterations
    tensorboard: bool = False


class RunConfig(Section):
    seed: int = 0
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # an existing cluster; None starts or joins a local one
    ray_replicas: int = Field(1, ge=1)  # model replicas for generation (one per GPU or node)
    model: ModelSection = ModelSection()
    tasks: TasksSection = TasksSection()
    budget: BudgetSection = BudgetSection()
    operators: OperatorsSection = Field(default_factory=OperatorsSection)
    es: EsSection = EsSection()
    edit: EditSection = EditSection()
    solve: SolveConfig = Field(default_factory=SolveConfig)  # agent/scaffold/solving.py
    sandbox: SandboxSection = SandboxSection()
    selection: SelectionSection = SelectionSection()
    report: ReportSection = ReportSection()
    # The subsystems' own settings objects, as they are (each checks itself when built):
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)  # agent/gateway/config.py
    reward: RewardConfig = Field(default_factory=RewardConfig)  # ES fitness, evaluators/rewards.py
    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)  # evaluators/timeouts.py

    @model_validator(mode="after")
    def _address_needs_ray(self) -> RunConfig:
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError('ray_address is for executor = "ray"; the local executor takes none')
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def load_config(path: Path | None) -> RunConfig:
    """The config in `path` (None = all defaults), or a ConfigError naming what is wrong."""
    if path is None:
        return RunConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return from_dict(data, str(path))


def from_dict(data: dict, source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        sections = {k for k, f in RunConfig.model_fields.items() if _is_section(f.annotation)}
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            if len(loc) > 1 or (loc and loc[0] in sections):
                where = f"[{loc[0]}] {'.'.join(loc[1:])}".rstrip()
            else:
                where = loc[0] if loc else ""
            unknown = err["type"] in ("extra_forbidden", "unexpected_keyword_argument")
            message = "unknown key" if unknown else err["msg"]
            message = message.removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
    )


def load_saved(run_dir: Path) -> RunConfig:
    """The config a run was started with (resume uses it, not whatever the file says now)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a Lineage run directory (no config.json)")
    return from_dict(json.loads(path.read_text()), str(path))
