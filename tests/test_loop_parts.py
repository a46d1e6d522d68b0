"""Unit tests of the loop's parts that need no Docker: weights switching, operator choice,
budget accounting files, the event log."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from agent.es import EggRoll, EsConfig, chain_replayer, eggroll
from agent.es.chain_replayer import ChainReplayer
from agent.es.checkpoint import Checkpoint, save_checkpoint
from agent.es.record import EsRecord
from agent.es.replay import base_weights, replay
from agent.es.weight_store import SpilledWeights
from agent.loop.config import ConfigError, RunConfig, from_dict
from agent.loop.events import EventLog, read_events
from agent.loop.loop import Spent
from agent.loop.operators import choose_operator
from agent.loop.operators.es_step import checkpoint_if_due
from agent.loop.runtime import WeightsName
from agent.policy.tiny import TinyModelConfig, tiny_model

TARGETS = ("q_proj", "v_proj")


def record(step: int, seed: int) -> dict:
    """A record made from the base weights, on a model of its own (a record depends on the
    shapes and rewards, not on the values)."""
    model, _ = tiny_model(TinyModelConfig(seed=1))
    es = EggRoll(
        EsConfig(population=4, seed=seed, target_modules=TARGETS, alpha=0.05), model, step=step
    )
    population = es.ask()
    return asdict(es.tell(population, [1.0, 0.0, 0.5, 0.2]))


def targeted(model) -> dict[str, torch.Tensor]:
    return base_weights(model, TARGETS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_policy_weights_switch_between_branches_bit_exactly(dtype):
    """fp32: the model's own weights are the master; bf16: a spilled fp32 master, rounded into
    the model. Either way every switch lands on replay's bits."""
    model, _ = tiny_model(TinyModelConfig(seed=1))
    model = model.to(dtype)
    base = targeted(model)
    weights = ChainReplayer(model, TARGETS)
    r1, r2, r3 = record(1, seed=0), record(2, seed=0), record(3, seed=0)
    for chain in ([r1], [r1, r2], [r3], [r1, r2], [r1, r2, r3], []):
        weights.set(chain)
        expected, _ = replay(base, [EsRecord(**r) for r in chain])
        got = targeted(model)
        assert all(torch.equal(weights.master[k], expected[k]) for k in expected), chain
        assert all(torch.equal(got[k], expected[k].to(dtype).float()) for k in expected), chain


def test_setting_the_loaded_chain_again_applies_nothing(monkeypatch):
    """The loop sets the parent's weights before every operator: the same chain again must cost
    nothing, and extending it must apply only the new record, to the modules it touches."""
    model, _ = tiny_model(TinyModelConfig(seed=1))
    weights = ChainReplayer(model, TARGETS)
    r1, r2 = record(1, seed=0), record(2, seed=0)
    weights.set([r1])
    updates = []
    real = chain_replayer.update_module
    monkeypatch.setattr(
        chain_replayer,
        "update_module",
        lambda w, rec, name, *a: updates.append((rec.step, name)) or real(w, rec, name, *a),
    )
    weights.set([r1])
    assert updates == []
    weights.set([r1, r2])
    assert updates == [(2, name) for name in r2["modules"]]
    updates.clear()
    weights.set([])  # from the base: nothing to apply, every targeted module back to pristine
    pristine = targeted(tiny_model(TinyModelConfig(seed=1))[0])
    assert updates == []
    assert all(torch.equal(targeted(model)[k], pristine[k]) for k in pristine)


def chain_of(optimizer: str, steps: int = 3) -> list[dict]:
    """`steps` consecutive ES records (Adam's moments carry across them)."""
    model, _ = tiny_model(TinyModelConfig(seed=1))
    config = EsConfig(population=4, seed=0, target_modules=TARGETS, alpha=0.05, optimizer=optimizer)
    es = EggRoll(config, model, step=1)
    return [asdict(es.tell(es.ask(), [1.0, 0.0, 0.5, float(i)])) for i in range(steps)]


