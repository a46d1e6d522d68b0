"""EGGROLL with an ask/tell interface (evosax style): the optimizer never calls the objective.

    es = EggRoll(EsConfig(...), model)
    population = es.ask()                    # seeds only; `population.perturbation` for batched use
    rewards = evaluate(population)           # the caller generates and scores, any way it likes
    record = es.tell(population, rewards)    # updates the weights, returns the step's EsRecord

Master weights are fp32. When the model itself is fp32 they are the model's own tensors (no copy,
so an ES step costs no more memory than inference plus one layer-sized buffer); when the model runs
in bf16/fp16 a separate fp32 master is kept and written back after each update, because bf16 has
too few mantissa bits to hold steps of about 1e-5 (they round away). That master, twice the bf16
model's size, is spilled to an anonymous file and moved one module at a time
(`agent.es.weight_store`), so a step's memory stays near inference's (measured by
`benchmarks/es_bench.py`, figures in the README's benchmark table). The update is computed on the
CPU, so only the rounded weights cross to the device.
A strategy may instead move a chain's own master and optimizer state (`ChainReplayer.strategy`,
the loop's ES step): then its `tell` is that chain's next record exactly as replay applies it.
The update is W += alpha / (N sigma) * sum_i f_i E_i, computed from each pair's factors as rank-1
updates in a fixed order: elementwise work only, so the result does not depend on thread count,
and `tell`, `replay` and `ChainReplayer` share `update_module`, which makes replay bit-identical
by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from agent.es.config import EsConfig
from agent.es.noise import member_sign, pair_dense, pair_factors
from agent.es.record import EsRecord
from agent.es.shaping import SHAPERS
from agent.es.weight_store import ModelWeights, SpilledWeights, Weights, all_fp32
from agent.policy.lowrank import PopulationPerturbation


def select_targets(model: nn.Module, suffixes: Sequence[str]) -> dict[str, nn.Linear]:
    """Linear layers whose name ends with one of `suffixes` (or equals it), in model order."""
    found = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and any(name == s or name.endswith("." + s) for s in suffixes)
    }
    if not found:
        raise ValueError(f"no Linear layer of the model matches target_modules {list(suffixes)}")
    return found


@dataclass
class OptimizerState:
    """Adam moments per module (none for SGD); rebuilt by replaying the chain, or read from a
    checkpoint. `spilled`: Adam's moments, two more fp32 copies of the targeted weights, go to
    spilled stores like the master (what `EggRoll` and `ChainReplayer` use) instead of dicts."""

    steps: int = 0
    first: Weights | None = None
    second: Weights | None = None
    spilled: bool = False


class ChainState(Protocol):
    """Weights rebuilt from a chain of records, which an ES step may extend in place."""

    master: Weights  # fp32
    state: OptimizerState
    generation: int  # changes whenever `master` stops being the chain a strategy started from

    def applied(self, record: EsRecord | None) -> None:
        """`record` has just been applied to `master` and `state`: it is the chain's next.
        None: an application broke off, and they are in no known state."""


def gradient_estimate(record: EsRecord, module: str, shape: tuple[int, int]) -> torch.Tensor:
    """(1 / (N sigma)) sum_i f_i E_i for one module, never materializing a member's E_i."""
    cfg = record.config
    n, rank = cfg["population"], cfg["rank"]
    weights = [0.0] * (n // 2)
    for member, f in enumerate(record.coefficients):
        weights[member // 2] += f * member_sign(member)
    g = torch.zeros(shape, dtype=torch.float32)
    for pair, w in enumerate(weights):
        if w == 0.0:
            continue
        if cfg["mode"] == "lowrank":
            a, b = pair_factors(cfg["seed"], record.step, pair, module, shape, rank)
            for k in range(rank):
                g.addr_(a[:, k], b[:, k], alpha=w / math.sqrt(rank))
        else:
            g.add_(pair_dense(cfg["seed"], record.step, pair, module, shape), alpha=w)
    return g.mul_(1.0 / (n * cfg["sigma"]))


def update_module(
    w: torch.Tensor, record: EsRecord, module: str, state: OptimizerState, t: int
) -> torch.Tensor:
    """Move one module's fp32 weight `w` in place by `record`'s step (Adam: the chain's `t`-th
    step); returns the intended step. Modules are independent, so applying records module by
    module gives the same bits as record by record."""
    cfg = record.config
    g = gradient_estimate(record, module, tuple(w.shape))
    if cfg["optimizer"] == "adam":
        b1, b2 = cfg["adam_betas"]
        if state.first is None or state.second is None:
            state.first, state.second = (
                (SpilledWeights(), SpilledWeights()) if state.spilled else ({}, {})
            )
        m = state.first[module] if module in state.first else torch.zeros_like(g)
        v = state.second[module] if module in state.second else torch.zeros_like(g)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        state.first[module], state.second[module] = m, v  # a store's read is a copy
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        step = cfg["alpha"] * m_hat / (v_hat.sqrt() + cfg["adam_eps"])
    else:
        step = g.mul_(cfg["alpha"])
    # The step is computed on the CPU (same bits wherever the weights live); only the final add
    # runs on the weights' device, and one IEEE fp32 add rounds the same on every device.
    w.add_(step.to(w.device))
    return step


def apply_record(
    weights: Weights,
    record: EsRecord,
    state: OptimizerState,
    on_step: Callable[[str, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> None:
    """Apply one step to fp32 `weights` (a dict or a store) in place, module by module.

    `on_step(module, old, new, intended_step)` sees each module right after its update (for
    metrics); only then is a copy of the old weight made, one module at a time."""
    state.steps += 1
    for module in record.modules:
        w = weights[module]
        old = w.clone() if on_step else None
        step = update_module(w, record, module, state, state.steps)
        weights[module] = w  # a store's read is a copy: write it back (a no-op for a dict)
        if on_step:
            on_step(module, old, w, step)


@dataclass(frozen=True)
class Population:
    """One step's population: seeds only, plus the batched view of its low-rank perturbation."""

    step: int
    config: EsConfig
    shapes: dict[str, tuple[int, int]]

    @property
    def size(self) -> int:
        return self.config.population

    @property
    def members(self) -> int:
        """The same as `size`, named as on `PopulationPerturbation` (which it can stand in for
        where the receiver rebuilds the factors from seeds, e.g. Ray replicas)."""
        return self.config.population

    @property
    def perturbation(self) -> PopulationPerturbation:
        """All members' factors, for one batched forward (low-rank mode only)."""
        if self.config.mode != "lowrank":
            raise ValueError("a full-rank population cannot run batched; use EggRoll.member(...)")
        cfg = self.config
        factors = {}
        for module, shape in self.shapes.items():
            pairs = [
                pair_factors(cfg.seed, self.step, p, module, shape, cfg.rank)
                for p in range(cfg.pairs)
            ]
            a = torch.stack([member_sign(i) * pairs[i // 2][0] for i in range(cfg.population)])
            b = torch.stack([pairs[i // 2][1] for i in range(cfg.population)])
            factors[module] = (a, b)
        return PopulationPerturbation(cfg.sigma, factors)

    def dense_noise(self, member: int, module: str) -> torch.Tensor:
        """sigma * E_member for one module, materialized (the naive and full-rank paths)."""
        cfg, shape = self.config, self.shapes[module]
        if cfg.mode == "lowrank":
            a, b = pair_factors(cfg.seed, self.step, member // 2, module, shape, cfg.rank)
            e = (a @ b.T) / math.sqrt(cfg.rank)
        else:
            e = pair_dense(cfg.seed, self.step, member // 2, module, shape)
        return e.mul_(cfg.sigma * member_sign(member))


class EggRoll:
    """Ask/tell ES over the model's targeted Linear weights."""

    def __init__(
        self,
        config: EsConfig,
        model: nn.Module,
        step: int = 0,
        chain: ChainState | None = None,
    ) -> None:
        """`chain`: master weights and optimizer state to move instead of the strategy's own (a
        `ChainReplayer`' own, so that `tell` is exactly the chain's next replayed record)."""
        self.config = config
        self.model = model
        self.layers = select_targets(model, config.target_modules)
        self.shapes = {name: tuple(layer.weight.shape) for name, layer in self.layers.items()}
        self.chain = chain
        if chain is not None:
            missing = sorted(set(self.layers) - set(chain.master))
            if missing:
                raise ValueError(f"the chain's master weights lack targeted modules {missing[:5]}")
            self.master = chain.master
            self.state = chain.state
            self._generation = chain.generation
        else:
            # The model's own fp32 tensors are the master weights; lower precision gets a
            # spilled fp32 copy.
            self.master = (
                ModelWeights(self.layers)
                if all_fp32(self.layers)
                else SpilledWeights.of((n, layer.weight) for n, layer in self.layers.items())
            )
            self.state = OptimizerState(spilled=True)
        # The model's own tensors are the master: nothing to write back, restores need a copy.
        self.shares_master = isinstance(self.master, ModelWeights)
        self.step = step
        self._full_rank_copy: SpilledWeights | None = None

    def ask(self) -> Population:
        return Population(self.step, self.config, dict(self.shapes))

    def tell(
        self,
        population: Population,
        rewards: Sequence[float] | Sequence[Sequence[float]],
        parent: str | None = None,
    ) -> EsRecord:
        """Shape the rewards, update the weights, and return the step's record with its metrics."""
        if population.step != self.step:
            raise ValueError(
                f"population is for step {population.step}, the strategy is at step {self.step}"
            )
        if len(rewards) != self.config.population:
            raise ValueError(
                f"expected {self.config.population} rewards (one per member), got {len(rewards)}"
            )
        if self.chain is not None and self.chain.generation != self._generation:
            raise RuntimeError("the chain was set to other weights since this strategy was made")
        coefficients = SHAPERS[self.config.shaping](rewards)
        flat = [x for r in rewards for x in (r if isinstance(r, (list, tuple)) else [r])]
        record = EsRecord(
            step=self.step,
            config=self.config.to_dict(),
            modules=list(self.layers),
            coefficients=coefficients,
            fitness_mean=sum(flat) / len(flat),
            parent=parent,
        )
        try:
            metrics = self._apply_and_measure(record)
        except BaseException:
            if self.chain is not None:
                self.chain.applied(None)
            raise
        self.release_member_copy()  # the weights moved: a copy for `member` must be retaken
        self.step += 1
        told = EsRecord(**{**record.__dict__, "metrics": metrics})
        if self.chain is not None:
            self.chain.applied(told)
            self._generation = self.chain.generation
        return told

    def _apply_and_measure(self, record: EsRecord) -> dict[str, float]:
        """Apply the step; compare how far the weights actually moved with the intended step
        (cosine, share of entries changed), for the fp32 master and the model's own copy."""
        sums = dict.fromkeys(("dot", "intended", "realized", "model_dot", "model_sq"), 0.0)
        counts = dict.fromkeys(("changed", "model_changed", "total"), 0)

        def measure(module: str, old: torch.Tensor, new: torch.Tensor, step: torch.Tensor) -> None:
            # Flat float64 vectors and BLAS dots: a third of the time of elementwise products
            # and sums (measured), and the differences are exact in float64 either way.
            intended = step.flatten().double()
            realized = (new - old).flatten().double().cpu()
            sums["dot"] += float(torch.dot(realized, intended))
            sums["intended"] += float(torch.dot(intended, intended))
            sums["realized"] += float(torch.dot(realized, realized))
            counts["changed"] += int(torch.count_nonzero(realized))
            counts["total"] += realized.numel()
            if not self.shares_master:  # write back to the model's lower-precision weights
                layer = self.layers[module]
                rounded = new.to(layer.weight.dtype)  # on the host, like step
                before = layer.weight.data.flatten().to("cpu", torch.float64)
                moved = rounded.flatten().double() - before
                layer.weight.data.copy_(rounded)
                sums["model_dot"] += float(torch.dot(moved, intended))
                sums["model_sq"] += float(torch.dot(moved, moved))
                counts["model_changed"] += int(torch.count_nonzero(moved))

        apply_record(self.master, record, self.state, on_step=measure)

        def cosine(dot: float, a: float, b: float) -> float:
            return dot / math.sqrt(a * b) if a and b else 0.0

        total = max(counts["total"], 1)
        metrics = {
            "cosine_realized_intended": cosine(sums["dot"], sums["intended"], sums["realized"]),
            "fraction_changed": counts["changed"] / total,
            "update_norm": math.sqrt(sums["intended"]),
        }
        if self.shares_master:
            metrics["model_cosine"] = metrics["cosine_realized_intended"]
            metrics["model_fraction_changed"] = metrics["fraction_changed"]
        else:
            metrics["model_cosine"] = cosine(sums["model_dot"], sums["intended"], sums["model_sq"])
            metrics["model_fraction_changed"] = counts["model_changed"] / total
        return metrics

    @contextmanager
    def member(self, population: Population, member: int) -> Iterator[None]:
        """Run the model as one member: perturb the weights in place from seeds, restore exactly.

        The naive path and Qiu et al.'s full-rank mode. Restoring copies the master back, so no
        rounding remains (subtracting the noise again would not be exact in floating point); when
        the model's own tensors are the master, one fp32 copy of the targeted weights is made,
        spilled like every other copy of them."""
        if self.shares_master and self._full_rank_copy is None:
            self._full_rank_copy = SpilledWeights.of(self.master.items())
        source = self._full_rank_copy if self.shares_master else self.master
        try:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    noisy = source[name] + population.dense_noise(member, name)  # on the CPU
                    layer.weight.data.copy_(noisy.to(layer.weight.dtype))
            yield
        finally:
            with torch.no_grad():
                for name, layer in self.layers.items():
                    layer.weight.data.copy_(source[name].to(layer.weight.dtype))

    def release_member_copy(self) -> None:
        """Drop the copy `member` made (after the naive or full-rank evaluation is done)."""
        if self._full_rank_copy is not None:
            self._full_rank_copy.close()
        self._full_rank_copy = None
