"""ES weight steps on a tiny random Llama: exactness of the batched path, the update, restore and
replay; antithetic symmetry; fp32 master weights; and that a few steps raise a toy reward."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from agent.es import EggRoll, EsConfig, EsRecord
from agent.es.checkpoint import load_checkpoint, save_checkpoint
from agent.es.eggroll import OptimizerState, gradient_estimate
from agent.es.replay import base_weights, replay
from agent.policy.lowrank import perturbed


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


INPUT = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(3))


def logits(model, ids=INPUT) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.mark.parametrize("rank", [1, 2])
def test_batched_population_forward_equals_explicit_weights(rank):
    model = tiny_model()
    es = EggRoll(EsConfig(population=6, sigma=0.05, rank=rank, seed=7), model)
    population = es.ask()
    batch = INPUT.repeat(population.size, 1)
    with torch.no_grad(), perturbed(model, population.perturbation) as rows:
        rows.set(list(range(population.size)))
        batched = model(batch).logits
    for member in range(population.size):
        with es.member(population, member):
            explicit = logits(model)
        assert torch.allclose(batched[member : member + 1], explicit, atol=1e-5), member


CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_batched_population_forward_in_bf16_is_as_close_as_bf16_itself(device):
    """bf16 keeps 8 significant bits, so no fixed tolerance fits every logit. The batched path
    (bf16 base matmul plus the low-rank term computed in bf16 with fp32 accumulation, added in
    place) must be no farther from the fp32 truth than the explicit bf16 forward (W + sigma E
    rounded to bf16) is: at most twice its error."""
    model16 = tiny_model(torch.bfloat16).to(device)
    model32 = tiny_model(torch.bfloat16).float().to(device)  # the same base weights, in fp32
    config = EsConfig(population=6, sigma=0.05, rank=2, seed=7)
    es16, es32 = EggRoll(config, model16), EggRoll(config, model32)
    population16, population32 = es16.ask(), es32.ask()
    ids = INPUT.to(device)
    with torch.no_grad(), perturbed(model16, population16.perturbation) as rows:
        rows.set(list(range(config.population)))
        batched = model16(ids.repeat(config.population, 1)).logits.float()
    base = logits(model32, ids)
    for member in range(config.population):
        with es32.member(population32, member):
            truth = logits(model32, ids)
        with es16.member(population16, member):
            explicit16 = logits(model16, ids)
        bf16_error = (explicit16 - truth).abs().max().item()
        batched_error = (batched[member] - truth[0]).abs().max().item()
        assert batched_error <= 2 * bf16_error, (member, batched_error, bf16_error)
        assert (truth - base).abs().max().item() > 10 * batched_error, member


def test_antithetic_members_are_exact_negatives_and_cancel():
    model = tiny_model()
    es = EggRoll(EsConfig(population=4, sigma=0.01, seed=1), model)
    population = es.ask()
    name = next(iter(es.layers))
    assert torch.equal(population.dense_noise(0, name), -population.dense_noise(1, name))
    # Equal fitness within each pair carries no gradient: the update is exactly zero.
    record = EsRecord(
        step=0,
        config=es.config.to_dict(),
        modules=[name],
        coefficients=[0.7, 0.7, -0.2, -0.2],
        fitness_mean=0,
    )
    assert torch.count_nonzero(gradient_estimate(record, name, es.shapes[name])) == 0


@pytest.mark.parametrize("mode", ["lowrank", "fullrank"])
def test_update_equals_brute_force_reference(mode):
    model = tiny_model()
    config = EsConfig(population=8, sigma=0.02, alpha=0.01, rank=2, seed=5, mode=mode)
    es = EggRoll(config, model)
    before = {n: w.clone() for n, w in es.master.items()}
    population = es.ask()
    rewards = [0.1, 0.9, 0.4, 0.4, 1.0, 0.0, 0.3, 0.5]
    record = es.tell(population, rewards)
    for name in es.layers:
        expected = sum(
            f * population.dense_noise(i, name) / config.sigma
            for i, f in enumerate(record.coefficients)
        )
        expected = expected * config.alpha / (config.population * config.sigma)
        assert torch.allclose(es.master[name] - before[name], expected, atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["lowrank", "fullrank"])
def test_perturb_then_restore_is_exact(dtype, mode):
    model = tiny_model(dtype)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    es = EggRoll(EsConfig(population=4, sigma=0.1, mode=mode), model)
    population = es.ask()
    for member in range(population.size):
        with es.member(population, member):
            assert not torch.equal(
                model.model.layers[0].self_attn.q_proj.weight,
                original["model.layers.0.self_attn.q_proj.weight"],
            )
    for key, value in model.state_dict().items():
        assert (value.float() - original[key].float()).abs().max().item() == 0.0, key


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_replay_is_bit_identical_and_reruns_are_identical(tmp_path, optimizer):
    config = EsConfig(population=6, sigma=0.02, alpha=0.005, rank=2, seed=11, optimizer=optimizer)

    def run() -> tuple[list[EsRecord], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        model = tiny_model()
        base = base_weights(model, config.target_modules)
        es = EggRoll(config, model)
        records = []
        for step in range(4):
            population = es.ask()
            rewards = [float((i * 7 + step * 3) % 5) for i in range(config.population)]
            records.append(es.tell(population, rewards))
        return records, base, {n: w.clone() for n, w in es.master.items()}

    records, base, final = run()
    records_again, _, final_again = run()
    assert [r.to_json() for r in records] == [r.to_json() for r in records_again]
    replayed, _ = replay(base, [EsRecord.from_json(r.to_json()) for r in records])
    for name in final:
        assert torch.equal(replayed[name], final[name]) and torch.equal(
            final_again[name], final[name]
        )
    # A checkpoint after two steps plus the last two records gives the same bits.
    middle, state = replay(base, records[:2])
    save_checkpoint(tmp_path / "ckpt.safetensors", middle, state)
    loaded, loaded_state = load_checkpoint(tmp_path / "ckpt.safetensors")
    resumed, _ = replay(loaded, records[2:], loaded_state)
    assert all(torch.equal(resumed[n], final[n]) for n in final)
    # Any safetensors reader opens it: same tensors, same step count.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ckpt.safetensors"), framework="pt") as f:
        assert f.metadata() == {"optimizer_steps": "2"}
        assert all(torch.equal(f.get_tensor(f"w/{n}"), middle[n]) for n in middle)
        moments = [k for k in f.keys() if k.startswith("m")]  # noqa: SIM118
        assert len(moments) == (2 * len(middle) if optimizer == "adam" else 0)


def test_a_damaged_checkpoint_is_refused_with_its_name(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, {"a": torch.ones(2, 3)}, OptimizerState(steps=1))
    data = path.read_bytes()
    path.write_bytes(data[:-4])  # cut short
    with pytest.raises(ValueError, match=f"{path}: not an ES checkpoint .*outside the file"):
        load_checkpoint(path)
    path.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="shorter than a safetensors header"):
        load_checkpoint(path)


def test_population_chunks_do_not_change_the_result():
    """Members evaluated in any grouping (as workers would) give the same fitness and step."""
    model = tiny_model()
    es = EggRoll(EsConfig(population=8, sigma=0.05, seed=2), model)
    population = es.ask()
    batch = INPUT.repeat(population.size, 1)
    with torch.no_grad(), perturbed(model, population.perturbation) as rows:
        rows.set(list(range(8)))
        whole = model(batch).logits
        parts = []
        for chunk in ([0, 1, 2], [3, 4], [5, 6, 7]):
            rows.set(chunk)
            parts.append(model(INPUT.repeat(len(chunk), 1)).logits)
    assert torch.allclose(whole, torch.cat(parts), atol=1e-6)


def test_record_is_small_and_round_trips():
    es = EggRoll(EsConfig(population=32), tiny_model())
    record = es.tell(es.ask(), [float(i % 3) for i in range(32)])
    text = record.to_json()
    assert EsRecord.from_json(text) == record
    assert len(text.encode()) < 4096


def test_fp32_master_keeps_steps_that_bf16_would_swallow():
    model = tiny_model(torch.bfloat16)
    es = EggRoll(EsConfig(population=8, sigma=1e-3, alpha=1e-7, seed=4), model)
    assert not es.shares_master
    record = es.tell(es.ask(), [float(i) for i in range(8)])
    m = record.metrics
    assert m["cosine_realized_intended"] > 0.99 and m["fraction_changed"] > 0.9
    assert m["model_fraction_changed"] < 0.5  # bf16 rounds most of these tiny steps away


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="even number"):
        EsConfig(population=3)
    with pytest.raises(ValueError, match="shaping"):
        EsConfig(shaping="softmax")
    es = EggRoll(EsConfig(population=4), tiny_model())
    with pytest.raises(ValueError, match="expected 4 rewards"):
        es.tell(es.ask(), [1.0, 2.0])
    with pytest.raises(ValueError, match="no Linear layer"):
        EggRoll(EsConfig(population=4, target_modules=("nope",)), tiny_model())


def test_a_few_steps_raise_a_toy_reward():
    """Reward: how close the model's logits are to a fixed target. ES must climb it."""
    model = tiny_model()
    target = logits(tiny_model(seed=99))
    es = EggRoll(
        EsConfig(population=16, sigma=0.02, alpha=0.02, seed=0, shaping="centered_rank"), model
    )
    batch = INPUT.repeat(16, 1)

    def rewards(population) -> list[float]:
        with torch.no_grad(), perturbed(model, population.perturbation) as rows:
            rows.set(list(range(16)))
            out = model(batch).logits.float()
        return [-float((out[i] - target[0]).square().mean()) for i in range(16)]

    start = -float((logits(model) - target).square().mean())
    for _ in range(15):
        population = es.ask()
        es.tell(population, rewards(population))
    end = -float((logits(model) - target).square().mean())
    assert end > start + 0.1 * abs(start), (start, end)