@pytest.mark.parametrize(("dtype", "optimizer"), [(torch.float32, "adam"), (torch.bfloat16, "sgd")])
def test_a_checkpoint_bounds_the_replay_and_gives_the_same_bits(
    tmp_path, monkeypatch, caplog, dtype, optimizer
):
    chain = chain_of(optimizer)
    writer, _ = tiny_model(TinyModelConfig(seed=1))
    saved = ChainReplayer(writer.to(dtype), TARGETS)
    saved.set(chain[:2])
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, saved.master, saved.state)
    model, _ = tiny_model(TinyModelConfig(seed=1))
    model = model.to(dtype)
    base = targeted(model)
    expected, _ = replay(base, [EsRecord(**r) for r in chain])
    updates = []
    real = chain_replayer.update_module
    monkeypatch.setattr(
        chain_replayer,
        "update_module",
        lambda w, rec, name, *a: updates.append(rec.step) or real(w, rec, name, *a),
    )
    weights = ChainReplayer(model, TARGETS)
    weights.set(chain, Checkpoint(path, 2))
    assert set(updates) == {chain[2]["step"]}  # only the record after the checkpoint
    assert all(torch.equal(weights.master[k], expected[k]) for k in expected)
    assert all(torch.equal(targeted(model)[k], expected[k].to(dtype).float()) for k in expected)
    # Unusable checkpoints are logged, and the chain is replayed from the base instead.
    misshapen = tmp_path / "other-model.safetensors"
    save_checkpoint(misshapen, {n: torch.zeros(3, 3) for n in saved.master}, saved.state)
    bad_ones = [Checkpoint(tmp_path / "missing", 2), Checkpoint(path, 1), Checkpoint(path, 4)]
    for bad in [*bad_ones, Checkpoint(misshapen, 2)]:
        weights.set([])
        updates.clear()
        with caplog.at_level("WARNING", logger="agent.es.chain_replayer"):
            weights.set(chain, bad)
        assert "not used (replaying from the base)" in caplog.text
        assert len(updates) == sum(len(r["modules"]) for r in chain)  # all of every record
        assert all(torch.equal(weights.master[k], expected[k]) for k in expected)
        caplog.clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_es_step_extends_the_loaded_chain_in_place(dtype):
    """The loop's ES step moves the chain's own fp32 master and Adam state (no copy of the
    weights): what `tell` leaves is bit for bit what replaying the chain gives, in the model
    too, and the record counts as loaded, so setting the child's chain applies nothing again."""
    model, _ = tiny_model(TinyModelConfig(seed=1))
    model = model.to(dtype)
    base = targeted(model)
    weights = ChainReplayer(model, TARGETS)
    r1 = record(1, seed=0)  # an SGD parent
    weights.set([r1])
    config = EsConfig(population=4, seed=0, target_modules=TARGETS, alpha=0.05, optimizer="adam")
    es = weights.strategy(config, step=2)
    assert es.master is weights.master and es.state is weights.state
    r2 = es.tell(es.ask(), [1.0, 0.0, 0.5, 0.2])
    # Adam's moments (two more fp32 copies of the targeted weights) are spilled like the master
    assert isinstance(weights.state.first, SpilledWeights)
    assert isinstance(weights.state.second, SpilledWeights)
    expected, _ = replay(base, [EsRecord(**r1), r2])
    assert all(torch.equal(weights.master[k], expected[k]) for k in expected)
    assert all(torch.equal(targeted(model)[k], expected[k].to(dtype).float()) for k in expected)
    master = {k: w.clone() for k, w in weights.master.items()}
    weights.set([r1, asdict(r2)])  # the child's chain, as the archive returns it
    assert all(torch.equal(weights.master[k], master[k]) for k in master)
    fresh, _ = tiny_model(TinyModelConfig(seed=1))
    rebuilt = ChainReplayer(fresh.to(dtype), TARGETS)
    rebuilt.set([r1, asdict(r2)])  # module by module from the base, Adam's step count per record
    assert all(torch.equal(rebuilt.master[k], expected[k]) for k in expected)


