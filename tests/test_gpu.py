"""The GPU paths of the policy backend and ES steps, on the tiny random Llama on CUDA.

Checks what the CPU tests check, where CUDA can break it: device placement of the CPU-drawn noise,
fp32 master weights under a bf16 model, exact restore, bit-identical replay (also across devices:
the noise and the update are computed on the CPU, only the final fp32 add runs on the GPU), and
greedy generation that does not depend on batching. Skipped where CUDA is not available.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from agent.es import EggRoll, EsConfig, EsRecord
from agent.es.chain_replayer import ChainReplayer
from agent.es.replay import base_weights, replay
from agent.policy.backend import GenerationConfig
from agent.policy.lowrank import perturbed
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU: torch.cuda.is_available() is false",
    ),
]

DEVICE = torch.device("cuda")
PROMPTS = ["def f(x):\n", "hello", "a longer prompt than the others", "x"]
INPUT = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(3))
REWARDS = [float(i) for i in range(8)]


def model_on(device: torch.device, dtype: torch.dtype = torch.float32):
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    return model.to(device=device, dtype=dtype), tokenizer


def logits(model: torch.nn.Module, ids: torch.Tensor = INPUT) -> torch.Tensor:
    with torch.no_grad():
        return model(ids.to(model.device)).logits.float()


def batched_logits(model: torch.nn.Module, es: EggRoll, population) -> torch.Tensor:
    """Every member's logits on INPUT from one forward, each row with its own perturbation."""
    with torch.no_grad(), perturbed(model, population.perturbation) as rows:
        rows.set(list(range(population.size)))
        return model(INPUT.repeat(population.size, 1).to(model.device)).logits.float()


def test_batched_perturbed_forward_equals_explicit_weights_fp32():
    model, _ = model_on(DEVICE)
    es = EggRoll(EsConfig(population=6, sigma=0.05, rank=2, seed=7), model)
    population = es.ask()
    batched = batched_logits(model, es, population)
    base = logits(model)
    for member in range(population.size):
        with es.member(population, member):  # W + sigma E_m written into the CUDA weights
            explicit = logits(model)
        assert (batched[member] - explicit[0]).abs().max().item() <= 1e-5, member
        # Only meaningful if the perturbation moves the logits far more than the tolerance.
        assert (explicit - base).abs().max().item() > 1e-2, member


def test_noise_is_the_same_on_cpu_and_cuda():
    """Noise is drawn on the CPU and moved: member weights agree bit for bit across devices."""
    config = EsConfig(population=4, sigma=0.05, rank=2, seed=3)
    cpu_model, _ = model_on(torch.device("cpu"))
    gpu_model, _ = model_on(DEVICE)
    es_cpu, es_gpu = EggRoll(config, cpu_model), EggRoll(config, gpu_model)
    population_cpu, population_gpu = es_cpu.ask(), es_gpu.ask()
    for member in range(config.population):
        with es_cpu.member(population_cpu, member), es_gpu.member(population_gpu, member):
            for name, layer in es_gpu.layers.items():
                assert layer.weight.device.type == DEVICE.type
                assert torch.equal(layer.weight.cpu(), es_cpu.layers[name].weight), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["lowrank", "fullrank"])
def test_perturb_then_restore_is_exact(dtype, mode):
    model, _ = model_on(DEVICE, dtype)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    es = EggRoll(EsConfig(population=4, sigma=0.1, mode=mode), model)
    population = es.ask()
    q = model.model.layers[0].self_attn.q_proj.weight
    for member in range(population.size):
        with es.member(population, member):
            assert not torch.equal(q, original["model.layers.0.self_attn.q_proj.weight"])
    for key, value in model.state_dict().items():
        assert value.device.type == DEVICE.type and torch.equal(value, original[key]), key


def relative_step_alpha(model: torch.nn.Module, config: EsConfig, relative: float) -> float:
    """The learning rate whose SGD step moves the targeted weights by `relative` of their norm
    (the step is linear in alpha, so one step at alpha=1 on a copy measures the scale)."""
    probe = EggRoll(EsConfig(**{**config.to_dict(), "alpha": 1.0}), copy.deepcopy(model))
    weights = sum(float(w.double().square().sum()) for w in probe.master.values()) ** 0.5
    norm_at_one = probe.tell(probe.ask(), REWARDS).metrics["update_norm"]
    return relative * weights / norm_at_one