def test_an_infra_error_gets_the_worst_fitness_not_its_tasks_mean():
    """A member whose job broke the sandbox must not score its task-mates' mean: that paid a
    candidate for breaking the sandbox whenever the others did worse than the mean."""
    from agent.es.trainer import EsTrainer, EsTrainerConfig, PopulationVerdicts
    from evaluators.task import Task
    from sandbox.job import CheckOutcome, CheckResult, Status, Verdict

    def verdict(status: Status, passed: int) -> Verdict:
        outcomes = [CheckOutcome.PASSED] * passed + [CheckOutcome.FAILED] * (2 - passed)
        return Verdict(status, tuple(CheckResult(o) for o in outcomes))

    judged = [
        verdict(Status.PASSED, 2),
        verdict(Status.PASSED, 2),
        verdict(Status.FAILED, 1),
        Verdict(Status.INFRA_ERROR, detail="sandbox failed 2 time(s)"),
    ]
    task = Task("toy/0", "def f():\n", "f", "def check(candidate):\n    pass\n", "toy")
    es = EggRoll(EsConfig(population=4, seed=1), tiny_model())
    trainer = EsTrainer(
        es,
        None,
        None,
        [task],
        EsTrainerConfig(tasks_per_step=1),
        evaluator=lambda population, tasks: PopulationVerdicts(judged, 0, 0.0, 0.0),
    )
    result = trainer.step()
    assert [row[0] for row in result.rewards] == [1.0, 1.0, 0.25, 0.0]
    assert result.infra_errors == 1
    assert result.pass_rate == 0.5  # the infra error counts as not passed