def test_a_broken_off_or_stale_es_step_cannot_corrupt_the_chain(monkeypatch):
    model, _ = tiny_model(TinyModelConfig(seed=1))
    base = targeted(model)
    weights = ChainReplayer(model, TARGETS)
    r1 = record(1, seed=0)
    weights.set([r1])
    es = weights.strategy(EsConfig(population=4, seed=0, target_modules=TARGETS), step=2)
    population = es.ask()
    real = eggroll.gradient_estimate
    calls = []

    def breaks_on_the_second_module(*args):  # noqa: ANN002, ANN202
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(eggroll, "gradient_estimate", breaks_on_the_second_module)
    with pytest.raises(KeyboardInterrupt):
        es.tell(population, [1.0, 0.0, 0.5, 0.2])
    monkeypatch.undo()
    weights.set([r1])  # the same chain: rebuilt from the base, not the half-moved master
    expected, _ = replay(base, [EsRecord(**r1)])
    assert all(torch.equal(targeted(model)[k], expected[k]) for k in expected)
    with pytest.raises(RuntimeError, match="no chain is loaded"):
        ChainReplayer(model, TARGETS).strategy(es.config, step=3)
    stale = weights.strategy(es.config, step=2)
    weights.set([])  # another chain: the strategy's master is no longer the chain's
    with pytest.raises(RuntimeError, match="set to other weights"):
        stale.tell(stale.ask(), [1.0, 0.0, 0.5, 0.2])
    assert all(torch.equal(targeted(model)[k], base[k]) for k in base)


def test_operator_mix_and_bandit():
    rt = SimpleNamespace(config=from_dict({"operators": {"es_step": 0, "scaffold_edit": 1}}, "t"))
    rng = random.Random(0)
    assert {choose_operator(rt, rng, {}) for _ in range(20)} == {"scaffold_edit"}
    rt = SimpleNamespace(config=from_dict({"operators": {"order": "cycle", "both": 1}}, "t"))
    assert [choose_operator(rt, rng, {}, i) for i in range(1, 5)] == [
        "es_step",
        "scaffold_edit",
        "both",
        "es_step",
    ]
    cycle = {"order": "cycle", "first": "scaffold_edit"}
    rt = SimpleNamespace(config=from_dict({"operators": cycle}, "t"))
    assert [choose_operator(rt, rng, {}, i) for i in range(1, 4)] == [
        "scaffold_edit",
        "es_step",
        "scaffold_edit",
    ]
    for first in ("both", "bogus"):  # a weight of 0 (both's default), or no such operator
        with pytest.raises(ConfigError, match=rf"t: \[operators\].*first: '{first}'"):
            from_dict({"operators": cycle | {"first": first}}, "t")
    rt = SimpleNamespace(config=from_dict({"operators": {"bandit": True, "both": 1}}, "t"))
    assert choose_operator(rt, rng, {}) == "es_step"  # untried first, in order
    gains = {"es_step": [0.2, 0.1] * 20, "scaffold_edit": [-0.1] * 40, "both": [0.0] * 40}
    assert choose_operator(rt, rng, gains) == "es_step"


def test_spent_roundtrip_and_event_log_skips_a_torn_line(tmp_path):
    spent = Spent(wall_s=12.5, generated_tokens=300, sandbox_s=4.0)
    spent.write(tmp_path / "spent.json")
    assert Spent.read(tmp_path / "spent.json") == spent
    assert Spent.read(tmp_path / "missing.json") == Spent()
    log = EventLog(tmp_path / "events.jsonl")
    log.emit("a", x=1)
    log.emit("b")
    log.close()
    with open(tmp_path / "events.jsonl", "a") as f:
        f.write('{"t": 1, "event": "cut sh')  # a kill mid-write
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["a", "b"]


def test_default_config_is_valid_and_roundtrips():
    config = RunConfig()
    assert from_dict(config.model_dump(), "x") == config


def test_a_dead_agent_container_is_an_infra_error_not_a_failure():
    from agent.scaffold.solving import _attempts, _score_attempts
    from evaluators.datasets import load_humaneval
    from sandbox.job import Status, Verdict

    class NoJobs:
        def run_iter(self, jobs):
            assert not list(jobs)
            return iter(())

    task = load_humaneval()[0]
    dead = _attempts(0, [task], Verdict(Status.INFRA_ERROR, detail="container died twice"))
    crashed = _attempts(1, [task], Verdict(Status.TIMEOUT, detail="timed out"))
    judged = _score_attempts(dead + crashed, NoJobs(), None, None)
    assert [a.verdict.status for a in judged] == [Status.INFRA_ERROR, Status.ERROR]