def test_bf16_es_step_keeps_fp32_master_weights_in_host_memory():
    """A bf16 model on CUDA: the fp32 master is spilled on the host (on the GPU it would double
    the model's memory), and the GPU weights are the master rounded once."""
    model, _ = model_on(DEVICE, torch.bfloat16)
    base = base_weights(model, EsConfig().target_modules)
    config = EsConfig(population=8, sigma=1e-3, seed=4)
    config = EsConfig(**{**config.to_dict(), "alpha": relative_step_alpha(model, config, 1e-5)})
    es = EggRoll(config, model)
    assert not es.shares_master
    assert all(w.dtype == torch.float32 and w.device.type == "cpu" for w in es.master.values())
    assert all(w.device.type == "cpu" for w in base.values())
    record = es.tell(es.ask(), REWARDS)
    m = record.metrics
    relative = m["update_norm"] / sum(float(w.square().sum()) for w in base.values()) ** 0.5
    assert 0.5e-5 < relative < 2e-5, relative
    assert m["cosine_realized_intended"] >= 0.99 and m["fraction_changed"] > 0.9, m
    assert m["model_fraction_changed"] < 0.5, m  # bf16 alone would have swallowed most of it
    for name, layer in es.layers.items():  # the model runs the master, rounded once
        assert layer.weight.device.type == DEVICE.type, name
        assert torch.equal(layer.weight.cpu(), es.master[name].to(torch.bfloat16)), name
    replayed, _ = replay(base, [record])
    assert all(torch.equal(replayed[n], es.master[n]) for n in es.master)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_loops_es_step_on_cuda_adds_no_gpu_memory_and_replays_exactly(dtype):
    """The loop's path: a `ChainReplayer` on a CUDA model, its chain set, the chain's strategy
    told. Base and (bf16) master stay off the GPU; the weights are replay's, rounded once."""
    model, _ = model_on(DEVICE, dtype)
    other, _ = model_on(DEVICE, dtype)
    base = base_weights(model, EsConfig().target_modules)
    config = EsConfig(population=8, sigma=1e-3, alpha=1e-4, seed=5)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    chain = ChainReplayer(model, config.target_modules)
    chain.set([])
    es = chain.strategy(config, step=0)
    record = es.tell(es.ask(), REWARDS)
    fresh = ChainReplayer(other, config.target_modules)
    fresh.set([record])
    torch.cuda.synchronize()
    smallest = min(layer.weight.numel() for layer in es.layers.values()) * 2  # bytes, bf16
    assert torch.cuda.memory_allocated() - before < smallest  # no weight-sized buffer remains
    replayed, _ = replay(base, [record])
    for name, layer in es.layers.items():
        expected = replayed[name].to(DEVICE, dtype)
        assert torch.equal(layer.weight, expected), name
        assert torch.equal(fresh.model.get_submodule(name).weight, expected), name


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_replay_is_bit_identical_on_cuda_and_across_devices(optimizer):
    config = EsConfig(population=6, sigma=0.02, alpha=0.005, rank=2, seed=11, optimizer=optimizer)

    def run(device: torch.device) -> tuple[list[EsRecord], dict, dict]:
        model, _ = model_on(device)
        base = base_weights(model, config.target_modules)
        es = EggRoll(config, model)
        records = []
        for step in range(4):
            rewards = [float((i * 7 + step * 3) % 5) for i in range(config.population)]
            records.append(es.tell(es.ask(), rewards))
        return records, base, {n: w.clone() for n, w in es.master.items()}

    records, base, final = run(DEVICE)
    assert all(w.device.type == DEVICE.type for w in final.values())  # fp32: the model's own
    chain = [EsRecord.from_json(r.to_json()) for r in records]
    on_gpu, _ = replay({n: w.to(DEVICE) for n, w in base.items()}, chain)
    assert all(w.device.type == DEVICE.type for w in on_gpu.values())
    on_cpu, _ = replay(base, chain)  # base weights are kept on the host
    cpu_records, _, cpu_final = run(torch.device("cpu"))
    for gpu_record, cpu_record in zip(records, cpu_records, strict=True):
        # Metrics are float sums reduced on the weights' device: equal up to summation order.
        gpu_metrics, cpu_metrics = gpu_record.metrics, cpu_record.metrics
        assert gpu_metrics.keys() == cpu_metrics.keys()
        for key, value in gpu_metrics.items():
            assert value == pytest.approx(cpu_metrics[key], rel=1e-9, abs=1e-12), key
        assert replace(gpu_record, metrics={}) == replace(cpu_record, metrics={})
    for name, weight in final.items():
        assert torch.equal(on_gpu[name], weight), name
        assert torch.equal(on_cpu[name], weight.cpu()), name
        assert torch.equal(cpu_final[name], weight.cpu()), name


def test_greedy_generation_does_not_depend_on_batching_or_device():
    model, tokenizer = model_on(DEVICE)
    backend = TransformersBackend(model, tokenizer)
    es = EggRoll(EsConfig(population=2, sigma=0.05, rank=2, seed=1), model)
    perturbation = es.ask().perturbation
    rows = PROMPTS * 2
    members = [0] * len(PROMPTS) + [1] * len(PROMPTS)

    def generate(batch_size: int, population: bool, on=backend) -> list:
        config = GenerationConfig(max_new_tokens=12, batch_size=batch_size)
        if population:
            return on.generate(rows, config, perturbation, members)
        return on.generate(rows, config)

    plain, together = generate(1, False), generate(len(rows), False)
    assert plain == together
    per_row, batched = generate(1, True), generate(3, True)
    assert per_row == batched
    assert batched[: len(PROMPTS)] != batched[len(PROMPTS) :]  # the members really differ
    cpu_backend = TransformersBackend(*model_on(torch.device("cpu")))
    assert generate(len(rows), False, cpu_backend) == together
    assert generate(3, True, cpu_backend) == batched


def test_sampling_on_cuda_is_reproducible_per_seed():
    backend = TransformersBackend(*model_on(DEVICE))
    config = GenerationConfig(max_new_tokens=16, temperature=0.9, top_p=0.95, seed=5, batch_size=4)
    first = backend.generate(PROMPTS, config)
    assert first == backend.generate(PROMPTS, config)
    assert first != backend.generate(PROMPTS, GenerationConfig(max_new_tokens=16, batch_size=4))