def test_checkpoints_are_due_every_k_steps_of_depth_and_never_fail_a_child(tmp_path, caplog):
    written = []

    def write() -> Path:
        written.append(True)
        return tmp_path / "ckpt"

    rt = SimpleNamespace(
        config=from_dict({"es": {"checkpoint_every": 3}}, "t"), write_checkpoint=write
    )
    assert [checkpoint_if_due(rt, depth) for depth in range(1, 7)] == [
        None,
        None,
        tmp_path / "ckpt",
        None,
        None,
        tmp_path / "ckpt",
    ]
    rt.config = from_dict({"es": {"checkpoint_every": 0}}, "t")
    assert checkpoint_if_due(rt, 3) is None and len(written) == 2

    def full_disk() -> Path:
        raise OSError(28, "No space left on device")

    rt = SimpleNamespace(
        config=from_dict({"es": {"checkpoint_every": 1}}, "t"), write_checkpoint=full_disk
    )
    with caplog.at_level("WARNING", logger="agent.loop.operators.es_step"):
        assert checkpoint_if_due(rt, 1) is None
    assert "No space left" in caplog.text


def tied_step_runtime(monkeypatch, verdicts_of, skip_tied: bool = True):
    """A runtime for `es_step` with a real tiny model and a real ES strategy, the population
    judged by `verdicts_of(population_size, tasks)` instead of the sandbox."""
    from agent.es.trainer import PopulationVerdicts
    from agent.loop.operators import es_step as es_step_module
    from archive import WeightsChain

    model, _ = tiny_model(TinyModelConfig(seed=1))
    weights = ChainReplayer(model, TARGETS)
    weights.set([])
    set_calls: list[int] = []

    class Judge:
        def __init__(self, *_args) -> None:
            pass

        def __call__(self, population, tasks) -> PopulationVerdicts:
            return PopulationVerdicts(verdicts_of(population.size, tasks), 10, 0.1, 0.1)

    monkeypatch.setattr(es_step_module, "ScaffoldEvaluator", Judge)
    config = from_dict(
        {
            "es": {
                "population": 4,
                "tasks_per_step": 2,
                "target_modules": list(TARGETS),
                "skip_tied": skip_tied,
                "alpha": 0.05,
            }
        },
        "t",
    )
    rt = SimpleNamespace(
        config=config,
        weights=weights,
        archive=SimpleNamespace(
            weights_chain=lambda _id: WeightsChain("m", "h", []), scaffold_files=lambda _id: {}
        ),
        set_weights=lambda chain: set_calls.append(len(chain.records)),
        weights_name=WeightsName(),
        tasks=SimpleNamespace(train=[SimpleNamespace(task_id=f"t{i}") for i in range(4)]),
    )
    return rt, set_calls


def verdicts(statuses):
    from sandbox.job import Status as JobStatus
    from sandbox.job import Verdict

    return [Verdict(JobStatus.PASSED if s else JobStatus.FAILED) for s in statuses]


def test_an_es_step_whose_members_all_tied_is_no_child_to_judge(monkeypatch):
    """All members equal on every task: a zero update, so the child would be its parent's weights
    again; it fails with its reason (and its cost) instead of being judged, unless asked."""
    from agent.loop.operators.es_step import NO_UPDATE, es_step

    rt, set_calls = tied_step_runtime(monkeypatch, lambda n, tasks: verdicts([1] * n * len(tasks)))
    child = es_step(rt, "n0000", 1)
    assert child.failure == NO_UPDATE and child.es_record is None and child.checkpoint is None
    assert child.metadata["es"]["update_norm"] == 0.0 and child.cost.generated_tokens == 10
    assert set_calls == [0]  # the parent's weights only: no child chain was set

    rt, set_calls = tied_step_runtime(
        monkeypatch, lambda n, tasks: verdicts([1] * n * len(tasks)), skip_tied=False
    )
    assert es_step(rt, "n0000", 1).failure is None  # judged like any child when asked
    rt, set_calls = tied_step_runtime(
        monkeypatch, lambda n, tasks: verdicts([m % 2 for m in range(n) for _ in tasks])
    )
    child = es_step(rt, "n0000", 1)
    assert child.failure is None and child.es_record["metrics"]["update_norm"] > 0
    assert set_calls == [0, 1]  # the parent's, then the child's chain
